"""Synthetic input clips for the video-to-video tests: a coloured square sliding right on a plain ground."""

import numpy as np


def moving_square(frames: int, h: int, w: int, *, top: int, side: int, left: int, step: int,
                  colour: tuple[int, int, int], ground: int) -> np.ndarray:
    """(frames, h, w, 3) uint8; the square's left edge is at `left + step * i` in frame i."""
    video = np.full((frames, h, w, 3), ground, np.uint8)
    for i in range(frames):
        video[i, top:top + side, left + step * i: left + step * i + side] = colour
    return video

"""Argument checks that need no torch, so the command line rejects bad input at once."""

from __future__ import annotations

import math
import numbers

from .errors import UserError

COMPAT_MODES = ("t2vzero", "diffusers")
MAX_SIDE = 4096  # far beyond what SD-class models draw; larger sizes only exhaust memory


def check_finite(values: dict[str, float | None]) -> None:
    """Guidance scales, motion and the like: NaN or infinity would silently give NaN frames."""
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise UserError(f"{name} must be a finite number, got {value}")


def check_video_args(*, video_length: int, height: int, width: int, num_inference_steps: int,
                     chunk_size: int | None, num_videos_per_prompt: int, compat: str) -> None:
    """Reject bad generation arguments with a message that says how to fix them."""
    if isinstance(video_length, bool) or not isinstance(video_length, numbers.Integral) or video_length < 1:
        raise UserError(f"frames must be at least 1 and a whole number (got {video_length!r}); use --frames 8 for "
                        "example")
    if height <= 0 or width <= 0 or height % 8 or width % 8:
        raise UserError(f"size {width}x{height} must be positive multiples of 8; e.g. --size 512x512")
    if max(height, width) > MAX_SIDE:
        raise UserError(f"size {width}x{height} is larger than {MAX_SIDE} pixels a side; e.g. --size 1024x576")
    if num_videos_per_prompt < 1:
        raise UserError(f"videos per prompt must be at least 1, got {num_videos_per_prompt}")
    check_run_args(num_inference_steps=num_inference_steps, chunk_size=chunk_size, compat=compat)


def check_run_args(*, num_inference_steps: int, chunk_size: int | None, compat: str) -> None:
    """What every mode takes: denoising steps, chunking, compat mode."""
    if num_inference_steps < 1:
        raise UserError(f"steps must be at least 1 (got {num_inference_steps}); e.g. --steps 50")
    if chunk_size is not None and chunk_size < 2:
        raise UserError(f"chunk size must be at least 2 (frame 1 plus one more), got {chunk_size}")
    if compat not in COMPAT_MODES:
        raise UserError(f"unknown compat mode {compat!r}; use one of {', '.join(COMPAT_MODES)}")


def check_strength(strength: float) -> float:
    """An SDEdit strength in (0, 1]: how far down the schedule restyling starts (1: from pure noise)."""
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0.0 < strength <= 1.0:
        raise UserError(f"strength must be in (0, 1] (e.g. 0.7: keep the layout, change the style; 1: from pure "
                        f"noise), got {strength}")
    return float(strength)

"""The one place where the ComfyUI nodes meet t2vzero's camera paths (`t2vzero.motion`).

A MOTION value travels from the Motion node to the samplers: a `t2vzero.motion.Motion` (frozen, picklable),
parsed from the command line's --motion grammar.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..defaults import TEXT_TO_VIDEO
from ..motion import as_motion, parse_motion, warp_latents

GRAMMAR = "DX,DY or pan:DX,DY (pixels per frame on a 512 grid), zoom:F, rotate:DEG, joined by '+'"


def parse(spec: str) -> Any:
    """A camera path as the command line's --motion takes it (e.g. "12,12", "zoom:1.02+pan:4,0")."""
    return parse_motion(spec.strip())


def default() -> Any:
    """The paper's motion, for a sampler whose MOTION input is left unconnected."""
    return as_motion(tuple(TEXT_TO_VIDEO["motion"]))


def warp(latents: torch.Tensor, motion: Any, frame_ids: Sequence[int], size: tuple[int, int]) -> torch.Tensor:
    """(F, C, h, w) copies of frame 1's latent at t0, each moved as frame `frame_ids[i]`; `size` in pixels (w, h)."""
    motion = as_motion(motion)
    motion.check(max(frame_ids, default=0) + 1, size)  # refused as on the command line: a zoom beyond x10^4, ...
    return warp_latents(latents, motion, frame_ids, size)

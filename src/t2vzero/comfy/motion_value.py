"""The one place where the ComfyUI nodes meet t2vzero's motion API.

A MOTION value travels from the Motion node to the samplers. Today it is the paper's global pan δ
(pixels per frame on a 512 grid, `t2vzero.motion`); when camera paths land, `parse` becomes
`t2vzero.motion.parse_motion` and `warp` becomes `t2vzero.motion.warp_latents`, and nothing else changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..defaults import TEXT_TO_VIDEO
from ..motion import latent_shifts, translate_latents

GRAMMAR = "DX,DY (pixels per frame on a 512 grid, e.g. 12,12), or pan:DX,DY"


def parse(spec: str) -> Any:
    """A motion as the command line's --motion takes it: "DX,DY", also written "pan:DX,DY"."""
    from ..cli import parse_pair  # the command line's own parser: one grammar for both

    text = spec.strip()
    if text.lower().startswith("pan:"):
        text = text[len("pan:"):]
    return parse_pair(text, ",", "motion")


def default() -> Any:
    """The paper's motion, for a sampler whose MOTION input is left unconnected."""
    return tuple(TEXT_TO_VIDEO["motion"])


def warp(latents: torch.Tensor, motion: Any, frame_ids: Sequence[int], size: tuple[int, int]) -> torch.Tensor:
    """(F, C, h, w) copies of frame 1's latent at t0, each moved as frame `frame_ids[i]`; `size` in pixels (w, h)."""
    shifts = latent_shifts(frame_ids, motion, size, (latents.shape[-1], latents.shape[-2]))
    return translate_latents(latents, shifts)

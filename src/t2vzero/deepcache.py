"""Feature reuse across steps (DeepCache, Ma et al. 2024; approximate, off by default).

Adjacent denoising steps change the UNet's deep features little. Every `interval`-th step runs the
whole UNet and keeps the input of its last up block (the deep branch's output); the steps between
run only the shallow branch (conv_in, the first down block, the last up block, conv_out) on that
kept feature. The deep blocks are wrapped once per model (counted, like the attention processors);
whether a call reuses, and the kept features, travel with the call in a context variable, so
concurrent generations on one model do not share them. Cross-frame attention is unchanged: the
shallow blocks attend to frame 1 as always, and a chunk keeps its own features.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import UserError
from .patches import shared_patch


@dataclass
class FeatureSlot:
    """One chunk's kept deep feature, and the output shapes of the blocks a reusing step skips."""

    feature: torch.Tensor | None = None
    shapes: dict[int, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Step:
    slot: FeatureSlot
    reuse: bool


_CURRENT: contextvars.ContextVar[_Step | None] = contextvars.ContextVar("t2vzero_deepcache", default=None)


def check_interval(interval: int | None) -> int:
    """`interval` 1 (or None) is the plain UNet; every interval-th step runs it whole."""
    if interval is None:
        return 1
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise UserError(f"cache interval must be a whole number >= 1 (1: no reuse), got {interval}; "
                        "e.g. --cache-interval 3")
    return interval


@contextmanager
def step(slot: FeatureSlot, reuse: bool) -> Iterator[None]:
    """Within the block, UNet calls record into `slot` (reuse=False) or reuse it (reuse=True)."""
    token = _CURRENT.set(_Step(slot, reuse and slot.feature is not None))
    try:
        yield
    finally:
        _CURRENT.reset(token)


class _Wrapped:
    """A deep block's forward: run as usual, or skipped on a reusing step (the kept feature, or zeros of the
    recorded output shape that nothing downstream reads)."""

    def __init__(self, forward: Any, key: int, keeps_feature: bool) -> None:
        self.forward, self.key, self.keeps_feature = forward, key, keeps_feature

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        current = _CURRENT.get()
        if current is None:
            return self.forward(*args, **kwargs)
        slot = current.slot
        if current.reuse:
            if self.keeps_feature:
                return slot.feature
            return _zeros_like_shape(slot.shapes[self.key], args[0] if args else kwargs["hidden_states"])
        out = self.forward(*args, **kwargs)
        slot.shapes[self.key] = _shape_of(out)
        if self.keeps_feature:
            slot.feature = out
        return out


def _shape_of(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    return tuple(_shape_of(o) for o in out)


def _zeros_like_shape(shape: Any, like: torch.Tensor) -> Any:
    if shape and isinstance(shape[0], int):
        return like.new_zeros(()).expand(shape)  # no memory: a broadcast view
    return tuple(_zeros_like_shape(s, like) for s in shape)


@contextmanager
def deep_blocks_skippable(unet: Any) -> Iterator[None]:
    """Wrap the deep blocks of `unet` (all down blocks but the first, the mid block, all up blocks but the last)."""
    with shared_patch(unet, "deep blocks skippable", lambda: _install(unet)):
        yield


def _install(unet: Any) -> Callable[[], None]:
    if len(unet.down_blocks) < 2 or unet.mid_block is None:
        raise UserError("feature reuse needs a UNet with at least two levels and a mid block")
    deep = [*unet.down_blocks[1:], unet.mid_block, *unet.up_blocks[:-1]]
    saved = [(block, block.forward) for block in deep]
    for i, block in enumerate(deep):
        block.forward = _Wrapped(block.forward, i, keeps_feature=block is unet.up_blocks[-2])

    def undo() -> None:
        for block, forward in saved:
            block.forward = forward

    return undo

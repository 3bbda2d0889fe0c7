"""t2vzero: Text2Video-Zero (Khachatryan et al., ICCV 2023) on diffusers components.

The heavy modules load on first use so that `import t2vzero` and `t2vzero --help` stay fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "TextToVideoZero": "t2vzero.pipeline",
    "VideoOutput": "t2vzero.generate",
    "CrossFrameAttnProcessor": "t2vzero.attention",
    "cross_frame_attention": "t2vzero.attention",
    "text_to_video": "t2vzero.modes.text2video",
    "anchor_pass": "t2vzero.modes.text2video",
    "render": "t2vzero.modes.text2video",
    "Anchor": "t2vzero.modes.text2video",
    "make_scheduler": "t2vzero.schedulers",
    "SCHEDULERS": "t2vzero.schedulers",
    "load_components": "t2vzero.models",
    "read_video": "t2vzero.video",
    "write_video": "t2vzero.video",
    "UserError": "t2vzero.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 't2vzero' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])

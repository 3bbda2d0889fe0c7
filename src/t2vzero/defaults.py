"""The one table of defaults: the paper's and each mode's. The API, the command line (its help text
too), the app and the benchmarks all read it; a model folder's `t2vzero.json` may override the
text-to-video entries for that model."""

from __future__ import annotations

from typing import Any

# Text-to-video, as in the paper (§3.3, §4.1) and the reference implementations.
TEXT_TO_VIDEO: dict[str, Any] = {
    "video_length": 8, "num_inference_steps": 50, "guidance_scale": 7.5, "motion": (12.0, 12.0),
    "t0": 881, "t1": 941, "fps": 4.0,
}
# ControlNet video (paper §4.2) and editing by instruction (§4.3), as the official implementation runs them.
CONTROL: dict[str, Any] = {"num_inference_steps": 20, "guidance_scale": 9.0, "controlnet_scale": 1.0,
                           "canny_low": 100, "canny_high": 200}
EDIT: dict[str, Any] = {"num_inference_steps": 50, "guidance_scale": 7.5, "image_guidance_scale": 1.5}
# Image-to-video: text-to-video's (and the model's) defaults with a given first frame; an empty prompt
# by default, and the image resized to the model's native size (longer side) unless a resolution is given.
ANIMATE: dict[str, Any] = {**TEXT_TO_VIDEO, "prompt": "", "resolution": None}
# Restyling a clip (SDEdit with one shared noise and cross-frame attention): img2img's steps and guidance; the
# strength at the low end of the usual 0.6-0.8, where the built-in model keeps the layout best (README).
# `invert` (start from each frame's DDIM inversion instead of shared noise) is off: it is not the SDEdit the
# method names, and it costs ⌊S·N⌋ more UNet calls; it keeps the layout far better (README, Restyle).
RESTYLE: dict[str, Any] = {"num_inference_steps": 50, "guidance_scale": 7.5, "strength": 0.6,
                           "controlnet_scale": CONTROL["controlnet_scale"], "invert": False}
# Reading input clips (the video-to-video modes).
CLIP: dict[str, Any] = {"resolution": 512, "every": 1, "fps": 8.0}

MODES: dict[str, dict[str, Any]] = {"generate": TEXT_TO_VIDEO, "animate": ANIMATE, "control": CONTROL, "edit": EDIT,
                                    "restyle": RESTYLE}


def pick(mode: str, name: str, value: Any, model_defaults: dict[str, Any] | None = None) -> Any:
    """`value` if given, else the model's default (text-to-video and animate), else the mode's."""
    if value is not None:
        return value
    if mode in ("generate", "animate") and model_defaults and name in model_defaults:
        return model_defaults[name]
    return MODES[mode].get(name)

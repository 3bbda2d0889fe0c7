"""Image-to-video: Text2Video-Zero with a given first frame.

The image is encoded with the VAE and inverted with DDIM up to t1 (`invert_first_frame`);
that inverted trajectory is frame 1's. Frames 2..N come from its latent at t0, moved by the motion
and jumped forward to t1, exactly as in text-to-video, and attend to frame 1 at every step. Frame 1
stays on its inverted trajectory while the others are denoised, so it ends on the image's own latent:
the VAE's reconstruction of the image. Everything after the anchor pass (chunking, frame subsets,
step-noise streams) is text-to-video's `render`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..generate import (
    AfterStep,
    Conditioning,
    Guidance,
    VideoOutput,
    cfg_combine,
    encode_images,
    execution_device,
    vae_factor,
)
from ..prompts import upcast_vae
from ..schedule import alpha_bar_at, ddim_invert, in_sigma_space
from ..video import pil_rgb
from .text2video import text_to_video


def check_image(image: Any, factor: int) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image (or a PIL image) whose sides are multiples of the VAE factor."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        image = pil_rgb(image)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise UserError(f"the image must be uint8 RGB (0-255), not {arr.dtype}; convert with "
                        "(x * 255).round().astype(np.uint8)")
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise UserError(f"the image must be (height, width, 3) RGB, got shape {arr.shape}")
    h, w = arr.shape[:2]
    if h < factor or w < factor or h % factor or w % factor:
        raise UserError(f"the image is {w}x{h}; its sides must be multiples of {factor} (the VAE factor): resize "
                        "it, e.g. t2vzero.inputs.fit_resolution(image[None], 512)[0]")
    return arr


def encode_image(components: dict[str, Any], image: Any) -> Any:
    """(1, C, h, w) latents of one image, in the UNet's scale (the VAE posterior's mean)."""
    vae, unet = components["vae"], components["unet"]
    arr = check_image(image, vae_factor(vae))
    if unet.config.in_channels != vae.config.latent_channels:
        raise UserError(f"this UNet takes {unet.config.in_channels} input channels, not the VAE's "
                        f"{vae.config.latent_channels}: image-to-video needs a text-to-image checkpoint")
    latents = encode_images(vae, arr[None], unet.dtype, force_upcast=upcast_vae(components))
    return latents.to(execution_device(unet))


def image_to_video(components: dict[str, Any], image: Any, prompt: str | list[str] = "", *,
                   chunk_size: int | None = None, progress: bool = True, **anchor_args: Any) -> VideoOutput:
    """Animate (H, W, 3) uint8 `image` (or a PIL image): frame 1 is the image, frames 2..N move by `motion`.

    `prompt` conditions the inversion and the denoising (empty: unconditional); `anchor_args` are
    `anchor_pass`'s (frames, steps, guidance, motion, t0/t1, sampler...), but the size is the image's.
    """
    latents = encode_image(components, image)
    factor = vae_factor(components["vae"])
    height, width = (s * factor for s in latents.shape[-2:])
    for name, value in (("height", height), ("width", width)):
        if anchor_args.get(name) not in (None, value):
            raise UserError(f"{name} {anchor_args[name]} differs from the image's {value}; resize the image instead")
        anchor_args[name] = value
    return text_to_video(components, prompt, chunk_size=chunk_size, progress=progress, first_frame_latents=latents,
                         **anchor_args)


def invert_first_frame(unet: Any, cond: Conditioning, sched: Any, latents: torch.Tensor, i1: int, i0: int,
                       after_t1: torch.Tensor, progress: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frame 1's trajectory for given clean latents: x_t1, x_t0 and its path over the timesteps `after_t1`
    that rendering runs (after step j, the latent at the level of step j+1; after the last, the clean one).

    DDIM inversion (`t2vzero.schedule.ddim_invert`) from the clean latents up to t1 through every
    scheduled noise level, with the prompt's conditional prediction alone (guidance 1): classifier-free
    guidance amplifies the inversion's error (Mokady et al. 2023, §3), and frame 1 never needs the guided
    prediction, since rendering keeps it on this path. Latents are in the scheduler's own space.
    """
    predict = Guidance(unet, cond.pick_groups([cond.groups - 1]), cfg_combine(1.0), cross_frame=False)
    n = len(sched.timesteps)
    up = list(range(n - 1, i1 - 1, -1))  # step indices from the last (least noisy) to t1's
    alpha_bars = {i: alpha_bar_at(sched, i) for i in up}
    kind = sched.config.get("prediction_type", "epsilon")
    levels = {float(sched.timesteps[i]): alpha_bars[i] for i in up}

    def predict_noise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = predict(x, t, [0])
        if progress is not None:
            progress.update()
        return model_noise(out, x, levels[float(t)], kind)

    path = ddim_invert(latents, predict_noise, [sched.timesteps[i] for i in up], [alpha_bars[i] for i in up])
    sigma_space = in_sigma_space(sched)
    at = {i: x / math.sqrt(alpha_bars[i]) if sigma_space else x for i, x in zip(up, path, strict=True)}
    by_level = {float(sched.timesteps[i]): at[i] for i in up}
    steps = [by_level[float(t)] for t in after_t1[1:]] + [latents]
    return at[i1], at[i0], torch.stack(steps)


def model_noise(output: torch.Tensor, x: torch.Tensor, alpha_bar: float, kind: str) -> torch.Tensor:
    """The noise ε a model's output stands for at ᾱ, for its prediction type (ε, v or the clean sample)."""
    if kind == "epsilon":
        return output
    a, b = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    if kind == "v_prediction":  # v = √ᾱ·ε − √(1−ᾱ)·x0, x = √ᾱ·x0 + √(1−ᾱ)·ε
        return a * output + b * x
    if kind == "sample":
        return (x - a * output) / b
    raise UserError(f"unknown prediction type {kind!r} in the scheduler config")


def keep_on_path(path: torch.Tensor) -> AfterStep:
    """After each step, set frame 1 (in the chunk that holds it) to its given latent for that step.

    The frames attend to frame 1's keys and values along its own (inverted) trajectory, and frame 1
    ends exactly on its given clean latent. One such hook serves one `denoise` call: it walks `path`
    (steps, videos, C, h, w) once, a step each time it sees frame 1's chunk (once per step).
    """
    steps = iter(path)

    def after_step(latents: torch.Tensor, ids: Sequence[int], first: torch.Tensor) -> torch.Tensor:
        if ids[0] != 0:
            return latents
        stack = latents.view(path.shape[1], len(ids), *latents.shape[1:]).clone()
        stack[:, 0] = next(steps)
        return stack.flatten(0, 1)

    return after_step

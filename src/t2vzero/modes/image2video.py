"""Image-to-video: Text2Video-Zero with a given first frame.

The image is encoded with the VAE and inverted with DDIM up to t1 (`text2video.invert_first_frame`);
that inverted trajectory is frame 1's. Frames 2..N come from its latent at t0, moved by the motion
and jumped forward to t1, exactly as in text-to-video, and attend to frame 1 at every step. Frame 1
stays on its inverted trajectory while the others are denoised, so it ends on the image's own latent:
the VAE's reconstruction of the image. Everything after the anchor pass (chunking, frame subsets,
step-noise streams) is text-to-video's `render`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UserError
from ..generate import VideoOutput, encode_images, execution_device, vae_factor
from ..prompts import upcast_vae
from .text2video import text_to_video


def check_image(image: Any, factor: int) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image (or a PIL image) whose sides are multiples of the VAE factor."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        image = np.asarray(image.convert("RGB"))
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

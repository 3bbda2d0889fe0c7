"""Video-to-video (paper §4.2, §4.3): ControlNet-conditioned video and Instruct-Pix2Pix editing.

Both feed the same loop as text-to-video, with cross-frame attention; they differ only in their
`Guidance` hook (ControlNet residuals, or the input frames' latents as extra UNet channels) and in
the starting noise: one latent shared by every frame (the paper), so the conditions drive motion.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from ..attention import cross_frame_attention
from ..checks import COMPAT_MODES
from ..errors import UserError
from ..generate import (
    Guidance,
    VideoOutput,
    cfg_combine,
    check_generator,
    chunk_frame_ids,
    denoise_chunks,
    encode_prompts,
    frame_generators,
    step_kwargs,
)


def frames_to_tensor(frames: np.ndarray, device: Any, dtype: Any, normalize: bool) -> torch.Tensor:
    """(F, H, W, 3) uint8 → (F, 3, H, W) in [0, 1], or [-1, 1] with `normalize` (what the VAE takes)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    return (x * 2 - 1 if normalize else x).to(device=device, dtype=dtype)


def _run(components: dict[str, Any], guidance: Guidance, x_T: torch.Tensor, num_frames: int,
         num_inference_steps: int, chunk_size: int | None, generator: Any, eta: float, compat: str,
         models: Sequence[Any], progress: bool) -> VideoOutput:
    """Denoise every frame from x_T (chunk by chunk, frame 1 anchoring each) and decode."""
    unet, vae = components["unet"], components["vae"]
    scheduler = copy.deepcopy(components["scheduler"])
    scheduler.set_timesteps(num_inference_steps, device=unet.device)
    timesteps = scheduler.timesteps
    chunks = chunk_frame_ids(num_frames, chunk_size)
    per_frame = frame_generators(generator, 1, num_frames)[0] if compat == "t2vzero" else None
    bar = tqdm(total=len(timesteps) * len(chunks), disable=not progress, desc="denoising", unit="step", leave=False)
    with cross_frame_attention(*models) as processor:
        guidance.processor = processor
        # Fresh copies of the per-frame generators for each chunk: the anchor replays its own noise.
        frames = denoise_chunks(
            chunks, lambda ids: x_T[list(ids)] * scheduler.init_noise_sigma, timesteps, scheduler, guidance, vae,
            videos=1, num_frames=num_frames, progress=bar,
            step_kwargs_for=lambda ids: step_kwargs(
                scheduler, [copy.deepcopy(per_frame[k]) for k in ids] if per_frame is not None else generator, eta))
    bar.close()
    return VideoOutput(frames=frames)


def _start_noise(shape: tuple[int, ...], frames: int, generator: Any, device: Any, dtype: Any,
                 shared: bool) -> torch.Tensor:
    check_generator(generator, 1)  # one video per call
    if shared:  # the paper: one noise latent for every frame
        return randn_tensor((1, *shape), generator=generator, device=device, dtype=dtype).repeat(frames, 1, 1, 1)
    return randn_tensor((frames, *shape), generator=generator, device=device, dtype=dtype)


@torch.no_grad()
def control_video(components: dict[str, Any], prompt: str, conditions: Sequence[np.ndarray],
                  controlnets: Sequence[Any], *, scales: Sequence[float] | None = None,
                  negative_prompt: str = "", num_inference_steps: int = 20, guidance_scale: float = 9.0,
                  eta: float = 0.0, generator: Any = None, chunk_size: int | None = None,
                  compat: str = "t2vzero", progress: bool = True) -> VideoOutput:
    """ControlNet video (paper §4.2): one shared noise, cross-frame attention in UNet and ControlNets.

    `conditions` holds one (F, H, W, 3) uint8 video of condition maps per ControlNet.
    """
    if compat not in COMPAT_MODES:
        raise UserError(f"unknown compat mode {compat!r}; use one of {', '.join(COMPAT_MODES)}")
    if not controlnets or len(conditions) != len(controlnets):
        raise UserError(f"give one condition video per ControlNet ({len(controlnets)} ControlNets, "
                        f"{len(conditions)} conditions)")
    scales = list(scales) if scales is not None else [1.0] * len(controlnets)
    unet, vae = components["unet"], components["vae"]
    num_frames, height, width = conditions[0].shape[:3]
    for c in conditions[1:]:
        if c.shape[:3] != conditions[0].shape[:3]:
            raise UserError(f"condition videos differ in frames or size: {c.shape[:3]} vs {conditions[0].shape[:3]}")
    _check_controlnets(unet, controlnets)
    device, dtype = unet.device, unet.dtype
    embeds = _text_groups(components, [prompt], [negative_prompt], guidance_scale > 1.0, device, dtype)
    groups = embeds.shape[0]
    conds = [frames_to_tensor(c, device, dtype, normalize=False) for c in conditions]

    def hook(model_input: torch.Tensor, t: torch.Tensor, text: torch.Tensor, frame_ids: Sequence[int]):
        down, mid = None, None
        for net, scale, cond in zip(controlnets, scales, conds, strict=True):
            image = cond[list(frame_ids)].repeat(groups, 1, 1, 1)
            d, m = net(model_input, t, encoder_hidden_states=text, controlnet_cond=image, conditioning_scale=scale,
                       return_dict=False)
            down = d if down is None else [a + b for a, b in zip(down, d, strict=True)]
            mid = m if mid is None else mid + m
        return model_input, {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}

    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    shape = (unet.config.in_channels, height // vae_scale, width // vae_scale)
    x_T = _start_noise(shape, num_frames, generator, device, dtype, shared=True)
    guidance = Guidance(unet, embeds, cfg_combine(guidance_scale), hook=hook)
    return _run(components, guidance, x_T, num_frames, num_inference_steps, chunk_size, generator, eta, compat,
                [unet, *controlnets], progress)


@torch.no_grad()
def edit_video(components: dict[str, Any], instruction: str, frames: np.ndarray, *, negative_prompt: str = "",
               num_inference_steps: int = 50, guidance_scale: float = 7.5, image_guidance_scale: float = 1.5,
               eta: float = 0.0, generator: Any = None, chunk_size: int | None = None, compat: str = "t2vzero",
               progress: bool = True) -> VideoOutput:
    """Video Instruct-Pix2Pix (paper §4.3): edit (F, H, W, 3) uint8 frames by an instruction.

    The UNet takes 8 channels (noise latents + the input frame's latents); cross-frame attention runs
    in each of the three guidance groups (text+image, image only, neither). The default mode starts
    every frame from one shared noise; `compat="diffusers"` draws one per frame, as diffusers' recipe.
    """
    if compat not in COMPAT_MODES:
        raise UserError(f"unknown compat mode {compat!r}; use one of {', '.join(COMPAT_MODES)}")
    unet, vae = components["unet"], components["vae"]
    latent_channels = vae.config.latent_channels
    if unet.config.in_channels != 2 * latent_channels:
        raise UserError(f"the edit checkpoint's UNet takes {unet.config.in_channels} input channels, not "
                        f"{2 * latent_channels}; give an Instruct-Pix2Pix checkpoint")
    device, dtype = unet.device, unet.dtype
    guided = guidance_scale > 1.0 and image_guidance_scale >= 1.0
    text = _text_groups(components, [instruction], [negative_prompt], guided, device, dtype)
    # Instruct-Pix2Pix's groups are [text+image, image, neither]: text first, the empty prompt twice.
    embeds = torch.stack([text[-1], text[0], text[0]]) if guided else text
    images = frames_to_tensor(frames, device, vae.dtype, normalize=True)
    image_latents = torch.cat([vae.encode(images[i:i + 8]).latent_dist.mode() for i in range(0, len(images), 8)])
    image_latents = image_latents.to(dtype)

    def hook(model_input: torch.Tensor, t: torch.Tensor, text: torch.Tensor, frame_ids: Sequence[int]):
        lat = image_latents[list(frame_ids)]
        extra = torch.cat([lat, lat, torch.zeros_like(lat)]) if guided else lat
        return torch.cat([model_input, extra], dim=1), {}

    def combine(eps: torch.Tensor) -> torch.Tensor:
        if eps.shape[0] == 1:
            return eps[0]
        with_text, image_only, neither = eps
        return neither + guidance_scale * (with_text - image_only) + image_guidance_scale * (image_only - neither)

    num_frames = len(frames)
    x_T = _start_noise(tuple(image_latents.shape[1:]), num_frames, generator, device, dtype,
                       shared=compat == "t2vzero")
    guidance = Guidance(unet, embeds, combine, hook=hook)
    return _run(components, guidance, x_T, num_frames, num_inference_steps, chunk_size, generator, eta, compat,
                [unet], progress)


def _text_groups(components: dict[str, Any], prompts: list[str], negatives: list[str], guided: bool, device: Any,
                 dtype: Any) -> torch.Tensor:
    """(groups, videos, tokens, dim): [negative, text] with guidance, else [text]."""
    tok, enc = components["tokenizer"], components["text_encoder"]
    groups = [encode_prompts(tok, enc, prompts, device).to(dtype)]
    if guided:
        groups.insert(0, encode_prompts(tok, enc, negatives, device).to(dtype))
    return torch.stack(groups)


def _check_controlnets(unet: Any, controlnets: Sequence[Any]) -> None:
    """A ControlNet must match the base UNet's text width and block widths, or the residuals cannot add."""
    for i, net in enumerate(controlnets, 1):
        ours, theirs = unet.config, net.config
        if (theirs.cross_attention_dim != ours.cross_attention_dim
                or tuple(theirs.block_out_channels) != tuple(ours.block_out_channels)
                or theirs.in_channels != ours.in_channels):
            raise UserError(f"ControlNet {i} does not match the base model (cross-attention "
                            f"{theirs.cross_attention_dim} vs {ours.cross_attention_dim}, blocks "
                            f"{tuple(theirs.block_out_channels)} vs {tuple(ours.block_out_channels)}); "
                            "use a ControlNet made for this base model's family (SD 1.x or 2.x)")

"""Video-to-video (paper §4.2, §4.3): ControlNet-conditioned video and Instruct-Pix2Pix editing.

Both feed the same loop as text-to-video, with cross-frame attention; they differ only in their
`Guidance` hook (ControlNet residuals, or the input frames' latents as extra UNet channels) and in
the starting noise: one latent shared by every frame (the paper), so the conditions drive motion.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from ..attention import cross_frame_attention
from ..checks import check_finite, check_run_args
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
    vae_factor,
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


def check_frames(frames: Any, what: str, factor: int) -> np.ndarray:
    """A video as (F, H, W, 3) uint8 with F >= 1 and sides that are multiples of the VAE factor."""
    arr = np.asarray(frames)
    if arr.dtype != np.uint8:
        raise UserError(f"{what} must be uint8 RGB frames (0-255), not {arr.dtype}; convert with "
                        "(x * 255).round().astype(np.uint8)")
    if arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) == 0:
        raise UserError(f"{what} must be (frames, height, width, 3) RGB with at least one frame, got shape "
                        f"{arr.shape}")
    h, w = arr.shape[1:3]
    if h % factor or w % factor:
        raise UserError(f"{what} are {w}x{h}; sides must be multiples of {factor} (the VAE factor): resize them, "
                        "e.g. t2vzero.inputs.fit_resolution(frames, 512)")
    return arr


def _check_run_args(prompt: Any, negative_prompt: Any, num_inference_steps: int, chunk_size: int | None,
                    compat: str, scales: dict[str, float]) -> tuple[str, str]:
    """What text-to-video checks too: one prompt, steps, chunking, compat mode, finite guidance."""
    from .text2video import check_prompts

    if not isinstance(prompt, str):
        raise UserError(f"prompt must be one text for a video-to-video call, not {type(prompt).__name__}")
    prompts, negatives = check_prompts(prompt, negative_prompt)
    check_run_args(num_inference_steps=num_inference_steps, chunk_size=chunk_size, compat=compat)
    check_finite(scales)
    return prompts[0], negatives[0]


@torch.no_grad()
def control_video(components: dict[str, Any], prompt: str, conditions: Sequence[np.ndarray],
                  controlnets: Sequence[Any], *, scales: Sequence[float] | None = None,
                  negative_prompt: str = "", num_inference_steps: int = 20, guidance_scale: float = 9.0,
                  eta: float = 0.0, generator: Any = None, chunk_size: int | None = None,
                  compat: str = "t2vzero", progress: bool = True) -> VideoOutput:
    """ControlNet video (paper §4.2): one shared noise, cross-frame attention in UNet and ControlNets.

    `conditions` holds one (F, H, W, 3) uint8 video of condition maps per ControlNet.
    """
    prompt, negative_prompt = _check_run_args(prompt, negative_prompt, num_inference_steps, chunk_size, compat,
                                              {"guidance_scale": guidance_scale})
    if not isinstance(controlnets, list | tuple):
        controlnets = [controlnets]
    if isinstance(conditions, np.ndarray) and conditions.ndim == 4:
        conditions = [conditions]
    if not controlnets or len(conditions) != len(controlnets):
        raise UserError(f"give one condition video per ControlNet ({len(controlnets)} ControlNets, "
                        f"{len(conditions)} conditions)")
    scales = [1.0] * len(controlnets) if scales is None else \
        [float(scales)] * len(controlnets) if isinstance(scales, int | float) else [float(x) for x in scales]
    if len(scales) != len(controlnets) or not all(math.isfinite(x) for x in scales):
        raise UserError(f"give one finite scale per ControlNet ({len(controlnets)} ControlNets, scales {scales})")
    unet, vae = components["unet"], components["vae"]
    vae_scale = vae_factor(vae)
    conditions = [check_frames(c, f"condition video {i}", vae_scale) for i, c in enumerate(conditions, 1)]
    num_frames, height, width = conditions[0].shape[:3]
    for c in conditions[1:]:
        if c.shape[:3] != conditions[0].shape[:3]:
            raise UserError(f"condition videos differ in frames or size: {c.shape[:3]} vs {conditions[0].shape[:3]}")
    _check_controlnets(unet, controlnets, vae_scale)
    device, dtype = unet.device, unet.dtype
    embeds = _text_groups(components, [prompt], [negative_prompt], guidance_scale > 1.0, device, dtype)
    groups = embeds.shape[0]
    conds = [frames_to_tensor(c, device, dtype, normalize=False) for c in conditions]

    def hook(model_input: torch.Tensor, t: torch.Tensor, text: torch.Tensor, frame_ids: Sequence[int]):
        down, mid = None, None
        for net, scale, cond in zip(controlnets, scales, conds, strict=True):
            # Nets that pool their condition globally (e.g. shuffle) act in guess mode, as in diffusers:
            # they see only the text group and add nothing to the unconditional one, which would
            # otherwise cancel their effect under guidance.
            pooled = groups > 1 and bool(getattr(net.config, "global_pool_conditions", False))
            n = len(frame_ids)
            x, states = (model_input[-n:], text[-n:]) if pooled else (model_input, text)
            image = cond[list(frame_ids)].repeat(1 if pooled else groups, 1, 1, 1)
            d, m = net(x, t, encoder_hidden_states=states, controlnet_cond=image, conditioning_scale=scale,
                       guess_mode=pooled, return_dict=False)
            if pooled:
                d = [torch.cat([torch.zeros_like(r).repeat(groups - 1, 1, 1, 1), r]) for r in d]
                m = torch.cat([torch.zeros_like(m).repeat(groups - 1, 1, 1, 1), m])
            down = d if down is None else [a + b for a, b in zip(down, d, strict=True)]
            mid = m if mid is None else mid + m
        return model_input, {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}

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
    instruction, negative_prompt = _check_run_args(instruction, negative_prompt, num_inference_steps, chunk_size,
                                                   compat, {"guidance_scale": guidance_scale,
                                                            "image_guidance_scale": image_guidance_scale})
    unet, vae = components["unet"], components["vae"]
    frames = check_frames(frames, "frames", vae_factor(vae))
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


def _check_controlnets(unet: Any, controlnets: Sequence[Any], vae_scale: int) -> None:
    """A ControlNet must mirror the base UNet's encoder and see conditions at image resolution."""
    ours = unet.config
    for i, net in enumerate(controlnets, 1):
        theirs = net.config
        mirrored = ("cross_attention_dim", "block_out_channels", "layers_per_block", "down_block_types")
        diff = [f"{k} {_as_tuple(getattr(theirs, k, None))} vs {_as_tuple(getattr(ours, k, None))}" for k in mirrored
                if _as_tuple(getattr(theirs, k, None)) != _as_tuple(getattr(ours, k, None))]
        if theirs.in_channels != ours.in_channels:
            diff.append(f"latent channels {theirs.in_channels} vs {ours.in_channels}")
        if diff:
            raise UserError(f"ControlNet {i} does not match the base model ({'; '.join(diff)}); use a ControlNet "
                            "made for this base model's family (SD 1.x or 2.x)")
        if (net.dtype, net.device) != (unet.dtype, unet.device):
            raise UserError(f"ControlNet {i} is {net.dtype} on {net.device} but the base model {unet.dtype} on "
                            f"{unet.device}; load both with the same dtype and device")
        factor = 2 ** (len(getattr(theirs, "conditioning_embedding_out_channels", (0,) * 4)) - 1)
        if factor != vae_scale:
            raise UserError(f"ControlNet {i} downsamples its condition by {factor}, but the VAE by {vae_scale}")
        if getattr(theirs, "conditioning_channels", 3) != 3:
            raise UserError(f"ControlNet {i} takes {theirs.conditioning_channels}-channel conditions; this tool "
                            "gives it RGB condition maps")


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value

"""Zero-shot text-to-video (Text2Video-Zero, paper §3.3): motion dynamics + cross-frame attention.

1. Denoise frame 1's noise x_T with DDIM to x_t1, and further to x_t0.
2. Copy x_t0 for frames 2..N, translate copy k by the motion field δ·k, and jump forward from t0
   back to t1 with the DDPM forward process.
3. Denoise all frames from t1 to 0 together, every self-attention attending to frame 1.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from .. import generate
from ..attention import cross_frame_attention
from ..checks import check_finite, check_video_args
from ..errors import UserError
from ..generate import (
    Guidance,
    VideoOutput,
    cfg_combine,
    check_generator,
    chunk_frame_ids,
    denoise,
    denoise_chunks,
    encode_prompts,
    frame_generators,
    step_kwargs,
    vae_factor,
)
from ..motion import latent_shifts, reference_warp_latents, translate_latents
from ..schedule import alpha_bar_at, forward_jump, reject_unresumable, resume_at, t0_t1_indices
from ..smoothing import blend_backgrounds, latent_masks, saliency_masks


def check_prompts(prompt: Any, negative_prompt: Any) -> tuple[list[str], list[str]]:
    """Prompts as lists of text; one negative prompt for all or one per prompt."""
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list | tuple) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise UserError(f"prompt must be text or a non-empty list of texts, not {type(prompt).__name__}")
    negatives = [negative_prompt or ""] * len(prompts) if not isinstance(negative_prompt, list | tuple) \
        else list(negative_prompt)
    if len(negatives) != len(prompts) or not all(isinstance(n, str) for n in negatives):
        raise UserError(f"negative_prompt must be text or a list of {len(prompts)} texts (one per prompt)")
    return list(prompts), negatives


@torch.no_grad()
def text_to_video(components: dict[str, Any], prompt: str | list[str], *, video_length: int = 8,
                  height: int = 512, width: int = 512, num_inference_steps: int = 50, guidance_scale: float = 7.5,
                  negative_prompt: str | list[str] | None = None, num_videos_per_prompt: int = 1, eta: float = 0.0,
                  generator: torch.Generator | list[torch.Generator] | None = None,
                  motion: tuple[float, float] = (12.0, 12.0), t0: int = 881, t1: int = 941,
                  chunk_size: int | None = None, cross_frame: bool = True, compat: str = "t2vzero",
                  background_smoothing: float | None = None,
                  foreground_masks: Callable[[np.ndarray], np.ndarray] | None = None,
                  progress: bool = True) -> VideoOutput:
    """Generate `num_videos_per_prompt` videos of `video_length` frames for each prompt.

    `components` holds unet, vae, text_encoder, tokenizer and scheduler (diffusers objects).
    `compat="diffusers"` reproduces diffusers' deprecated TextToVideoZeroPipeline (its warp grid and
    its forward-noise product); the default mode uses the exact ᾱ(t1)/ᾱ(t0) and pixel-centred shifts.
    `background_smoothing` = α (paper: 0.6) runs the paper's optional smoothing: a second pass from t1
    in which each frame's background moves towards frame 1's; `foreground_masks` maps (F, H, W, 3)
    uint8 frames to (F, H, W) foreground masks (default: `t2vzero.smoothing.saliency_masks`).
    """
    prompts, negatives = check_prompts(prompt, negative_prompt)
    check_video_args(video_length=video_length, height=height, width=width, num_inference_steps=num_inference_steps,
                     chunk_size=chunk_size, num_videos_per_prompt=num_videos_per_prompt, compat=compat)
    video_length = int(video_length)
    check_finite({"guidance_scale": guidance_scale, "eta": eta, "motion dx": motion[0], "motion dy": motion[1]})
    if background_smoothing is not None:
        if compat != "t2vzero" or not 0.0 <= float(background_smoothing) <= 1.0:
            raise UserError(f"background smoothing needs 0 <= alpha <= 1 (paper: 0.6) and compat='t2vzero', got "
                            f"alpha={background_smoothing}, compat={compat!r}")
    unet, vae, scheduler = components["unet"], components["vae"], copy.deepcopy(components["scheduler"])
    device, dtype = unet.device, unet.dtype

    # PNDM's Runge-Kutta warm-up cannot restart at t1, nor (compat mode) carry frame 1's state to more rows.
    reject_unresumable(scheduler)
    if compat == "diffusers" and isinstance(generator, list | tuple) and len(generator) > 1:
        raise UserError("compat='diffusers' takes one generator, as the reference does; pass one, or use the "
                        "default mode for a generator per video")
    scheduler.set_timesteps(num_inference_steps, device=device)
    timesteps = scheduler.timesteps
    i1, i0 = t0_t1_indices(timesteps, t0, t1, scheduler.config.num_train_timesteps, getattr(scheduler, "order", 1))
    jump = Jump(int(timesteps[i0]), int(timesteps[i1]), (alpha_bar_at(scheduler, i0), alpha_bar_at(scheduler, i1)))
    # Frames 2..N enter at t1 with no history of their own, so they start from a fresh scheduler there
    # (as img2img does): multistep schedulers must not reuse frame 1's stored model outputs. The
    # reference (compat mode) carries frame 1's scheduler on, so that mode does too.
    at_t1, after_t1 = resume_at(scheduler, i1) if compat == "t2vzero" else (None, timesteps[i1:])

    n = num_videos_per_prompt
    text = encode_prompts(components["tokenizer"], components["text_encoder"], prompts, device).to(dtype)
    groups = [text]
    if guidance_scale > 1.0:
        groups.insert(0, encode_prompts(components["tokenizer"], components["text_encoder"], negatives,
                                        device).to(dtype))
    embeds = torch.stack(groups).repeat_interleave(n, dim=1)  # (groups, videos, tokens, dim)
    videos = embeds.shape[1]
    check_generator(generator, videos)

    vae_scale = vae_factor(vae)
    if height % vae_scale or width % vae_scale:
        raise UserError(f"size {width}x{height} must be a multiple of {vae_scale}, this VAE's downsampling factor")
    latent_shape = (unet.config.in_channels, height // vae_scale, width // vae_scale)
    # Noise is drawn once for the whole video, in frame order: chunking cannot change it, and with one
    # video the draws match the reference (x_T first, then the forward noise of frames 2..N).
    x_T = randn_tensor((videos, *latent_shape), generator=generator, device=device, dtype=dtype)
    x_T = x_T * scheduler.init_noise_sigma
    # Step noise (eta > 0, ancestral samplers) per (video, frame) stream, so chunking cannot change it;
    # stream 0 is frame 1's before t1, stream k + 1 frame k's after. Seeded before the forward noise is
    # drawn (without advancing the generator), so frame 1 does not depend on the number of frames.
    # Compat mode passes the generator on, as the reference does.
    streams = frame_generators(generator, videos, video_length + 1) if compat == "t2vzero" else None
    eps = randn_tensor((videos, video_length - 1, *latent_shape), generator=generator, device=device,
                       dtype=dtype)

    def step_args(ids: Sequence[int], *, before_t1: bool = False) -> dict[str, Any]:
        if streams is None:
            return step_kwargs(scheduler, generator, eta)
        picked = [per[0] for per in streams] if before_t1 else [per[k + 1] for per in streams for k in ids]
        return step_kwargs(scheduler, [copy.deepcopy(g) for g in picked], eta)

    chunks = chunk_frame_ids(video_length, chunk_size)
    if video_length == 1:  # a still image: nothing to smooth, and frame 1 simply goes on as text-to-image
        background_smoothing = None
    passes = 1 if background_smoothing is None else 2
    total = len(timesteps) if video_length == 1 else i0 + len(after_t1) * len(chunks) * passes
    bar = tqdm(total=total, disable=not progress, desc="denoising", unit="step", leave=False)
    with cross_frame_attention(unet, enabled=cross_frame) as processor:
        predict = Guidance(unet, embeds, cfg_combine(guidance_scale), processor)
        # Frame 1's two runs share one set of generators: its step noise continues across t1.
        before = step_args([0], before_t1=True)
        x_t1 = denoise(x_T, timesteps[:i1], scheduler, predict, [0], extra_step_kwargs=before, progress=bar)
        if at_t1 is None:
            at_t1 = copy.deepcopy(scheduler)
        x_t0 = denoise(x_t1, timesteps[i1:i0], scheduler, predict, [0], extra_step_kwargs=before, progress=bar)

        def all_frames(after_step_for: Any = None) -> np.ndarray:
            return denoise_chunks(
                chunks, lambda ids: latents_at_t1(x_t1, x_t0, eps, ids, motion, (width, height), scheduler, jump,
                                                  compat).flatten(0, 1),
                after_t1, at_t1, predict, vae, videos=videos, num_frames=video_length,
                step_kwargs_for=step_args, after_step_for=after_step_for, progress=bar)

        if video_length == 1:  # text-to-image: frame 1's own scheduler (and its history) continues to the end
            x_0 = denoise(x_t0, timesteps[i0:], scheduler, predict, [0], extra_step_kwargs=before, progress=bar)
            bar.close()
            return VideoOutput(frames=generate.decode_latents(vae, x_0)[:, None])
        frames = all_frames()
        if background_smoothing is not None:
            # The second pass replays the first exactly (same noise, same frame 1) but for the blending.
            masks = _foreground(frames, foreground_masks or saliency_masks, latent_shape[1:])
            frames = all_frames(lambda ids: _smoother(ids, masks, motion, (width, height), videos,
                                                      float(background_smoothing)))
    bar.close()
    return VideoOutput(frames=frames)


def _foreground(frames: np.ndarray, mask_fn: Callable[[np.ndarray], np.ndarray],
                latent_size: tuple[int, int]) -> torch.Tensor:
    """(videos, F, 1, h, w) latent foreground masks of decoded (videos, F, H, W, 3) frames."""
    per_video = []
    for video in VideoOutput(frames=frames).uint8():
        masks = np.asarray(mask_fn(video))
        if masks.shape != video.shape[:3]:
            raise UserError(f"the foreground mask function returned shape {masks.shape}, not {video.shape[:3]}")
        per_video.append(latent_masks(masks, latent_size))
    return torch.stack(per_video)


def _smoother(ids: Sequence[int], masks: torch.Tensor, motion: tuple[float, float], size: tuple[int, int],
              videos: int, alpha: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-step background blend for one chunk (frame 1 leads every chunk)."""
    chunk_masks = masks[:, list(ids)]

    def after_step(latents: torch.Tensor) -> torch.Tensor:
        stack = latents.view(videos, len(ids), *latents.shape[1:])
        latent_size = (stack.shape[-1], stack.shape[-2])
        shifts = latent_shifts(ids, motion, size, latent_size)
        blended = [blend_backgrounds(stack[v], stack[v, 0], chunk_masks[v], shifts, alpha) for v in range(videos)]
        return torch.stack(blended).flatten(0, 1)

    return after_step


@dataclass(frozen=True)
class Jump:
    """The DDPM forward jump t0 -> t1: integer timesteps (the reference's product) and ᾱ at both."""

    t0: int
    t1: int
    alpha_bars: tuple[float, float]


def latents_at_t1(x_t1: torch.Tensor, x_t0: torch.Tensor, eps: torch.Tensor, ids: Sequence[int],
                  motion: tuple[float, float], size: tuple[int, int], scheduler: Any, jump: Jump,
                  compat: str) -> torch.Tensor:
    """(videos, len(ids), C, h, w) latents at t1: frame 1's own, the others warped and re-noised."""
    others = [k for k in ids if k != 0]
    stacked = [x_t1[:, None]] if ids[0] == 0 else []
    if others:
        videos = x_t0.shape[0]
        copies = x_t0[:, None].expand(-1, len(others), -1, -1, -1).flatten(0, 1)
        if compat == "diffusers":
            warped = torch.cat([reference_warp_latents(copies[v * len(others):(v + 1) * len(others)], others, motion)
                                for v in range(videos)])
        else:
            latent_size = (x_t0.shape[-1], x_t0.shape[-2])
            shifts = latent_shifts(others, motion, size, latent_size)
            warped = translate_latents(copies, shifts.repeat(videos, 1))
        noise = eps[:, [k - 1 for k in others]].flatten(0, 1)
        # Schedulers whose initial noise is scaled beyond 1 keep latents in sigma space (Euler, LMS...).
        sigma_space = float(getattr(scheduler, "init_noise_sigma", 1.0)) > 1.0 + 1e-6
        jumped = forward_jump(warped, noise, scheduler.alphas_cumprod, jump.t0, jump.t1,
                              reference=compat == "diffusers", sigma_space=sigma_space, alpha_bars=jump.alpha_bars)
        stacked.append(jumped.view(videos, len(others), *x_t0.shape[1:]))
    return torch.cat(stacked, dim=1)

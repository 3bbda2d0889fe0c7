"""Zero-shot text-to-video (Text2Video-Zero, paper §3.3): motion dynamics + cross-frame attention.

Two separable phases:

1. `anchor_pass`: frame 1's noise x_T is denoised to x_t1 and further to x_t0; the forward noise of
   every frame is drawn. The result, an `Anchor`, is small (one latent per video and stage).
2. `render`: any subset of frames from an `Anchor`. Frame k > 1 starts from x_t0 moved by the motion
   field δ·k and jumped forward from t0 back to t1 (DDPM); all frames are denoised from t1 together,
   every self-attention attending to frame 1. Rendering all frames at once, in chunks, or in
   separate calls for disjoint subsets (separate workers) gives the same frames.

Where the default mode and diffusers' reference differ is chosen once, as a `Recipe`.
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

from ..attention import cross_frame_attention
from ..checks import check_finite, check_video_args
from ..deepcache import check_interval
from ..defaults import TEXT_TO_VIDEO as _D
from ..errors import UserError
from ..generate import (
    AfterStep,
    Chunk,
    Conditioning,
    Guidance,
    VideoOutput,
    cfg_combine,
    check_generator,
    decode_video,
    denoise,
    execution_device,
    gather,
    generators,
    split_frames,
    step_kwargs,
    stream_seeds,
    vae_factor,
)
from ..motion import (
    Motion,
    Pan,
    as_motion,
    check_motion,
    is_translation,
    reference_offsets,
    reference_warp_latents,
    reference_warp_offsets,
    warp_latents,
)
from ..prompts import encode_prompt, is_sdxl, upcast_vae, with_time_ids
from ..schedule import (
    alpha_bar_at,
    forward_jump,
    jump_steps,
    reject_unresumable,
    resume_at,
)
from ..schedulers import make_scheduler, set_timesteps
from ..smoothing import blend_backgrounds, latent_masks, saliency_masks


@dataclass(frozen=True)
class Recipe:
    """The choices in which t2vzero's default mode and diffusers' reference (`compat="diffusers"`) differ."""

    name: str
    reference_warp: bool  # the reference's 512-grid flow sampled nearest, vs a whole-latent-pixel shift
    reference_jump: bool  # Π alphas[t0 .. t1−1] (one step off), vs the exact ᾱ(t1)/ᾱ(t0)
    restart_at_t1: bool  # every frame restarts at t1 with a fresh scheduler, vs frame 1's scheduler carried on
    noise_streams: bool  # step noise per (video, frame) stream, vs the caller's one generator
    shared_edit_noise: bool  # editing starts every frame from one noise latent, vs one per frame

    def warp(self, latents: torch.Tensor, frame_ids: Sequence[int], motion: Motion,
             size: tuple[int, int]) -> torch.Tensor:
        """Move each of one video's (F, C, h, w) copies of x_t0 along the camera path to its frame id."""
        if self.reference_warp:
            if isinstance(motion, Pan):
                return reference_warp_latents(latents, frame_ids, (motion.dx, motion.dy))
            return reference_warp_offsets(latents, reference_offsets(motion, frame_ids, size))
        return warp_latents(latents, motion, frame_ids, size)

    def check_motion(self, motion: Motion, num_frames: int, size: tuple[int, int]) -> None:
        """The reference warps by translations only: other paths are refused rather than approximated."""
        check_motion(motion, num_frames, size)
        if self.reference_warp and not is_translation(motion, range(num_frames), size):
            raise UserError(f"compat={self.name!r} reproduces the reference's translation only; this camera path "
                            "zooms, turns or flows: use the default mode (compat='t2vzero') or a pan")


RECIPES = {
    "t2vzero": Recipe("t2vzero", reference_warp=False, reference_jump=False, restart_at_t1=True, noise_streams=True,
                      shared_edit_noise=True),
    "diffusers": Recipe("diffusers", reference_warp=True, reference_jump=True, restart_at_t1=False,
                        noise_streams=False, shared_edit_noise=False),
}


@dataclass(frozen=True)
class Jump:
    """The DDPM forward jump t0 -> t1: integer timesteps (the reference's product) and ᾱ at both."""

    t0: int
    t1: int
    alpha_bars: tuple[float, float]


@dataclass
class Anchor:
    """What the anchor pass hands to rendering: frame 1's trajectory and everything frames 2..N need.

    `x_t1`, `x_t0` are (videos, C, h, w); `forward_noise` (videos, N−1, C, h, w) is frame k's noise for
    the jump at index k−1; `seeds` (videos × N+1) seed the step-noise streams (stream k+1 is frame k's
    after t1), or None when the recipe passes the caller's `generator` on. `first_frame_path` (steps
    after t1, videos, C, h, w), for a given first frame (image-to-video), holds frame 1's latent after
    each step from t1 on, the last one clean: rendering keeps frame 1 on it instead of denoising it.
    """

    cond: Conditioning
    guidance_scale: float
    guidance_rescale: float
    num_frames: int
    size: tuple[int, int]  # (width, height) in pixels
    motion: Motion  # the camera path (t2vzero.motion); the paper's δ is a `Pan`
    recipe: Recipe
    cross_frame: bool
    x_t1: torch.Tensor
    x_t0: torch.Tensor
    forward_noise: torch.Tensor
    jump: Jump
    scheduler_at_t1: Any  # the scheduler every frame continues with from t1 (timesteps set)
    timesteps_after_t1: torch.Tensor
    scheduler_at_t0: Any  # frame 1's own scheduler after t0, for a one-frame video (text-to-image)
    timesteps_after_t0: torch.Tensor
    eta: float | None
    seeds: list[list[int]] | None
    generator: Any = None
    frame1_generators_at_t0: list[torch.Generator] | None = None
    token_merging: float = 0.0
    cache_interval: int = 1
    first_frame_path: torch.Tensor | None = None

    @property
    def videos(self) -> int:
        return self.x_t0.shape[0]


def check_token_merging(ratio: float | None) -> float:
    """A token-merging ratio in (0, 1), or None/0 for none."""
    if ratio is None or ratio == 0:
        return 0.0
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0.0 < float(ratio) < 1.0:
        raise UserError(f"token merging must be a ratio between 0 and 1 (exclusive), got {ratio}; e.g. --tome 0.5")
    return float(ratio)


def check_second_prompts(components: dict[str, Any], prompt_2: Any, negative_prompt_2: Any,
                         count: int) -> tuple[list[str] | None, list[str] | None]:
    """SDXL's texts for its second encoder: None (the first texts), text, or one per prompt; refused on SD."""
    if prompt_2 is None and negative_prompt_2 is None:
        return None, None
    if not is_sdxl(components):
        raise UserError("prompt_2/negative_prompt_2 (--prompt-2/--negative-2) are for SDXL's second text encoder; "
                        "this model is SD 1.x/2.x with one: drop them")
    out = []
    for name, value in (("prompt_2", prompt_2), ("negative_prompt_2", negative_prompt_2)):
        if value is None:
            out.append(None)
            continue
        texts = [value] * count if isinstance(value, str) else value
        if not isinstance(texts, list | tuple) or len(texts) != count or not all(isinstance(t, str) for t in texts):
            raise UserError(f"{name} must be text or a list of {count} texts (one per prompt)")
        out.append(list(texts))
    return out[0], out[1]


def check_prompts(prompt: Any, negative_prompt: Any) -> tuple[list[str], list[str]]:
    """Prompts as lists of text; one negative prompt for all or one per prompt."""
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list | tuple) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise UserError(f"prompt must be text or a non-empty list of texts, not {type(prompt).__name__}")
    negatives = [negative_prompt or ""] * len(prompts) if not isinstance(negative_prompt, list | tuple) \
        else list(negative_prompt)
    if len(negatives) != len(prompts) or not all(isinstance(n, str) for n in negatives):
        raise UserError(f"negative_prompt must be text or a list of {len(prompts)} texts (one per prompt)")
    if any(0xD800 <= ord(c) <= 0xDFFF for text in (*prompts, *negatives) for c in text):  # the tokenizer's TypeError
        raise UserError("a prompt holds a lone surrogate (half of a broken UTF-16 pair or undecodable bytes), which is "
                        "not text; pass the words as a proper str")
    return list(prompts), negatives


def _check_anchor_args(*, video_length: Any, height: int, width: int, num_inference_steps: int,
                       num_videos_per_prompt: int, compat: str, generator: Any, numbers: dict[str, Any]) -> None:
    """What `anchor_pass` refuses before any work: sizes, counts, the compat mode, NaN/inf numbers."""
    check_video_args(video_length=video_length, height=height, width=width, num_inference_steps=num_inference_steps,
                     chunk_size=None, num_videos_per_prompt=num_videos_per_prompt, compat=compat)
    check_finite(numbers)
    rescale = numbers["guidance_rescale"]
    if not 0.0 <= rescale <= 1.0:
        raise UserError(f"guidance rescale must be between 0 and 1 (0: off; 0.7 is common), got {rescale}")
    if not RECIPES[compat].noise_streams and isinstance(generator, list | tuple) and len(generator) > 1:
        raise UserError("compat='diffusers' takes one generator, as the reference does; pass one, or use the "
                        "default mode for a generator per video")


@torch.no_grad()
def anchor_pass(components: dict[str, Any], prompt: str | list[str], *, video_length: int = _D["video_length"],
                height: int = 512, width: int = 512, num_inference_steps: int = _D["num_inference_steps"],
                guidance_scale: float = _D["guidance_scale"],
                negative_prompt: str | list[str] | None = None, num_videos_per_prompt: int = 1,
                eta: float | None = None, generator: torch.Generator | list[torch.Generator] | None = None,
                motion: Any = _D["motion"], t0: int = _D["t0"], t1: int = _D["t1"],
                cross_frame: bool = True, compat: str = "t2vzero", scheduler: str | None = None,
                timestep_spacing: str | None = None, token_merging: float | None = None,
                cache_interval: int | None = None, prompt_2: str | list[str] | None = None,
                negative_prompt_2: str | list[str] | None = None, guidance_rescale: float = 0.0,
                original_size: tuple[int, int] | None = None, crops_coords_top_left: tuple[int, int] = (0, 0),
                target_size: tuple[int, int] | None = None, first_frame_latents: torch.Tensor | None = None,
                progress: Any = None) -> Anchor:
    """Phase 1: check the arguments, encode the prompts, draw the noise, denoise frame 1 to t1 and t0.

    `first_frame_latents` (1 or videos, C, h, w), clean latents of a given first frame (image-to-video;
    see `t2vzero.modes.image2video`), replace frame 1's denoising: its trajectory is their DDIM
    inversion (`invert_first_frame`), and rendering keeps frame 1 on it.

    `scheduler`/`timestep_spacing` pick another sampler on the model's noise schedule (see
    `t2vzero.schedulers`). `token_merging` in (0, 1) merges that share of frame 1's keys/values in the
    highest-resolution self-attention layers (ToMe; faster, approximate); `cache_interval` N > 1 runs
    the whole UNet every N-th step and only its shallow branch between (DeepCache; approximate).
    SDXL: `prompt_2`/`negative_prompt_2` for the second text encoder (default: the same texts), the
    micro-conditioning `original_size`, `crops_coords_top_left`, `target_size` (default: the output size),
    and `guidance_rescale` (any architecture). `progress` is an optional tqdm-like bar, advanced once per step.
    """
    prompts, negatives = check_prompts(prompt, negative_prompt)
    prompts_2, negatives_2 = check_second_prompts(components, prompt_2, negative_prompt_2, len(prompts))
    _check_anchor_args(video_length=video_length, height=height, width=width,
                       num_inference_steps=num_inference_steps, num_videos_per_prompt=num_videos_per_prompt,
                       compat=compat, generator=generator, numbers={
                           "guidance_scale": guidance_scale, "eta": eta, "guidance_rescale": guidance_rescale})
    video_length = int(video_length)
    recipe = RECIPES[compat]
    motion = as_motion(motion)
    recipe.check_motion(motion, video_length, (width, height))
    token_merging = check_token_merging(token_merging)
    cache_interval = check_interval(cache_interval)
    unet, vae = components["unet"], components["vae"]
    sched = copy.deepcopy(make_scheduler(components["scheduler"], scheduler, timestep_spacing))
    device, dtype = execution_device(unet), unet.dtype
    # PNDM's Runge-Kutta warm-up cannot restart at t1, nor (compat mode) carry frame 1's state to more rows.
    reject_unresumable(sched)
    set_timesteps(sched, num_inference_steps, device)
    timesteps = sched.timesteps
    steps = jump_steps(timesteps, t0, t1, sched.config.num_train_timesteps, getattr(sched, "order", 1))
    i1, i0 = steps.t1_index, steps.t0_index
    jump = Jump(int(timesteps[i0]), int(timesteps[i1]), (alpha_bar_at(sched, i0), alpha_bar_at(sched, i1)))
    # Frames enter at t1 with no history of their own, so they start from a fresh scheduler there (as
    # img2img does): multistep schedulers must not reuse frame 1's stored model outputs. The reference
    # carries frame 1's scheduler on.
    fresh, after_t1 = resume_at(sched, i1) if recipe.restart_at_t1 else (None, timesteps[i1:])

    cond = encode_prompt(components, prompts, negatives, guidance_scale=guidance_scale,
                         videos_per_prompt=num_videos_per_prompt, prompts_2=prompts_2, negatives_2=negatives_2)
    if is_sdxl(components):
        cond = with_time_ids(cond, original_size or (height, width), crops_coords_top_left,
                             target_size or (height, width))
    videos = cond.videos
    check_generator(generator, videos)
    factor = vae_factor(vae)
    if height % factor or width % factor:
        raise UserError(f"size {width}x{height} must be a multiple of {factor}, this VAE's downsampling factor")
    latent_shape = (unet.config.in_channels, height // factor, width // factor)
    if first_frame_latents is not None:
        first_frame_latents = _check_first_frame(first_frame_latents, latent_shape, videos, recipe)
    # Noise is drawn once for the whole video, in frame order: chunking cannot change it, and with one
    # video the draws match the reference (x_T first, then the forward noise of frames 2..N).
    x_T = randn_tensor((videos, *latent_shape), generator=generator, device=device, dtype=dtype)
    x_T = x_T * sched.init_noise_sigma
    # Step-noise seeds are read before the forward noise (without advancing the generator), so
    # frame 1 does not depend on the number of frames.
    seeds = stream_seeds(generator, videos, video_length + 1) if recipe.noise_streams else None
    forward_noise = randn_tensor((videos, video_length - 1, *latent_shape), generator=generator, device=device,
                                 dtype=dtype)

    # Frame 1's two stretches share one set of generators: its step noise continues across t1.
    frame1 = generators([per[0] for per in seeds]) if seeds is not None else generator
    predict = Guidance(unet, cond, cfg_combine(guidance_scale, guidance_rescale), cross_frame=cross_frame,
                       token_merging=token_merging, cache_interval=cache_interval)
    start = Chunk([0], x_T, sched, step_kwargs(sched, frame1, eta))
    path = None
    if first_frame_latents is not None:
        from .image2video import invert_first_frame  # (image2video builds on this module)

        x_t1, x_t0, path = invert_first_frame(unet, cond, sched, first_frame_latents.to(device, dtype), i1, i0,
                                              after_t1, progress=progress)
    else:
        with cross_frame_attention(unet):
            (at_t1,) = denoise([start], timesteps[:i1], predict, progress=progress)
            if fresh is None:
                fresh = copy.deepcopy(sched)
            (at_t0,) = denoise([at_t1], timesteps[i1:i0], predict, progress=progress)
        x_t1, x_t0 = at_t1.latents, at_t0.latents
    return Anchor(cond=cond, guidance_scale=guidance_scale, guidance_rescale=guidance_rescale, num_frames=video_length,
                  size=(width, height),
                  motion=motion, recipe=recipe, cross_frame=cross_frame,
                  x_t1=x_t1, x_t0=x_t0, forward_noise=forward_noise, jump=jump,
                  scheduler_at_t1=fresh, timesteps_after_t1=after_t1, scheduler_at_t0=copy.deepcopy(sched),
                  timesteps_after_t0=timesteps[i0:], eta=eta, seeds=seeds,
                  generator=None if recipe.noise_streams else generator,
                  frame1_generators_at_t0=copy.deepcopy(frame1) if seeds is not None else None,
                  token_merging=token_merging, cache_interval=cache_interval, first_frame_path=path)


def _check_first_frame(latents: Any, latent_shape: tuple[int, ...], videos: int, recipe: Recipe) -> torch.Tensor:
    """Given first-frame latents: (1 or videos, C, h, w) for this size and UNet, in the default mode."""
    if not recipe.restart_at_t1:
        raise UserError("a given first frame (image-to-video) has no diffusers reference; drop compat='diffusers'")
    if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or tuple(latents.shape[1:]) != latent_shape \
            or latents.shape[0] not in (1, videos):
        got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise UserError(f"first-frame latents must be (1 or {videos}, {', '.join(map(str, latent_shape))}) for this "
                        f"size and UNet, got {got}")
    return latents.expand(videos, *latent_shape)


def render_steps(anchor: Anchor) -> int:
    """Denoising steps `render` takes (for a progress bar)."""
    if anchor.num_frames == 1:
        return 0 if anchor.first_frame_path is not None else len(anchor.timesteps_after_t0)
    return len(anchor.timesteps_after_t1)


@torch.no_grad()
def render_latents(components: dict[str, Any], anchor: Anchor, frame_ids: Sequence[int], *,
                   chunk_size: int | None = None, after_step: Sequence[AfterStep] = (),
                   progress: Any = None) -> torch.Tensor:
    """Phase 2: (videos, len(frame_ids), C, h, w) final latents of `frame_ids` (any subset, any order).

    Frames are denoised from t1 in chunks of at most `chunk_size`, advanced in lockstep so that frame 1
    runs once per step; frame 1 is computed (not returned) when it is not asked for, since every frame
    attends to it. A one-frame video continues frame 1's own scheduler: the scheduler's text-to-image.
    """
    ids = [int(k) for k in frame_ids]
    if not ids or any(not 0 <= k < anchor.num_frames for k in ids) or len(set(ids)) != len(ids):
        raise UserError(f"frame ids must be distinct, within 0..{anchor.num_frames - 1}, and at least one; got {ids}")
    if chunk_size is not None and chunk_size < 2:
        raise UserError(f"chunk size must be at least 2 (frame 1 plus one more), got {chunk_size}")
    unet = components["unet"]
    predict = Guidance(unet, anchor.cond, cfg_combine(anchor.guidance_scale, anchor.guidance_rescale),
                       cross_frame=anchor.cross_frame,
                       token_merging=anchor.token_merging, cache_interval=anchor.cache_interval)
    if anchor.num_frames == 1 and anchor.first_frame_path is not None:
        return anchor.first_frame_path[-1][:, None]  # a still image: the given one
    if anchor.num_frames == 1:
        sched = copy.deepcopy(anchor.scheduler_at_t0)
        gens = copy.deepcopy(anchor.frame1_generators_at_t0) if anchor.seeds is not None else anchor.generator
        with cross_frame_attention(unet):
            (done,) = denoise([Chunk([0], anchor.x_t0, sched, step_kwargs(sched, gens, anchor.eta))],
                              anchor.timesteps_after_t0, predict, progress=progress)
        return done.latents[:, None]
    needed = set(ids) | ({0} if anchor.cross_frame or after_step else set())
    chunks = []
    for part in split_frames(sorted(needed), chunk_size):
        sched = copy.deepcopy(anchor.scheduler_at_t1)
        if anchor.seeds is not None:
            gens = generators([per[k + 1] for per in anchor.seeds for k in part])
        else:
            gens = anchor.generator
        chunks.append(Chunk(part, latents_at_t1(anchor, part).flatten(0, 1), sched,
                            step_kwargs(sched, gens, anchor.eta)))
    if anchor.first_frame_path is not None:
        from .image2video import keep_on_path

        after_step = [keep_on_path(anchor.first_frame_path), *after_step]
    with cross_frame_attention(unet):
        done = denoise(chunks, anchor.timesteps_after_t1, predict, after_step=after_step, progress=progress)
    return gather(done, ids, anchor.videos)


@torch.no_grad()
def render(components: dict[str, Any], anchor: Anchor, frame_ids: Sequence[int] | None = None, *,
           chunk_size: int | None = None, after_step: Sequence[AfterStep] = (), progress: Any = None) -> np.ndarray:
    """Decoded (videos, len(frame_ids), H, W, 3) float32 frames in [0, 1]; all frames by default."""
    ids = list(range(anchor.num_frames)) if frame_ids is None else list(frame_ids)
    latents = render_latents(components, anchor, ids, chunk_size=chunk_size, after_step=after_step,
                             progress=progress)
    return decode_video(components["vae"], latents, force_upcast=upcast_vae(components))


def latents_at_t1(anchor: Anchor, frame_ids: Sequence[int]) -> torch.Tensor:
    """(videos, len(ids), C, h, w) latents at t1: frame 1's own, the others moved and re-noised."""
    others = [k for k in frame_ids if k != 0]
    stacked = [anchor.x_t1[:, None]] if frame_ids[0] == 0 else []
    if others:
        sched = anchor.scheduler_at_t1
        warped = torch.stack([anchor.recipe.warp(x[None].expand(len(others), -1, -1, -1), others, anchor.motion,
                                                 anchor.size) for x in anchor.x_t0])
        noise = anchor.forward_noise[:, [k - 1 for k in others]]
        # Schedulers whose initial noise is scaled beyond 1 keep latents in sigma space (Euler, LMS...).
        sigma_space = float(getattr(sched, "init_noise_sigma", 1.0)) > 1.0 + 1e-6
        jumped = forward_jump(warped.flatten(0, 1), noise.flatten(0, 1), sched.alphas_cumprod, anchor.jump.t0,
                              anchor.jump.t1, reference=anchor.recipe.reference_jump, sigma_space=sigma_space,
                              alpha_bars=anchor.jump.alpha_bars)
        stacked.append(jumped.view(anchor.videos, len(others), *anchor.x_t0.shape[1:]))
    return torch.cat(stacked, dim=1)


@torch.no_grad()
def text_to_video(components: dict[str, Any], prompt: str | list[str], *, chunk_size: int | None = None,
                  background_smoothing: float | None = None,
                  foreground_masks: Callable[[np.ndarray], np.ndarray] | None = None,
                  progress: bool = True, **anchor_args: Any) -> VideoOutput:
    """Generate `num_videos_per_prompt` videos of `video_length` frames for each prompt.

    `components` holds unet, vae, text_encoder, tokenizer and scheduler (diffusers objects);
    `anchor_args` are `anchor_pass`'s. `compat="diffusers"` reproduces diffusers' deprecated
    TextToVideoZeroPipeline (see `RECIPES`). `background_smoothing` = α (paper: 0.6) runs the paper's
    optional smoothing: a second pass from t1 in which each frame's background moves towards frame
    1's; `foreground_masks` maps (F, H, W, 3) uint8 frames to (F, H, W) foreground masks (default:
    `t2vzero.smoothing.saliency_masks`).
    """
    compat = anchor_args.get("compat", "t2vzero")
    if chunk_size is not None and chunk_size < 2:
        raise UserError(f"chunk size must be at least 2 (frame 1 plus one more), got {chunk_size}")
    if background_smoothing is not None:
        if anchor_args.get("first_frame_latents") is not None:
            raise UserError("background smoothing is not available with a given first frame (image-to-video)")
        if compat != "t2vzero" or not 0.0 <= float(background_smoothing) <= 1.0:
            raise UserError(f"background smoothing needs 0 <= alpha <= 1 (paper: 0.6) and compat='t2vzero', got "
                            f"alpha={background_smoothing}, compat={compat!r}")
    bar = _Bar(progress)
    try:
        anchor = anchor_pass(components, prompt, progress=bar, **anchor_args)
        if anchor.num_frames == 1:  # a still image: nothing to smooth
            background_smoothing = None
        passes = 1 if background_smoothing is None else 2
        first_frame_steps = len(anchor.first_frame_path) if anchor.first_frame_path is not None else \
            len(anchor.scheduler_at_t0.timesteps) - len(anchor.timesteps_after_t0)
        bar.total = first_frame_steps + render_steps(anchor) * passes
        frames = render(components, anchor, chunk_size=chunk_size, progress=bar)
        if background_smoothing is not None:
            # The second pass replays the first exactly (same noise, same frame 1) but for the blending.
            masks = _foreground(frames, foreground_masks or saliency_masks, tuple(anchor.x_t0.shape[-2:]))
            frames = render(components, anchor, chunk_size=chunk_size, progress=bar,
                            after_step=[_smoother(masks, anchor, float(background_smoothing))])
    finally:
        bar.close()
    return VideoOutput(frames=frames)


class _Bar:
    """A progress bar that appears with the first step: bad arguments fail before any bar is drawn."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.total, self._bar = enabled, None, None

    def update(self, n: int = 1) -> None:
        if self.enabled and self._bar is None:
            self._bar = tqdm(total=self.total, desc="denoising", unit="step", leave=False)
        if self._bar is not None:
            if self.total is not None and self._bar.total != self.total:
                self._bar.total = self.total
                self._bar.refresh()
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


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


def _smoother(masks: torch.Tensor, anchor: Anchor, alpha: float) -> AfterStep:
    """The per-step background blend (paper §3.3.2) for any chunk, given frame 1's latents of the step."""

    def after_step(latents: torch.Tensor, ids: Sequence[int], first: torch.Tensor) -> torch.Tensor:
        videos = anchor.videos
        stack = latents.view(videos, len(ids), *latents.shape[1:])
        chunk_masks = masks[:, list(ids)]
        # Frame 1 moved along the same camera path as the frames' own start at t0.
        warped = [anchor.recipe.warp(first[v][None].expand(len(ids), -1, -1, -1), ids, anchor.motion, anchor.size)
                  for v in range(videos)]
        blended = [blend_backgrounds(stack[v], warped[v], chunk_masks[v], alpha) for v in range(videos)]
        return torch.stack(blended).flatten(0, 1)

    return after_step

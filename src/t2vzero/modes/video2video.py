"""Video-to-video (paper §4.2, §4.3): ControlNet-conditioned video, Instruct-Pix2Pix editing, restyling.

All feed the same loop as text-to-video, with cross-frame attention; they differ only in their
`Guidance` hook (ControlNet residuals, or the input frames' latents as extra UNet channels) and in
the starting noise: one latent shared by every frame (the paper), so the conditions drive motion.
Restyling (SDEdit with any text-to-image checkpoint) starts part-way down the schedule instead, from
each input frame noised with that one shared noise, or (`invert=True`) from each frame's own DDIM
inversion to that level, optionally with ControlNet residuals too.
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
from ..deepcache import check_interval
from ..defaults import CONTROL, pick
from ..errors import UserError
from ..generate import (
    Chunk,
    Guidance,
    UnetHook,
    VideoOutput,
    cfg_combine,
    check_generator,
    decode_video,
    denoise,
    encode_images,
    execution_device,
    gather,
    generators,
    split_frames,
    step_kwargs,
    stream_seeds,
    vae_factor,
)
from ..prompts import encode_prompt, is_sdxl, upcast_vae, with_time_ids
from ..schedule import (
    alpha_bar_at,
    ddim_invert,
    forward_jump,
    in_sigma_space,
    reject_unresumable,
    resume_at,
    strength_start,
)
from ..schedulers import make_scheduler, set_timesteps
from .text2video import RECIPES, check_token_merging


def frames_to_tensor(frames: np.ndarray, device: Any, dtype: Any, normalize: bool) -> torch.Tensor:
    """(F, H, W, 3) uint8 → (F, 3, H, W) in [0, 1], or [-1, 1] with `normalize` (what the VAE takes)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    return (x * 2 - 1 if normalize else x).to(device=device, dtype=dtype)


def check_frame_ids(frame_ids: Sequence[int] | None, num_frames: int) -> list[int]:
    """The frames a call returns: all by default, else distinct ids within the video."""
    if frame_ids is None:
        return list(range(num_frames))
    try:
        ids = [int(k) for k in frame_ids]
    except TypeError:  # not a sequence: frame_ids=2
        raise UserError(f"frame ids must be a list of frame numbers, e.g. [0, 2]; got {frame_ids!r}") from None
    except ValueError:
        ids = []
    if any(isinstance(k, str) or int(k) != k for k in frame_ids):  # "a", 1.5: not frame numbers (int() would bend them)
        raise UserError(f"frame ids must be whole frame numbers, e.g. [0, 2]; got {list(frame_ids)!r}")
    if not ids or any(not 0 <= k < num_frames for k in ids) or len(set(ids)) != len(ids):
        raise UserError(f"frame ids must be distinct, within 0..{num_frames - 1}, and at least one; got {ids}")
    return ids


def _run(components: dict[str, Any], guidance: Guidance, x_T: torch.Tensor, num_inference_steps: int,
         chunk_size: int | None, generator: Any, eta: float | None, compat: str, models: Sequence[Any],
         scheduler: str | None, timestep_spacing: str | None, progress: bool,
         frame_ids: Sequence[int] | None = None, *, source: torch.Tensor | None = None,
         strength: float = 1.0, invert_with: Guidance | None = None) -> VideoOutput:
    """Denoise frames from x_T (chunks in lockstep, frame 1 computed once per step) and decode.

    `frame_ids` (default all) may be any subset: frame 1 is denoised alongside it (not returned) since
    every frame attends to it, and each frame's noise and step noise are its own, so separate calls
    for disjoint subsets (separate workers) give the frames of one call. With `source` latents
    (F, C, h, w) and `strength` < 1 (SDEdit), the run starts part-way down the schedule
    (`t2vzero.schedule.strength_start`) from the source noised to that level with x_T, or, with
    `invert_with` (a guidance-1 predictor), from the source DDIM-inverted to that level.
    """
    unet = components["unet"]
    sched = copy.deepcopy(make_scheduler(components["scheduler"], scheduler, timestep_spacing))
    set_timesteps(sched, num_inference_steps, execution_device(unet))
    begin = 0 if source is None else strength_start(num_inference_steps, strength, getattr(sched, "order", 1))
    num_frames = len(x_T)
    wanted = check_frame_ids(frame_ids, num_frames)
    if invert_with is not None and source is not None:
        needed = sorted({0, *wanted})  # each frame's inversion is its own: only the rendered ones are needed
        start = torch.zeros_like(source)
        start[needed] = invert_frames(invert_with, sched, source[needed], begin, chunk_size, progress)
        sched, timesteps = _resumed(sched, begin)
    else:
        sched, start, timesteps = _start(sched, begin, x_T, source)
    seeds = stream_seeds(generator, 1, num_frames)[0] if RECIPES[compat].noise_streams else None
    chunks = []
    for ids in split_frames(sorted({0, *wanted}), chunk_size):
        chunk_sched = copy.deepcopy(sched)
        gens = generators([seeds[k] for k in ids]) if seeds is not None else generator
        chunks.append(Chunk(ids, start[ids], chunk_sched, step_kwargs(chunk_sched, gens, eta)))
    bar = tqdm(total=len(timesteps), disable=not progress, desc="denoising", unit="step", leave=False)
    try:
        with cross_frame_attention(*models):
            done = denoise(chunks, timesteps, guidance, progress=bar)
    finally:
        bar.close()
    return VideoOutput(frames=decode_video(components["vae"], gather(done, wanted, 1),
                                           force_upcast=upcast_vae(components)))


def _start(sched: Any, begin: int, x_T: torch.Tensor, source: torch.Tensor | None) -> tuple[Any, torch.Tensor, Any]:
    """A scheduler that starts at step `begin`, the first latents, and the timesteps to run.

    From the start, the noise itself (scaled as the scheduler wants it). Part-way (SDEdit), the source
    noised with x_T to the level of step `begin` by the forward process from ᾱ = 1, and a scheduler
    resumed there without history, as a restart at t1 in text-to-video.
    """
    if begin == 0:
        return sched, x_T * sched.init_noise_sigma, sched.timesteps
    resumed, timesteps = _resumed(sched, begin)
    noised = forward_jump(source, x_T, sched.alphas_cumprod, 0, int(timesteps[0]), sigma_space=in_sigma_space(sched),
                          alpha_bars=(1.0, alpha_bar_at(sched, begin)))
    return resumed, noised, timesteps


def _resumed(sched: Any, begin: int) -> tuple[Any, Any]:
    """A copy of `sched` that starts at step `begin` without history, and the timesteps from there."""
    reject_unresumable(sched)
    return resume_at(sched, begin)


def invert_frames(predict: Guidance, sched: Any, latents: torch.Tensor, index: int, chunk_size: int | None,
                  progress: bool = False) -> torch.Tensor:
    """Clean latents (F, C, h, w), each frame DDIM-inverted on its own (`t2vzero.schedule.ddim_invert`)
    through the schedule's levels up to the input of step `index`, in the scheduler's space.

    `predict` is a guidance-1, plain-attention predictor (the inversion's error grows with guidance,
    Mokady et al. 2023, §3). Unlike noise drawn afresh, the inverted latent still holds where things
    are, so denoising it with a new prompt keeps the source's layout at strengths that noise would
    redraw (README, Restyle).
    """
    from .image2video import model_noise

    n = len(sched.timesteps)
    up = list(range(n - 1, index - 1, -1))  # from the least noisy step to `index`
    alpha_bars = [alpha_bar_at(sched, i) for i in up]
    levels = {float(sched.timesteps[i]): a for i, a in zip(up, alpha_bars, strict=True)}
    kind = sched.config.get("prediction_type", "epsilon")
    parts, chunks = [], split_frames(range(len(latents)), chunk_size)
    bar = tqdm(total=len(up) * len(chunks), disable=not progress, desc="inverting", unit="step", leave=False)
    try:
        for ids in chunks:
            def predict_noise(x: torch.Tensor, t: torch.Tensor, ids: list[int] = ids) -> torch.Tensor:
                bar.update()
                return model_noise(predict(x, t, ids), x, levels[float(t)], kind)

            with torch.no_grad():
                parts.append(ddim_invert(latents[ids], predict_noise, [sched.timesteps[i] for i in up],
                                         alpha_bars)[-1])
    finally:
        bar.close()
    inverted = torch.cat(parts)
    return inverted / math.sqrt(alpha_bars[-1]) if in_sigma_space(sched) else inverted


def _start_noise(shape: tuple[int, ...], frames: int, generator: Any, device: Any, dtype: Any,
                 shared: bool) -> torch.Tensor:
    check_generator(generator, 1)  # one video per call
    if shared:  # the paper: one noise latent for every frame
        return randn_tensor((1, *shape), generator=generator, device=device, dtype=dtype).repeat(frames, 1, 1, 1)
    return randn_tensor((frames, *shape), generator=generator, device=device, dtype=dtype)


def check_frames(frames: Any, what: str, factor: int) -> np.ndarray:
    """A video as (F, H, W, 3) uint8 with F >= 1 and sides that are multiples of the VAE factor (an array, a
    tensor, or a list of PIL images or arrays of one size)."""
    if isinstance(frames, list | tuple) and frames and all(hasattr(f, "convert") for f in frames):  # PIL images
        frames = [np.asarray(f.convert("RGB")) for f in frames]
    if isinstance(frames, list | tuple) and len({np.shape(f) for f in frames}) > 1:
        raise UserError(f"{what} differ in size or channels ({', '.join(sorted({str(np.shape(f)) for f in frames}))})"
                        "; give frames of one size, e.g. resized with t2vzero.inputs.fit_resolution")
    if isinstance(frames, list | tuple) and not frames:
        raise UserError(f"{what}: an empty list; give at least one frame")
    arr = np.asarray(frames)
    if arr.dtype != np.uint8:
        fix = "x.astype(np.uint8) for values 0-255" if np.issubdtype(arr.dtype, np.integer) else \
            "(x * 255).round().astype(np.uint8) for values 0-1"
        raise UserError(f"{what} must be uint8 RGB frames (0-255), not {arr.dtype}; convert with {fix}")
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


def _controlnet_hook(controlnets: Sequence[Any], scales: Sequence[float], conds: Sequence[torch.Tensor],
                     groups: int) -> UnetHook:
    """ControlNet residuals for the frames of a call; the nets see the call's cross-frame attention too."""

    def hook(model_input: torch.Tensor, t: torch.Tensor, kwargs: dict[str, Any], frame_ids: Sequence[int]):
        down, mid = None, None
        n = len(frame_ids)
        for net, scale, cond in zip(controlnets, scales, conds, strict=True):
            # Nets that pool their condition globally (e.g. shuffle) act in guess mode, as in diffusers:
            # they see only the text group and add nothing to the unconditional one, which would
            # otherwise cancel their effect under guidance.
            pooled = groups > 1 and bool(getattr(net.config, "global_pool_conditions", False))
            rows = slice(-n, None) if pooled else slice(None)
            net_kwargs = {k: _rows(v, rows) for k, v in kwargs.items()}
            image = cond[list(frame_ids)].repeat(1 if pooled else groups, 1, 1, 1)
            d, m = net(model_input[rows], t, controlnet_cond=image, conditioning_scale=scale, guess_mode=pooled,
                       return_dict=False, **net_kwargs)
            if pooled:
                d = [torch.cat([torch.zeros_like(r).repeat(groups - 1, 1, 1, 1), r]) for r in d]
                m = torch.cat([torch.zeros_like(m).repeat(groups - 1, 1, 1, 1), m])
            down = d if down is None else [a + b for a, b in zip(down, d, strict=True)]
            mid = m if mid is None else mid + m
        return model_input, {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}

    return hook


def _rows(value: Any, rows: slice) -> Any:
    """The batch rows `rows` of a UNet argument (tensors, dicts of tensors); other values as they are."""
    if isinstance(value, torch.Tensor):
        return value[rows]
    if isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values()):
        return {k: v[rows] for k, v in value.items()}
    return value


@torch.no_grad()
def control_video(components: dict[str, Any], prompt: str, conditions: Sequence[np.ndarray],
                  controlnets: Sequence[Any], *, scales: Sequence[float] | float | None = None,
                  negative_prompt: str = "", num_inference_steps: int | None = None,
                  guidance_scale: float | None = None, eta: float | None = None, generator: Any = None,
                  chunk_size: int | None = None, compat: str = "t2vzero", scheduler: str | None = None,
                  timestep_spacing: str | None = None, token_merging: float | None = None,
                  cache_interval: int | None = None, progress: bool = True,
                  frame_ids: Sequence[int] | None = None) -> VideoOutput:
    """ControlNet video (paper §4.2): one shared noise, cross-frame attention in UNet and ControlNets.

    `conditions` holds one (F, H, W, 3) uint8 video of condition maps per ControlNet. None arguments
    take `t2vzero.defaults.CONTROL`. `frame_ids` renders a subset of the frames (see `_run`).
    """
    num_inference_steps = pick("control", "num_inference_steps", num_inference_steps)
    guidance_scale = pick("control", "guidance_scale", guidance_scale)
    prompt, negative_prompt = _check_run_args(prompt, negative_prompt, num_inference_steps, chunk_size, compat,
                                              {"guidance_scale": guidance_scale, "eta": eta})
    unet, vae = components["unet"], components["vae"]
    factor = vae_factor(vae)
    controlnets, conditions, scales = _check_control(unet, controlnets, conditions, scales, factor)
    if not controlnets:
        raise UserError("give at least one ControlNet and its condition video")
    num_frames, height, width = conditions[0].shape[:3]
    device, dtype = execution_device(unet), unet.dtype
    cond = encode_prompt(components, [prompt], [negative_prompt], guidance_scale=guidance_scale)
    if is_sdxl(components):
        cond = with_time_ids(cond, (height, width), (0, 0), (height, width))
    maps = [frames_to_tensor(c, device, dtype, normalize=False) for c in conditions]
    shape = (unet.config.in_channels, height // factor, width // factor)
    x_T = _start_noise(shape, num_frames, generator, device, dtype, shared=True)
    guidance = Guidance(unet, cond, cfg_combine(guidance_scale),
                        hooks=[_controlnet_hook(controlnets, scales, maps, cond.groups)],
                        token_merging=check_token_merging(token_merging), cache_interval=check_interval(cache_interval))
    return _run(components, guidance, x_T, num_inference_steps, chunk_size, generator, eta, compat,
                [unet, *controlnets], scheduler, timestep_spacing, progress, frame_ids)


@torch.no_grad()
def edit_video(components: dict[str, Any], instruction: str, frames: np.ndarray, *, negative_prompt: str = "",
               num_inference_steps: int | None = None, guidance_scale: float | None = None,
               image_guidance_scale: float | None = None, eta: float | None = None, generator: Any = None,
               chunk_size: int | None = None, compat: str = "t2vzero", scheduler: str | None = None,
               timestep_spacing: str | None = None, token_merging: float | None = None,
               cache_interval: int | None = None, progress: bool = True,
               frame_ids: Sequence[int] | None = None) -> VideoOutput:
    """Video Instruct-Pix2Pix (paper §4.3): edit (F, H, W, 3) uint8 frames by an instruction.

    The UNet takes 8 channels (noise latents + the input frame's latents); cross-frame attention runs
    in each of the three guidance groups (text+image, image only, neither). The default mode starts
    every frame from one shared noise; `compat="diffusers"` draws one per frame, as diffusers' recipe.
    None arguments take `t2vzero.defaults.EDIT`. `frame_ids` renders a subset of the frames (see `_run`).
    """
    num_inference_steps = pick("edit", "num_inference_steps", num_inference_steps)
    guidance_scale = pick("edit", "guidance_scale", guidance_scale)
    image_guidance_scale = pick("edit", "image_guidance_scale", image_guidance_scale)
    instruction, negative_prompt = _check_run_args(instruction, negative_prompt, num_inference_steps, chunk_size,
                                                   compat, {"guidance_scale": guidance_scale, "eta": eta,
                                                            "image_guidance_scale": image_guidance_scale})
    unet, vae = components["unet"], components["vae"]
    frames = check_frames(frames, "frames", vae_factor(vae))
    latent_channels = vae.config.latent_channels
    if unet.config.in_channels != 2 * latent_channels:
        raise UserError(f"the edit checkpoint's UNet takes {unet.config.in_channels} input channels, not "
                        f"{2 * latent_channels}; give an Instruct-Pix2Pix checkpoint")
    device, dtype = execution_device(unet), unet.dtype
    guided = guidance_scale > 1.0 and image_guidance_scale >= 1.0
    text = encode_prompt(components, [instruction], [negative_prompt], guidance_scale=guidance_scale, guided=guided)
    # Instruct-Pix2Pix's groups are [text+image, image, neither]: text first, the empty prompt twice.
    cond = text.pick_groups([1, 0, 0]) if guided else text
    if is_sdxl(components):
        size = tuple(frames.shape[1:3])
        cond = with_time_ids(cond, size, (0, 0), size)
    images = frames_to_tensor(frames, device, vae.dtype, normalize=True)
    image_latents = torch.cat([vae.encode(images[i:i + 8]).latent_dist.mode() for i in range(0, len(images), 8)])
    image_latents = image_latents.to(dtype)

    def hook(model_input: torch.Tensor, t: torch.Tensor, kwargs: dict[str, Any], frame_ids: Sequence[int]):
        lat = image_latents[list(frame_ids)]
        extra = torch.cat([lat, lat, torch.zeros_like(lat)]) if guided else lat
        return torch.cat([model_input, extra], dim=1), {}

    def combine(noise_pred: torch.Tensor) -> torch.Tensor:
        if noise_pred.shape[0] == 1:
            return noise_pred[0]
        with_text, image_only, neither = noise_pred
        return neither + guidance_scale * (with_text - image_only) + image_guidance_scale * (image_only - neither)

    num_frames = len(frames)
    x_T = _start_noise(tuple(image_latents.shape[1:]), num_frames, generator, device, dtype,
                       shared=RECIPES[compat].shared_edit_noise)
    guidance = Guidance(unet, cond, combine, hooks=[hook], token_merging=check_token_merging(token_merging),
                        cache_interval=check_interval(cache_interval))
    return _run(components, guidance, x_T, num_inference_steps, chunk_size, generator, eta, compat, [unet],
                scheduler, timestep_spacing, progress, frame_ids)


def _check_control(unet: Any, controlnets: Any, conditions: Any, scales: Any,
                   factor: int) -> tuple[list[Any], list[np.ndarray], list[float]]:
    """ControlNets, one condition video each (same frames and size) and one finite scale each, as lists."""
    controlnets = () if controlnets is None else controlnets  # None: the default, none
    conditions = () if conditions is None else conditions
    if not isinstance(controlnets, list | tuple):
        controlnets = [controlnets]
    if isinstance(conditions, np.ndarray) and conditions.ndim == 4:
        conditions = [conditions]
    if not isinstance(conditions, list | tuple | np.ndarray):
        raise UserError(f"conditions must be a list of condition videos (one per ControlNet), not "
                        f"{type(conditions).__name__}")
    if len(conditions) != len(controlnets):
        raise UserError(f"give one condition video per ControlNet ({len(controlnets)} ControlNets, "
                        f"{len(conditions)} conditions)")
    default_scale = CONTROL["controlnet_scale"]
    try:  # a number of any kind (numpy, a 0-d tensor) is one scale for all
        scales = [default_scale] * len(controlnets) if scales is None else \
            [float(scales)] * len(controlnets) if np.ndim(scales) == 0 else [float(x) for x in scales]
    except (TypeError, ValueError):
        raise UserError(f"scales must be a number or one number per ControlNet, not {scales!r}") from None
    if len(scales) != len(controlnets) or not all(math.isfinite(x) for x in scales):
        raise UserError(f"give one finite scale per ControlNet ({len(controlnets)} ControlNets, scales {scales})")
    conditions = [check_frames(c, f"condition video {i}", factor) for i, c in enumerate(conditions, 1)]
    for c in conditions[1:]:
        if c.shape[:3] != conditions[0].shape[:3]:
            raise UserError(f"condition videos differ in frames or size: {c.shape[:3]} vs {conditions[0].shape[:3]}")
    _check_controlnets(unet, controlnets, factor)
    return list(controlnets), conditions, scales


@torch.no_grad()
def restyle_video(components: dict[str, Any], prompt: str, frames: np.ndarray, *, strength: float | None = None,
                  controlnets: Sequence[Any] = (), conditions: Sequence[np.ndarray] = (),
                  scales: Sequence[float] | float | None = None, negative_prompt: str = "",
                  num_inference_steps: int | None = None, guidance_scale: float | None = None,
                  eta: float | None = None, generator: Any = None, chunk_size: int | None = None,
                  compat: str = "t2vzero", scheduler: str | None = None, timestep_spacing: str | None = None,
                  token_merging: float | None = None, cache_interval: int | None = None,
                  progress: bool = True, frame_ids: Sequence[int] | None = None,
                  invert: bool | None = None) -> VideoOutput:
    """Restyle (F, H, W, 3) uint8 frames by `prompt` with any text-to-image checkpoint (SDEdit + paper §3.3.2).

    Each frame is encoded and noised to `strength` S from one noise shared by all frames (SDEdit, Meng
    et al. 2022), then the frames are denoised together over the last ⌊S·N⌋ of N steps, every
    self-attention attending to frame 1. S = 1 starts from that noise alone (the frames are not used:
    with ControlNets, exactly `control_video`). Optional `controlnets` take one (F, H, W, 3) condition
    video each, e.g. the source's edges. `invert` starts instead from each frame's DDIM inversion (empty
    prompt, guidance 1, no cross-frame attention) to that level: the layout is kept far better (README,
    Restyle), for ⌊S·N⌋ more UNet calls per frame without guidance; the run is then deterministic (DDIM).
    None arguments take `t2vzero.defaults.RESTYLE`. `frame_ids` renders a subset of the frames (see `_run`).
    """
    num_inference_steps = pick("restyle", "num_inference_steps", num_inference_steps)
    guidance_scale = pick("restyle", "guidance_scale", guidance_scale)
    strength = pick("restyle", "strength", strength)
    invert = bool(pick("restyle", "invert", invert))
    prompt, negative_prompt = _check_run_args(prompt, negative_prompt, num_inference_steps, chunk_size, compat,
                                              {"guidance_scale": guidance_scale, "eta": eta})
    strength_start(num_inference_steps, strength)  # checks the strength before any work
    if compat != "t2vzero":
        raise UserError("restyling has no diffusers reference to reproduce; drop compat='diffusers'")
    unet, vae = components["unet"], components["vae"]
    factor = vae_factor(vae)
    frames = check_frames(frames, "frames", factor)
    if unet.config.in_channels != vae.config.latent_channels:
        raise UserError(f"this UNet takes {unet.config.in_channels} input channels, not the VAE's "
                        f"{vae.config.latent_channels}: restyling needs a text-to-image checkpoint (for an "
                        "Instruct-Pix2Pix one, use edit)")
    controlnets, conditions, scales = _check_control(unet, controlnets, conditions, scales, factor)
    if conditions and conditions[0].shape[:3] != frames.shape[:3]:
        raise UserError(f"the condition videos are {conditions[0].shape[:3]} (frames, height, width) but the input "
                        f"is {frames.shape[:3]}; give one condition map per input frame, at its size")
    device, dtype = execution_device(unet), unet.dtype
    cond = encode_prompt(components, [prompt], [negative_prompt], guidance_scale=guidance_scale)
    height, width = frames.shape[1:3]
    if is_sdxl(components):
        cond = with_time_ids(cond, (height, width), (0, 0), (height, width))
    source = encode_images(vae, frames, dtype, force_upcast=upcast_vae(components)).to(device)
    x_T = _start_noise(tuple(source.shape[1:]), len(frames), generator, device, dtype, shared=True)
    maps = [frames_to_tensor(c, device, dtype, normalize=False) for c in conditions]
    hooks = [_controlnet_hook(controlnets, scales, maps, cond.groups)] if controlnets else []
    guidance = Guidance(unet, cond, cfg_combine(guidance_scale), hooks=hooks,
                        token_merging=check_token_merging(token_merging), cache_interval=check_interval(cache_interval))
    invert_with = None
    if invert:
        empty = encode_prompt(components, [""], [""], guidance_scale=1.0)
        if is_sdxl(components):
            empty = with_time_ids(empty, (height, width), (0, 0), (height, width))
        invert_with = Guidance(unet, empty, cfg_combine(1.0), cross_frame=False)
    return _run(components, guidance, x_T, num_inference_steps, chunk_size, generator, eta, compat,
                [unet, *controlnets], scheduler, timestep_spacing, progress, frame_ids, source=source,
                strength=strength, invert_with=invert_with)


def _check_controlnets(unet: Any, controlnets: Sequence[Any], vae_scale: int) -> None:
    """A ControlNet must mirror the base UNet's encoder and see conditions at image resolution."""
    ours = unet.config
    for i, net in enumerate(controlnets, 1):
        theirs = net.config
        if family(theirs) != family(ours):
            raise UserError(f"this ControlNet is for {family(theirs)} (cross-attention dim "
                            f"{theirs.cross_attention_dim}); the base is {family(ours)} ({ours.cross_attention_dim}): "
                            f"give a ControlNet made for {family(ours)}")
        mirrored = ("cross_attention_dim", "block_out_channels", "layers_per_block", "down_block_types")
        diff = [f"{k} {_as_tuple(getattr(theirs, k, None))} vs {_as_tuple(getattr(ours, k, None))}" for k in mirrored
                if _as_tuple(getattr(theirs, k, None)) != _as_tuple(getattr(ours, k, None))]
        if theirs.in_channels != ours.in_channels:
            diff.append(f"latent channels {theirs.in_channels} vs {ours.in_channels}")
        if diff:
            raise UserError(f"ControlNet {i} does not match the base model ({'; '.join(diff)}); use a ControlNet "
                            "made for this base model's family (SD 1.x or 2.x)")
        if (net.dtype, execution_device(net)) != (unet.dtype, execution_device(unet)):
            raise UserError(f"ControlNet {i} is {net.dtype} on {execution_device(net)} but the base model "
                            f"{unet.dtype} on {execution_device(unet)}; load both with the same dtype and device")
        factor = 2 ** (len(getattr(theirs, "conditioning_embedding_out_channels", (0,) * 4)) - 1)
        if factor != vae_scale:
            raise UserError(f"ControlNet {i} downsamples its condition by {factor}, but the VAE by {vae_scale}")
        if getattr(theirs, "conditioning_channels", 3) != 3:
            raise UserError(f"ControlNet {i} takes {theirs.conditioning_channels}-channel conditions; this tool "
                            "gives it RGB condition maps")


def family(config: Any) -> str:
    """The model family a UNet or ControlNet config (a loaded model's, or config.json's dict) belongs to, by its
    added embedding and text width."""
    get = config.get if isinstance(config, dict) else lambda key: getattr(config, key, None)
    if get("addition_embed_type") == "text_time":
        return "SDXL"
    return "SD 2.x" if get("cross_attention_dim") == 1024 else "SD 1.x"


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value

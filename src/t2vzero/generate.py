"""The one denoising loop and the pieces every mode shares.

Modes (text-to-video, ControlNet video, Instruct-Pix2Pix editing) differ only in what they feed
`Guidance`: the latents they start from, the `Conditioning`, and optional hooks. A video is
denoised in chunks advanced in lockstep: at each step the chunk holding frame 1 runs first and
leaves frame 1's self-attention keys/values for the others, so frame 1 passes through the model
once per step however the video is split, and peak memory is bounded by the chunk.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import deepcache
from .attention import frame_kwargs, long_attention_in_blocks
from .errors import UserError

# hook(model_input, t, unet_kwargs, frame_ids) -> (model_input, extra unet kwargs); see Guidance.
UnetHook = Callable[[torch.Tensor, torch.Tensor, dict[str, Any], Sequence[int]], tuple[torch.Tensor, dict[str, Any]]]
# after_step(latents of a chunk, its frame ids, frame 1's latents at this step (videos, C, h, w)) -> latents
AfterStep = Callable[[torch.Tensor, Sequence[int], torch.Tensor], torch.Tensor]


@dataclass
class VideoOutput:
    """Generated videos: `frames` is (videos, frames, height, width, 3), float32 in [0, 1]."""

    frames: np.ndarray

    def uint8(self) -> np.ndarray:
        """The frames as uint8 (rounded), ready for a video writer; converted a frame at a time, so a long
        video needs no float32 temporaries of its own size."""
        out = np.empty(self.frames.shape, np.uint8)
        flat_in, flat_out = self.frames.reshape(-1, *self.frames.shape[-3:]), out.reshape(-1, *out.shape[-3:])
        for i in range(len(flat_in)):
            flat_out[i] = (flat_in[i] * 255.0).round().clip(0, 255)
        return out


@dataclass
class Conditioning:
    """Everything the UNet is conditioned on, per guidance group and video, as one value.

    Every tensor leads with (groups, videos): `embeds` are the encoder hidden states (tokens, dim);
    `added` go to the UNet as `added_cond_kwargs` (e.g. SDXL's pooled text and time ids); `extra` are
    other UNet arguments (e.g. an LCM UNet's `timestep_cond`). The loop expands them to the frames
    of each call, laid out [group][video][frame].
    """

    embeds: torch.Tensor
    added: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def groups(self) -> int:
        return self.embeds.shape[0]

    @property
    def videos(self) -> int:
        return self.embeds.shape[1]

    def for_frames(self, frames: int) -> dict[str, Any]:
        """UNet keyword arguments for a batch of `frames` frames per (group, video)."""
        kwargs: dict[str, Any] = {"encoder_hidden_states": _per_frame(self.embeds, frames)}
        kwargs.update({k: _per_frame(v, frames) for k, v in self.extra.items()})
        if self.added:
            kwargs["added_cond_kwargs"] = {k: _per_frame(v, frames) for k, v in self.added.items()}
        return kwargs

    def pick_groups(self, order: Sequence[int]) -> Conditioning:
        """The same conditions with guidance groups rearranged (e.g. Instruct-Pix2Pix's three)."""
        take = list(order)
        return Conditioning(self.embeds[take], {k: v[take] for k, v in self.added.items()},
                            {k: v[take] for k, v in self.extra.items()})

    def to(self, dtype: torch.dtype) -> Conditioning:
        cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in self.added.items()}
        return Conditioning(self.embeds.to(dtype), cast, {k: v.to(dtype) for k, v in self.extra.items()})


def _per_frame(x: torch.Tensor, frames: int) -> torch.Tensor:
    """(groups, videos, ...) -> (groups·videos·frames, ...), frames innermost."""
    groups, videos = x.shape[:2]
    return x[:, :, None].expand(groups, videos, frames, *x.shape[2:]).reshape(groups * videos * frames, *x.shape[2:])


def cfg_combine(guidance_scale: float, guidance_rescale: float = 0.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """Classifier-free guidance over groups [unconditional, text]: ε_u + s·(ε_t − ε_u).

    `guidance_rescale` φ (Lin et al. 2023, §3.4) pulls each frame's guided prediction back towards the
    text prediction's standard deviation: φ·ε·σ(ε_t)/σ(ε) + (1 − φ)·ε, against over-exposure.
    """

    def combine(noise_pred: torch.Tensor) -> torch.Tensor:
        if noise_pred.shape[0] == 1:
            return noise_pred[0]
        uncond, text = noise_pred
        guided = uncond + guidance_scale * (text - uncond)
        if guidance_rescale > 0:
            dims = list(range(1, guided.ndim))
            rescaled = guided * (text.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
            guided = guidance_rescale * rescaled + (1 - guidance_rescale) * guided
        return guided

    return combine


@dataclass
class Guidance:
    """Predicts noise for a batch of frames: runs the UNet on every guidance group, then combines.

    The UNet batch is laid out [group][video][frame], what cross-frame attention expects. `hooks`
    run in order and may change the UNet input or add UNet arguments for the frames in the batch
    (ControlNet residuals, Pix2Pix image latents); their arguments include the call's
    `cross_attention_kwargs`, so a ControlNet attends across frames the same way.
    """

    unet: Any
    cond: Conditioning
    combine: Callable[[torch.Tensor], torch.Tensor]
    cross_frame: bool = True
    hooks: Sequence[UnetHook] = ()
    token_merging: float = 0.0  # ToMe ratio for frame 1's keys/values at the highest resolution (approximate)
    cache_interval: int = 1  # DeepCache: the whole UNet every this many steps, the shallow branch between

    def __call__(self, latents: torch.Tensor, t: torch.Tensor, frame_ids: Sequence[int],
                 cache: dict | None = None, features: tuple[Any, bool] | None = None) -> torch.Tensor:
        groups, videos, frames = self.cond.groups, self.cond.videos, len(frame_ids)
        model_input = latents.repeat(groups, 1, 1, 1)
        kwargs = self.cond.for_frames(frames)
        if self.cross_frame:
            tokens = latents.shape[-2] * latents.shape[-1]  # the UNet's highest resolution
            kwargs["cross_attention_kwargs"] = frame_kwargs(frames, frame_ids[0] == 0, cache, self.token_merging,
                                                            tokens)
        for hook in self.hooks:
            model_input, extra = hook(model_input, t, kwargs, frame_ids)
            clash = set(extra) & set(kwargs)
            if clash:
                raise ValueError(f"two hooks set the same UNet argument(s) {sorted(clash)}")
            kwargs = {**kwargs, **extra}
        reuse = deepcache.step(*features) if features is not None and self.cache_interval > 1 else \
            contextlib.nullcontext()
        with reuse:
            noise_pred = self.unet(model_input, t, **kwargs).sample
        return self.combine(noise_pred.view(groups, videos * frames, *noise_pred.shape[1:]))


def step_kwargs(scheduler: Any, generator: Any, eta: float | None) -> dict[str, Any]:
    """`eta` (when given) and `generator` for schedulers whose `step` takes them (DDIM, ancestral...)."""
    params = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in params and eta is not None:
        kwargs["eta"] = eta
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs


def check_generator(generator: Any, videos: int) -> None:
    """A generator is None, one `torch.Generator`, or a list of exactly one per video."""
    if isinstance(generator, list | tuple) and len(generator) != videos:
        raise UserError(f"got a list of {len(generator)} generators for {videos} video(s); pass one generator, "
                        f"or a list with one per video (prompts x videos per prompt = {videos})")


def stream_seeds(generator: Any, videos: int, streams: int) -> list[list[int]]:
    """`streams` seeds per video for CPU generators, drawn from that video's generator (or the global RNG).

    Stochastic schedulers (DDIM with eta > 0, ancestral samplers) draw step noise for a whole batch;
    giving each (video, frame) its own stream makes that noise independent of how frames are batched,
    so chunked and unchunked runs agree. The seed is read from a copy of the generator's state, so the
    caller's generator is not advanced (a deterministic run leaves it where it would be anyway).
    """
    shared = not isinstance(generator, list | tuple)
    gens = [generator] * videos if shared else list(generator)
    out = []
    for v, g in enumerate(gens):
        base = _peek_seed(g) + (v * streams if shared else 0)  # one shared generator: distinct streams per video
        out.append([base + k for k in range(streams)])
    return out


def generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """Fresh CPU generators, one per seed."""
    return [torch.Generator().manual_seed(s) for s in seeds]


def _peek_seed(generator: torch.Generator | None) -> int:
    """A seed drawn from `generator` (None: the global RNG) without advancing it."""
    if generator is None:
        state = torch.random.get_rng_state()
        seed = int(torch.randint(0, 2**62, (1,)))
        torch.random.set_rng_state(state)
        return seed
    probe = torch.Generator(device=generator.device)
    probe.set_state(generator.get_state())
    return int(torch.randint(0, 2**62, (1,), generator=probe, device=generator.device))


@dataclass
class Chunk:
    """Frames denoised together: their ids (frame 1 first, if present), latents (videos·len(ids), C, h, w),
    their own scheduler (multistep schedulers keep per-sample history) and its step arguments."""

    ids: list[int]
    latents: torch.Tensor
    scheduler: Any
    step_kwargs: dict[str, Any] = field(default_factory=dict)


def denoise(chunks: list[Chunk], timesteps: torch.Tensor, predict: Guidance, *,
            after_step: Sequence[AfterStep] = (), progress: Any = None) -> list[Chunk]:
    """The backward process over `timesteps` for every chunk, in lockstep; the one loop every mode uses.

    At each step the chunks run in order and share one cache of frame 1's self-attention keys/values,
    written by the chunk that holds frame 1 (it must come first) and read by the others, so frame 1
    goes through the model once per step. Then `after_step` hooks may adjust each chunk's latents,
    seeing frame 1's latents of the same step (background smoothing). Returns new chunks at the input
    of the step after the last timestep; the chunks passed in keep their latents, but their schedulers
    advance (each is used in place).
    """
    chunks = [Chunk(c.ids, c.latents, c.scheduler, c.step_kwargs) for c in chunks]
    shared = len(chunks) > 1
    if shared and predict.cross_frame and chunks[0].ids[0] != 0:
        raise ValueError("the first chunk must hold frame 1 (id 0), whose keys/values the others attend to")
    interval = predict.cache_interval
    slots = [deepcache.FeatureSlot() for _ in chunks]  # each chunk keeps its own deep features
    if progress is not None and len(timesteps):
        progress.update(0)  # the bar shows as the first step starts: a slow step is not a silent one
    with deepcache.deep_blocks_skippable(predict.unet) if interval > 1 else contextlib.nullcontext():
        for i, t in enumerate(timesteps):
            cache: dict | None = {} if shared else None
            for c, slot in zip(chunks, slots, strict=True):
                noise_pred = predict(c.scheduler.scale_model_input(c.latents, t), t, c.ids, cache,
                                     (slot, i % interval != 0))
                c.latents = c.scheduler.step(noise_pred, t, c.latents, **c.step_kwargs).prev_sample
            if after_step:
                first = chunks[0]
                anchor = first.latents.view(-1, len(first.ids), *first.latents.shape[1:])[:, 0]
                for c in chunks:
                    for hook in after_step:
                        c.latents = hook(c.latents, c.ids, anchor)
            if progress is not None:
                progress.update()
    return chunks


def split_frames(frame_ids: Sequence[int], chunk_size: int | None) -> list[list[int]]:
    """Split frame ids into chunks of at most `chunk_size`, frame 1 (id 0) first when present."""
    ids = sorted(set(frame_ids))
    if chunk_size is None or chunk_size >= len(ids):
        return [ids]
    return [ids[i:i + chunk_size] for i in range(0, len(ids), chunk_size)]


def gather(chunks: Sequence[Chunk], frame_ids: Sequence[int], videos: int) -> torch.Tensor:
    """(videos, len(frame_ids), C, h, w) latents of `frame_ids`, in that order, from denoised chunks."""
    where = {k: (c, j) for c in chunks for j, k in enumerate(c.ids)}
    parts = []
    for k in frame_ids:
        c, j = where[k]
        parts.append(c.latents.view(videos, len(c.ids), *c.latents.shape[1:])[:, j])
    return torch.stack(parts, dim=1)


def execution_device(model: Any) -> torch.device:
    """Where `model` computes: its parameters' device, or the GPU an offloading hook moves it to while it runs."""
    for module in model.modules() if hasattr(model, "modules") else ():
        hook = getattr(module, "_hf_hook", None)
        device = getattr(hook, "execution_device", None)
        if device is not None:
            return torch.device(device)
    return model.device


def vae_factor(vae: Any) -> int:
    """Pixels per latent pixel: each VAE block but the last halves the size (8 for Stable Diffusion)."""
    from .models import vae_scale

    return vae_scale(vae.config)


@torch.no_grad()
def decode_latents(vae: Any, latents: torch.Tensor, batch_size: int = 8, force_upcast: bool = False) -> np.ndarray:
    """VAE-decode (N, C, h, w) latents in batches; returns (N, H, W, 3) float32 in [0, 1].

    A half-precision decode that overflows (inf/NaN: black or noise frames, the reference's fp16
    failure) is redone for that batch by a float32 copy of the decoder, made once per VAE;
    `force_upcast` (SDXL's VAE config asks for it) decodes in float32 from the start.
    """
    images: np.ndarray | None = None  # filled batch by batch: no second copy of all frames at the end
    low = vae.dtype in (torch.float16, torch.bfloat16)
    decoder = _float32_copy(vae) if force_upcast and low else vae
    for start in range(0, latents.shape[0], batch_size):
        chunk = latents[start : start + batch_size] / vae.config.scaling_factor
        with long_attention_in_blocks(decoder):
            image = decoder.decode(chunk.to(decoder.dtype), return_dict=False)[0]
        if decoder.dtype in (torch.float16, torch.bfloat16) and not torch.isfinite(image).all():
            fallback = _float32_copy(vae)
            with long_attention_in_blocks(fallback):
                image = fallback.decode(chunk.float(), return_dict=False)[0]
        batch = (image.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        if images is None:
            images = np.empty((latents.shape[0], *batch.shape[1:]), np.float32)
        images[start : start + len(batch)] = batch
    assert images is not None, "no latents to decode"
    return images


_FLOAT32_VAES: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_FLOAT32_LOCK = threading.Lock()


def _float32_copy(vae: Any) -> Any:
    """A float32 copy of `vae` (kept while the VAE lives), for the batches its own precision cannot decode."""
    with _FLOAT32_LOCK:
        if vae not in _FLOAT32_VAES:
            _FLOAT32_VAES[vae] = copy.deepcopy(vae).float()
        return _FLOAT32_VAES[vae]


@torch.no_grad()
def encode_images(vae: Any, images: np.ndarray, dtype: torch.dtype, batch_size: int = 8,
                  force_upcast: bool = False) -> torch.Tensor:
    """VAE-encode (N, H, W, 3) uint8 images to (N, C, h, w) latents in the UNet's scale (× scaling_factor).

    The posterior's mode (its mean), so one image always gives one latent; `decode_latents` inverts the
    scaling. `force_upcast` (SDXL's VAE) encodes with a float32 copy, as decoding does.
    """
    encoder = _float32_copy(vae) if force_upcast and vae.dtype in (torch.float16, torch.bfloat16) else vae
    device = execution_device(vae)
    pixels = torch.from_numpy(np.array(images, dtype=np.uint8)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    latents = [encoder.encode(pixels[i:i + batch_size].to(device=device, dtype=encoder.dtype)).latent_dist.mode()
               for i in range(0, len(pixels), batch_size)]
    return (torch.cat(latents) * vae.config.scaling_factor).to(dtype)


def decode_video(vae: Any, latents: torch.Tensor, force_upcast: bool = False) -> np.ndarray:
    """(videos, F, C, h, w) latents -> (videos, F, H, W, 3) float32 frames in [0, 1]."""
    videos, frames = latents.shape[:2]
    images = decode_latents(vae, latents.flatten(0, 1), force_upcast=force_upcast)
    return images.reshape(videos, frames, *images.shape[1:])

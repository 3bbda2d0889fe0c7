"""The one denoising loop and the pieces every mode shares.

Modes (text-to-video, ControlNet video, Instruct-Pix2Pix editing) differ only in what they feed
`Guidance`: the latents they start from, the conditioning groups, and optional model hooks.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .attention import CrossFrameAttnProcessor
from .errors import UserError

# hook(model_input, t, embeds, frame_ids) -> (model_input, extra unet kwargs); see Guidance.
UnetHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Sequence[int]], tuple[torch.Tensor, dict[str, Any]]]


@dataclass
class VideoOutput:
    """Generated videos: `frames` is (videos, frames, height, width, 3), float32 in [0, 1]."""

    frames: np.ndarray

    def uint8(self) -> np.ndarray:
        """The frames as uint8 (rounded), ready for a video writer."""
        return (self.frames * 255.0).round().clip(0, 255).astype(np.uint8)


def cfg_combine(guidance_scale: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Classifier-free guidance over groups [unconditional, text]: ε_u + s·(ε_t − ε_u)."""

    def combine(eps: torch.Tensor) -> torch.Tensor:
        if eps.shape[0] == 1:
            return eps[0]
        uncond, text = eps
        return uncond + guidance_scale * (text - uncond)

    return combine


@dataclass
class Guidance:
    """Predicts noise for a batch of frames: runs the UNet on every guidance group, then combines.

    `embeds` is (groups, videos, tokens, dim). The UNet batch is laid out [group][video][frame], which
    is what `CrossFrameAttnProcessor` expects. `hook` lets a mode change the UNet input or add UNet
    arguments (ControlNet residuals, Pix2Pix image latents) for the frames in the batch.
    """

    unet: Any
    embeds: torch.Tensor
    combine: Callable[[torch.Tensor], torch.Tensor]
    processor: CrossFrameAttnProcessor | None = None
    hook: UnetHook | None = None
    unet_kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self, latents: torch.Tensor, t: torch.Tensor, frame_ids: Sequence[int]) -> torch.Tensor:
        groups, videos = self.embeds.shape[:2]
        frames = len(frame_ids)
        model_input = latents.repeat(groups, 1, 1, 1)
        embeds = self.embeds[:, :, None].expand(-1, -1, frames, -1, -1).reshape(groups * videos * frames,
                                                                              *self.embeds.shape[2:])
        if self.processor is not None:  # before the hook: a ControlNet in the hook attends across frames too
            self.processor.num_frames = frames
        extra: dict[str, Any] = {}
        if self.hook is not None:
            model_input, extra = self.hook(model_input, t, embeds, frame_ids)
        eps = self.unet(model_input, t, encoder_hidden_states=embeds, **self.unet_kwargs, **extra).sample
        return self.combine(eps.view(groups, videos * frames, *eps.shape[1:]))


def step_kwargs(scheduler: Any, generator: Any, eta: float) -> dict[str, Any]:
    """`eta` and `generator` for schedulers whose `step` takes them (DDIM, Euler ancestral...)."""
    params = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in params:
        kwargs["eta"] = eta
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs


def check_generator(generator: Any, videos: int) -> None:
    """A generator is None, one `torch.Generator`, or a list of exactly one per video."""
    if isinstance(generator, list | tuple) and len(generator) != videos:
        raise UserError(f"got a list of {len(generator)} generators for {videos} video(s); pass one generator, "
                        f"or a list with one per video (prompts x videos per prompt = {videos})")


def frame_generators(generator: Any, videos: int, streams: int) -> list[list[torch.Generator]]:
    """`streams` CPU generators per video, seeded from that video's generator (or the global RNG).

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
        out.append([torch.Generator().manual_seed(base + k) for k in range(streams)])
    return out


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


def denoise(latents: torch.Tensor, timesteps: torch.Tensor, scheduler: Any, predict: Guidance,
            frame_ids: Sequence[int], *, extra_step_kwargs: dict[str, Any] | None = None,
            after_step: Callable[[torch.Tensor], torch.Tensor] | None = None, progress: Any = None) -> torch.Tensor:
    """The backward process over `timesteps`; the one loop every mode uses.

    `latents` is (videos·frames, C, h, w); each step asks `predict` for the guided noise and lets the
    scheduler take a step, then `after_step` may adjust the latents (background smoothing). Returns
    the latents at the input of the step after the last timestep.
    """
    for t in timesteps:
        eps = predict(scheduler.scale_model_input(latents, t), t, frame_ids)
        latents = scheduler.step(eps, t, latents, **(extra_step_kwargs or {})).prev_sample
        if after_step is not None:
            latents = after_step(latents)
        if progress is not None:
            progress.update()
    return latents


def token_limit(tokenizer: Any, text_encoder: Any) -> int:
    """Tokens the text encoder reads: the tokenizer's length, which transformers leaves huge when unset."""
    positions = getattr(getattr(text_encoder, "config", None), "max_position_embeddings", None)
    return min(tokenizer.model_max_length, positions) if positions else tokenizer.model_max_length


def encode_prompts(tokenizer: Any, text_encoder: Any, prompts: Sequence[str], device: Any) -> torch.Tensor:
    """CLIP text embeddings (len(prompts), tokens, dim), padded to the tokenizer's maximum length."""
    ids = tokenizer(list(prompts), padding="max_length", max_length=token_limit(tokenizer, text_encoder),
                    truncation=True, return_tensors="pt")
    mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):
        mask = ids.attention_mask.to(device)
    return text_encoder(ids.input_ids.to(device), attention_mask=mask)[0]


def vae_factor(vae: Any) -> int:
    """Pixels per latent pixel: each VAE block but the last halves the size (8 for Stable Diffusion)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def decode_latents(vae: Any, latents: torch.Tensor, batch_size: int = 8) -> np.ndarray:
    """VAE-decode (N, C, h, w) latents in batches; returns (N, H, W, 3) float32 in [0, 1]."""
    images = []
    for start in range(0, latents.shape[0], batch_size):
        chunk = latents[start : start + batch_size] / vae.config.scaling_factor
        image = vae.decode(chunk.to(vae.dtype), return_dict=False)[0]
        images.append((image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy())
    return np.concatenate(images)


def chunk_frame_ids(num_frames: int, chunk_size: int | None) -> list[list[int]]:
    """Split frames 0..N-1 into chunks of at most `chunk_size`, each led by frame 0 (the anchor)."""
    if chunk_size is None or chunk_size >= num_frames:
        return [list(range(num_frames))]
    chunks = [list(range(chunk_size))]
    for start in range(chunk_size, num_frames, chunk_size - 1):
        chunks.append([0, *range(start, min(start + chunk_size - 1, num_frames))])
    return chunks


def denoise_chunks(chunks: list[list[int]], start: Callable[[list[int]], torch.Tensor], timesteps: torch.Tensor,
                   scheduler: Any, predict: Guidance, vae: Any, *, videos: int, num_frames: int,
                   step_kwargs_for: Callable[[list[int]], dict[str, Any]],
                   after_step_for: Callable[[list[int]], Callable[[torch.Tensor], torch.Tensor]] | None = None,
                   progress: Any = None) -> np.ndarray:
    """Denoise a video chunk by chunk (frame 1 anchoring each chunk) and decode it.

    `start(ids)` gives the (videos·len(ids), C, h, w) latents of a chunk at `timesteps[0]`; each chunk
    gets its own copy of `scheduler` in that state. The anchor's repeats are not decoded twice.
    Returns (videos, num_frames, H, W, 3) float32 in [0, 1].
    """
    frames: np.ndarray | None = None
    for ids in chunks:
        out = denoise(start(ids), timesteps, copy.deepcopy(scheduler), predict, ids,
                      extra_step_kwargs=step_kwargs_for(ids),
                      after_step=after_step_for(ids) if after_step_for is not None else None, progress=progress)
        keep = [j for j, k in enumerate(ids) if k != 0 or ids is chunks[0]]
        out = out.view(videos, len(ids), *out.shape[1:])[:, keep]
        images = decode_latents(vae, out.flatten(0, 1))
        if frames is None:
            frames = np.empty((videos, num_frames, *images.shape[1:]), dtype=np.float32)
        frames[:, [ids[j] for j in keep]] = images.reshape(videos, len(keep), *images.shape[1:])
    assert frames is not None
    return frames

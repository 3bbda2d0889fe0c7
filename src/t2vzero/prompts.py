"""Text conditioning for every mode and architecture: one `encode_prompt` for SD 1.x/2.x and SDXL.

SD: the CLIP text encoder's last hidden states. SDXL: both encoders' penultimate hidden states side
by side, the second encoder's pooled (projected) embedding, and the size/crop "time ids" the UNet's
`text_time` embedding reads; an empty negative prompt is all zeros where the checkpoint says so
(`force_zeros_for_empty_prompt`, SDXL base's training).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .generate import Conditioning, execution_device


def token_limit(tokenizer: Any, text_encoder: Any) -> int:
    """Tokens the text encoder reads: the tokenizer's length, which transformers leaves huge when unset."""
    positions = getattr(getattr(text_encoder, "config", None), "max_position_embeddings", None)
    return min(tokenizer.model_max_length, positions) if positions else tokenizer.model_max_length


def _tokens(tokenizer: Any, text_encoder: Any, texts: Sequence[str]) -> Any:
    return tokenizer(list(texts), padding="max_length", max_length=token_limit(tokenizer, text_encoder),
                     truncation=True, return_tensors="pt")


def _encode_sd(tokenizer: Any, text_encoder: Any, texts: Sequence[str], device: Any) -> torch.Tensor:
    """CLIP text embeddings (len(texts), tokens, dim), padded to the tokenizer's maximum length."""
    ids = _tokens(tokenizer, text_encoder, texts)
    mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):
        mask = ids.attention_mask.to(device)
    return text_encoder(ids.input_ids.to(device), attention_mask=mask)[0]


def is_sdxl(components: dict[str, Any]) -> bool:
    """SDXL-architecture components: a UNet with the `text_time` added embedding."""
    return getattr(components["unet"].config, "addition_embed_type", None) == "text_time"


def upcast_vae(components: dict[str, Any]) -> bool:
    """Whether decoding must run in float32: an SDXL VAE whose config says `force_upcast` (its fp16 overflows)."""
    return is_sdxl(components) and bool(getattr(components["vae"].config, "force_upcast", False))


def _encode_sdxl(components: dict[str, Any], texts: Sequence[str], texts_2: Sequence[str],
                 device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(len, tokens, d1 + d2) penultimate hidden states of both encoders, and (len, proj) pooled embeddings."""
    parts, pooled = [], None
    pairs = ((components.get("tokenizer"), components.get("text_encoder"), texts),
             (components.get("tokenizer_2"), components.get("text_encoder_2"), texts_2))
    for tokenizer, encoder, which in pairs:
        if tokenizer is None or encoder is None:  # e.g. a refiner: the second encoder alone
            continue
        out = encoder(_tokens(tokenizer, encoder, which).input_ids.to(device), output_hidden_states=True)
        if pooled is None and out[0].ndim == 2:  # the projection model's text_embeds
            pooled = out[0]
        parts.append(out.hidden_states[-2])
    if pooled is None:
        raise ValueError("SDXL components need a text encoder with a projection (text_encoder_2)")
    return torch.cat(parts, dim=-1), pooled


def encode_prompt(components: dict[str, Any], prompts: Sequence[str], negatives: Sequence[str], *,
                  guidance_scale: float, videos_per_prompt: int = 1, guided: bool | None = None,
                  prompts_2: Sequence[str] | None = None, negatives_2: Sequence[str] | None = None) -> Conditioning:
    """The text conditions of every mode: groups [negative, text] with guidance, else [text].

    Guidance is on for `guidance_scale` > 1 unless `guided` says otherwise. Each prompt's row is
    repeated `videos_per_prompt` times (videos laid out prompt-major). An LCM-distilled UNet (one with
    `time_cond_proj_dim`) takes guidance as an embedding of w instead of a second group. SDXL's
    `prompts_2`/`negatives_2` go to its second text encoder (default: the same texts).
    """
    unet = components["unet"]
    device = execution_device(unet)
    lcm_dim = getattr(unet.config, "time_cond_proj_dim", None)
    guided = (guidance_scale > 1.0 and not lcm_dim) if guided is None else guided
    added: dict[str, torch.Tensor] = {}
    if is_sdxl(components):
        embeds, pooled = _encode_sdxl(components, prompts, prompts_2 or prompts, device)
        groups, pools = [embeds], [pooled]
        if guided:
            empty = not any(negatives) and not any(negatives_2 or ())
            if empty and components.get("force_zeros_for_empty_prompt", True):
                groups.insert(0, torch.zeros_like(embeds))
                pools.insert(0, torch.zeros_like(pooled))
            else:
                neg, neg_pooled = _encode_sdxl(components, negatives, negatives_2 or negatives, device)
                groups.insert(0, neg)
                pools.insert(0, neg_pooled)
        added["text_embeds"] = torch.stack(pools).repeat_interleave(videos_per_prompt, dim=1)
    else:
        tok, enc = components["tokenizer"], components["text_encoder"]
        groups = [_encode_sd(tok, enc, prompts, device)]
        if guided:
            groups.insert(0, _encode_sd(tok, enc, negatives, device))
    embeds = torch.stack(groups).repeat_interleave(videos_per_prompt, dim=1)
    extra = {}
    if lcm_dim:
        w = guidance_embedding(guidance_scale, lcm_dim, embeds.shape[1]).to(embeds.device)
        extra["timestep_cond"] = w[None].expand(embeds.shape[0], -1, -1)
    return Conditioning(embeds, added=added, extra=extra).to(unet.dtype)


def with_time_ids(cond: Conditioning, original_size: tuple[int, int], crops_coords_top_left: tuple[int, int],
                  target_size: tuple[int, int]) -> Conditioning:
    """SDXL's micro-conditioning: (original h, w, crop top, left, target h, w) for every group and video."""
    ids = torch.tensor([*original_size, *crops_coords_top_left, *target_size], dtype=cond.embeds.dtype,
                       device=cond.embeds.device)
    added = {**cond.added, "time_ids": ids.expand(cond.groups, cond.videos, 6)}
    return Conditioning(cond.embeds, added, cond.extra)


def guidance_embedding(w: float, dim: int, rows: int) -> torch.Tensor:
    """Sinusoidal embedding of the guidance scale w − 1 that LCM-distilled UNets take as `timestep_cond`
    (Luo et al. 2023; the Fourier features of VDM, scaled by 1000): (rows, dim)."""
    value = torch.full((rows,), (w - 1.0) * 1000.0, dtype=torch.float64)
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / (half - 1))
    angles = value[:, None] * freqs[None]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb.float()

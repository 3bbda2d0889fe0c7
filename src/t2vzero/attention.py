"""Cross-frame attention (Text2Video-Zero, paper §3.3.2).

In every self-attention layer, each frame's queries attend to the keys and values of the first
frame of its own video, in its own guidance group. The batch is laid out as
[group][video][frame] with frames innermost, so the processor only needs the number of frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F


class CrossFrameAttnProcessor:
    """An attention processor (diffusers' processor API, PyTorch SDPA) for self-attention layers.

    `num_frames` is set by the denoising loop before each model call. Because all frames of a video
    share frame 1's keys, their queries are folded into one long sequence: keys and values are
    projected once per video instead of once per frame, and nothing is expanded.
    """

    def __init__(self, num_frames: int = 1) -> None:
        self.num_frames = num_frames

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 **kwargs: Any) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        frames = self.num_frames
        batch, seq, _ = hidden_states.shape
        cross_frame = encoder_hidden_states is None and frames > 1
        if cross_frame:
            if batch % frames or attention_mask is not None:
                raise ValueError(f"cross-frame attention got a batch of {batch} for {frames} frames"
                                 + (" with an attention mask" if attention_mask is not None else ""))
            videos = batch // frames
            anchor = hidden_states.view(videos, frames, seq, -1)[:, 0]
            key, value = attn.to_k(anchor), attn.to_v(anchor)
            # Fold the frames into the query sequence: (videos, frames*seq, dim).
            query = attn.to_q(hidden_states).reshape(videos, frames * seq, -1)
        else:
            context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
            if encoder_hidden_states is not None and attn.norm_cross:
                context = attn.norm_encoder_hidden_states(context)
            if attention_mask is not None:
                attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
                attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
            query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)

        head_dim = key.shape[-1] // attn.heads
        query, key, value = (x.view(x.shape[0], -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                             is_causal=False, scale=attn.scale)
        out = out.transpose(1, 2).reshape(batch, seq, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _is_self_attention(name: str) -> bool:
    # diffusers names a transformer block's self-attention "attn1"; "attn2" attends to the text.
    return name.endswith("attn1.processor")


@contextmanager
def cross_frame_attention(*models: Any, enabled: bool = True) -> Iterator[CrossFrameAttnProcessor | None]:
    """Install one shared `CrossFrameAttnProcessor` on the self-attention layers of `models`.

    Cross-attention processors are left as they are. The original processors are restored on exit,
    also when the body raises. Yields the processor (None when disabled) so the loop can set
    `num_frames`.
    """
    if not enabled:
        yield None
        return
    processor = CrossFrameAttnProcessor()
    saved = []
    try:
        for model in dict.fromkeys(m for m in models if m is not None):  # a model given twice is swapped once
            original = model.attn_processors
            saved.append((model, original))
            model.set_attn_processor({n: processor if _is_self_attention(n) else p for n, p in original.items()})
        yield processor
    finally:
        for model, original in reversed(saved):
            model.set_attn_processor(original)

"""Cross-frame attention (Text2Video-Zero, paper §3.3.2).

In every self-attention layer, each frame's queries attend to the keys and values of the first
frame of its own video, in its own guidance group. The batch is laid out as [group][video][frame]
with frames innermost.

Everything that belongs to one model call travels with that call, as `cross_attention_kwargs =
{"frame_attention": FrameCall(...)}`: the installed processors hold no state, so two generations on
one loaded model (threads, a Gradio queue, a Ray actor) cannot disturb each other. A call without
a `FrameCall` is plain attention through the layer's original processor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .patches import shared_patch

KWARG = "frame_attention"
# Attention scores one SDPA call may compute off CUDA. Longer attention (large frames: 4096² has 262,144 latent
# tokens) runs in query blocks: the same result in bounded memory, and Ctrl-C or SIGTERM is handled between
# blocks instead of after one call that can run for many minutes. (CUDA kernels are asynchronous and its fused
# kernels keep memory linear, so there one call is best.)
MAX_SCORES = 2**27


@dataclass(frozen=True)
class FrameCall:
    """What one model call tells its self-attention layers.

    `frames` frames per (group, video) block. `has_anchor`: the block starts with frame 1, whose
    keys/values are then used (and stored in `cache`, when given); otherwise frame 1's keys/values of
    the same denoising step must already be in `cache` (a chunk run in lockstep after the anchor's).
    """

    frames: int
    has_anchor: bool = True
    cache: dict[Any, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] | None = field(default=None,
                                                                                            compare=False)
    # Token merging (ToMe, Bolya et al. 2023) of frame 1's keys/values: the share of its tokens merged
    # away, in layers of at least `merge_min_tokens` tokens (the highest resolution, as ToMe for SD).
    merge_ratio: float = 0.0
    merge_min_tokens: int = 0


class CrossFrameAttnProcessor:
    """An attention processor (diffusers' processor API, PyTorch SDPA) for self-attention layers.

    Because all frames of a video share frame 1's keys, their queries are folded into one long
    sequence: keys and values are projected once per video instead of once per frame, and nothing is
    expanded. Without a `FrameCall` (or for one frame) the layer's `original` processor runs.
    """

    def __init__(self, original: Any = None) -> None:
        self.original = original

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 frame_attention: FrameCall | None = None, **kwargs: Any) -> torch.Tensor:
        call = frame_attention
        if call is None or encoder_hidden_states is not None or (call.frames <= 1 and call.has_anchor
                                                                 and call.cache is None and not call.merge_ratio):
            if encoder_hidden_states is None and attention_mask is None and _too_long(attn, hidden_states):
                # Plain self-attention is cross-frame attention with one frame per block: run it in query blocks.
                return _cross_frame(attn, hidden_states, None, temb, FrameCall(1))
            return _plain(self.original, attn, hidden_states, encoder_hidden_states, attention_mask, temb, kwargs)
        return _cross_frame(attn, hidden_states, attention_mask, temb, call)


def _too_long(attn: Any, hidden_states: torch.Tensor) -> bool:
    """Whether plain self-attention over `hidden_states` would compute more than MAX_SCORES scores in one call."""
    seq = hidden_states.shape[-2] * hidden_states.shape[-1] if hidden_states.ndim == 4 else hidden_states.shape[1]
    return not hidden_states.is_cuda and hidden_states.shape[0] * attn.heads * seq * seq > MAX_SCORES


class _Filter:
    """Wraps a layer's own processor (cross-attention) so that our per-call kwarg never reaches it."""

    def __init__(self, original: Any) -> None:
        self.original = original

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 frame_attention: FrameCall | None = None, **kwargs: Any) -> torch.Tensor:
        return _plain(self.original, attn, hidden_states, encoder_hidden_states, attention_mask, temb, kwargs)


def _plain(original: Any, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None,
           attention_mask: torch.Tensor | None, temb: torch.Tensor | None, kwargs: dict[str, Any]) -> torch.Tensor:
    if original is None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        original = AttnProcessor2_0()
    if temb is not None:  # as diffusers' Attention calls processors: temb only when there is one
        kwargs["temb"] = temb
    return original(attn, hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask,
                    **kwargs)


def _cross_frame(attn: Any, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None,
                 temb: torch.Tensor | None, call: FrameCall) -> torch.Tensor:
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    input_ndim = hidden_states.ndim
    if input_ndim == 4:
        b, c, h, w = hidden_states.shape
        hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

    frames = call.frames
    batch, seq, _ = hidden_states.shape
    if batch % frames or attention_mask is not None:
        raise ValueError(f"cross-frame attention got a batch of {batch} for {frames} frames"
                         + (" with an attention mask" if attention_mask is not None else ""))
    blocks = batch // frames  # (group, video) pairs
    if call.has_anchor:
        anchor = first_frames(hidden_states, frames)
        log_sizes = None
        if call.merge_ratio and seq >= max(call.merge_min_tokens, 4):
            anchor, sizes = merge_tokens(anchor, call.merge_ratio)
            log_sizes = sizes.log()[:, None, None, :].to(anchor.dtype)  # proportional attention
        key, value = attn.to_k(anchor), attn.to_v(anchor)
        if call.cache is not None:
            call.cache[attn] = (key, value, log_sizes)
    else:
        if call.cache is None or attn not in call.cache:
            raise ValueError("cross-frame attention for a chunk without frame 1 needs frame 1's keys/values of the "
                             "same step: run the chunk that holds frame 1 first")
        key, value, log_sizes = call.cache[attn]
        if key.shape[0] != blocks:
            raise ValueError(f"cross-frame attention: cached keys for {key.shape[0]} videos x groups, batch has "
                             f"{blocks}")
    # Fold the frames into the query sequence: (blocks, frames*seq, dim).
    query = attn.to_q(hidden_states).reshape(blocks, frames * seq, -1)

    head_dim = key.shape[-1] // attn.heads
    query, key, value = (x.view(x.shape[0], -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    # A merged token stands for `size` tokens: log(size) added to its logits weighs it as that many.
    out = blocked_attention(query, key, value, attn_mask=log_sizes, scale=attn.scale)
    out = out.transpose(1, 2).reshape(batch, seq, attn.heads * head_dim).to(query.dtype)
    out = attn.to_out[1](attn.to_out[0](out))
    if input_ndim == 4:
        out = out.transpose(-1, -2).reshape(b, c, h, w)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


def blocked_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attn_mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """`scaled_dot_product_attention` of (B, heads, Nq, d) queries, in query blocks of at most MAX_SCORES scores.

    Each query's output depends only on its own row of scores, so blocks give the same result; a mask whose
    query dimension is 1 (ToMe's log sizes) applies to every block.
    """
    batch, heads, length, _ = query.shape
    block = max(1, MAX_SCORES // max(1, batch * heads * key.shape[-2]))
    if length <= block or query.is_cuda:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, scale=scale)
    out = query.new_empty(*query.shape[:-1], value.shape[-1])
    for start in range(0, length, block):
        rows = slice(start, start + block)
        mask = attn_mask if attn_mask is None or attn_mask.shape[-2] == 1 else attn_mask[..., rows, :]
        out[:, :, rows] = F.scaled_dot_product_attention(query[:, :, rows], key, value, attn_mask=mask, scale=scale)
    return out


def first_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Frame 1 of each (group, video) block of a batch laid out [block][frame]: (blocks·frames, …) -> (blocks, …)."""
    if x.shape[0] % frames:
        raise ValueError(f"cross-frame attention got a batch of {x.shape[0]} for {frames} frames")
    return x.view(x.shape[0] // frames, frames, *x.shape[1:])[:, 0]


def merge_tokens(x: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bipartite soft matching (ToMe, Bolya et al. 2023, §3): merge `ratio` of the tokens of x (B, N, C).

    Tokens alternate between sets A and B; each A token's most similar B token (cosine) is its match,
    and the ⌊ratio·N⌋ best-matched A tokens (at most all of A) are averaged into their matches. Returns
    the merged tokens (B, N − r, C) and how many input tokens each stands for (B, N − r).
    """
    batch, n, dim = x.shape
    a, b = x[:, ::2], x[:, 1::2]
    r = min(int(ratio * n), a.shape[1])
    sizes = torch.ones(batch, n, device=x.device, dtype=x.dtype)
    if r <= 0:
        return x, sizes
    an, bn = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    best, match = (an @ bn.transpose(1, 2)).max(dim=-1)  # (B, Na)
    order = best.argsort(dim=-1, descending=True)
    merged, kept = order[:, :r], order[:, r:]
    into = match.gather(1, merged)  # the B token each merged A token joins
    a_kept = a.gather(1, kept[..., None].expand(-1, -1, dim))
    a_merged = a.gather(1, merged[..., None].expand(-1, -1, dim))
    b_sum = b.clone().scatter_add_(1, into[..., None].expand(-1, -1, dim), a_merged)
    b_size = torch.ones(batch, b.shape[1], device=x.device, dtype=x.dtype).scatter_add_(
        1, into, torch.ones_like(into, dtype=x.dtype))
    out = torch.cat([a_kept, b_sum / b_size[..., None]], dim=1)
    return out, torch.cat([sizes[:, : a_kept.shape[1]], b_size], dim=1)


def _is_self_attention(name: str) -> bool:
    # diffusers names a transformer block's self-attention "attn1"; "attn2" attends to the text.
    return name.endswith("attn1.processor")


@contextmanager
def cross_frame_attention(*models: Any) -> Iterator[None]:
    """Make the self-attention layers of `models` able to attend across frames for the calls inside.

    The layers get a `CrossFrameAttnProcessor` wrapping their own processor (others a thin filter),
    which acts only on calls that pass a `FrameCall`. Installation is counted per model, so nested or
    concurrent users share it, and the original processors come back when the last one leaves, also
    when the body raises.
    """
    with ExitStack() as stack:
        for model in dict.fromkeys(m for m in models if m is not None):  # a model given twice is installed once
            stack.enter_context(shared_patch(model, "cross-frame attention", lambda m=model: _install(m)))
        yield


@contextmanager
def long_attention_in_blocks(model: Any) -> Iterator[None]:
    """Within the block every attention layer of `model` (a VAE: all of its attention is self-attention over the
    latent pixels) runs sequences too long for one call in query blocks; shorter ones run as before."""
    with shared_patch(model, "blocked attention", lambda: _install(model, lambda _name: True)):
        yield


def _install(model: Any, is_self_attention: Callable[[str], bool] = _is_self_attention) -> Callable[[], None]:
    original = model.attn_processors
    model.set_attn_processor({n: CrossFrameAttnProcessor(p) if is_self_attention(n) else _Filter(p)
                              for n, p in original.items()})
    return lambda: model.set_attn_processor(original)


def frame_kwargs(frames: int, has_anchor: bool = True, cache: dict | None = None, merge_ratio: float = 0.0,
                 merge_min_tokens: int = 0) -> dict[str, Any]:
    """`cross_attention_kwargs` for one model call over `frames` frames per (group, video)."""
    return {KWARG: FrameCall(frames, has_anchor, cache, merge_ratio, merge_min_tokens)}

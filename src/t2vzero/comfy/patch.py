"""Cross-frame attention (paper §3.3.2) inside ComfyUI, through the MODEL's `attn1_patch`.

ComfyUI calls an attn1 patch in every transformer block's self-attention, before the key and value
projections, with the normed hidden states. A model call's batch is the latent batch (the frames)
repeated for each conditioning group it holds, listed in `cond_or_uncond` (cond and uncond may come
together or in separate calls), frames innermost. The patch hands every frame the keys and values of
frame 1 of its own group.
"""

from __future__ import annotations

from typing import Any

import torch

from ..attention import first_frames
from ..errors import UserError


class CrossFramePatch:
    """An `attn1_patch`: keys and values from frame 1 of each conditioning group. Stateless, so one MODEL may
    serve any number of samplers."""

    def __call__(self, n: torch.Tensor, context: torch.Tensor, value: torch.Tensor,
                 extra_options: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        groups = extra_options.get("cond_or_uncond")
        if not groups:
            raise ValueError("Text2Video-Zero cross-frame attention was called without ComfyUI's cond_or_uncond "
                             "list, so it cannot tell the conditioning groups apart.")
        if n.shape[0] % len(groups):
            raise ValueError(f"Text2Video-Zero cross-frame attention got a batch of {n.shape[0]} for "
                             f"{len(groups)} conditioning groups.")
        frames = n.shape[0] // len(groups)
        if frames == 1:
            return n, context, value
        return n, _from_frame_one(context, frames), _from_frame_one(value, frames)


def _from_frame_one(x: torch.Tensor, frames: int) -> torch.Tensor:
    return first_frames(x, frames).repeat_interleave(frames, dim=0)


def has_cross_frame(model_options: dict[str, Any]) -> bool:
    """Whether sampling with these model options runs cross-frame attention."""
    patches = model_options.get("transformer_options", {}).get("patches", {}).get("attn1_patch", [])
    return any(isinstance(p, CrossFramePatch) for p in patches)


def with_cross_frame_attention(model: Any) -> Any:
    """A clone of the ModelPatcher `model` whose self-attention attends to frame 1 (the model itself unchanged);
    `model` itself when it already does."""
    check_supported(model)
    if has_cross_frame(model.model_options):
        return model
    patched = model.clone()
    patched.set_model_attn1_patch(CrossFramePatch())
    return patched


def check_supported(model: Any) -> None:
    """Only Stable Diffusion UNets (1.x, 2.x, SDXL) route their self-attention through ComfyUI's attn1 patches
    with the latent batch as frames; anything else would silently ignore the patch."""
    from comfy.ldm.modules.attention import BasicTransformerBlock
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    unet = model.get_model_object("diffusion_model")
    config = getattr(model.model, "model_config", None)
    temporal = bool(getattr(config, "unet_config", {}).get("use_temporal_attention"))
    if type(unet) is not UNetModel or temporal or not any(isinstance(m, BasicTransformerBlock) for m in unet.modules()):
        name = type(config).__name__ if config is not None else type(model.model).__name__
        raise UserError(f"Text2Video-Zero works on Stable Diffusion 1.x, 2.x and SDXL models, but this MODEL is "
                        f"{name}, whose attention its cross-frame patch cannot reach.")

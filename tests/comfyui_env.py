"""ComfyUI for the node tests: where it is, one import per session, and tiny models in its layouts.

ComfyUI (v0.3.64, GPL) is a test fixture found through COMFYUI_PATH or ../shared/comfyui/ComfyUI beside
the repository; nothing of it is part of t2vzero. Its weights are never downloaded: the models here are
built from configs, the SD 1.5-layout one from the same state dict as a diffusers UNet.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PATH = REPO.parent / "shared" / "comfyui" / "ComfyUI"
CONTEXT_DIM = 32  # the tiny text encoder's width (t2vzero.tiny)

# SD 1.5's UNet layout at tiny widths: two levels, both with a transformer, 8 heads (SD's convention).
SD15_UNET = dict(image_size=8, in_channels=4, out_channels=4, model_channels=32, num_res_blocks=[1, 1],
                 channel_mult=[1, 2], transformer_depth=[1, 1], transformer_depth_output=[1, 1, 1, 1],
                 transformer_depth_middle=1, num_heads=8, num_head_channels=-1, context_dim=CONTEXT_DIM,
                 use_linear_in_transformer=False, adm_in_channels=None, use_temporal_attention=False,
                 use_spatial_transformer=True, legacy=False)
# SDXL's: no transformer at the first level, linear projections, heads of fixed width, the pooled text and
# six size embeddings (256 each) as the class-conditioning vector.
POOLED_DIM = 32
SDXL_UNET = dict(image_size=8, in_channels=4, out_channels=4, model_channels=32, num_res_blocks=[1, 1],
                 channel_mult=[1, 2], transformer_depth=[0, 2], transformer_depth_output=[0, 0, 2, 2],
                 transformer_depth_middle=1, num_heads=-1, num_head_channels=8, context_dim=CONTEXT_DIM,
                 use_linear_in_transformer=True, adm_in_channels=POOLED_DIM + 6 * 256, num_classes="sequential",
                 use_temporal_attention=False, use_spatial_transformer=True, legacy=False)


def comfyui_dir() -> Path | None:
    """COMFYUI_PATH when set (it must then work), else ../shared/comfyui/ComfyUI when it exists."""
    if os.environ.get("COMFYUI_PATH"):
        return Path(os.environ["COMFYUI_PATH"]).resolve()
    return DEFAULT_PATH if (DEFAULT_PATH / "nodes.py").is_file() else None


def import_comfyui(path: Path) -> None:
    """Import ComfyUI's core on CPU (10-30 s), its built-in nodes and its optional extra nodes."""
    # transformers and diffusers decide once, at import, whether torchvision exists: import them before a
    # torchvision stand-in can be on the path.
    import diffusers.utils.import_utils  # noqa: F401
    import torch  # noqa: F401
    import transformers.utils.import_utils  # noqa: F401

    sys.path.insert(0, str(path))
    try:
        import torchvision  # noqa: F401
    except Exception:  # missing, or a build whose compiled ops do not load with this torch
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.path.insert(0, str(path.parent / "stand-ins"))
    argv = sys.argv
    sys.argv = [argv[0], "--cpu"]
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.model_management  # its import reads the arguments above
    finally:
        sys.argv = argv
    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))


def patcher(model: Any) -> Any:
    import comfy.model_patcher
    import torch

    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def tiny_sd15(seed: int = 0) -> tuple[Any, Any]:
    """A random diffusers UNet and the same weights as a ComfyUI SD 1.5 model, converted by ComfyUI's own
    diffusers key map; returns (diffusers unet, ModelPatcher)."""
    import comfy.supported_models
    import comfy.utils
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D",) * 2, up_block_types=("CrossAttnUpBlock2D",) * 2,
        cross_attention_dim=CONTEXT_DIM, attention_head_dim=8).eval()
    config = dict(SD15_UNET, dtype=torch.float32)
    model = comfy.supported_models.SD15(dict(config)).get_model({})
    key_map = comfy.utils.unet_to_diffusers(config)
    state = unet.state_dict()
    unmapped = sorted(set(state) - set(key_map))
    if unmapped:
        raise AssertionError(f"ComfyUI's key map lacks diffusers keys {unmapped[:4]}")
    model.diffusion_model.load_state_dict({key_map[k]: v for k, v in state.items()}, strict=True)
    return unet, patcher(model.eval())


def tiny_sdxl(seed: int = 0) -> Any:
    """A random ComfyUI SDXL model (ModelPatcher); ComfyUI leaves layers uninitialised, so they are set here."""
    import comfy.supported_models
    import torch

    model = comfy.supported_models.SDXL(dict(SDXL_UNET, dtype=torch.float32)).get_model({})
    return patcher(randomize(model, seed).eval())


def tiny_controlnet(seed: int = 0) -> Any:
    """A random ComfyUI ControlNet for the tiny SD 1.5 model (a 3-channel control image at 8x the latent size)."""
    import comfy.cldm.cldm
    import comfy.controlnet
    import torch

    config = {k: v for k, v in SD15_UNET.items() if k != "out_channels"}
    net = comfy.cldm.cldm.ControlNet(hint_channels=3, dtype=torch.float32, **config)
    return comfy.controlnet.ControlNet(randomize(net, seed).eval(), load_device=torch.device("cpu"))


def randomize(module: Any, seed: int) -> Any:
    """Random weights for a module ComfyUI built without initialising them (its ops skip weight init)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            else:
                p.fill_(1.0 if name.endswith("weight") else 0.0)  # norms: identity; biases: zero
    return module


def conditioning(embeds: Any, sdxl: bool = False, pooled: Any = None) -> list:
    """ComfyUI CONDITIONING for (1, tokens, dim) text embeddings (SDXL: with its pooled text and sizes)."""
    import torch

    extra = {}
    if sdxl:
        extra = {"pooled_output": torch.zeros(1, POOLED_DIM) if pooled is None else pooled, "width": 64, "height": 64}
    return [[embeds, extra]]

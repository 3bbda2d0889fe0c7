"""What a run will need, estimated from shapes and dtypes before any weights are loaded (`--dry-run`).

Weights: the element counts in the checkpoint's safetensors headers (no tensor is read) times the
bytes of the dtype the run uses. Activations: one UNet call over a chunk holds the skip connections
of the down path for the up path plus the working set of its widest level; decoding holds a VAE
batch at full resolution. Peak = weights + the larger of the two. The constants are rough (they
count the tensors a block keeps alive at once) and `benchmarks/estimate.py` compares them with
measured peaks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError

DTYPE_BYTES = {"float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "bfloat16": 2, "bf16": 2}
RESNET_TENSORS = 4  # input, normed, conv output, residual sum
TRANSFORMER_TENSORS = 14  # hidden, normed, q, attention out, GEGLU's 8c projection, its 4c product
VAE_TENSORS = 6
VAE_BATCH = 8  # `generate.decode_latents`' batch


# Floating-point operations per second one CPU thread sustains in a UNet (float32), from the mid-size model
# (`benchmarks/chunks.py`: 4.2 TFLOP by `unet_flops` in 87 s on 2 threads); for a rough time only.
CPU_FLOPS_PER_THREAD = 2.4e10


@dataclass(frozen=True)
class Estimate:
    """Bytes of weights, of peak activations and of what the run holds for all frames (latents, the decoded
    frames), the UNet rows (frames x groups) of the largest call, and the UNet work."""

    weights: int
    unet_activations: int
    vae_activations: int
    unet_rows: int
    unet_passes: int
    held: int = 0
    flops: float = 0.0

    @property
    def peak(self) -> int:
        return self.weights + max(self.unet_activations, self.vae_activations) + self.held

    def cpu_seconds(self, threads: int) -> float:
        """A rough time for the UNet work on `threads` CPU threads."""
        return self.flops / (CPU_FLOPS_PER_THREAD * max(1, threads))

    def describe(self) -> str:
        gib = 2**30
        return (f"estimated peak memory {self.peak / gib:.2f} GiB: weights {self.weights / gib:.2f} GiB + "
                f"activations {max(self.unet_activations, self.vae_activations) / gib:.2f} GiB (UNet calls of "
                f"{self.unet_rows} rows: {self.unet_activations / gib:.2f} GiB; decoding "
                f"{self.vae_activations / gib:.2f} GiB) + frames held {self.held / gib:.2f} GiB; "
                f"at most {self.unet_passes} UNet frame passes")


def safetensors_elements(path: Path) -> int:
    """Total element count of the tensors in a .safetensors file, read from its header alone."""
    from .models import safetensors_header

    header = safetensors_header(path)
    if header is None:
        raise UserError(f"{path} is not a readable .safetensors file; fix or replace it")
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for d in info["shape"]:
            count *= int(d)
        total += count
    return total


def checkpoint_elements(model: str | Path) -> int | None:
    """Parameters of a diffusers folder's UNet, VAE and text encoder(s), or of a single file; None if unknown."""
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".safetensors":
        return safetensors_elements(path)
    if not path.is_dir():
        return None
    parts = ("unet", "vae", "text_encoder", "text_encoder_2")
    files = [f for part in parts for f in (path / part).glob("*.safetensors")]
    return sum(safetensors_elements(f) for f in files) if files else None


def unet_activation_bytes(config: Any, rows: int, latent_hw: tuple[int, int], dtype_bytes: int) -> int:
    """Peak activations of one UNet call over `rows` latents of (h, w) (see the module docstring)."""
    skips, working = _down_path(config, latent_hw)
    return rows * dtype_bytes * (skips + working)


def controlnet_residual_bytes(config: Any, rows: int, latent_hw: tuple[int, int], dtype_bytes: int) -> int:
    """What a ControlNet hands the UNet and is held while the UNet runs: one residual per skip connection."""
    return rows * dtype_bytes * _down_path(config, latent_hw)[0]


def _down_path(config: Any, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """Elements per row of the down path's skip connections, and of the widest level's working set."""
    channels = list(config["block_out_channels"])
    layers = int(config["layers_per_block"]) if isinstance(config["layers_per_block"], int) else \
        max(config["layers_per_block"])
    attention = ["CrossAttn" in t for t in config["down_block_types"]]
    h, w = latent_hw
    skips = channels[0] * h * w  # conv_in
    working = 0
    for i, c in enumerate(channels):
        area = (h >> i) * (w >> i)
        skips += layers * c * area + (c * area // 4 if i < len(channels) - 1 else 0)
        working = max(working, (TRANSFORMER_TENSORS if attention[i] else RESNET_TENSORS) * c * area)
    return skips, working


def unet_flops(config: Any, latent_hw: tuple[int, int]) -> float:
    """Floating-point operations of one UNet row (one frame of one guidance group) at latent size (h, w).

    Per level of c channels and a tokens: a ResNet block's two 3x3 convolutions (36·c²·a), a transformer
    block's projections and GEGLU feed-forward (40·c²·a) and its self-attention, whose keys are one frame's
    tokens also under cross-frame attention (4·a²·c); the down path has `layers_per_block` blocks a level,
    the up path one more, the middle two ResNets and one transformer.
    """
    channels = list(config["block_out_channels"])
    layers = config["layers_per_block"]
    layers = int(layers) if isinstance(layers, int) else max(layers)
    attention = ["CrossAttn" in t for t in config["down_block_types"]]
    h, w = latent_hw
    total = 0.0
    for i, c in enumerate(channels):
        area = (h >> i) * (w >> i)
        block = 36.0 * c * c * area + ((40.0 * c * c * area + 4.0 * area * area * c) if attention[i] else 0.0)
        total += (2 * layers + 1) * block
    c, area = channels[-1], (h >> (len(channels) - 1)) * (w >> (len(channels) - 1))
    return total + 2 * 36.0 * c * c * area + 40.0 * c * c * area + 4.0 * area * area * c


def vae_activation_bytes(config: Any, frames: int, size_hw: tuple[int, int], dtype_bytes: int) -> int:
    """Peak activations of decoding min(frames, VAE batch) frames of (H, W) pixels."""
    channels = list(config["block_out_channels"])
    height, width = size_hw
    levels = len(channels)
    # Decoder level j runs at 1/2^(levels-1-j) of the output size, with the reversed channel list.
    widest = max(c * (height >> (levels - 1 - j)) * (width >> (levels - 1 - j))
                 for j, c in enumerate(reversed(channels)))
    return min(frames, VAE_BATCH) * dtype_bytes * VAE_TENSORS * widest


def estimate_run(unet_config: Any, vae_config: Any, elements: int | None, *, height: int, width: int, frames: int,
                 chunk_size: int | None, groups: int, videos: int, steps: int, dtype: str,
                 controlnets: Sequence[tuple[Any, int | None]] = ()) -> Estimate:
    """The estimate for a text-to-video (or video-to-video) run with the given shapes.

    `controlnets` holds (config, parameter count) per ControlNet: their weights add to the model's, and
    their residuals stay alive while the UNet runs (their own working set is smaller than the UNet's)."""
    dtype_bytes = DTYPE_BYTES[dtype]
    from .models import vae_scale

    factor = vae_scale(vae_config)
    per_call = min(frames, chunk_size or frames)
    rows = groups * videos * per_call
    latent_hw = (height // factor, width // factor)
    residuals = sum(controlnet_residual_bytes(config, rows, latent_hw, dtype_bytes) for config, _ in controlnets)
    latent_elements = int(unet_config.get("in_channels", 4)) * latent_hw[0] * latent_hw[1]
    # Every frame's latents (start, forward noise, result) and the decoded frames, float32 and uint8.
    held = videos * frames * (3 * latent_elements * 4 + height * width * 3 * (4 + 1))
    flops = groups * videos * frames * steps * unet_flops(unet_config, latent_hw) * (1 + len(controlnets) / 2)
    return Estimate(
        weights=((elements or 0) + sum(n or 0 for _, n in controlnets)) * dtype_bytes,
        held=held, flops=flops,
        unet_activations=unet_activation_bytes(unet_config, rows, latent_hw, dtype_bytes) + residuals,
        vae_activations=vae_activation_bytes(vae_config, videos * frames, (height, width), dtype_bytes),
        unet_rows=rows, unet_passes=groups * videos * frames * steps,
    )


def controlnet_plan(model: str | Path) -> tuple[dict[str, Any] | None, int | None]:
    """A ControlNet's config and parameter count from its folder or single file (None where unknown)."""
    path = Path(model).expanduser()
    if path.is_file():
        return None, safetensors_elements(path) if path.suffix == ".safetensors" else None
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        config = None
    if not isinstance(config, dict) or "block_out_channels" not in config:
        config = None  # not a ControlNet's (the checks name it): planned as the UNet's down path
    return config, (sum(safetensors_elements(f) for f in files) if files else None)


def read_configs(model: str | Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The UNet and VAE configs of a diffusers folder (no weights read), or None."""
    path = Path(model).expanduser()
    try:
        return (json.loads((path / "unet" / "config.json").read_text()),
                json.loads((path / "vae" / "config.json").read_text()))
    except (OSError, ValueError):
        return None

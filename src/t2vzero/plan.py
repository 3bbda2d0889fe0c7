"""What a run will need, told before any weights load: the shapes it will run at and the memory estimate
(`t2vzero.estimate`) from configs and safetensors headers alone. `--dry-run` prints it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .estimate import Estimate


@dataclass(frozen=True)
class Plan:
    """A run's shapes and, where the configs could be read, its estimate (else `missing` says why)."""

    width: int
    height: int
    frames: int
    chunk_size: int | None
    dtype: str
    device: str
    estimate: Estimate | None
    missing: str = ""

    def describe(self) -> str:
        head = f"{self.width}x{self.height}, {self.frames} frames, chunk {self.chunk_size or self.frames}, " \
               f"{self.dtype} on {self.device}"
        return f"{head}: {self.estimate.describe()}" if self.estimate else f"{head}: cannot estimate: {self.missing}"


def guidance_groups(mode: str, guidance: float, image_guidance: float | None = None) -> int:
    """UNet rows per frame: one per guidance group (Instruct-Pix2Pix guides by text and by image)."""
    if guidance <= 1:
        return 1
    return 3 if mode == "edit" and image_guidance is not None and image_guidance >= 1 else 2


def plan_run(model: str | None, config: str | None, *, mode: str, frames: int, size: tuple[int, int] | None,
             steps: int | None, guidance: float | None, chunk_size: int | None, device: str, dtype: str,
             scheduler: str | None = None, image_guidance: float | None = None,
             controlnets: Sequence[str] = ()) -> Plan:
    """The plan of a `mode` run of `frames` frames at `size` = (width, height) (None: the model's native size);
    None steps/guidance take the model's defaults, then the mode's (`t2vzero.defaults`)."""
    from .defaults import pick
    from .estimate import checkpoint_elements, controlnet_plan, estimate_run, read_configs
    from .models import DEFAULT_MODEL_DIR, native_size, read_model_defaults, resolve_device
    from .schedulers import default_steps

    dev = resolve_device(device)
    name = dtype if dtype != "auto" else ("float32" if dev == "cpu" else "float16")
    folder = Path(config or model or DEFAULT_MODEL_DIR)
    configs = read_configs(folder)
    if configs is None:
        width, height = size or (0, 0)
        return Plan(width, height, frames, chunk_size, name, dev, None,
                    f"no diffusers configs in {folder} (a hub id or a single file needs --config with a local "
                    "diffusers folder)")
    unet_config, vae_config = configs
    defaults = read_model_defaults(model or DEFAULT_MODEL_DIR) if (model is None or Path(model).is_dir()) else {}
    native_h, native_w = native_size({"sample_size": 64, **unet_config}, vae_config, defaults)
    width, height = size or (native_w, native_h)
    steps = steps or default_steps(scheduler) or pick(mode, "num_inference_steps", None, defaults)
    guidance = pick(mode, "guidance_scale", guidance, defaults)
    nets = []
    for spec in controlnets:
        net_config, count = controlnet_plan(spec)
        nets.append((net_config or unet_config, count))  # a ControlNet mirrors the UNet's down path
    est = estimate_run(unet_config, vae_config, checkpoint_elements(model or DEFAULT_MODEL_DIR), height=height,
                       width=width, frames=frames, chunk_size=chunk_size,
                       groups=guidance_groups(mode, guidance, image_guidance), videos=1, steps=steps, dtype=name,
                       controlnets=nets)
    return Plan(width, height, frames, chunk_size, name, dev, est)

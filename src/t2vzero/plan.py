"""What a run will need, told before any weights load: the shapes it will run at and the memory estimate
(`t2vzero.estimate`) from configs and safetensors headers alone. `--dry-run` prints it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .estimate import Estimate

GIB = 2**30
# The estimate reads 0.7-1.0 of measured peaks (benchmarks/estimate.py): a run must fit with this margin.
MARGIN = 1.25
# Frames larger than this many times the model's native area get a time warning on a CPU.
FAR_ABOVE_NATIVE = 4
LONG_RUN_S = 3600  # and any CPU run estimated to take longer than this


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
    native: tuple[int, int] | None = None  # the model's own (width, height)
    # The estimate at another chunk size or size (width, height): what `fit` tries.
    reestimate: Callable[[int | None, tuple[int, int]], Estimate] | None = field(default=None, compare=False,
                                                                                 repr=False)

    def describe(self) -> str:
        head = f"{self.width}x{self.height}, {self.frames} frames, chunk {self.chunk_size or self.frames}, " \
               f"{self.dtype} on {self.device}"
        return f"{head}: {self.estimate.describe()}" if self.estimate else f"{head}: cannot estimate: {self.missing}"


def available_memory(device: str) -> int | None:
    """Bytes a run may still use on `device`: free VRAM on CUDA; on the CPU the kernel's available memory,
    within this process's cgroup limit if it has one; None when it cannot be told (MPS shares system memory)."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    if device != "cpu":
        return None
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        free = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return free


@dataclass(frozen=True)
class Fit:
    """What `fit` decided: the chunk size to run with, and lines to tell the user (warnings, notes)."""

    chunk_size: int | None
    notes: list[str]


def fit(plan: Plan, *, available: int | None, force: bool = False, threads: int = 1, chunk_option: str = "--chunk-size",
        size_option: str = "--size") -> Fit:
    """Decide before any weights load whether the run can finish: the estimated peak (with a margin) must fit in
    `available` bytes. A run without a chunk size gets the largest one that fits, said in a note; a run that
    cannot fit is refused, naming the estimate, what is free and the chunk size or size that would fit, unless
    `force`. On a CPU, frames far above the model's native size add a warning with a rough time."""
    notes: list[str] = []
    est = plan.estimate
    if est is None:
        return Fit(plan.chunk_size, [f"warning: cannot estimate the memory this run needs ({plan.missing}); "
                                     "running anyway"])
    chunk = plan.chunk_size
    if available is not None and est.peak * MARGIN > available:
        fitting = _fitting_chunk(plan, available)
        if force:
            notes.append(f"warning: this run needs about {_gib(est.peak)} but {_gib(available)} are free on "
                         f"{plan.device}; running anyway (--force)")
        elif chunk is None and fitting is not None:
            chunk = fitting
            notes.append(f"note: {plan.frames} frames at once need about {_gib(est.peak)} but {_gib(available)} "
                         f"are free on {plan.device}; running in chunks of {chunk} ({chunk_option} {chunk})")
        else:
            raise UserError(f"this run needs about {_gib(est.peak)} but {_gib(available)} are free on "
                            f"{plan.device}; {_what_fits(plan, available, fitting, chunk_option, size_option)}, "
                            "or --force to run anyway")
    if plan.device == "cpu":
        ratio = plan.width * plan.height / (plan.native[0] * plan.native[1]) if plan.native else 1.0
        expect = f"on this CPU expect roughly {_duration(est.cpu_seconds(threads))} (Ctrl-C stops it)"
        if ratio > FAR_ABOVE_NATIVE:
            notes.append(f"warning: {plan.width}x{plan.height} is {ratio:.0f}x the model's native "
                         f"{plan.native[0]}x{plan.native[1]} area; {expect}")
        elif est.cpu_seconds(threads) > LONG_RUN_S:
            notes.append(f"warning: {plan.frames} frames at {plan.width}x{plan.height}: {expect}")
    return Fit(chunk, notes)


def _fitting_chunk(plan: Plan, available: int) -> int | None:
    """The largest chunk size (from 2) at which the run fits, or None. The peak grows with the chunk, so a
    bisection finds it in a few estimates even for a million frames."""
    if plan.reestimate is None or plan.frames < 3:
        return None

    def fits(chunk: int) -> bool:
        return plan.reestimate(chunk, (plan.width, plan.height)).peak * MARGIN <= available

    lo, hi = 2, min(plan.chunk_size or plan.frames, plan.frames) - 1  # the answer lies in [lo, hi] if anywhere
    if hi < lo or not fits(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def _what_fits(plan: Plan, available: int, chunk: int | None, chunk_option: str, size_option: str) -> str:
    """The change that makes the run fit: a chunk size, else a smaller size at chunk 2, else fewer frames."""
    if chunk is not None:
        return f"use {chunk_option} {chunk}"
    if plan.reestimate is not None:
        w, h = plan.width, plan.height
        for step in range(1, 64):
            scale = 1 - step / 64
            size = (max(8, int(w * scale) // 8 * 8), max(8, int(h * scale) // 8 * 8))
            if plan.reestimate(2 if plan.frames > 2 else None, size).peak * MARGIN <= available:
                value = f"{size[0]}x{size[1]}" if size_option == "--size" else str(max(size))
                chunked = f" with {chunk_option} 2" if plan.frames > 2 else ""
                return f"use {size_option} {value}{chunked}"
    return "use fewer frames or a smaller model"


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def _duration(seconds: float) -> str:
    for unit, length in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * length:
            return f"{seconds / length:.0f} {unit}"
    return f"{seconds:.0f} seconds"


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
    from .estimate import checkpoint_elements, controlnet_plan, estimate_run
    from .models import DEFAULT_MODEL_DIR, native_size, resolve_device
    from .schedulers import default_steps

    dev = resolve_device(device)
    name = dtype if dtype != "auto" else ("float32" if dev == "cpu" else "float16")
    known = _model_configs(model, config)
    if known is None:
        width, height = size or (0, 0)
        return Plan(width, height, frames, chunk_size, name, dev, None,
                    f"no diffusers configs in {Path(config or model or DEFAULT_MODEL_DIR)} (a hub id or a single "
                    "file needs --config with a local diffusers folder)")
    unet_config, vae_config, defaults = known
    native_h, native_w = native_size({"sample_size": 64, **unet_config}, vae_config, defaults)
    width, height = size or (native_w, native_h)
    steps = steps or default_steps(scheduler) or pick(mode, "num_inference_steps", None, defaults)
    guidance = pick(mode, "guidance_scale", guidance, defaults)
    nets = []
    for spec in controlnets:
        net_config, count = controlnet_plan(spec)
        nets.append((net_config or unet_config, count))  # a ControlNet mirrors the UNet's down path
    elements = checkpoint_elements(model or DEFAULT_MODEL_DIR)
    groups = guidance_groups(mode, guidance, image_guidance)

    def reestimate(chunk: int | None, size: tuple[int, int]) -> Estimate:
        return estimate_run(unet_config, vae_config, elements, height=size[1], width=size[0], frames=frames,
                            chunk_size=chunk, groups=groups, videos=1, steps=steps, dtype=name, controlnets=nets)

    return Plan(width, height, frames, chunk_size, name, dev, reestimate(chunk_size, (width, height)),
                native=(native_w, native_h), reestimate=reestimate)


def _model_configs(model: str | None, config: str | None) -> tuple[dict, dict, dict] | None:
    """The UNet and VAE configs and the model's t2vzero.json defaults, read without weights; None if unreadable."""
    from .estimate import read_configs
    from .models import DEFAULT_MODEL_DIR, read_model_defaults

    configs = read_configs(Path(config or model or DEFAULT_MODEL_DIR))
    if configs is None:
        return None
    defaults = read_model_defaults(model or DEFAULT_MODEL_DIR) if (model is None or Path(model).is_dir()) else {}
    return (*configs, defaults)


def unet_config_before_loading(model: str | None, config: str | None = None) -> dict[str, Any] | None:
    """The UNet's config.json, with the VAE's `latent_channels` added, read without weights; None where the
    configs cannot be read (a hub id, a single file without --config)."""
    known = _model_configs(model, config)
    return None if known is None else {**known[0], "latent_channels": known[1].get("latent_channels", 4)}


def is_sdxl_before_loading(model: str | None, config: str | None = None) -> bool | None:
    """Whether the model is of SDXL's architecture (a `text_time` UNet), from its configs alone; None where they
    cannot be read (a hub id, a single file without --config)."""
    known = _model_configs(model, config)
    return None if known is None else known[0].get("addition_embed_type") == "text_time"


def native_size_before_loading(model: str | None, config: str | None = None) -> tuple[int, int] | None:
    """(width, height) the model draws by default, from its configs alone; None where they cannot be read
    (a hub id, a single file without --config)."""
    from .models import native_size

    known = _model_configs(model, config)
    if known is None:
        return None
    unet_config, vae_config, defaults = known
    height, width = native_size({"sample_size": 64, **unet_config}, vae_config, defaults)
    return width, height

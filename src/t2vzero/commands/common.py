"""What every mode shares: the shape its checks tell, the memory plan, loading, prompt warnings, writing."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..options import SPEED_KEYS


@dataclass(frozen=True)
class Shape:
    """What a mode's checks tell of its video before any weights load: the frame count, the size
    ((width, height); None: the model's native size), `plan_run`'s mode-specific arguments, and the
    option a refusal should name to change the size."""

    frames: int
    size: tuple[int, int] | None
    plan_args: dict[str, Any] = field(default_factory=dict)
    size_option: str = "--size"


@dataclass(frozen=True)
class Planned:
    """A run's memory plan: its estimate in words, the chunk size to run with, lines to tell (notes,
    warnings), and `refusal` when the run cannot fit (without --force)."""

    estimate: str
    chunk_size: int | None
    notes: list[str]
    refusal: str | None = None


@dataclass
class Loaded:
    """What a mode loaded: the pipeline, its ControlNets with their scales, and warnings from loading."""

    pipe: Any
    controlnets: list[tuple[Any, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Rendered:
    """A rendered job (or part): (F, H, W, 3) uint8 frames and their ids, the output rate, contact-sheet rows
    above the output (inputs, conditions), the parameters the model's defaults resolved (for the manifest),
    the video's whole frame count, and warnings from the render."""

    frames: Any
    frame_ids: list[int]
    fps: float
    rows: list[Any] = field(default_factory=list)
    resolved: dict[str, Any] = field(default_factory=dict)
    total: int = 0
    warnings: list[str] = field(default_factory=list)


def plan(mode: str, params: dict[str, Any], shape: Shape) -> Planned:
    """Estimate the run before any weights load (`t2vzero.plan`) and decide whether and how it fits. A run on
    Ray workers whose device this machine lacks (a driver without CUDA) is not planned here."""
    from ..errors import UserError
    from ..plan import available_memory, fit, plan_run

    elsewhere = _device_elsewhere(params)
    if elsewhere:
        return Planned(f"not estimated on this machine: {elsewhere}", params["chunk_size"],
                       [f"note: {elsewhere}; the memory plan is left to the Ray workers"])
    estimate = plan_run(params["model"], params.get("model_config"), mode=mode, frames=shape.frames, size=shape.size,
                        steps=params["steps"], guidance=params["guidance"], chunk_size=params["chunk_size"],
                        device=params["device"], dtype=params["dtype"], scheduler=params["scheduler"],
                        **shape.plan_args)
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    try:
        decision = fit(estimate, available=available_memory(estimate.device), force=bool(params.get("force")),
                       threads=threads, size_option=shape.size_option)
    except UserError as refusal:
        return Planned(estimate.describe(), estimate.chunk_size, [], str(refusal))
    return Planned(estimate.describe(), decision.chunk_size, list(decision.notes))


def _device_elsewhere(params: dict[str, Any]) -> str | None:
    """For a run on Ray: why its device is not on this machine (the workers' may have it), else None."""
    if params.get("ray") is None:
        return None
    from ..errors import UserError
    from ..models import check_device_name, resolve_device

    check_device_name(params["device"])
    try:
        resolve_device(params["device"])
    except UserError:
        return f"--device {params['device']} is not on this machine"
    return None


def seeded(params: dict[str, Any]) -> Any:
    import torch

    return torch.Generator().manual_seed(params["seed"])


def pipe_key(p: dict[str, Any]) -> tuple:
    """What `load_pipe` loads: jobs with equal keys share one load."""
    return ("pipe", p["model"], p.get("model_config"), p["device"], p["dtype"], tuple(p["lora"]), p["allow_pickle"],
            tuple(p.get(k) for k in SPEED_KEYS), tuple(p.get("controlnets") or ()))


def load_pipe(p: dict[str, Any]) -> Loaded:
    """The pipeline and the job's ControlNets (with their scales), the speed options applied to all."""
    from ..models import load_controlnet
    from ..options import apply_speed, quiet_libraries
    from ..pipeline import TextToVideoZero

    quiet_libraries()
    pipe = TextToVideoZero.from_pretrained(p["model"], device=p["device"], dtype=p["dtype"], lora=p["lora"],
                                           allow_pickle=p["allow_pickle"], config=p.get("model_config"))
    nets = [load_controlnet(spec, device=p["device"], dtype=p["dtype"], allow_pickle=p["allow_pickle"])
            for spec in p.get("controlnets") or ()]
    return Loaded(pipe, nets, apply_speed(pipe, p, [n for n, _ in nets]))


def prompt_warnings(loaded: Loaded, prompt: str, negative: str) -> list[str]:
    """Loading's warnings, then words the model never saw and prompts longer than its text encoder reads."""
    from ..options import long_prompt_warnings, unknown_words_warning

    unknown = unknown_words_warning(prompt, loaded.pipe.defaults.get("vocabulary"))
    return [*loaded.notes, *([unknown] if unknown else []), *long_prompt_warnings(loaded.pipe, prompt, negative)]


def sampler_name(pipe: Any, name: str | None) -> str:
    """The sampler a run used: the one named, else the model's own (its scheduler's class)."""
    return name or type(pipe.components["scheduler"]).__name__


def plain(value: Any) -> Any:
    """JSON's form of a parsed value (tuples as lists, camera paths as their --motion spec)."""
    from ..motion import Motion

    if isinstance(value, Motion):
        return value.spec
    return [plain(v) for v in value] if isinstance(value, tuple | list) else value


def part_ids(frame_ids: Sequence[int] | None, total: int) -> list[int]:
    """The frames a render returns: all, or those of `frame_ids` within the video (a split made from a clip's
    stored duration may name frames past its real end)."""
    return list(range(total)) if frame_ids is None else [k for k in frame_ids if 0 <= k < total]


def empty(fps: float, total: int) -> Rendered:
    """A part with none of its frames in the video."""
    import numpy as np

    return Rendered(np.zeros((0, 8, 8, 3), np.uint8), [], fps, total=total)


def write_outputs(rendered: Rendered, output: str | Path, sheet: str | Path | None) -> Path:
    """The video (atomically, `t2vzero.video.write_video`) and, if asked, its contact sheet: the rows, then
    the frames (small frames enlarged)."""
    from ..video import SHEET_MIN_SIDE, contact_sheet, write_video

    path = write_video(rendered.frames, output, fps=rendered.fps)
    if sheet is not None:
        contact_sheet([*rendered.rows, rendered.frames], sheet, min_side=SHEET_MIN_SIDE)
    return path

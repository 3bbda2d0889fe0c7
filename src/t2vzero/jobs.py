"""Jobs: one video each, named by a mode and the options of that mode's command.

A job's options are its command's long option names with dashes as underscores (`frames`, `steps`,
`chunk_size`, `background_smoothing`, `controlnet`), its values what one types after the option
(JSON numbers or text; a list for a repeatable option; true for a flag); `prompt` and, for the
video-to-video modes, `input` are the command's arguments. A job is parsed by its command's own
click parameters, so it accepts exactly what the command accepts, with the same defaults and ranges.

`MODES` maps a mode to what it needs beyond that: the checks its command makes before loading
weights, what a worker loads for it (jobs that load the same share one load), and how to render
it, whole or a subset of its frames, on loaded models. A new mode is one entry.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from .errors import UserError

# Command parameters that belong to the run rather than to one job: where outputs go (batch names
# them), the dry run, and how the work is spread (--ray and its options).
RUN_PARAMS = frozenset({"output", "sheet", "dry_run", "force", "ray", "workers", "gpus_per_worker", "cpus_per_worker",
                        "max_retries"})
ARGUMENT_KEYS = {"prompt": "prompt", "instruction": "prompt", "input_video": "input"}
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
SPEED_LOADS = ("compile", "channels_last", "vae_tiling", "offload")  # applied to the loaded models


@dataclass
class Rendered:
    """A rendered job (or part): (F, H, W, 3) uint8 frames, their ids, the output rate, sheet rows
    above the output (inputs, conditions), and the generation values the model resolved."""

    frames: Any
    frame_ids: list[int]
    fps: float
    rows: list[Any] = field(default_factory=list)
    resolved: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Mode:
    """How a job of one mode is checked, loaded and rendered; `params` are its command's arguments."""

    command: str
    check: Callable[[dict[str, Any]], None]  # the command's checks before any weights load
    load_key: Callable[[dict[str, Any]], tuple]  # jobs with equal keys share a load
    load: Callable[[dict[str, Any]], Any]
    render: Callable[..., Rendered]  # (loaded, params, frame_ids=None, anchor=None) -> Rendered
    frame_count: Callable[[dict[str, Any]], int]
    uses: frozenset[str]  # every command parameter the mode reads (a new CLI option must be mapped)
    anchor: Callable[[Any, dict[str, Any]], Any] | None = None  # a shared first phase for split renders
    splittable: Callable[[dict[str, Any]], bool] = lambda params: True


@dataclass(frozen=True)
class Job:
    """One validated line: its id, mode, the command's parsed arguments and the options as a record."""

    id: str
    mode: str
    params: dict[str, Any]
    options: dict[str, Any]  # every option by job key, defaults filled in: the job's identity for resuming
    line: int

    @property
    def seed(self) -> int:
        return int(self.params["seed"])

    @property
    def load_key(self) -> tuple:
        return MODES[self.mode].load_key(self.params)


# --- parsing a job line through its command's click parameters -------------------------------------------------


def command(name: str) -> click.Command:
    from .cli import main

    cmd = main.commands.get(name)
    if cmd is None:
        raise UserError(f"no command {name!r}")
    return cmd


def option_keys(cmd: click.Command) -> dict[str, click.Parameter]:
    """Job key -> click parameter, for every parameter a job may give (arguments by their job names)."""
    keys = {}
    for param in cmd.params:
        if param.name in RUN_PARAMS:
            continue
        if isinstance(param, click.Argument):
            keys[ARGUMENT_KEYS.get(param.name, param.name)] = param
        else:
            longest = max(param.opts, key=len)
            keys[longest.lstrip("-").replace("-", "_")] = param
    return keys


def parse_job(record: Any, line: int) -> Job:
    """A job from one decoded JSON line; every problem is a UserError naming the line."""
    if not isinstance(record, dict):
        raise UserError(f"line {line}: a job is a JSON object like {{\"id\": \"a\", \"prompt\": \"...\"}}, "
                        f"not {type(record).__name__}")
    spec = dict(record)
    job_id = spec.pop("id", f"line-{line}")
    if not isinstance(job_id, str) or not ID_PATTERN.fullmatch(job_id):
        raise UserError(f"line {line}: id {job_id!r} must be text of letters, digits, '.', '_' or '-' "
                        "(it names the output file)")
    mode = spec.pop("mode", "generate")
    if not isinstance(mode, str) or mode not in MODES:
        raise UserError(f"line {line}: unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if not isinstance(spec.get("prompt"), str):
        raise UserError(f"line {line}: the job has no \"prompt\" text (for edit: the instruction)")
    cmd = command(MODES[mode].command)
    keys = option_keys(cmd)
    unknown = [k for k in spec if k not in keys]
    if unknown:
        close = difflib.get_close_matches(unknown[0], keys, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; {mode} takes: {', '.join(sorted(keys))}"
        raise UserError(f"line {line}: unknown option {unknown[0]!r} for mode {mode}{hint}")
    params = _click_parse(cmd, keys, spec, line)
    try:
        MODES[mode].check(params)
    except UserError as exc:
        raise UserError(f"line {line} ({job_id}): {exc}") from None
    options = {key: _plain(params[p.name]) for key, p in keys.items()}
    return Job(job_id, mode, params, options, line)


def _click_parse(cmd: click.Command, keys: dict[str, click.Parameter], spec: dict[str, Any],
                 line: int) -> dict[str, Any]:
    """The command's callback arguments for `spec`, parsed as the command line would parse them."""
    options, arguments = [], {}
    for key, value in spec.items():
        param = keys[key]
        if isinstance(param, click.Argument):
            arguments[param.name] = value
        elif value is not None:
            options += _as_argv(key, param, value, line)
    if any(isinstance(p, click.Argument) and p.name not in arguments for p in cmd.params):
        missing = [ARGUMENT_KEYS.get(p.name, p.name) for p in cmd.params
                   if isinstance(p, click.Argument) and p.name not in arguments]
        raise UserError(f"line {line}: the job needs {' and '.join(repr(m) for m in missing)}")
    for name, value in arguments.items():
        if not isinstance(value, str):
            raise UserError(f"line {line}: {ARGUMENT_KEYS.get(name, name)!r} must be text")
    positional = [arguments[p.name] for p in cmd.params if isinstance(p, click.Argument)]
    try:
        with cmd.make_context(cmd.name, [*options, "--", *positional]) as ctx:
            return dict(ctx.params)
    except click.ClickException as exc:
        raise UserError(f"line {line}: {exc.format_message()}") from None


def _as_argv(key: str, param: click.Parameter, value: Any, line: int) -> list[str]:
    flag = max(param.opts, key=len)
    if getattr(param, "is_flag", False):
        if not isinstance(value, bool):
            raise UserError(f"line {line}: {key!r} is a flag: true or false, not {value!r}")
        return [flag] if value else []
    if isinstance(value, list) and not param.multiple:
        raise UserError(f"line {line}: {key!r} takes one value, not a list")
    values = value if isinstance(value, list) else [value]
    argv = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise UserError(f"line {line}: {key!r} must be a number or text, not {v!r}")
        argv += [flag, str(v)]
    return argv


def _plain(value: Any) -> Any:
    """JSON's form of a parsed value (tuples as lists, camera paths as their --motion spec)."""
    from .motion import Motion

    if isinstance(value, Motion):
        return value.spec
    return [_plain(v) for v in value] if isinstance(value, tuple | list) else value


# --- the modes --------------------------------------------------------------------------------------------------


def _seeded(params: dict[str, Any]) -> Any:
    import torch

    return torch.Generator().manual_seed(params["seed"])


def _pipe_key(p: dict[str, Any]) -> tuple:
    return ("pipe", p["model"], p.get("model_config"), p["device"], p["dtype"], tuple(p["lora"]), p["allow_pickle"],
            tuple(p.get(k) for k in SPEED_LOADS))


def _load_pipe(p: dict[str, Any], controlnets: Sequence[str] = ()) -> tuple[Any, list[tuple[Any, float]]]:
    from .cli import _apply_speed, _quiet_libraries
    from .models import load_controlnet
    from .pipeline import TextToVideoZero

    _quiet_libraries()
    pipe = TextToVideoZero.from_pretrained(p["model"], device=p["device"], dtype=p["dtype"], lora=p["lora"],
                                           allow_pickle=p["allow_pickle"], config=p.get("model_config"))
    nets = [load_controlnet(spec, device=p["device"], dtype=p["dtype"], allow_pickle=p["allow_pickle"])
            for spec in controlnets]
    _apply_speed(pipe, p, [n for n, _ in nets])
    return pipe, nets


def _check_generate(p: dict[str, Any]) -> None:
    """`t2vzero generate`'s checks before loading (the command's own, in its order)."""
    from .checks import check_finite, check_video_args
    from .cli import _check_single_file_config, _check_speed, check_prompt_text, parse_pair
    from .models import check_dtype_name, parse_lora
    from .schedulers import check_scheduler_args
    from .video import check_fps

    check_prompt_text(p["prompt"])
    check_scheduler_args(p["scheduler"], p["timestep_spacing"])
    width, height = parse_pair(p["size"], "x", "size", int) if p["size"] else (8, 8)
    camera = _motion(p)
    if camera is not None:
        camera.check(p["frames"], (width, height) if p["size"] else None)
    check_fps(p["fps"])
    check_finite({"--guidance": p["guidance"]})
    _check_single_file_config(p["model"], p["model_config"])
    for spec in p["lora"]:
        parse_lora(spec)
    check_video_args(video_length=p["frames"], height=height, width=width,
                     num_inference_steps=p["steps"] if p["steps"] is not None else 1, chunk_size=p["chunk_size"],
                     num_videos_per_prompt=1, compat=p["compat"])
    if p["t0"] is not None and p["t1"] is not None and p["t0"] >= p["t1"]:
        raise UserError(f"t0={p['t0']} must be smaller than t1={p['t1']} (diffusion timesteps, 0 <= t0 < t1 < 1000)")
    check_dtype_name(p["dtype"])
    _check_speed(p, p["device"])


def _motion(p: dict[str, Any]) -> Any:
    from .cli import motion_from_options

    return motion_from_options(p["motion"], p["motion_file"], p["no_motion"])


def _generation_args(p: dict[str, Any]) -> dict[str, Any]:
    """`TextToVideoZero.__call__`'s generation arguments from the command's, as `t2vzero generate` passes them."""
    from .cli import parse_pair

    width, height = parse_pair(p["size"], "x", "size", int) if p["size"] else (None, None)
    return dict(video_length=p["frames"], height=height, width=width, num_inference_steps=p["steps"],
                guidance_scale=p["guidance"], negative_prompt=p["negative"], generator=_seeded(p), motion=_motion(p),
                t0=p["t0"], t1=p["t1"], cross_frame_attention=not p["no_cross_frame_attention"], compat=p["compat"],
                scheduler=p["scheduler"], timestep_spacing=p["timestep_spacing"], token_merging=p["tome"],
                prompt_2=p["prompt_2"], negative_prompt_2=p["negative_2"], guidance_rescale=p["guidance_rescale"],
                cache_interval=p["cache_interval"])


def _anchor_generate(loaded: Any, p: dict[str, Any]) -> Any:
    pipe, _ = loaded
    return pipe.anchor(p["prompt"], **_generation_args(p))


def _render_generate(loaded: Any, p: dict[str, Any], frame_ids: Sequence[int] | None = None,
                     anchor: Any = None) -> Rendered:
    pipe, _ = loaded
    args = _generation_args(p)
    if frame_ids is None and anchor is None:
        video = pipe(p["prompt"], chunk_size=p["chunk_size"], background_smoothing=p["smoothing"], progress=False,
                     **args)
        ids = list(range(p["frames"]))
    else:
        anchor = anchor if anchor is not None else pipe.anchor(p["prompt"], **args)
        ids = list(range(anchor.num_frames)) if frame_ids is None else list(frame_ids)
        video = pipe.render(anchor, ids, chunk_size=p["chunk_size"])
    resolved = pipe.generation_args(**{k: v for k, v in args.items() if k != "generator"})
    keep = ("video_length", "height", "width", "num_inference_steps", "guidance_scale", "motion", "t0", "t1",
            "scheduler", "timestep_spacing")
    return Rendered(video.uint8()[0], ids, p["fps"], [], {k: _plain(resolved.get(k)) for k in keep})


def _check_clip(p: dict[str, Any]) -> None:
    """The checks `control` and `edit` make on their clip options before reading it."""
    from .checks import check_finite
    from .cli import check_prompt_text
    from .models import check_dtype_name, parse_lora
    from .schedulers import check_scheduler_args
    from .video import check_fps

    check_prompt_text(p.get("prompt", p.get("instruction", "")))
    if p["steps"] < 1:
        raise UserError(f"steps must be at least 1 (got {p['steps']})")
    check_finite({"--guidance": p["guidance"], "--image-guidance": p.get("image_guidance")})
    check_scheduler_args(p["scheduler"], p["timestep_spacing"])
    from .cli import _check_speed

    _check_speed(p, p["device"])
    if p["chunk_size"] is not None and p["chunk_size"] < 2:
        raise UserError(f"chunk size must be at least 2 (frame 1 plus one more), got {p['chunk_size']}")
    if p["fps"] is not None:
        check_fps(p["fps"])
    check_dtype_name(p["dtype"])
    for spec in p["lora"]:
        parse_lora(spec)
    if p["every"] < 1 or (p["max_frames"] is not None and p["max_frames"] < 1):
        raise UserError(f"every must be at least 1 and max_frames at least 1 (got {p['every']}, {p['max_frames']})")
    check_finite({"--start": p["start"], "--end": p["end"]})
    if not Path(p["input_video"]).exists():
        raise UserError(f"input {p['input_video']} does not exist")


def _clip(p: dict[str, Any]) -> tuple[Any, float]:
    """The input frames and output rate, as `control` and `edit` read them."""
    from .defaults import CLIP
    from .inputs import fit_resolution, load_clip
    from .video import check_fps

    frames, fps = load_clip(p["input_video"], start=p["start"], end=p["end"], every=p["every"],
                            max_frames=p["max_frames"], fps=p["fps"])
    return fit_resolution(frames, p["resolution"]), check_fps(p["fps"] or fps or CLIP["fps"])


def _clip_frames(p: dict[str, Any]) -> int:
    from .inputs import load_clip

    return len(load_clip(p["input_video"], start=p["start"], end=p["end"], every=p["every"],
                         max_frames=p["max_frames"], fps=p["fps"])[0])


def _check_control(p: dict[str, Any]) -> None:
    from .inputs import ANNOTATORS
    from .models import parse_lora

    _check_clip(p)
    for spec in p["controlnets"]:
        parse_lora(spec)
    for kind in p["conditions"]:
        if kind not in ANNOTATORS and not Path(kind).exists():
            raise UserError(f"condition {kind!r} is neither {', '.join(ANNOTATORS)} nor an existing video or folder")
    if len(_condition_kinds(p)) != len(p["controlnets"]):
        raise UserError(f"{len(_condition_kinds(p))} conditions for {len(p['controlnets'])} ControlNets; "
                        "give one per controlnet")


def _condition_kinds(p: dict[str, Any]) -> list[str]:
    kinds = list(p["conditions"]) + list(p["condition_videos"])
    return kinds + ["canny"] * (len(p["controlnets"]) - len(kinds))


def _render_control(loaded: Any, p: dict[str, Any], frame_ids: Sequence[int] | None = None,
                    anchor: Any = None) -> Rendered:
    from .inputs import ANNOTATORS, annotate, load_clip, match_condition_video

    pipe, nets = loaded
    frames, fps = _clip(p)
    maps = []
    for kind in _condition_kinds(p):
        if kind in ANNOTATORS:
            maps.append(annotate(frames, kind, p["annotator"], low=p["canny_low"], high=p["canny_high"]))
        else:
            cond, _ = load_clip(kind, start=p["start"], end=p["end"], every=p["every"], max_frames=p["max_frames"],
                                fps=p["fps"])
            maps.append(match_condition_video(cond, frames, kind))
    ids = list(range(len(frames))) if frame_ids is None else list(frame_ids)
    video = pipe.control(p["prompt"], maps, [n for n, _ in nets], scales=[s for _, s in nets],
                         negative_prompt=p["negative"], num_inference_steps=p["steps"], guidance_scale=p["guidance"],
                         generator=_seeded(p), chunk_size=p["chunk_size"], compat=p["compat"],
                         scheduler=p["scheduler"], timestep_spacing=p["timestep_spacing"], token_merging=p["tome"],
                         cache_interval=p["cache_interval"], progress=False, frame_ids=frame_ids)
    return Rendered(video.uint8()[0], ids, fps, [frames, *maps])


def _check_edit(p: dict[str, Any]) -> None:
    _check_clip(p)


def _render_edit(loaded: Any, p: dict[str, Any], frame_ids: Sequence[int] | None = None,
                 anchor: Any = None) -> Rendered:
    pipe, _ = loaded
    frames, fps = _clip(p)
    ids = list(range(len(frames))) if frame_ids is None else list(frame_ids)
    video = pipe.edit(p["instruction"], frames, negative_prompt=p["negative"], num_inference_steps=p["steps"],
                      guidance_scale=p["guidance"], image_guidance_scale=p["image_guidance"], generator=_seeded(p),
                      chunk_size=p["chunk_size"], compat=p["compat"], scheduler=p["scheduler"],
                      timestep_spacing=p["timestep_spacing"], token_merging=p["tome"],
                      cache_interval=p["cache_interval"], progress=False, frame_ids=frame_ids)
    return Rendered(video.uint8()[0], ids, fps, [frames])


def _splittable(p: dict[str, Any]) -> bool:
    """Parts rendered apart equal the whole only where each frame has its own step-noise stream: the default
    recipe (`--compat diffusers` draws step noise from one generator across the frames of a call)."""
    return p["compat"] == "t2vzero"


_LOADS = frozenset({"model", "device", "dtype", "lora", "allow_pickle", *SPEED_LOADS})
_SAMPLING = frozenset({"seed", "negative", "chunk_size", "compat", "scheduler", "timestep_spacing", "tome",
                       "cache_interval", "steps", "guidance", "fps"})
_CLIP = frozenset({"input_video", "start", "end", "every", "max_frames", "resolution"})

MODES: dict[str, Mode] = {
    "generate": Mode(
        "generate", _check_generate, _pipe_key, _load_pipe, _render_generate, lambda p: p["frames"],
        _LOADS | _SAMPLING | {"prompt", "model_config", "prompt_2", "negative_2", "guidance_rescale", "frames",
                              "size", "motion", "motion_file", "no_motion", "t0", "t1", "no_cross_frame_attention",
                              "smoothing"},
        anchor=_anchor_generate, splittable=lambda p: _splittable(p) and p["smoothing"] is None),
    "control": Mode(
        "control", _check_control, lambda p: (*_pipe_key(p), tuple(p["controlnets"])),
        lambda p: _load_pipe(p, p["controlnets"]), _render_control, _clip_frames,
        _LOADS | _SAMPLING | _CLIP | {"prompt", "controlnets", "conditions", "condition_videos", "annotator",
                                      "canny_low", "canny_high"}, splittable=_splittable),
    "edit": Mode(
        "edit", _check_edit, _pipe_key, _load_pipe, _render_edit, _clip_frames,
        _LOADS | _SAMPLING | _CLIP | {"instruction", "image_guidance"}, splittable=_splittable),
}

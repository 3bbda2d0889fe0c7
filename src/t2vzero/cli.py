"""The `t2vzero` command line. Heavy imports (torch, diffusers) happen inside commands, so
`t2vzero --help` answers at once."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any

import click

from .batch import FORMATS
from .checks import check_finite
from .defaults import ANIMATE, CLIP, CONTROL, EDIT, RESTYLE, TEXT_TO_VIDEO
from .distributed import ray_options, wants_ray
from .errors import UserError


def parse_pair(text: str, sep: str, what: str, cast: Any = float) -> tuple[Any, Any]:
    """'512x320' → (512, 320); '12,0' → (12.0, 0.0)."""
    parts = text.lower().split(sep)
    example = "512x512" if sep == "x" else "12,12"
    try:
        if len(parts) != 2:
            raise ValueError
        pair = cast(parts[0]), cast(parts[1])
    except ValueError:
        raise UserError(f"{what} {text!r} is not of the form {example}") from None
    if not all(math.isfinite(v) for v in pair):
        raise UserError(f"{what} {text!r} must be two finite numbers, e.g. {example}")
    return pair


SEED = click.IntRange(-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes


def check_prompt_text(prompt: str) -> str:
    """An empty prompt is a valid unconditional prompt; undecodable bytes or control codes are not text."""
    if any(0xDC80 <= ord(c) <= 0xDCFF for c in prompt) or any(ord(c) < 32 and c not in "\t\n" for c in prompt):
        raise UserError("the prompt is not text (it holds binary or control characters); pass words in quotes")
    return prompt


def _motion_options(fn: Any) -> Any:
    """--motion SPEC and --motion-file FILE, for the commands with a camera path (generate, animate)."""
    fn = click.option("--motion-file", default=None, metavar="FILE",
                      help='Camera path from a file: .json keyframes [{"frame": 0, "dx": 0, "dy": 0, "zoom": 1, '
                      '"rotate": 0}, ...] (interpolated between keys) or a .npy dense flow (frames-1, 2, H, W) in '
                      "output pixels.")(fn)
    return click.option("--motion", default=None, metavar="SPEC",
                        help="Camera path: DX,DY (the paper's δ, pixels per frame on a 512 grid; positive moves "
                        "content left/up, as the reference), pan:DX,DY, zoom:F (scale per frame), rotate:DEG (per "
                        "frame, counter-clockwise), or parts joined by '+', e.g. zoom:1.02+pan:4,0 [default: "
                        f"model's, else {TEXT_TO_VIDEO['motion'][0]:g},{TEXT_TO_VIDEO['motion'][1]:g}].")(fn)


def _sampler_options(fn: Any) -> Any:
    """--scheduler and --timestep-spacing, for every mode."""
    from .schedulers import SCHEDULERS, SPACINGS  # no torch: a table of names

    fn = click.option("--timestep-spacing", default=None, type=click.Choice(SPACINGS),
                      help="Where a short schedule's steps fall ('trailing' for SD-Turbo-style few-step use) "
                      "[default: the scheduler's].")(fn)
    return click.option("--scheduler", default=None, metavar="NAME",
                        help=f"Sampler: {', '.join(SCHEDULERS)} [default: the model's own].")(fn)


SPEED_KEYS = ("compile", "channels_last", "vae_tiling", "offload")


def _speed_options(fn: Any) -> Any:
    """Frame-preserving speed and memory options, for every mode (see t2vzero.speed)."""
    options = [
        click.option("--compile", "compile", is_flag=True,
                     help="torch.compile the UNet's repeated blocks, ControlNets and VAE decoder (same frames; a "
                     "warning and the plain path where compiling does not work)."),
        click.option("--channels-last", is_flag=True, help="channels-last memory layout for the convolutions."),
        click.option("--vae-tiling", is_flag=True, help="Decode large frames tile by tile in bounded memory."),
        click.option("--offload", type=click.Choice(["model", "sequential"]), default=None,
                     help="GPU only: keep weights in CPU memory and move whole models (model) or layers "
                     "(sequential) to the GPU while they run."),
        click.option("--tome", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
                     metavar="RATIO", help="Approximate: merge this share of frame 1's keys/values in the "
                     "highest-resolution self-attention (token merging); off by default."),
        click.option("--cache-interval", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Approximate: run the whole UNet every N-th step and only its shallow branch between "
                     "(feature reuse, DeepCache); 1 or unset: off."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _check_speed(speed: dict[str, Any], device: str) -> None:
    """Refuse --offload on a CPU before any weights load."""
    if speed.get("offload"):
        from .models import resolve_device
        from .speed import check_speed_args

        check_speed_args(offload=speed["offload"], device=resolve_device(device))


def _apply_speed(pipe: Any, speed: dict[str, Any], controlnets: Any = ()) -> None:
    from .speed import optimize

    for note in optimize(pipe.components, controlnets, **{k: speed.get(k) or None for k in SPEED_KEYS}):
        click.echo(f"warning: {note}", err=True)



@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="t2vzero")
def main() -> None:
    """Text2Video-Zero: zero-shot video from any Stable Diffusion checkpoint (paper: Khachatryan et al., 2023)."""


@main.command()
@click.argument("prompt")
@click.option("--model", default=None, help="Diffusers folder, .safetensors file or hub id [default: built-in model].")
@click.option("--config", "model_config", default=None,
              help="Diffusers folder or hub id with the component configs of a single-file checkpoint.")
@click.option("--negative", default="", help="Negative prompt.")
@click.option("--prompt-2", "prompt_2", default=None, help="SDXL: the prompt for the second text encoder "
              "[default: PROMPT].")
@click.option("--negative-2", "negative_2", default=None, help="SDXL: the second encoder's negative prompt.")
@click.option("--guidance-rescale", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Rescale guided noise towards the text prediction's spread (0.7 is common; against over-exposure).")
@click.option("--frames", type=int, default=TEXT_TO_VIDEO["video_length"], show_default=True, help="Number of frames.")
@click.option("--steps", type=int, default=None, help="Denoising steps [default: model's, else "
              f"{TEXT_TO_VIDEO['num_inference_steps']}; lcm/tcd: 4].")
@click.option("--guidance", type=float, default=None, help="Classifier-free guidance scale; ≤ 1 turns it off "
              f"[default: model's, else {TEXT_TO_VIDEO['guidance_scale']}].")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Random seed (a CPU torch.Generator).")
@click.option("--size", default=None, help="WxH, multiples of 8 [default: the model's native size].")
@_motion_options
@click.option("--t0", type=int, default=None,
              help=f"Timestep t0 of the motion jump [default: model's, else {TEXT_TO_VIDEO['t0']}].")
@click.option("--t1", type=int, default=None,
              help=f"Timestep t1 of the motion jump [default: model's, else {TEXT_TO_VIDEO['t1']}].")
@click.option("--chunk-size", type=int, default=None,
              help="Frames per chunk to bound memory; chunks run in lockstep, frame 1 once per step.")
@click.option("--no-cross-frame-attention", is_flag=True, help="Ablation: plain self-attention per frame.")
@click.option("--no-motion", is_flag=True, help="Ablation: zero motion field (δ = 0).")
@click.option("--background-smoothing", "smoothing", type=click.FloatRange(0, 1), default=None,
              help="The paper's optional background smoothing with this α (paper: 0.6); a second pass, "
              "foreground by contrast to the frame border.")
@click.option("--fps", type=float, default=TEXT_TO_VIDEO["fps"], show_default=True,
              help="Frames per second of the output.")
@_sampler_options
@_speed_options
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--dtype", default="auto", show_default=True,
              help="auto (fp16 on GPU, fp32 on CPU), float32, float16, bfloat16.")
@click.option("--lora", multiple=True, help="LoRA weights as PATH[:SCALE]; repeatable.")
@click.option("--allow-pickle", is_flag=True, help="Allow pickle (.ckpt/.bin) weights, which can run code.")
@click.option("--compat", type=click.Choice(["t2vzero", "diffusers"]), default="t2vzero", show_default=True,
              help="'diffusers' reproduces diffusers' deprecated TextToVideoZeroPipeline frame for frame.")
@click.option("-o", "--output", default="video.mp4", show_default=True,
              help="Output: .mp4, .webm, .gif, or a folder (frames/) of numbered PNGs.")
@click.option("--sheet", is_flag=True, help="Also write a contact sheet PNG of the frames beside the video.")
@click.option("--dry-run", is_flag=True, help="Print the estimated peak memory and work, load nothing, write nothing.")
@click.option("--force", is_flag=True, help="Run even when the memory estimate says the run will not fit.")
@ray_options
def generate(prompt: str, model: str | None, model_config: str | None, negative: str, prompt_2: str | None,
             negative_2: str | None, guidance_rescale: float, frames: int, steps: int | None,
             guidance: float | None, seed: int, size: str | None, motion: str | None, motion_file: str | None,
             t0: int | None,
             t1: int | None, chunk_size: int | None, no_cross_frame_attention: bool, no_motion: bool,
             smoothing: float | None, fps: float, scheduler: str | None, timestep_spacing: str | None,
             device: str, dtype: str, lora: tuple[str, ...], allow_pickle: bool, compat: str, output: str,
             sheet: bool, dry_run: bool, force: bool, **speed: Any) -> int | None:
    """Generate a video from PROMPT (an empty prompt is unconditional)."""
    if wants_ray(speed) and not dry_run:
        from .distributed import run_command

        return run_command("generate", click.get_current_context().params)
    from .checks import check_video_args
    from .models import check_dtype_name, parse_lora
    from .schedulers import check_scheduler_args, check_steps_before_loading
    from .video import check_file_path, check_fps, check_output_path, sheet_path

    check_prompt_text(prompt)
    check_scheduler_args(scheduler, timestep_spacing)
    width, height = parse_pair(size, "x", "size", int) if size else (8, 8)
    camera = motion_from_options(motion, motion_file, no_motion)
    check_fps(fps)
    check_finite({"--guidance": guidance})
    _check_single_file_config(model, model_config)
    for spec in lora:
        parse_lora(spec)
    check_video_args(video_length=frames, height=height, width=width,
                     num_inference_steps=steps if steps is not None else 1, chunk_size=chunk_size,
                     num_videos_per_prompt=1, compat=compat)
    if t0 is not None and t1 is not None and t0 >= t1:
        raise UserError(f"t0={t0} must be smaller than t1={t1} (diffusion timesteps, 0 <= t0 < t1 < 1000)")
    if camera is not None:
        camera.check(frames, (width, height) if size else None)
    check_steps_before_loading(model, model_config, steps)
    check_output_path(output)
    if sheet:
        check_file_path(sheet_path(output), "contact sheet")
    check_dtype_name(dtype)
    _check_speed(speed, device)
    chunk_size = _plan(dict(model=model, config=model_config, mode="generate", frames=frames,
                            size=(width, height) if size else None, steps=steps, guidance=guidance,
                            chunk_size=chunk_size, device=device, dtype=dtype, scheduler=scheduler),
                       force=force, dry_run=dry_run, allow_pickle=allow_pickle)
    if dry_run:
        return None
    _quiet_libraries()

    import torch

    from .pipeline import TextToVideoZero
    from .video import SHEET_MIN_SIDE, contact_sheet, sheet_path, write_video

    pipe = TextToVideoZero.from_pretrained(model, device=device, dtype=dtype, lora=lora, allow_pickle=allow_pickle,
                                           config=model_config)
    _apply_speed(pipe, speed)
    _warn_unknown_words(prompt, pipe.defaults.get("vocabulary"))
    _warn_long_prompt(pipe, prompt, negative)
    result = pipe(prompt, video_length=frames, height=height if size else None, width=width if size else None,
                  num_inference_steps=steps, guidance_scale=guidance, negative_prompt=negative,
                  generator=torch.Generator().manual_seed(seed), motion=camera, t0=t0, t1=t1, chunk_size=chunk_size,
                  cross_frame_attention=not no_cross_frame_attention, compat=compat, background_smoothing=smoothing,
                  scheduler=scheduler, timestep_spacing=timestep_spacing, token_merging=speed.get("tome"),
                  prompt_2=prompt_2, negative_prompt_2=negative_2, guidance_rescale=guidance_rescale,
                  cache_interval=speed.get("cache_interval"))
    video = result.uint8()[0]
    path = write_video(video, output, fps=fps)
    if sheet:
        contact_sheet([video], sheet_path(output), min_side=SHEET_MIN_SIDE)
    click.echo(str(path))


def motion_from_options(motion: str | None, motion_file: str | None, no_motion: bool = False) -> Any:
    """The camera path of --motion SPEC, --motion-file FILE or --no-motion (at most one); None: the model's."""
    given = [name for name, value in (("--motion", motion), ("--motion-file", motion_file), ("--no-motion", no_motion))
             if value]
    if len(given) > 1:
        raise UserError(f"{' and '.join(given)} contradict each other; give one of them")
    from .motion import Pan, load_motion_file, parse_motion

    if no_motion:
        return Pan(0.0, 0.0)
    if motion_file:
        return load_motion_file(motion_file)
    return parse_motion(motion) if motion else None


def _video_input_options(fn: Any) -> Any:
    """Options shared by the video-to-video commands (control, edit)."""
    options = [
        click.option("--model", default=None, help="Base checkpoint: diffusers folder, .safetensors file or hub id."),
        click.option("--negative", default="", help="Negative prompt."),
        click.option("--seed", type=SEED, default=0, show_default=True, help="Random seed (a CPU torch.Generator)."),
        click.option("--start", type=float, default=None, help="Start of the input clip, in seconds."),
        click.option("--end", type=float, default=None, help="End of the input clip, in seconds."),
        click.option("--every", type=int, default=CLIP["every"], show_default=True,
                     help="Take every N-th input frame."),
        click.option("--max-frames", type=int, default=None, help="At most this many frames."),
        click.option("--resolution", type=int, default=CLIP["resolution"], show_default=True,
                     help="Longer side of the frames (multiples of 8, aspect kept)."),
        click.option("--fps", type=float, default=None, help="Output fps [default: source fps / --every]."),
        click.option("--chunk-size", type=int, default=None,
                     help="Frames per chunk to bound memory (frame 1 once per step)."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."),
        click.option("--dtype", default="auto", show_default=True, help="auto, float32, float16, bfloat16."),
        click.option("--lora", multiple=True, help="LoRA weights as PATH[:SCALE]; repeatable."),
        click.option("--allow-pickle", is_flag=True, help="Allow pickle (.ckpt/.bin) weights, which can run code."),
        click.option("--compat", type=click.Choice(["t2vzero", "diffusers"]), default="t2vzero", show_default=True,
                     help="'diffusers' reproduces diffusers' documented cross-frame recipe."),
        click.option("-o", "--output", default="video.mp4", show_default=True,
                     help="Output: .mp4, .webm, .gif, or a folder of numbered PNGs."),
        click.option("--sheet", is_flag=True, help="Also write a contact sheet: input, condition and output rows."),
        click.option("--dry-run", is_flag=True,
                     help="Print the estimated peak memory and work, load no weights, write nothing."),
        click.option("--force", is_flag=True, help="Run even when the memory estimate says the run will not fit."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return _speed_options(_sampler_options(fn))


def _load_clip(input_video: str, o: dict[str, Any], steps: int | None = None) -> tuple[Any, float]:
    """Every check a video-to-video command makes before any weights load, then the input clip."""
    from .inputs import fit_resolution, load_clip
    from .models import check_dtype_name, parse_lora
    from .schedulers import check_scheduler_args, check_steps_before_loading
    from .video import check_file_path, check_fps, check_output_path, sheet_path

    check_scheduler_args(o["scheduler"], o["timestep_spacing"])
    check_steps_before_loading(o["model"], None, steps)
    _check_speed(o, o["device"])
    if o["chunk_size"] is not None and o["chunk_size"] < 2:
        raise UserError(f"chunk size must be at least 2 (frame 1 plus one more), got {o['chunk_size']}")
    if o["fps"] is not None:
        check_fps(o["fps"])
    check_output_path(o["output"])
    if o["sheet"]:
        check_file_path(sheet_path(o["output"]), "contact sheet")
    check_dtype_name(o["dtype"])
    for spec in o["lora"]:
        parse_lora(spec)
    frames, fps = load_clip(input_video, start=o["start"], end=o["end"], every=o["every"],
                            max_frames=o["max_frames"], fps=o["fps"])
    return fit_resolution(frames, o["resolution"]), check_fps(o["fps"] or fps or CLIP["fps"])


def _plan_clip(mode: str, frames: Any, steps: int, guidance: float, o: dict[str, Any], **extra: Any) -> int | None:
    """`_plan` of a video-to-video command: the input clip sets the frame count and size."""
    height, width = frames.shape[1:3]
    return _plan(dict(model=o["model"], config=None, mode=mode, frames=len(frames), size=(width, height), steps=steps,
                      guidance=guidance, chunk_size=o["chunk_size"], device=o["device"], dtype=o["dtype"],
                      scheduler=o["scheduler"], **extra),
                 force=o["force"], dry_run=o["dry_run"], allow_pickle=o["allow_pickle"], size_option="--resolution")


def _plan(run: dict[str, Any], *, force: bool, dry_run: bool, allow_pickle: bool,
          size_option: str = "--size") -> int | None:
    """Before any weights load: check the model and estimate the run (`t2vzero.plan`); with --dry-run print the
    estimate and whether it fits, else refuse a run that cannot fit (unless --force) and return the chunk size
    to run with."""
    import os

    from .models import check_model
    from .plan import available_memory, fit, plan_run

    check_model(run["model"], allow_pickle=allow_pickle, config=run["config"])
    plan = plan_run(run.pop("model"), run.pop("config"), **run)
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    if dry_run:
        click.echo(plan.describe())
    try:
        decision = fit(plan, available=available_memory(plan.device), force=force, threads=threads,
                       size_option=size_option)
    except UserError as refusal:
        if not dry_run:
            raise
        click.echo(f"it would be refused: {refusal}")
        return plan.chunk_size
    for note in decision.notes:
        click.echo(note, err=not dry_run)
    return decision.chunk_size


def _finish(result: Any, o: dict[str, Any], fps: float, rows: list[Any]) -> None:
    from .video import contact_sheet, sheet_path, write_video

    video = result.uint8()[0]
    path = write_video(video, o["output"], fps=fps)
    if o["sheet"]:
        contact_sheet([*rows, video], sheet_path(o["output"]))
    click.echo(str(path))


def _controlnet_options(required: bool) -> Any:
    """--controlnet and its conditions (control, restyle)."""

    def decorate(fn: Any) -> Any:
        options = [
            click.option("--controlnet", "controlnets", multiple=True, required=required,
                         help="ControlNet as MODEL[:SCALE] (folder, .safetensors or hub id); repeatable."),
            click.option("--condition", "conditions", multiple=True,
                         help="Per ControlNet, in order: canny, depth, pose, or a video/folder of precomputed maps "
                         "[default: canny]."),
            click.option("--condition-video", "condition_videos", multiple=True,
                         help="Precomputed condition maps (e.g. a rendered skeleton video); same as --condition PATH."),
            click.option("--annotator", default=None, help="Folder (or hub id) of controlnet_aux annotator weights."),
            click.option("--canny-low", type=int, default=CONTROL["canny_low"], show_default=True),
            click.option("--canny-high", type=int, default=CONTROL["canny_high"], show_default=True),
        ]
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def _condition_kinds(c: dict[str, Any]) -> list[str]:
    """One condition per --controlnet (canny by default), checked before any work."""
    from .inputs import ANNOTATORS
    from .models import parse_lora

    for spec in c["controlnets"]:
        parse_lora(spec)  # MODEL[:SCALE] reads like a LoRA spec
    for kind in c["conditions"]:
        if kind not in ANNOTATORS and not Path(kind).exists():
            raise UserError(f"--condition {kind!r} is neither {', '.join(ANNOTATORS)} nor an existing video or "
                            "folder of condition maps")
    kinds = list(c["conditions"]) + list(c["condition_videos"])
    kinds += ["canny"] * (len(c["controlnets"]) - len(kinds))
    if len(kinds) != len(c["controlnets"]):
        raise UserError(f"{len(kinds)} conditions for {len(c['controlnets'])} ControlNets; give one per --controlnet")
    return kinds


def _condition_maps(frames: Any, kinds: list[str], c: dict[str, Any], o: dict[str, Any]) -> list[Any]:
    """The condition video of each kind for the clip's frames: annotated, or read and clipped like the input."""
    from .inputs import ANNOTATORS, annotate, load_clip, match_condition_video

    maps = []
    for kind in kinds:
        if kind in ANNOTATORS:
            maps.append(annotate(frames, kind, c["annotator"], low=c["canny_low"], high=c["canny_high"]))
        else:
            # Clipped and strided like the input, so that map k belongs to frame k.
            cond, _ = load_clip(kind, start=o["start"], end=o["end"], every=o["every"], max_frames=o["max_frames"],
                                fps=o["fps"])
            maps.append(match_condition_video(cond, frames, kind))
    return maps


CONTROL_KEYS = ("controlnets", "conditions", "condition_videos", "annotator", "canny_low", "canny_high")


def _load_with_controlnets(o: dict[str, Any], specs: Any) -> tuple[Any, list[Any], list[float]]:
    """The pipeline and the ControlNets (with their scales), speed options applied to all."""
    from .models import load_controlnet
    from .pipeline import TextToVideoZero

    pipe = TextToVideoZero.from_pretrained(o["model"], device=o["device"], dtype=o["dtype"], lora=o["lora"],
                                           allow_pickle=o["allow_pickle"])
    nets = [load_controlnet(spec, device=o["device"], dtype=o["dtype"], allow_pickle=o["allow_pickle"])
            for spec in specs]
    _apply_speed(pipe, o, [n for n, _ in nets])
    return pipe, [n for n, _ in nets], [s for _, s in nets]


@main.command()
@click.argument("input_video")
@click.argument("prompt")
@_controlnet_options(required=True)
@click.option("--steps", type=int, default=CONTROL["num_inference_steps"], show_default=True, help="Denoising steps.")
@click.option("--guidance", type=float, default=CONTROL["guidance_scale"], show_default=True,
              help="Classifier-free guidance scale.")
@_video_input_options
@ray_options
def control(input_video: str, prompt: str, steps: int, guidance: float, **o: Any) -> int | None:
    """ControlNet video: follow INPUT_VIDEO's edges, depth or pose with PROMPT (paper §4.2)."""
    if wants_ray(o):
        from .distributed import run_command

        return run_command("control", click.get_current_context().params)
    from .models import parse_lora

    check_prompt_text(prompt)
    if steps < 1:
        raise UserError(f"steps must be at least 1 (got {steps}); e.g. --steps 20")
    check_finite({"--guidance": guidance})
    c = {k: o.pop(k) for k in CONTROL_KEYS}
    kinds = _condition_kinds(c)
    frames, fps = _load_clip(input_video, o, steps)
    o["chunk_size"] = _plan_clip("control", frames, steps, guidance, o,
                                 controlnets=[parse_lora(spec)[0] for spec in c["controlnets"]])
    if o["dry_run"]:
        return None
    maps = _condition_maps(frames, kinds, c, o)
    _quiet_libraries()
    import torch

    pipe, nets, scales = _load_with_controlnets(o, c["controlnets"])
    _warn_long_prompt(pipe, prompt, o["negative"])
    result = pipe.control(prompt, maps, nets, scales=scales, negative_prompt=o["negative"],
                          num_inference_steps=steps, guidance_scale=guidance,
                          generator=torch.Generator().manual_seed(o["seed"]), chunk_size=o["chunk_size"],
                          compat=o["compat"], scheduler=o["scheduler"], timestep_spacing=o["timestep_spacing"],
                          token_merging=o["tome"], cache_interval=o["cache_interval"])
    _finish(result, o, fps, [frames, *maps])
    return None


@main.command()
@click.argument("input_video")
@click.argument("instruction")
@click.option("--steps", type=int, default=EDIT["num_inference_steps"], show_default=True, help="Denoising steps.")
@click.option("--guidance", type=float, default=EDIT["guidance_scale"], show_default=True, help="Text guidance scale.")
@click.option("--image-guidance", type=float, default=EDIT["image_guidance_scale"], show_default=True,
              help="Image guidance scale.")
@_video_input_options
@ray_options
def edit(input_video: str, instruction: str, steps: int, guidance: float, image_guidance: float,
         **o: Any) -> int | None:
    """Edit INPUT_VIDEO by INSTRUCTION with an Instruct-Pix2Pix checkpoint (paper §4.3)."""
    if wants_ray(o):
        from .distributed import run_command

        return run_command("edit", click.get_current_context().params)
    check_prompt_text(instruction)
    if steps < 1:
        raise UserError(f"steps must be at least 1 (got {steps}); e.g. --steps 50")
    check_finite({"--guidance": guidance, "--image-guidance": image_guidance})
    frames, fps = _load_clip(input_video, o, steps)
    o["chunk_size"] = _plan_clip("edit", frames, steps, guidance, o, image_guidance=image_guidance)
    if o["dry_run"]:
        return None
    _quiet_libraries()
    import torch

    from .pipeline import TextToVideoZero

    pipe = TextToVideoZero.from_pretrained(o["model"], device=o["device"], dtype=o["dtype"], lora=o["lora"],
                                           allow_pickle=o["allow_pickle"])
    _apply_speed(pipe, o)
    _warn_long_prompt(pipe, instruction, o["negative"])
    result = pipe.edit(instruction, frames, negative_prompt=o["negative"], num_inference_steps=steps,
                       guidance_scale=guidance, image_guidance_scale=image_guidance,
                       generator=torch.Generator().manual_seed(o["seed"]), chunk_size=o["chunk_size"],
                       compat=o["compat"], scheduler=o["scheduler"], timestep_spacing=o["timestep_spacing"],
                       token_merging=o["tome"], cache_interval=o["cache_interval"])
    _finish(result, o, fps, [frames])


@main.command()
@click.argument("jobs_file", metavar="JOBS.jsonl")
@click.option("-o", "--output", "out", required=True, help="Output folder: <id>.mp4 per job, manifest.jsonl.")
@click.option("--sheet", is_flag=True, help="Also write <id>_sheet.png, a contact sheet per job.")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="mp4",
              show_default=True, help="Output format (frames: a folder of numbered PNGs per job).")
@ray_options
def batch(jobs_file: str, out: str, sheet: bool, fmt: str, ray: str | None, workers: int | None,
          gpus_per_worker: float | None, cpus_per_worker: float, max_retries: int) -> int:
    """Run every job of JOBS.jsonl (one JSON object a line, the commands' option names), resuming a batch
    done before; exit 0 when all are done, 1 when some failed."""
    from .batch import run_batch

    outcome = run_batch(jobs_file, out, sheet=sheet, fmt=fmt, ray=ray, workers=workers,
                        gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker, max_retries=max_retries)
    for line in outcome.summary():
        click.echo(line)
    return outcome.exit_code


@main.command()
@click.argument("input_video")
@click.argument("prompt")
@click.option("--strength", type=float, default=RESTYLE["strength"], show_default=True,
              help="How far the frames are noised before denoising, in (0, 1]: 0.5 keeps much of the source, 1 "
              "starts from pure noise (then only ControlNet conditions keep the source's layout).")
@_controlnet_options(required=False)
@click.option("--steps", type=int, default=RESTYLE["num_inference_steps"], show_default=True,
              help="Denoising steps of the whole schedule; ⌊strength·steps⌋ of them run.")
@click.option("--guidance", type=float, default=RESTYLE["guidance_scale"], show_default=True,
              help="Classifier-free guidance scale.")
@_video_input_options
def restyle(input_video: str, prompt: str, strength: float, steps: int, guidance: float, **o: Any) -> None:
    """Restyle INPUT_VIDEO as PROMPT with any text-to-image checkpoint: each frame noised to --strength from one
    shared noise, denoised with cross-frame attention (SDEdit), optionally following ControlNet conditions."""
    from .checks import check_strength
    from .models import parse_lora

    check_prompt_text(prompt)
    if steps < 1:
        raise UserError(f"steps must be at least 1 (got {steps}); e.g. --steps 50")
    check_strength(strength)
    if int(steps * strength + 1e-9) < 1:
        raise UserError(f"--strength {strength} of {steps} steps runs no step; raise --strength or --steps")
    if o["compat"] != "t2vzero":
        raise UserError("restyle has no diffusers reference to reproduce; drop --compat")
    check_finite({"--guidance": guidance})
    c = {k: o.pop(k) for k in CONTROL_KEYS}
    kinds = _condition_kinds(c)
    frames, fps = _load_clip(input_video, o, steps)
    o["chunk_size"] = _plan_clip("restyle", frames, steps, guidance, o,
                                 controlnets=[parse_lora(spec)[0] for spec in c["controlnets"]])
    if o["dry_run"]:
        return
    maps = _condition_maps(frames, kinds, c, o)
    _quiet_libraries()
    import torch

    pipe, nets, scales = _load_with_controlnets(o, c["controlnets"])
    _warn_long_prompt(pipe, prompt, o["negative"])
    result = pipe.restyle(prompt, frames, strength=strength, controlnets=nets, conditions=maps, scales=scales,
                          negative_prompt=o["negative"], num_inference_steps=steps, guidance_scale=guidance,
                          generator=torch.Generator().manual_seed(o["seed"]), chunk_size=o["chunk_size"],
                          scheduler=o["scheduler"], timestep_spacing=o["timestep_spacing"], token_merging=o["tome"],
                          cache_interval=o["cache_interval"])
    _finish(result, o, fps, [frames, *maps])


@main.command()
@click.argument("image")
@click.argument("prompt", default=ANIMATE["prompt"])
@click.option("--model", default=None, help="Diffusers folder, .safetensors file or hub id [default: built-in model].")
@click.option("--negative", default="", help="Negative prompt.")
@click.option("--frames", type=int, default=ANIMATE["video_length"], show_default=True, help="Number of frames.")
@click.option("--steps", type=int, default=None, help="Denoising steps [default: model's, else "
              f"{ANIMATE['num_inference_steps']}].")
@click.option("--guidance", type=float, default=None, help="Classifier-free guidance scale of frames 2..N; ≤ 1 "
              f"turns it off [default: model's, else {ANIMATE['guidance_scale']}].")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Random seed (a CPU torch.Generator).")
@click.option("--resolution", type=int, default=ANIMATE["resolution"],
              help="Longer side of the video; the image is resized to it (aspect kept, multiples of 8) "
              "[default: the model's native size].")
@_motion_options
@click.option("--no-motion", is_flag=True, help="Zero motion field (δ = 0).")
@click.option("--t0", type=int, default=None, help=f"Timestep t0 [default: model's, else {ANIMATE['t0']}].")
@click.option("--t1", type=int, default=None, help=f"Timestep t1 [default: model's, else {ANIMATE['t1']}].")
@click.option("--chunk-size", type=int, default=None,
              help="Frames per chunk to bound memory; chunks run in lockstep, frame 1 once per step.")
@click.option("--fps", type=float, default=ANIMATE["fps"], show_default=True, help="Frames per second of the output.")
@_sampler_options
@_speed_options
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--dtype", default="auto", show_default=True,
              help="auto (fp16 on GPU, fp32 on CPU), float32, float16, bfloat16.")
@click.option("--lora", multiple=True, help="LoRA weights as PATH[:SCALE]; repeatable.")
@click.option("--allow-pickle", is_flag=True, help="Allow pickle (.ckpt/.bin) weights, which can run code.")
@click.option("-o", "--output", default="video.mp4", show_default=True,
              help="Output: .mp4, .webm, .gif, or a folder (frames/) of numbered PNGs.")
@click.option("--sheet", is_flag=True, help="Also write a contact sheet: the image, then the frames.")
def animate(image: str, prompt: str, frames: int, steps: int | None, guidance: float | None, seed: int,
            resolution: int | None, motion: str | None, motion_file: str | None, no_motion: bool, t0: int | None,
            t1: int | None, chunk_size: int | None, fps: float, **o: Any) -> None:
    """Animate IMAGE: frame 1 is the image (DDIM-inverted), frames 2..N move with --motion; PROMPT optional."""
    from .checks import MAX_SIDE, check_video_args
    from .inputs import read_image
    from .models import check_dtype_name, parse_lora
    from .schedulers import check_scheduler_args
    from .video import check_file_path, check_fps, check_output_path, sheet_path

    check_prompt_text(prompt)
    check_scheduler_args(o["scheduler"], o["timestep_spacing"])
    camera = motion_from_options(motion, motion_file, no_motion)
    if camera is not None:
        camera.check(frames, None)
    check_fps(fps)
    check_finite({"--guidance": guidance})
    check_video_args(video_length=frames, height=8, width=8, num_inference_steps=steps if steps is not None else 1,
                     chunk_size=chunk_size, num_videos_per_prompt=1, compat="t2vzero")
    if t0 is not None and t1 is not None and t0 >= t1:
        raise UserError(f"t0={t0} must be smaller than t1={t1} (diffusion timesteps, 0 <= t0 < t1 < 1000)")
    if resolution is not None and not 8 <= resolution <= MAX_SIDE:
        raise UserError(f"--resolution must be from 8 to {MAX_SIDE}, got {resolution}")
    for spec in o["lora"]:
        parse_lora(spec)
    check_output_path(o["output"])
    if o["sheet"]:
        check_file_path(sheet_path(o["output"]), "contact sheet")
    check_dtype_name(o["dtype"])
    _check_speed(o, o["device"])
    picture = read_image(image)
    _quiet_libraries()
    import torch

    from .pipeline import TextToVideoZero

    pipe = TextToVideoZero.from_pretrained(o["model"], device=o["device"], dtype=o["dtype"], lora=o["lora"],
                                           allow_pickle=o["allow_pickle"])
    _apply_speed(pipe, o)
    picture = _fit_image(picture, resolution or max(pipe.native_size()), image)
    _warn_unknown_words(prompt, pipe.defaults.get("vocabulary"))
    _warn_long_prompt(pipe, prompt, o["negative"])
    result = pipe.animate(picture, prompt, negative_prompt=o["negative"], video_length=frames,
                          num_inference_steps=steps, guidance_scale=guidance,
                          generator=torch.Generator().manual_seed(seed), motion=camera, t0=t0, t1=t1,
                          chunk_size=chunk_size, scheduler=o["scheduler"], timestep_spacing=o["timestep_spacing"],
                          token_merging=o["tome"], cache_interval=o["cache_interval"])
    _finish(result, o, fps, [picture[None]])


def _fit_image(picture: Any, resolution: int, name: str) -> Any:
    """Resize so the longer side is `resolution` (multiples of 8, aspect kept), with a note when it changes."""
    from .inputs import fit_resolution

    fitted = fit_resolution(picture[None], resolution)[0]
    if fitted.shape != picture.shape:
        click.echo(f"note: {name} resized from {picture.shape[1]}x{picture.shape[0]} to "
                   f"{fitted.shape[1]}x{fitted.shape[0]} (longer side {resolution}, multiples of 8)", err=True)
    return fitted


@main.command(name="eval")
@click.argument("videos", nargs=-1, required=True)
@click.option("--prompt", default=None, help="The prompt (CLIP-T; the judge for built-in-model captions).")
@click.option("--source", default=None, help="The source clip of an edit: warp error uses its optical flow.")
@click.option("--clip", "clip_model", default=None, help="CLIP weights (folder or hub id) for CLIP-T and CLIP-F.")
@click.option("--compare", is_flag=True, help="Several videos side by side in one table and one plot.")
@click.option("--report", default=None, help="JSON report path [default: <first video>_eval.json].")
@click.option("--plot", default=None, help="PNG plot of per-frame scores [default: <first video>_eval.png].")
def evaluate(videos: tuple[str, ...], prompt: str | None, source: str | None, clip_model: str | None, compare: bool,
             report: str | None, plot: str | None) -> None:
    """Score VIDEO(S): CLIP-T, CLIP-F (consecutive), warp error, and the judge for built-in-model videos."""
    if len(videos) > 1 and not compare:
        raise UserError("several videos need --compare (one table and one plot for all)")
    from .evaluate import evaluate_video, plot_reports, table, write_json
    from .video import check_file_path, read_video

    for v in videos:
        read_video(v)  # fail fast with a one-line error on a missing or unreadable video
    base = Path(videos[0])
    stem = base.parent / (base.stem if base.suffix else base.name.rstrip("/"))
    report_path = check_file_path(report or f"{stem}_eval.json", "--report")
    plot_path = check_file_path(plot or f"{stem}_eval.png", "--plot")
    scorer = None
    if clip_model is not None:
        _quiet_libraries()
        from .metrics import ClipScorer

        try:
            scorer = ClipScorer(clip_model)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"could not load CLIP weights {clip_model}: {reason}") from exc
    reports = [evaluate_video(v, prompt=prompt, source=source, scorer=scorer) for v in videos]
    if clip_model is None:
        click.echo("note: no --clip weights given; CLIP-T and CLIP-F are skipped", err=True)
    write_json(reports if compare else reports[0], report_path)
    plot_reports(reports, plot_path)
    click.echo(table(reports))
    click.echo(f"report: {report_path}\nplot: {plot_path}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; 0.0.0.0 exposes it.")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True)
@click.option("--models", multiple=True, help="Allow-listed models (folders or hub ids); repeatable.")
@click.option("--controlnets", multiple=True, help="Allow-listed ControlNets; repeatable.")
@click.option("--loras", multiple=True, help="Allow-listed LoRA weights; repeatable.")
@click.option("--max-upload-mb", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--max-seconds", type=click.FloatRange(min=0, min_open=True, max=3600), default=10.0,
              show_default=True, help="Longest input clip.")
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="Generations at once [default: what the device's memory allows; 1 on a CPU].")
def app(host: str, port: int, models: tuple[str, ...], controlnets: tuple[str, ...], loras: tuple[str, ...],
        max_upload_mb: int, max_seconds: float, device: str, dtype: str, concurrency: int | None) -> None:
    """Serve the web app (Gradio): text→video, image→video, ControlNet video, editing, restyling."""
    from .models import check_dtype_name

    check_dtype_name(dtype)
    try:
        import gradio  # noqa: F401 (only to say clearly when it is missing)

        from .app import AppConfig, serve
    except ImportError as exc:
        raise UserError(f"the app needs gradio ({exc.name} is missing): pip install 't2vzero[app]'") from None
    _quiet_libraries()
    serve(AppConfig(list(models), list(controlnets), list(loras), max_upload_mb, max_seconds, device, dtype,
                    concurrency), host, port)


def _quiet_libraries() -> None:
    """Our progress bar is the only one on stderr; library loading bars and notices would bury it."""
    import warnings

    import diffusers
    import transformers

    # Deprecation notices about library keyword names are for us, not for people running the CLI.
    warnings.filterwarnings("ignore", category=FutureWarning)

    # CRITICAL: diffusers logs a failed safetensors lookup at ERROR before falling back to allowed .bin
    # weights; real failures still raise and reach the user as one line.
    diffusers.utils.logging.set_verbosity(diffusers.utils.logging.CRITICAL)
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _check_single_file_config(model: str | None, config: str | None) -> None:
    if config is not None and (model is None or not Path(model).is_file()):
        raise UserError("--config only applies to a single-file .safetensors --model (a folder or hub id has "
                        "its own configs); drop --config")


def _warn_long_prompt(pipe: Any, *texts: str) -> None:
    """CLIP reads a fixed number of tokens; the rest of a longer prompt is cut off."""
    from .prompts import token_limit

    tokenizer = pipe.tokenizer
    limit = token_limit(tokenizer, pipe.text_encoder)
    for text in texts:
        if text and len(tokenizer(text).input_ids) > limit:
            click.echo(f"warning: the prompt {text[:40]!r}... is longer than the model's {limit} tokens; "
                       "the rest is ignored", err=True)


def _warn_unknown_words(prompt: str, vocabulary: list[str] | None) -> None:
    """Models trained on a closed caption grammar (the built-in one) list their words in t2vzero.json."""
    if not vocabulary:
        return
    known = {w.lower() for w in vocabulary}
    # Words without punctuation, and any other symbol (an emoji) on its own: the model saw none of them.
    words = re.findall(r"[^\W_]+(?:'[^\W_]+)?|[^\w\s.,;:!?'\"()\[\]{}<>/\\-]", prompt.lower())
    unknown = [w for w in dict.fromkeys(words) if w not in known]
    if unknown:
        click.echo(f"warning: this model only knows captions like 'a red circle on a blue background'; "
                   f"it never saw: {', '.join(unknown)}", err=True)


def run(argv: list[str] | None = None) -> int:
    """Entry point: bad input is one line on stderr and exit code 2, never a traceback; Ctrl-C, SIGTERM and
    SIGHUP stop the command with its temporary files removed (exit 130, 143, 129)."""
    from .stops import INTERRUPTED, Stopped, stop_on_signals

    try:
        with stop_on_signals():
            code = main.main(args=argv, prog_name="t2vzero", standalone_mode=False)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
        click.echo("interrupted; nothing was written", err=True)
        return INTERRUPTED
    except Stopped as stop:
        click.echo(f"stopped by {stop.name}; nothing was written", err=True)
        return stop.exit_code
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()} (see t2vzero --help)", err=True)
        return exc.exit_code if isinstance(exc, click.UsageError) else 1
    return code if isinstance(code, int) else 0  # a command may end with its own code (batch: 1 when jobs failed)


def entry() -> None:
    """Console-script entry."""
    sys.exit(run())

"""The `t2vzero` command line. Heavy imports (torch, diffusers) happen inside commands, so
`t2vzero --help` answers at once."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .batch import FORMATS
from .defaults import ANIMATE, CLIP, CONTROL, EDIT, RESTYLE, TEXT_TO_VIDEO
from .distributed import ray_options
from .errors import UserError

SEED = click.IntRange(-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes


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


def _load_options(fn: Any) -> Any:
    """Where and how the weights load, for every video command."""
    options = [
        click.option("--config", "model_config", default=None,
                     help="Diffusers folder or hub id with the component configs of a single-file checkpoint."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."),
        click.option("--dtype", default="auto", show_default=True,
                     help="auto (fp16 on GPU, fp32 on CPU), float32, float16, bfloat16."),
        click.option("--lora", multiple=True, help="LoRA weights as PATH[:SCALE]; repeatable."),
        click.option("--allow-pickle", is_flag=True, help="Allow pickle (.ckpt/.bin) weights, which can run code."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _plan_options(fn: Any) -> Any:
    """--dry-run and --force (the memory plan before loading), for every video command."""
    fn = click.option("--force", is_flag=True, help="Run even when the memory estimate says the run will not fit.")(fn)
    return click.option("--dry-run", is_flag=True,
                        help="Print the estimated peak memory and work, load no weights, write nothing.")(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="t2vzero")
def main() -> None:
    """Text2Video-Zero: zero-shot video from any Stable Diffusion checkpoint (paper: Khachatryan et al., 2023)."""


@main.command()
@click.argument("prompt")
@click.option("--model", default=None, help="Diffusers folder, .safetensors file or hub id [default: built-in model].")
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
@_load_options
@click.option("--compat", type=click.Choice(["t2vzero", "diffusers"]), default="t2vzero", show_default=True,
              help="'diffusers' reproduces diffusers' deprecated TextToVideoZeroPipeline frame for frame.")
@click.option("-o", "--output", default="video.mp4", show_default=True,
              help="Output: .mp4, .webm, .gif, or a folder (frames/) of numbered PNGs.")
@click.option("--sheet", is_flag=True, help="Also write a contact sheet PNG of the frames beside the video.")
@_plan_options
@ray_options
def generate(**params: Any) -> int | None:
    """Generate a video from PROMPT (an empty prompt is unconditional)."""
    return _video_command("generate", params)


def _video_command(name: str, params: dict[str, Any]) -> int | None:
    """Every video command is its options and this one call (`t2vzero.commands`, shared with batch and Ray)."""
    from .commands.line import run_command_line

    return run_command_line(name, params)


def _video_input_options(fn: Any) -> Any:
    """Options shared by the video-to-video commands (control, edit, restyle)."""
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
        click.option("--compat", type=click.Choice(["t2vzero", "diffusers"]), default="t2vzero", show_default=True,
                     help="'diffusers' reproduces diffusers' documented cross-frame recipe."),
        click.option("-o", "--output", default="video.mp4", show_default=True,
                     help="Output: .mp4, .webm, .gif, or a folder of numbered PNGs."),
        click.option("--sheet", is_flag=True, help="Also write a contact sheet: input, condition and output rows."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return _load_options(_plan_options(_speed_options(_sampler_options(fn))))


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
            click.option("--canny-low", type=click.IntRange(0), default=CONTROL["canny_low"], show_default=True,
                         help="Canny's lower hysteresis threshold (gradient magnitude, >= 0)."),
            click.option("--canny-high", type=click.IntRange(0), default=CONTROL["canny_high"], show_default=True,
                         help="Canny's upper threshold (>= --canny-low)."),
        ]
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


@main.command()
@click.argument("input_video")
@click.argument("prompt")
@_controlnet_options(required=True)
@click.option("--steps", type=int, default=CONTROL["num_inference_steps"], show_default=True, help="Denoising steps.")
@click.option("--guidance", type=float, default=CONTROL["guidance_scale"], show_default=True,
              help="Classifier-free guidance scale.")
@_video_input_options
@ray_options
def control(**params: Any) -> int | None:
    """ControlNet video: follow INPUT_VIDEO's edges, depth or pose with PROMPT (paper §4.2)."""
    return _video_command("control", params)


@main.command()
@click.argument("input_video")
@click.argument("instruction")
@click.option("--steps", type=int, default=EDIT["num_inference_steps"], show_default=True, help="Denoising steps.")
@click.option("--guidance", type=float, default=EDIT["guidance_scale"], show_default=True, help="Text guidance scale.")
@click.option("--image-guidance", type=float, default=EDIT["image_guidance_scale"], show_default=True,
              help="Image guidance scale.")
@_video_input_options
@ray_options
def edit(**params: Any) -> int | None:
    """Edit INPUT_VIDEO by INSTRUCTION with an Instruct-Pix2Pix checkpoint (paper §4.3)."""
    return _video_command("edit", params)


@main.command()
@click.argument("jobs_file", metavar="JOBS.jsonl")
@click.option("-o", "--output", "out", required=True, help="Output folder: <id>.mp4 per job, manifest.jsonl.")
@click.option("--sheet", is_flag=True, help="Also write <id>_sheet.png, a contact sheet per job.")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="mp4",
              show_default=True, help="Output format (frames: a folder of numbered PNGs per job).")
@click.option("--force", is_flag=True, help="Run jobs even where the memory estimate says they will not fit.")
@ray_options
def batch(jobs_file: str, out: str, sheet: bool, fmt: str, force: bool, ray: str | None, workers: int | None,
          gpus_per_worker: float | None, cpus_per_worker: float, max_retries: int) -> int:
    """Run every job of JOBS.jsonl (one JSON object a line, the commands' option names), resuming a batch
    done before; exit 0 when all are done, 1 when some failed."""
    from .batch import run_batch

    outcome = run_batch(jobs_file, out, sheet=sheet, fmt=fmt, ray=ray, workers=workers,
                        gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker, max_retries=max_retries,
                        force=force, say=lambda line: click.echo(line, err=True))
    for line in outcome.summary():
        click.echo(line)
    return outcome.exit_code


@main.command()
@click.argument("input_video")
@click.argument("prompt")
@click.option("--strength", type=float, default=RESTYLE["strength"], show_default=True,
              help="How far the frames are noised before denoising, in (0, 1]: 0.5 keeps much of the source, 1 "
              "starts from pure noise (then only ControlNet conditions keep the source's layout).")
@click.option("--invert", is_flag=True, default=RESTYLE["invert"],
              help="Start from each frame's DDIM inversion to --strength instead of shared noise: keeps the "
              "source's layout far better, for ⌊strength·steps⌋ more UNet calls per frame; --seed then has no effect.")
@_controlnet_options(required=False)
@click.option("--steps", type=int, default=RESTYLE["num_inference_steps"], show_default=True,
              help="Denoising steps of the whole schedule; ⌊strength·steps⌋ of them run.")
@click.option("--guidance", type=float, default=RESTYLE["guidance_scale"], show_default=True,
              help="Classifier-free guidance scale.")
@_video_input_options
@ray_options
def restyle(**params: Any) -> int | None:
    """Restyle INPUT_VIDEO as PROMPT with any text-to-image checkpoint: each frame noised to --strength from one
    shared noise, denoised with cross-frame attention (SDEdit), optionally following ControlNet conditions."""
    return _video_command("restyle", params)


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
@_load_options
@click.option("-o", "--output", default="video.mp4", show_default=True,
              help="Output: .mp4, .webm, .gif, or a folder (frames/) of numbered PNGs.")
@click.option("--sheet", is_flag=True, help="Also write a contact sheet: the image, then the frames.")
@_plan_options
@ray_options
def animate(**params: Any) -> int | None:
    """Animate IMAGE: frame 1 is the image (DDIM-inverted), frames 2..N move with --motion; PROMPT optional."""
    return _video_command("animate", params)


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
        from .metrics import ClipScorer
        from .options import quiet_libraries

        quiet_libraries()

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
    from .options import quiet_libraries

    quiet_libraries()
    serve(AppConfig(list(models), list(controlnets), list(loras), max_upload_mb, max_seconds, device, dtype,
                    concurrency), host, port)


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

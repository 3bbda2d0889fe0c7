"""`generate` (text to video) and `animate` (a given first frame): checks, inputs, renders, whole or in parts
after one anchor pass (`TextToVideoZero.anchor` / `render`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import Mode
from .common import Loaded, Rendered, Shape, load_pipe, pipe_key, plain, prompt_warnings, sampler_name, seeded

RESOLVED = ("video_length", "height", "width", "num_inference_steps", "guidance_scale", "motion", "t0", "t1",
            "scheduler", "timestep_spacing")


def _check_run(p: dict[str, Any], width: int, height: int, compat: str, size_known: bool) -> Any:
    """The checks `generate` and `animate` share, before any weights load; returns the camera path (None: the
    model's), checked against the size where it is known."""
    from ..checks import check_finite, check_video_args
    from ..models import check_dtype_name
    from ..options import (
        check_loras,
        check_prompt_text,
        check_single_file_config,
        check_speed,
        check_t0_t1,
        motion_from_options,
    )
    from ..schedulers import check_scheduler_args, check_steps_before_loading
    from ..video import check_fps

    check_prompt_text(p["prompt"])
    check_scheduler_args(p["scheduler"], p["timestep_spacing"])
    camera = motion_from_options(p["motion"], p["motion_file"], p["no_motion"])
    check_fps(p["fps"])
    check_finite({"--guidance": p["guidance"]})
    check_single_file_config(p["model"], p["model_config"])
    check_loras(p["lora"])
    check_video_args(video_length=p["frames"], height=height, width=width,
                     num_inference_steps=p["steps"] if p["steps"] is not None else 1, chunk_size=p["chunk_size"],
                     num_videos_per_prompt=1, compat=compat)
    check_t0_t1(p["t0"], p["t1"])
    if camera is not None:
        camera.check(p["frames"], (width, height) if size_known else None)
    check_steps_before_loading(p["model"], p["model_config"], p["steps"])
    check_dtype_name(p["dtype"])
    check_speed(p)
    return camera


def check_generate(p: dict[str, Any]) -> Shape:
    """`t2vzero generate`'s checks before any weights load."""
    from ..errors import UserError
    from ..models import check_model
    from ..options import parse_pair
    from ..plan import is_sdxl_before_loading, native_size_before_loading

    width, height = parse_pair(p["size"], "x", "size", int) if p["size"] else (8, 8)
    camera = _check_run(p, width, height, p["compat"], bool(p["size"]))
    check_model(p["model"], allow_pickle=p["allow_pickle"], config=p["model_config"])
    if p["prompt_2"] is not None or p["negative_2"] is not None:
        if is_sdxl_before_loading(p["model"], p["model_config"]) is False:  # None: unknown until it loads
            raise UserError("--prompt-2/--negative-2 are for SDXL's second text encoder; this model is SD 1.x/2.x "
                            "with one: drop them")
    if camera is not None and not p["size"]:  # a flow's size against the model's native one, still before loading
        native = native_size_before_loading(p["model"], p["model_config"])
        if native is not None:
            camera.check(p["frames"], native)
    return Shape(p["frames"], (width, height) if p["size"] else None)


def _camera(p: dict[str, Any]) -> Any:
    from ..options import motion_from_options

    return motion_from_options(p["motion"], p["motion_file"], p["no_motion"])


def generation_args(p: dict[str, Any]) -> dict[str, Any]:
    """`TextToVideoZero.__call__`'s generation arguments from `generate`'s options."""
    from ..options import parse_pair

    width, height = parse_pair(p["size"], "x", "size", int) if p["size"] else (None, None)
    return dict(video_length=p["frames"], height=height, width=width, num_inference_steps=p["steps"],
                guidance_scale=p["guidance"], negative_prompt=p["negative"], generator=seeded(p), motion=_camera(p),
                t0=p["t0"], t1=p["t1"], cross_frame_attention=not p["no_cross_frame_attention"], compat=p["compat"],
                scheduler=p["scheduler"], timestep_spacing=p["timestep_spacing"], token_merging=p["tome"],
                prompt_2=p["prompt_2"], negative_prompt_2=p["negative_2"], guidance_rescale=p["guidance_rescale"],
                cache_interval=p["cache_interval"])


def _resolved(pipe: Any, args: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    """The generation values the model's defaults made of the options, for the manifest."""
    given = {k: v for k, v in args.items() if k not in ("generator", "cross_frame_attention")}
    resolved = {k: plain(v) for k, v in pipe.generation_args(**given).items() if k in RESOLVED}
    return {**resolved, "scheduler": sampler_name(pipe, resolved.get("scheduler")), "fps": p["fps"],
            "chunk_size": p["chunk_size"]}


def _in_parts(pipe: Any, prompt: str, args: dict[str, Any], p: dict[str, Any], frame_ids: Sequence[int] | None,
              anchor: Any, **image: Any) -> tuple[Any, list[int]]:
    """Frames `frame_ids` (default all) after the anchor pass (run here unless given): any split, same frames."""
    anchor = anchor if anchor is not None else pipe.anchor(prompt, **image, **args)
    ids = list(range(anchor.num_frames)) if frame_ids is None else list(frame_ids)
    return pipe.render(anchor, ids, chunk_size=p["chunk_size"]), ids


def render_generate(loaded: Loaded, p: dict[str, Any], inputs: Any = None, frame_ids: Sequence[int] | None = None,
                    anchor: Any = None, progress: bool = False) -> Rendered:
    pipe, args = loaded.pipe, generation_args(p)
    if frame_ids is None and anchor is None:
        video = pipe(p["prompt"], chunk_size=p["chunk_size"], background_smoothing=p["smoothing"], progress=progress,
                     **args)
        ids = list(range(p["frames"]))
    else:
        video, ids = _in_parts(pipe, p["prompt"], args, p, frame_ids, anchor)
    return Rendered(video.uint8()[0], ids, p["fps"], [], _resolved(pipe, args, p), p["frames"])


def anchor_generate(loaded: Loaded, p: dict[str, Any], inputs: Any = None) -> Any:
    return loaded.pipe.anchor(p["prompt"], **generation_args(p))


def warn_generate(loaded: Loaded, p: dict[str, Any], inputs: Any = None) -> list[str]:
    return prompt_warnings(loaded, p["prompt"], p["negative"])


def _splittable(p: dict[str, Any]) -> bool:
    """Parts rendered apart equal the whole only where each frame has its own step-noise stream: the default
    recipe (`--compat diffusers` draws step noise from one generator across the frames of a call)."""
    return p.get("compat", "t2vzero") == "t2vzero"


# --- animate ---------------------------------------------------------------------------------------------------


def check_animate(p: dict[str, Any]) -> Shape:
    """`t2vzero animate`'s checks before any weights load; the size is the image's, fitted to the resolution
    (the model's native size, read from its configs, where none is given)."""
    from ..checks import MAX_SIDE
    from ..errors import UserError
    from ..inputs import fitted_size, read_image
    from ..models import check_model
    from ..plan import native_size_before_loading

    if p["resolution"] is not None and not 8 <= p["resolution"] <= MAX_SIDE:
        raise UserError(f"--resolution must be from 8 to {MAX_SIDE}, got {p['resolution']}")
    camera = _check_run(p, 8, 8, "t2vzero", False)
    image = read_image(p["image"])
    check_model(p["model"], allow_pickle=p["allow_pickle"], config=p["model_config"])
    native = native_size_before_loading(p["model"], p["model_config"])
    resolution = p["resolution"] or (max(native) if native else None)
    size = fitted_size((image.shape[1], image.shape[0]), resolution) if resolution else None
    if camera is not None and size is not None:  # now that the image's size is known: a flow must match it
        camera.check(p["frames"], size)
    return Shape(p["frames"], size, size_option="--resolution")


def image_input(p: dict[str, Any], needed: Sequence[int] | None = None) -> Any:
    from ..inputs import read_image

    return read_image(p["image"])


def _picture(loaded: Loaded, p: dict[str, Any], image: Any) -> Any:
    """The image resized so its longer side is the resolution (the model's native size if none is given)."""
    from ..inputs import fit_resolution

    return fit_resolution(image[None], p["resolution"] or max(loaded.pipe.native_size()))[0]


def animate_args(p: dict[str, Any]) -> dict[str, Any]:
    """`TextToVideoZero.animate`'s (and `anchor`'s) generation arguments from `animate`'s options."""
    return dict(negative_prompt=p["negative"], video_length=p["frames"], num_inference_steps=p["steps"],
                guidance_scale=p["guidance"], generator=seeded(p), motion=_camera(p), t0=p["t0"], t1=p["t1"],
                scheduler=p["scheduler"], timestep_spacing=p["timestep_spacing"], token_merging=p["tome"],
                cache_interval=p["cache_interval"])


def render_animate(loaded: Loaded, p: dict[str, Any], image: Any, frame_ids: Sequence[int] | None = None,
                   anchor: Any = None, progress: bool = False) -> Rendered:
    pipe, args, picture = loaded.pipe, animate_args(p), _picture(loaded, p, image)
    if frame_ids is None and anchor is None:
        video = pipe.animate(picture, p["prompt"], chunk_size=p["chunk_size"], progress=progress, **args)
        ids = list(range(p["frames"]))
    else:
        video, ids = _in_parts(pipe, p["prompt"], args, p, frame_ids, anchor, image=picture)
    size = {"height": picture.shape[0], "width": picture.shape[1]}
    return Rendered(video.uint8()[0], ids, p["fps"], [picture[None]], _resolved(pipe, {**args, **size}, p),
                    p["frames"])


def anchor_animate(loaded: Loaded, p: dict[str, Any], image: Any) -> Any:
    return loaded.pipe.anchor(p["prompt"], image=_picture(loaded, p, image), **animate_args(p))


def warn_animate(loaded: Loaded, p: dict[str, Any], image: Any) -> list[str]:
    """The prompt's warnings, and a note when the image is resized."""
    fitted = _picture(loaded, p, image)
    notes = []
    if fitted.shape != image.shape:
        resolution = p["resolution"] or max(loaded.pipe.native_size())
        notes.append(f"note: {p['image']} resized from {image.shape[1]}x{image.shape[0]} to {fitted.shape[1]}x"
                     f"{fitted.shape[0]} (longer side {resolution}, multiples of 8)")
    return notes + prompt_warnings(loaded, p["prompt"], p["negative"])


_LOADS = frozenset({"model", "model_config", "device", "dtype", "lora", "allow_pickle", "compile", "channels_last",
                    "vae_tiling", "offload"})
_SAMPLING = frozenset({"seed", "negative", "chunk_size", "scheduler", "timestep_spacing", "tome", "cache_interval",
                       "steps", "guidance", "fps", "frames", "motion", "motion_file", "no_motion", "t0", "t1"})

def no_inputs(p: dict[str, Any], needed: Sequence[int] | None = None) -> None:
    """Text to video reads nothing but its options."""
    return None


GENERATE = Mode(
    "generate", check_generate, no_inputs, pipe_key, load_pipe, warn_generate, render_generate,
    _LOADS | _SAMPLING | {"prompt", "prompt_2", "negative_2", "guidance_rescale", "size", "compat",
                          "no_cross_frame_attention", "smoothing"},
    anchor=anchor_generate, splittable=lambda p: _splittable(p) and p["smoothing"] is None)
ANIMATE = Mode(
    "animate", check_animate, image_input, pipe_key, load_pipe, warn_animate, render_animate,
    _LOADS | _SAMPLING | {"image", "prompt", "resolution"}, anchor=anchor_animate)

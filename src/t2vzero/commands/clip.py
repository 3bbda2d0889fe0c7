"""The video-to-video commands: `control` (ControlNet video), `edit` (Instruct-Pix2Pix) and `restyle`
(SDEdit). Their checks read the input clip's metadata only; `clip_input` decodes it (and annotates only
the frames a part renders); each renders all frames or a subset (`frame_ids=`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from . import Mode
from .common import Loaded, Rendered, Shape, empty, load_pipe, part_ids, pipe_key, prompt_warnings, sampler_name, seeded


@dataclass
class Clip:
    """A mode's inputs: the clip's frames (fitted to the resolution), the output rate, the condition maps."""

    frames: Any
    fps: float
    maps: list[Any] = field(default_factory=list)


def _check_run(text: str, steps: int, example_steps: int, guidance: dict[str, float | None]) -> None:
    from ..checks import check_finite
    from ..errors import UserError
    from ..options import check_prompt_text

    check_prompt_text(text)
    if steps < 1:
        raise UserError(f"steps must be at least 1 (got {steps}); e.g. --steps {example_steps}")
    check_finite(guidance)


def _check_clip(p: dict[str, Any], command: str) -> Shape:
    """The checks every video-to-video command makes before any weights load, ending with the clip's shape
    (frames and size after --resolution) from its metadata."""
    from ..defaults import CLIP
    from ..errors import UserError
    from ..inputs import clip_shape, fitted_size
    from ..models import check_dtype_name, check_model
    from ..options import check_loras, check_single_file_config, check_speed
    from ..schedulers import check_scheduler_args, check_steps_before_loading
    from ..video import check_fps

    check_scheduler_args(p["scheduler"], p["timestep_spacing"])
    check_single_file_config(p["model"], p["model_config"])
    check_steps_before_loading(p["model"], p["model_config"], p["steps"])
    check_speed(p)
    if p["chunk_size"] is not None and p["chunk_size"] < 2:
        raise UserError(f"chunk size must be at least 2 (frame 1 plus one more), got {p['chunk_size']}")
    if p["fps"] is not None:
        check_fps(p["fps"])
    check_dtype_name(p["dtype"])
    check_loras(p["lora"])
    frames, size, rate = clip_shape(p["input_video"], start=p["start"], end=p["end"], every=p["every"],
                                    max_frames=p["max_frames"], fps=p["fps"])
    check_fps(p["fps"] or rate or CLIP["fps"])
    width, height = fitted_size(size, p["resolution"])
    check_model(p["model"], allow_pickle=p["allow_pickle"], config=p["model_config"])
    _check_base_model(p, command)
    return Shape(frames, (width, height), size_option="--resolution")


def _check_base_model(p: dict[str, Any], command: str) -> None:
    """From the configs alone, what the run would refuse once loaded: an edit needs an Instruct-Pix2Pix UNet
    (latent + image channels), the other modes a text-to-image one, and each ControlNet the base's family."""
    from ..errors import UserError
    from ..estimate import controlnet_plan
    from ..models import parse_lora
    from ..modes.video2video import family
    from ..plan import unet_config_before_loading

    unet = unet_config_before_loading(p["model"], p["model_config"])
    if unet is None:
        return  # a hub id or a single file without --config: checked once loaded
    channels, latent = unet.get("in_channels", 4), unet["latent_channels"]
    if command == "edit" and channels != 2 * latent:
        raise UserError(f"the edit checkpoint's UNet takes {channels} input channels, not {2 * latent}; give an "
                        "Instruct-Pix2Pix checkpoint")
    if command != "edit" and channels != latent:
        raise UserError(f"the model's UNet takes {channels} input channels, not {latent} (an Instruct-Pix2Pix "
                        f"checkpoint, for `edit`); give a text-to-image model for {command}")
    for spec in p.get("controlnets") or ():
        name = parse_lora(spec)[0]
        net, _ = controlnet_plan(name)
        if net is not None and family(net) != family(unet):
            raise UserError(f"ControlNet {name} is for {family(net)} (cross-attention dim "
                            f"{net.get('cross_attention_dim')}); the base is {family(unet)} "
                            f"({unet.get('cross_attention_dim')}): give a ControlNet made for {family(unet)}")


def _controlnet_names(p: dict[str, Any]) -> dict[str, Any]:
    from ..models import parse_lora

    return {"controlnets": [parse_lora(spec)[0] for spec in p["controlnets"]]}


def check_control(p: dict[str, Any]) -> Shape:
    from ..options import condition_kinds

    _check_run(p["prompt"], p["steps"], 20, {"--guidance": p["guidance"]})
    condition_kinds(p)
    return replace(_check_clip(p, "control"), plan_args=_controlnet_names(p))


def check_edit(p: dict[str, Any]) -> Shape:
    _check_run(p["instruction"], p["steps"], 50, {"--guidance": p["guidance"], "--image-guidance": p["image_guidance"]})
    return replace(_check_clip(p, "edit"), plan_args={"image_guidance": p["image_guidance"]})


def check_restyle(p: dict[str, Any]) -> Shape:
    from ..checks import check_finite, check_strength
    from ..errors import UserError
    from ..options import condition_kinds

    _check_run(p["prompt"], p["steps"], 50, {})
    check_strength(p["strength"])
    if int(p["steps"] * p["strength"] + 1e-9) < 1:
        raise UserError(f"--strength {p['strength']} of {p['steps']} steps runs no step; raise --strength or --steps")
    if p["compat"] != "t2vzero":
        raise UserError("restyle has no diffusers reference to reproduce; drop --compat")
    check_finite({"--guidance": p["guidance"]})
    condition_kinds(p)
    return replace(_check_clip(p, "restyle"), plan_args=_controlnet_names(p))


def clip_input(p: dict[str, Any], needed: Sequence[int] | None = None) -> Clip:
    """The clip as the command reads it (range, stride, at most --max-frames, fitted to --resolution), its
    output rate, and one condition video per ControlNet; annotators see only frame 1 and `needed` (a part's
    frames; None: all), the other maps are left blank since that part never reads them."""
    from ..defaults import CLIP
    from ..inputs import fit_resolution, load_clip
    from ..video import check_fps

    frames, rate = load_clip(p["input_video"], start=p["start"], end=p["end"], every=p["every"],
                             max_frames=p["max_frames"], fps=p["fps"])
    frames = fit_resolution(frames, p["resolution"])
    clip = Clip(frames, check_fps(p["fps"] or rate or CLIP["fps"]))
    if p.get("controlnets"):
        clip.maps = condition_maps(frames, p, None if needed is None else sorted({0, *needed}))
    return clip


def condition_maps(frames: Any, p: dict[str, Any], needed: list[int] | None) -> list[Any]:
    """The condition video of each kind for the clip's frames: annotated, or read and clipped like the input."""
    import numpy as np

    from ..inputs import ANNOTATORS, annotate, load_clip, match_condition_video
    from ..options import condition_kinds

    maps = []
    for kind in condition_kinds(p):
        if kind not in ANNOTATORS:
            # Clipped and strided like the input, so that map k belongs to frame k.
            cond, _ = load_clip(kind, start=p["start"], end=p["end"], every=p["every"], max_frames=p["max_frames"],
                                fps=p["fps"])
            maps.append(match_condition_video(cond, frames, kind))
            continue
        ids = list(range(len(frames))) if needed is None else [k for k in needed if k < len(frames)]
        annotated = annotate(frames[ids], kind, p["annotator"], low=p["canny_low"], high=p["canny_high"])
        if len(ids) == len(frames):
            maps.append(annotated)
        else:
            full = np.zeros_like(frames)
            full[ids] = annotated
            maps.append(full)
    return maps


def _resolved(loaded: Loaded, p: dict[str, Any], clip: Clip, **extra: Any) -> dict[str, Any]:
    """The parameters the run used, for the manifest."""
    _, height, width = clip.frames.shape[:3]
    return {"video_length": len(clip.frames), "height": height, "width": width, "num_inference_steps": p["steps"],
            "guidance_scale": p["guidance"], "scheduler": sampler_name(loaded.pipe, p["scheduler"]),
            "timestep_spacing": p["timestep_spacing"], "fps": clip.fps, "chunk_size": p["chunk_size"], **extra}


def _sampling(p: dict[str, Any], progress: bool, ids: list[int] | None) -> dict[str, Any]:
    """The sampling arguments `control`, `edit` and `restyle` share."""
    return dict(negative_prompt=p["negative"], num_inference_steps=p["steps"], guidance_scale=p["guidance"],
                generator=seeded(p), chunk_size=p["chunk_size"], scheduler=p["scheduler"],
                timestep_spacing=p["timestep_spacing"], token_merging=p["tome"], cache_interval=p["cache_interval"],
                progress=progress, frame_ids=ids)


def _nets(loaded: Loaded) -> tuple[list[Any], list[float]]:
    return [n for n, _ in loaded.controlnets], [s for _, s in loaded.controlnets]


def render_control(loaded: Loaded, p: dict[str, Any], clip: Clip, frame_ids: Sequence[int] | None = None,
                   anchor: Any = None, progress: bool = False) -> Rendered:
    ids = part_ids(frame_ids, len(clip.frames))
    if not ids:
        return empty(clip.fps, len(clip.frames))
    nets, scales = _nets(loaded)
    video = loaded.pipe.control(p["prompt"], clip.maps, nets, scales=scales, compat=p["compat"],
                                **_sampling(p, progress, None if frame_ids is None else ids))
    return Rendered(video.uint8()[0], ids, clip.fps, [clip.frames, *clip.maps], _resolved(loaded, p, clip),
                    len(clip.frames))


def render_edit(loaded: Loaded, p: dict[str, Any], clip: Clip, frame_ids: Sequence[int] | None = None,
                anchor: Any = None, progress: bool = False) -> Rendered:
    ids = part_ids(frame_ids, len(clip.frames))
    if not ids:
        return empty(clip.fps, len(clip.frames))
    video = loaded.pipe.edit(p["instruction"], clip.frames, image_guidance_scale=p["image_guidance"],
                             compat=p["compat"], **_sampling(p, progress, None if frame_ids is None else ids))
    return Rendered(video.uint8()[0], ids, clip.fps, [clip.frames],
                    _resolved(loaded, p, clip, image_guidance_scale=p["image_guidance"]), len(clip.frames))


def render_restyle(loaded: Loaded, p: dict[str, Any], clip: Clip, frame_ids: Sequence[int] | None = None,
                   anchor: Any = None, progress: bool = False) -> Rendered:
    ids = part_ids(frame_ids, len(clip.frames))
    if not ids:
        return empty(clip.fps, len(clip.frames))
    nets, scales = _nets(loaded)
    video = loaded.pipe.restyle(p["prompt"], clip.frames, strength=p["strength"], controlnets=nets,
                                conditions=clip.maps, scales=scales, invert=p["invert"],
                                **_sampling(p, progress, None if frame_ids is None else ids))
    return Rendered(video.uint8()[0], ids, clip.fps, [clip.frames, *clip.maps],
                    _resolved(loaded, p, clip, strength=p["strength"], invert=p["invert"]), len(clip.frames))


def _warn(loaded: Loaded, p: dict[str, Any], clip: Clip) -> list[str]:
    return prompt_warnings(loaded, p.get("prompt", p.get("instruction", "")), p["negative"])


def _splittable(p: dict[str, Any]) -> bool:
    """Parts rendered apart equal the whole only where each frame has its own step-noise stream: the default
    recipe (`--compat diffusers` draws step noise from one generator across the frames of a call)."""
    return p["compat"] == "t2vzero"


_LOADS = frozenset({"model", "model_config", "device", "dtype", "lora", "allow_pickle", "compile", "channels_last",
                    "vae_tiling", "offload"})
_SAMPLING = frozenset({"seed", "negative", "chunk_size", "compat", "scheduler", "timestep_spacing", "tome",
                       "cache_interval", "steps", "guidance", "fps"})
_CLIP = frozenset({"input_video", "start", "end", "every", "max_frames", "resolution"})
_CONTROL = frozenset({"controlnets", "conditions", "condition_videos", "annotator", "canny_low", "canny_high"})

CONTROL = Mode("control", check_control, clip_input, pipe_key, load_pipe, _warn, render_control,
               _LOADS | _SAMPLING | _CLIP | _CONTROL | {"prompt"}, splittable=_splittable)
EDIT = Mode("edit", check_edit, clip_input, pipe_key, load_pipe, _warn, render_edit,
            _LOADS | _SAMPLING | _CLIP | {"instruction", "image_guidance"}, splittable=_splittable)
RESTYLE = Mode("restyle", check_restyle, clip_input, pipe_key, load_pipe, _warn, render_restyle,
               _LOADS | _SAMPLING | _CLIP | _CONTROL | {"prompt", "strength", "invert"}, splittable=_splittable)

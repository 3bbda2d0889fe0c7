"""`t2vzero app`: a Gradio web app, one tab per mode, a thin layer over the same functions as the CLI.

Safe by default: binds 127.0.0.1, one generation at a time (queue), upload size and clip length limits,
models only from an allow-list (dropdowns, never typed paths), outputs in a private temp dir removed on exit.
"""

from __future__ import annotations

import atexit
import inspect
import os
import shutil
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUILT_IN = "built-in"
# Camera-path presets at strength s (t2vzero.motion's grammar). MODELS_OWN is the model's default motion (its
# t2vzero.json, else the paper's δ); DELTA takes the paper's pan from the δx/δy fields.
MODELS_OWN = "the model's"
DELTA = "pan δ (δx, δy below)"
CAMERA_PRESETS: dict[str, Any] = {
    "zoom in": lambda s: f"zoom:{1 + 0.03 * s:g}",
    "zoom out": lambda s: f"zoom:{1 / (1 + 0.03 * s):g}",
    "pan right": lambda s: f"pan:{16 * s:g},0",
    "pan down": lambda s: f"pan:0,{16 * s:g}",
    "rotate counter-clockwise": lambda s: f"rotate:{3 * s:g}",
    "rotate clockwise": lambda s: f"rotate:{-3 * s:g}",
    "zoom in and turn": lambda s: f"zoom:{1 + 0.02 * s:g}+rotate:{2 * s:g}",
}


@dataclass
class AppConfig:
    """What the server allows: model and ControlNet allow-lists, limits, device."""

    models: list[str] = field(default_factory=list)
    controlnets: list[str] = field(default_factory=list)
    loras: list[str] = field(default_factory=list)
    max_upload_mb: int = 50
    max_seconds: float = 10.0
    device: str = "auto"
    dtype: str = "auto"
    concurrency: int | None = None  # generations at once; None: what the device's memory allows (1 on a CPU)


class Runner:
    """Loads allow-listed models on first use and runs the modes; outputs go to a private temp dir."""

    def __init__(self, config: AppConfig, workdir: Path) -> None:
        self.config, self.workdir, self._cache = config, workdir, {}
        self._loading = threading.Lock()  # concurrent requests for one model load it once

    def choices(self) -> list[str]:
        return [BUILT_IN, *self.config.models]

    def pipe(self, name: str, lora: str | None = None, lora_scale: float = 1.0) -> Any:
        from .errors import UserError
        from .pipeline import TextToVideoZero

        if name not in self.choices():
            raise UserError(f"model {name!r} is not on this server's allow-list")
        if lora and lora not in self.config.loras:
            raise UserError(f"LoRA {lora!r} is not on this server's allow-list")
        key = (name, lora or None, float(lora_scale) if lora else None)
        with self._loading:
            if key not in self._cache:
                loras = [(lora, float(lora_scale))] if lora else []
                self._cache[key] = TextToVideoZero.from_pretrained(None if name == BUILT_IN else name, lora=loras,
                                                                   device=self.config.device, dtype=self.config.dtype)
        return self._cache[key]

    def controlnet(self, name: str) -> Any:
        from .errors import UserError
        from .models import load_controlnet

        if name not in self.config.controlnets:
            raise UserError(f"ControlNet {name!r} is not on this server's allow-list")
        key = ("controlnet", name)
        with self._loading:
            if key not in self._cache:
                self._cache[key] = load_controlnet(name, device=self.config.device, dtype=self.config.dtype)[0]
        return self._cache[key]

    def clip(self, upload: str | None, every: int, max_frames: int | None, resolution: int,
             start: float | None = None, end: float | None = None, fps: float | None = None) -> tuple[Any, float]:
        from .errors import UserError
        from .inputs import fit_resolution, load_clip
        from .video import check_fps

        if fps:
            check_fps(float(fps))  # before any work, not after generating
        if not upload:
            raise UserError("upload a video first")
        if os.path.getsize(upload) > self.config.max_upload_mb * 2**20:
            raise UserError(f"the upload is larger than this server's limit of {self.config.max_upload_mb} MB")
        frames, src_fps = load_clip(upload, every=int(every), max_frames=int(max_frames) if max_frames else None,
                                    start=start, end=end, max_seconds=self.config.max_seconds)
        if src_fps and len(frames) / src_fps > self.config.max_seconds + 1e-6:  # the container's count was short
            raise UserError(f"the clip is longer than this server's limit of {self.config.max_seconds:g} s; "
                            "lower 'max frames' or raise --max-seconds")
        return fit_resolution(frames, int(resolution)), fps or src_fps or 8.0

    def save(self, result: Any, rows: list[Any], fps: float) -> tuple[str, str, tuple[int, int]]:
        """The video and its contact sheet in a folder of their own; returns their paths and the (width, height)."""
        from .video import SHEET_MIN_SIDE, contact_sheet, write_video

        out = Path(tempfile.mkdtemp(dir=self.workdir))
        video = result.uint8()[0]
        path = write_video(video, out / "video.mp4", fps=fps)
        sheet = contact_sheet([*rows, video], out / "video_sheet.png", min_side=SHEET_MIN_SIDE)
        return str(path), str(sheet), (video.shape[2], video.shape[1])

    def camera_path(self, preset: str | None, strength: float, upload: str | None, dx: float | None,
                    dy: float | None, no_motion: bool) -> Any:
        """The motion for one call: an uploaded keyframe/flow file, else a preset at `strength` or δ, else None
        (the model's own), checked (t2vzero.motion); 'no motion' contradicts a path, as on the command line."""
        from .errors import UserError
        from .motion import load_motion_file, parse_motion

        chosen = upload or (preset not in (None, MODELS_OWN, DELTA))
        if no_motion and chosen:
            raise UserError("'no motion' and a camera path contradict each other; untick one")
        if no_motion:
            return (0.0, 0.0)
        if upload:
            if os.path.getsize(upload) > self.config.max_upload_mb * 2**20:
                raise UserError(f"the path file is larger than this server's limit of {self.config.max_upload_mb} MB")
            return load_motion_file(upload)
        if preset in CAMERA_PRESETS:
            return parse_motion(CAMERA_PRESETS[preset](float(strength)))
        if preset == DELTA:
            if dx is None or dy is None:
                raise UserError("the pan δ preset needs both δx and δy (pixels per frame on a 512 grid)")
            return (float(dx), float(dy))
        return None


def build(runner: Runner) -> Any:
    """The Gradio Blocks: tabs for text→video, image→video, ControlNet video, editing and restyling."""
    import gradio as gr
    import numpy as np
    import torch

    from .defaults import ANIMATE, CLIP, CONTROL, EDIT, RESTYLE, TEXT_TO_VIDEO
    from .errors import UserError
    from .inputs import ANNOTATORS, annotate, check_image_size, fit_resolution, match_condition_video
    from .schedulers import SCHEDULERS, SPACINGS

    def shown(saved: tuple[str, str, tuple[int, int]]) -> tuple[Any, str]:
        """The video player at the video's own size (small videos enlarged by a whole factor), not page-wide."""
        path, sheet, size = saved
        width, height = display_size(size)
        return gr.Video(value=path, width=width, height=height), sheet

    def guarded(fn: Any) -> Any:
        def run(*args: Any, progress: Any = gr.Progress(track_tqdm=True)) -> Any:  # noqa: B008 (Gradio's idiom)
            try:
                return shown(fn(*args))
            except UserError as exc:
                raise gr.Error(str(exc)) from None
            except (TypeError, ValueError, OverflowError) as exc:  # a value the form let through, e.g. no number
                raise gr.Error(f"invalid input: {str(exc).strip().splitlines()[0]}") from None
        # The API Gradio derives from the function (gradio_client's api_name and keyword arguments) is `fn`'s.
        run.__name__ = fn.__name__
        own = inspect.signature(run).parameters["progress"]
        run.__signature__ = inspect.signature(fn).replace(parameters=[*inspect.signature(fn).parameters.values(),
                                                                      own])
        return run

    def text_to_video(model, prompt, negative, frames, steps, guidance, seed, width, height, preset, strength,
                      path_file, dx, dy, t0, t1, chunk, no_cfa, no_motion, smoothing, fps, scheduler, spacing, compat,
                      lora, lora_scale):
        from .video import check_fps

        check_fps(float(fps))  # before any work, not after generating
        motion = runner.camera_path(preset, strength, path_file, dx, dy, no_motion)
        pipe = runner.pipe(model, lora, lora_scale)
        result = pipe(prompt, negative_prompt=negative, video_length=int(frames),
                      num_inference_steps=int(steps) or None,
                      guidance_scale=guidance or None, generator=torch.Generator().manual_seed(check_seed(seed)),
                      width=int(width) or None, height=int(height) or None,
                      motion=motion,
                      t0=int(t0 or 0) or None, t1=int(t1 or 0) or None,
                      chunk_size=int(chunk) or None, cross_frame_attention=not no_cfa, compat=compat,
                      background_smoothing=float(smoothing) or None, scheduler=scheduler or None,
                      timestep_spacing=spacing or None)
        return runner.save(result, [], float(fps))

    def control(upload, model, controlnet, condition, prompt, negative, steps, guidance, scale, seed, every,
                max_frames, resolution, low, high, chunk, condition_upload, start, end, fps, scheduler, spacing, compat,
                lora, lora_scale):
        frames, out_fps = runner.clip(upload, every, max_frames, resolution, start or None, end or None, fps or None)
        if condition_upload:  # precomputed maps, clipped like the input
            cond, _ = runner.clip(condition_upload, every, max_frames, resolution, start or None, end or None)
            maps = match_condition_video(cond, frames, "the condition video")
        else:
            maps = annotate(frames, condition, None, low=int(low), high=int(high))
        pipe = runner.pipe(model, lora, lora_scale)
        result = pipe.control(prompt, [maps], [runner.controlnet(controlnet)], scales=[scale], negative_prompt=negative,
                              num_inference_steps=int(steps), guidance_scale=guidance, chunk_size=int(chunk) or None,
                              generator=torch.Generator().manual_seed(check_seed(seed)), compat=compat,
                              scheduler=scheduler or None, timestep_spacing=spacing or None)
        return runner.save(result, [frames, maps], out_fps)

    def edit(upload, model, instruction, negative, steps, guidance, image_guidance, seed, every, max_frames,
             resolution, chunk, start, end, fps, scheduler, spacing, compat, lora, lora_scale):
        frames, out_fps = runner.clip(upload, every, max_frames, resolution, start or None, end or None, fps or None)
        pipe = runner.pipe(model, lora, lora_scale)
        result = pipe.edit(instruction, frames, negative_prompt=negative, num_inference_steps=int(steps),
                           guidance_scale=guidance, image_guidance_scale=image_guidance, chunk_size=int(chunk) or None,
                           generator=torch.Generator().manual_seed(check_seed(seed)), compat=compat,
                           scheduler=scheduler or None, timestep_spacing=spacing or None)
        return runner.save(result, [frames], out_fps)

    def image_to_video(image, model, prompt, negative, frames, steps, guidance, seed, resolution, preset, strength,
                       path_file, dx, dy, t0, t1, chunk, no_motion, fps, scheduler, spacing, lora, lora_scale):
        from .video import check_fps

        check_fps(float(fps))  # before any work, not after generating
        if image is None:
            raise UserError("upload an image first")
        motion = runner.camera_path(preset, strength, path_file, dx, dy, no_motion)
        picture = check_image_size(np.asarray(image, np.uint8)[..., :3])
        pipe = runner.pipe(model, lora, lora_scale)
        picture = fit_resolution(picture[None], int(resolution or 0) or max(pipe.native_size()))[0]
        result = pipe.animate(picture, prompt, negative_prompt=negative, video_length=int(frames),
                              num_inference_steps=int(steps) or None, guidance_scale=guidance or None,
                              generator=torch.Generator().manual_seed(check_seed(seed)), motion=motion,
                              t0=int(t0 or 0) or None, t1=int(t1 or 0) or None,
                              chunk_size=int(chunk) or None, scheduler=scheduler or None,
                              timestep_spacing=spacing or None)
        return runner.save(result, [picture[None]], float(fps))

    def restyle(upload, model, prompt, strength, invert, controlnet, condition, negative, steps, guidance, scale, seed,
                every, max_frames, resolution, low, high, chunk, start, end, fps, scheduler, spacing, lora, lora_scale):
        frames, out_fps = runner.clip(upload, every, max_frames, resolution, start or None, end or None, fps or None)
        nets = [runner.controlnet(controlnet)] if controlnet else []
        maps = [annotate(frames, condition, None, low=int(low), high=int(high))] if controlnet else []
        pipe = runner.pipe(model, lora, lora_scale)
        result = pipe.restyle(prompt, frames, strength=float(strength), invert=bool(invert), controlnets=nets,
                              conditions=maps,
                              scales=[scale] * len(nets), negative_prompt=negative, num_inference_steps=int(steps),
                              guidance_scale=guidance, chunk_size=int(chunk) or None,
                              generator=torch.Generator().manual_seed(int(seed)), scheduler=scheduler or None,
                              timestep_spacing=spacing or None)
        return runner.save(result, [frames, *maps], out_fps)

    def shared_options(video: bool, compat: bool = True) -> list[Any]:
        """The options every mode has: clip range and rate (video modes), sampler, compat (modes with a diffusers
        reference), an allow-listed LoRA."""
        extra = []
        if video:
            extra = [gr.Number(value=0, label="start (s)"), gr.Number(value=0, label="end (s, 0: the end)"),
                     gr.Number(value=0, label="fps (0: source fps / every)")]
        sampler = [gr.Dropdown([None, *SCHEDULERS], value=None, label="scheduler (empty: the model's)"),
                   gr.Dropdown([None, *SPACINGS], value=None, label="timestep spacing (empty: the scheduler's)")]
        modes = [gr.Dropdown(["t2vzero", "diffusers"], value="t2vzero", label="compat")] if compat else []
        return [*extra, *sampler, *modes,
                gr.Dropdown([None, *runner.config.loras], value=None, label="LoRA (allow-list)"),
                gr.Number(value=1.0, label="LoRA scale")]

    def clip_options(steps: int, guidance: float, second: tuple[str, float]) -> list[Any]:
        """What both video-to-video tabs ask, in their callbacks' order: negative prompt, steps, guidance,
        a second strength (ControlNet scale / image guidance), seed, then which frames at what size."""
        return [gr.Textbox(label="negative prompt", value=""), gr.Number(value=steps, precision=0, label="steps"),
                gr.Number(value=guidance, label="guidance"), gr.Number(value=second[1], label=second[0]),
                gr.Number(value=0, precision=0, label="seed"),
                gr.Number(value=1, precision=0, label="every N-th frame"),
                gr.Number(value=8, precision=0, label="max frames"),
                gr.Number(value=CLIP["resolution"], precision=0, label="resolution (longer side)")]

    def camera_path_picker(tab: str) -> list[Any]:
        """Camera path: a preset and its strength, or a keyframe (.json) / flow (.npy) file, which wins."""
        return [gr.Dropdown([MODELS_OWN, DELTA, *CAMERA_PRESETS], value=MODELS_OWN, label="camera path",
                            elem_id=f"{tab}-camera-path"),
                gr.Slider(0, 4, value=1, step=0.25, label="camera path strength", elem_id=f"{tab}-camera-strength"),
                gr.File(label="camera path file: keyframes .json or flow .npy (overrides the preset)",
                        file_types=[".json", ".npy"], type="filepath", elem_id=f"{tab}-camera-file")]

    def outputs(elem_id: str | None = None) -> list[Any]:
        return [gr.Video(label="video", buttons=["download"], elem_id=elem_id),
                gr.Image(label="contact sheet", type="filepath")]

    with gr.Blocks(title="t2vzero") as demo:
        gr.Markdown("# t2vzero — Text2Video-Zero\nZero-shot video from Stable Diffusion (Khachatryan et al., 2023).")
        with gr.Tab("Text → video"):
            model = gr.Dropdown(runner.choices(), value=BUILT_IN, label="model", elem_id="t2v-model")
            prompt = gr.Textbox(label="prompt", value="a red circle on a blue background", elem_id="t2v-prompt")
            with gr.Accordion("advanced", open=False):
                negative = gr.Textbox(label="negative prompt", value="")
                frames = gr.Slider(1, 64, value=TEXT_TO_VIDEO["video_length"], step=1, label="frames")
                steps = gr.Number(value=0, precision=0,
                                  label=f"steps (0: the model's, else {TEXT_TO_VIDEO['num_inference_steps']})")
                guidance = gr.Number(value=0, label="guidance (0: the model's, else "
                                     f"{TEXT_TO_VIDEO['guidance_scale']}; ≤ 1 turns it off)")
                seed = gr.Number(value=0, precision=0, label="seed")
                width = gr.Number(value=0, precision=0, label="width (0: the model's)")
                height = gr.Number(value=0, precision=0, label="height (0: the model's)")
                preset, strength, path_file = camera_path_picker("t2v")
                # A shown empty number field reads 0, so "the model's" is a value of its own (0 here, a preset above).
                dx = gr.Number(value=TEXT_TO_VIDEO["motion"][0], label="motion δx (camera path 'pan δ')")
                dy = gr.Number(value=TEXT_TO_VIDEO["motion"][1], label="motion δy (camera path 'pan δ')")
                t0 = gr.Number(value=0, precision=0, label=f"t0 (0: the model's, else {TEXT_TO_VIDEO['t0']})")
                t1 = gr.Number(value=0, precision=0, label=f"t1 (0: the model's, else {TEXT_TO_VIDEO['t1']})")
                chunk = gr.Number(value=0, precision=0, label="chunk size (0: whole video)")
                no_cfa = gr.Checkbox(label="no cross-frame attention (ablation)")
                no_motion = gr.Checkbox(label="no motion (ablation)")
                smoothing = gr.Slider(0, 1, value=0, step=0.05, label="background smoothing α (0: off; paper: 0.6)")
                fps = gr.Number(value=TEXT_TO_VIDEO["fps"], label="fps")
                shared = shared_options(video=False)
            go = gr.Button("Generate", variant="primary", elem_id="t2v-generate")
            out = outputs()
            inputs = [model, prompt, negative, frames, steps, guidance, seed, width, height, preset, strength,
                      path_file, dx, dy, t0, t1, chunk, no_cfa, no_motion, smoothing, fps, *shared]
            go.click(guarded(text_to_video), inputs, out)
            gr.Examples([[BUILT_IN, p] for p in ("a red circle on a blue background",
                                                 "a yellow triangle on a purple background",
                                                 "a white square on a green background")], [model, prompt])
        with gr.Tab("Image → video", elem_id="i2v-tab"):
            a_image = gr.Image(label="image (frame 1)", type="numpy", image_mode="RGB", sources=["upload"],
                               elem_id="i2v-image")
            a_model = gr.Dropdown(runner.choices(), value=BUILT_IN, label="model")
            a_prompt = gr.Textbox(label="prompt (optional)", value=ANIMATE["prompt"], elem_id="i2v-prompt")
            with gr.Accordion("advanced", open=False):
                a_negative = gr.Textbox(label="negative prompt", value="")
                a_frames = gr.Slider(1, 64, value=ANIMATE["video_length"], step=1, label="frames")
                a_steps = gr.Number(value=0, precision=0,
                                    label=f"steps (0: the model's, else {ANIMATE['num_inference_steps']})")
                a_guidance = gr.Number(value=0, label=f"guidance (0: the model's, else {ANIMATE['guidance_scale']})")
                a_seed = gr.Number(value=0, precision=0, label="seed")
                a_resolution = gr.Number(value=ANIMATE["resolution"] or 0, precision=0,
                                         label="resolution, longer side (0: the model's native size)")
                a_preset, a_strength, a_path_file = camera_path_picker("i2v")
                a_dx = gr.Number(value=ANIMATE["motion"][0], label="motion δx (camera path 'pan δ')")
                a_dy = gr.Number(value=ANIMATE["motion"][1], label="motion δy (camera path 'pan δ')")
                a_t0 = gr.Number(value=0, precision=0, label=f"t0 (0: the model's, else {ANIMATE['t0']})")
                a_t1 = gr.Number(value=0, precision=0, label=f"t1 (0: the model's, else {ANIMATE['t1']})")
                a_chunk = gr.Number(value=0, precision=0, label="chunk size (0: whole video)")
                a_no_motion = gr.Checkbox(label="no motion")
                a_fps = gr.Number(value=ANIMATE["fps"], label="fps")
                a_shared = shared_options(video=False, compat=False)
            a_go = gr.Button("Animate", variant="primary", elem_id="i2v-generate")
            a_out = outputs("i2v-video")
            a_go.click(guarded(image_to_video), [a_image, a_model, a_prompt, a_negative, a_frames, a_steps, a_guidance,
                                                 a_seed, a_resolution, a_preset, a_strength, a_path_file, a_dx,
                                                 a_dy, a_t0, a_t1, a_chunk, a_no_motion, a_fps, *a_shared], a_out)
        with gr.Tab("ControlNet video"):
            upload = gr.Video(label="input video", sources=["upload"])
            c_model = gr.Dropdown(runner.choices(), value=BUILT_IN, label="model")
            c_net = gr.Dropdown(runner.config.controlnets, value=(runner.config.controlnets or [None])[0],
                                label="ControlNet (allow-list)")
            condition = gr.Dropdown(list(ANNOTATORS), value="canny", label="condition")
            c_prompt = gr.Textbox(label="prompt")
            with gr.Accordion("advanced", open=False):
                c_opts = clip_options(CONTROL["num_inference_steps"], CONTROL["guidance_scale"],
                                      ("ControlNet scale", CONTROL["controlnet_scale"]))
                c_low = gr.Number(value=CONTROL["canny_low"], precision=0, label="canny low")
                c_high = gr.Number(value=CONTROL["canny_high"], precision=0, label="canny high")
                c_chunk = gr.Number(value=0, precision=0, label="chunk size (0: whole video)")
                c_cond = gr.Video(label="condition video (precomputed maps; overrides the condition)",
                                  sources=["upload"])
                c_shared = shared_options(video=True)
            c_go = gr.Button("Generate", variant="primary", elem_id="control-generate")
            c_out = outputs()
            c_go.click(guarded(control), [upload, c_model, c_net, condition, c_prompt, *c_opts, c_low, c_high, c_chunk,
                                          c_cond, *c_shared], c_out)
        with gr.Tab("Edit by instruction"):
            e_upload = gr.Video(label="input video", sources=["upload"], elem_id="edit-upload")
            e_model = gr.Dropdown(runner.choices(), value=BUILT_IN, label="Instruct-Pix2Pix model")
            instruction = gr.Textbox(label="instruction", elem_id="edit-instruction")
            with gr.Accordion("advanced", open=False):
                e_opts = clip_options(EDIT["num_inference_steps"], EDIT["guidance_scale"],
                                      ("image guidance", EDIT["image_guidance_scale"]))
                e_chunk = gr.Number(value=0, precision=0, label="chunk size (0: whole video)")
                e_shared = shared_options(video=True)
            e_go = gr.Button("Edit", variant="primary", elem_id="edit-generate")
            e_out = outputs()
            e_go.click(guarded(edit), [e_upload, e_model, instruction, *e_opts, e_chunk, *e_shared], e_out)
        with gr.Tab("Restyle video", elem_id="restyle-tab"):
            r_upload = gr.Video(label="input video", sources=["upload"], elem_id="restyle-upload")
            r_model = gr.Dropdown(runner.choices(), value=BUILT_IN, label="model")
            r_prompt = gr.Textbox(label="prompt", elem_id="restyle-prompt")
            r_strength = gr.Slider(0.05, 1.0, value=RESTYLE["strength"], step=0.05,
                                   label="strength (how much changes; 1: from pure noise)")
            r_invert = gr.Checkbox(value=RESTYLE["invert"], elem_id="restyle-invert",
                                   label="start from each frame's inversion (keeps the layout; slower)")
            r_net = gr.Dropdown([None, *runner.config.controlnets], value=None,
                                label="ControlNet (optional, allow-list)")
            r_condition = gr.Dropdown(list(ANNOTATORS), value="canny", label="condition")
            with gr.Accordion("advanced", open=False):
                r_opts = clip_options(RESTYLE["num_inference_steps"], RESTYLE["guidance_scale"],
                                      ("ControlNet scale", RESTYLE["controlnet_scale"]))
                r_low = gr.Number(value=CONTROL["canny_low"], precision=0, label="canny low")
                r_high = gr.Number(value=CONTROL["canny_high"], precision=0, label="canny high")
                r_chunk = gr.Number(value=0, precision=0, label="chunk size (0: whole video)")
                r_shared = shared_options(video=True, compat=False)
            r_go = gr.Button("Restyle", variant="primary", elem_id="restyle-generate")
            r_out = outputs("restyle-video")
            r_go.click(guarded(restyle), [r_upload, r_model, r_prompt, r_strength, r_invert, r_net, r_condition,
                                          *r_opts, r_low, r_high, r_chunk, *r_shared], r_out)
    return demo


PLAYER_MIN_SIDE = 256  # a smaller video is shown enlarged by a whole factor (pixelated), so 64x64 fills 256x256
PLAYER_CSS = "video { image-rendering: pixelated; object-fit: contain; }"  # sharp when enlarged, as the sheets


def display_size(size: tuple[int, int]) -> tuple[int, int]:
    """The player's (width, height) for a (width, height) video: its own size, times the whole factor that
    brings its longer side to at least PLAYER_MIN_SIDE."""
    factor = max(1, -(-PLAYER_MIN_SIDE // max(size)))
    return size[0] * factor, size[1] * factor


def check_seed(seed: Any) -> int:
    """A seed a CPU torch.Generator takes."""
    from .errors import UserError

    if seed is None or not float(seed).is_integer() or not -(2**63) <= int(seed) < 2**64:
        raise UserError(f"seed must be a whole number from -2^63 to 2^64 - 1, got {seed}")
    return int(seed)


def default_concurrency(config: AppConfig) -> int:
    """Generations at once: on a GPU as many as its free memory holds by the run estimate (the weights once, one
    run's activations and frames each) for the first allowed model at its native size; 1 on a CPU, where
    parallel runs only share the same cores."""
    from .plan import available_memory, plan_run

    plan = plan_run(config.models[0] if config.models else None, None, mode="generate", frames=8, size=None,
                    steps=None, guidance=None, chunk_size=None, device=config.device, dtype=config.dtype)
    free = available_memory(plan.device)
    if plan.device == "cpu" or plan.estimate is None or free is None:
        return 1
    est = plan.estimate
    return max(1, int((free / 1.25 - est.weights) // max(1, est.peak - est.weights)))


def serve(config: AppConfig, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Build and launch; the private temp dir (Gradio's cache included) goes when the server stops."""
    workdir = Path(tempfile.mkdtemp(prefix="t2vzero-app-"))
    atexit.register(shutil.rmtree, workdir, True)
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "gradio")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build(Runner(config, workdir))
    concurrency = config.concurrency or default_concurrency(config)
    demo.queue(default_concurrency_limit=concurrency)
    print(f"t2vzero app: {concurrency} generation(s) at once; more requests wait in the queue", file=sys.stderr)
    if threading.current_thread() is threading.main_thread():
        # SIGTERM/SIGHUP (idle or mid-generation): remove the private folder and end at once. Unwinding the main
        # thread while a worker thread is inside torch aborts the interpreter ("terminate called without an
        # active exception"), so the process exits without that.
        def stop(signum: int, _frame: Any) -> None:
            shutil.rmtree(workdir, ignore_errors=True)
            print(f"t2vzero app: stopped by {signal.Signals(signum).name}", file=sys.stderr, flush=True)
            os._exit(128 + signum)

        for caught in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(caught, stop)
    try:
        demo.launch(server_name=host, server_port=port, max_file_size=f"{config.max_upload_mb}mb", ssr_mode=False,
                    show_error=True, quiet=True, css=PLAYER_CSS)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

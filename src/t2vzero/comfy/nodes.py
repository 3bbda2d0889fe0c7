"""The ComfyUI nodes (V3 schema): thin layers over `patch`, `sampling` and `motion_value`."""

from __future__ import annotations

from typing import Any

import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch
from comfy_api.latest import ComfyExtension, io

from ..defaults import TEXT_TO_VIDEO
from ..errors import UserError
from . import motion_value
from .patch import with_cross_frame_attention
from .sampling import TextToVideoSampler

CATEGORY = "Text2Video-Zero"
Motion = io.Custom("T2VZERO_MOTION")
MAX_SEED = 0xFFFFFFFFFFFFFFFF


def _t0_t1_inputs() -> list[io.Input]:
    return [
        io.Int.Input("t0", default=TEXT_TO_VIDEO["t0"], min=0, max=999,
                     tooltip="Diffusion timestep at which frame 1's latent is moved by the motion (paper: 881)."),
        io.Int.Input("t1", default=TEXT_TO_VIDEO["t1"], min=1, max=999,
                     tooltip="Diffusion timestep the moved latents are re-noised to and all frames start from; "
                             "t1 > t0 (paper: 941)."),
    ]


def _motion_input() -> io.Input:
    return Motion.Input("motion", optional=True,
                        tooltip="How frames 2..N move relative to frame 1 (a Text2Video-Zero Motion node); "
                                "unconnected: the paper's 12,12.")


class CrossFrameAttention(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="T2VZeroCrossFrameAttention", display_name="Text2Video-Zero Cross-Frame Attention",
            category=CATEGORY,
            description="Every self-attention layer attends to frame 1 of the latent batch (per conditioning "
                        "group), so all frames share frame 1's appearance. Returns a patched copy of the model.",
            inputs=[io.Model.Input("model", tooltip="A Stable Diffusion 1.x, 2.x or SDXL model.")],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model: Any) -> io.NodeOutput:
        return io.NodeOutput(with_cross_frame_attention(model))


class MotionNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="T2VZeroMotion", display_name="Text2Video-Zero Motion", category=CATEGORY,
            description="The camera motion of a Text2Video-Zero video, as the t2vzero command line's --motion.",
            inputs=[io.String.Input("motion", default="{:g},{:g}".format(*TEXT_TO_VIDEO["motion"]),
                                    tooltip=f"{motion_value.GRAMMAR}; positive values move content left/up.")],
            outputs=[Motion.Output()],
        )

    @classmethod
    def execute(cls, motion: str) -> io.NodeOutput:
        return io.NodeOutput(motion_value.parse(motion))


class VideoSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="T2VZeroSampler", display_name="Text2Video-Zero Sampler", category=CATEGORY,
            description="Wraps a sampler (KSamplerSelect) for SamplerCustom/SamplerCustomAdvanced: frame 1 is "
                        "sampled to t1 and t0, moved by the motion for every other frame of the latent batch, "
                        "re-noised to t1, and all frames are sampled from t1 together.",
            inputs=[io.Sampler.Input("sampler"), *_t0_t1_inputs(), _motion_input()],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, sampler: Any, t0: int, t1: int, motion: Any = None) -> io.NodeOutput:
        return io.NodeOutput(TextToVideoSampler(sampler, _motion(motion), t0, t1))


class KSamplerNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="T2VZeroKSampler", display_name="Text2Video-Zero KSampler", category=CATEGORY,
            description="KSampler for videos: cross-frame attention, the motion, and the t0/t1 jump. A one-image "
                        "latent is repeated to `frames` (an encoded image: image-to-video with denoise < 1).",
            inputs=[
                io.Model.Input("model"),
                io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True),
                io.Int.Input("steps", default=20, min=1, max=10000),
                io.Float.Input("cfg", default=TEXT_TO_VIDEO["guidance_scale"], min=0.0, max=100.0, step=0.1,
                               round=0.01),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS),
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                io.Latent.Input("latent_image"),
                io.Int.Input("frames", default=TEXT_TO_VIDEO["video_length"], min=1, max=4096,
                             tooltip="Frames of the video: the latent batch (one image is repeated)."),
                *_t0_t1_inputs(),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01),
                _motion_input(),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, model: Any, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                positive: Any, negative: Any, latent_image: dict[str, Any], frames: int, t0: int, t1: int,
                denoise: float, motion: Any = None) -> io.NodeOutput:
        sampler = TextToVideoSampler(comfy.samplers.sampler_object(sampler_name), _motion(motion), t0, t1)
        model = with_cross_frame_attention(model)
        latent = dict(latent_image)
        samples = as_frames(comfy.sample.fix_empty_latent_channels(model, latent.pop("samples")), frames)
        latent.pop("batch_index", None)  # the frames are numbered afresh
        noise = comfy.sample.prepare_noise(samples, seed)
        sigmas = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                         scheduler=scheduler, denoise=denoise, model_options=model.model_options).sigmas
        callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1)
        latent["samples"] = comfy.sample.sample_custom(
            model, noise, cfg, sampler, sigmas, positive, negative, samples, noise_mask=latent.get("noise_mask"),
            callback=callback, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        return io.NodeOutput(latent)


class SharedNoiseNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="T2VZeroSharedNoise", display_name="Text2Video-Zero Shared Noise", category=CATEGORY,
            description="One noise image for every frame of the latent batch (for SamplerCustomAdvanced): with "
                        "cross-frame attention and ControlNet frames, the paper's ControlNet video.",
            inputs=[io.Int.Input("noise_seed", default=0, min=0, max=MAX_SEED, control_after_generate=True)],
            outputs=[io.Noise.Output()],
        )

    @classmethod
    def execute(cls, noise_seed: int) -> io.NodeOutput:
        return io.NodeOutput(SharedNoise(noise_seed))


class SharedNoise:
    """A NOISE source (ComfyUI's protocol: `seed`, `generate_noise(latent)`): frame 1's noise for all frames."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def generate_noise(self, input_latent: dict[str, Any]) -> torch.Tensor:
        samples = input_latent["samples"]
        return comfy.sample.prepare_noise(samples[:1], self.seed).expand_as(samples).clone()


def as_frames(samples: torch.Tensor, frames: int) -> torch.Tensor:
    """The latent batch as `frames` frames: a batch of that many as it is, one image repeated."""
    if samples.shape[0] == frames:
        return samples
    if samples.shape[0] == 1:
        return samples.repeat(frames, *[1] * (samples.ndim - 1))
    raise UserError(f"The latent batch holds {samples.shape[0]} images but frames is {frames}; set frames to "
                    f"{samples.shape[0]}, or give one image to repeat.")


def _motion(motion: Any) -> Any:
    return motion_value.default() if motion is None else motion


class TextToVideoZeroExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [CrossFrameAttention, MotionNode, VideoSampler, KSamplerNode, SharedNoiseNode]

"""Text2Video-Zero's schedule (paper §3.3.1) around any of ComfyUI's k-diffusion samplers.

Frame 1 is sampled to t1 and on to t0 alone; its latent at t0 is moved for each other frame by the
motion and re-noised from t0 to t1 in sigma space (ComfyUI's latents are x0 + σ·ε); then every frame
is sampled from t1 to the end together, with the same sampler, scheduler and conditioning. Each
frame's re-noising uses that frame's own sampler noise, so a shared noise gives identical jumps.
The pieces of the method (snapping t0/t1, the motion warp, the jump) are t2vzero's own.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import comfy.model_sampling
import comfy.samplers
import torch

from ..errors import UserError
from ..schedule import JumpSteps, check_t0_t1, jump_steps, sigma_space_jump
from . import motion_value
from .patch import has_cross_frame

log = logging.getLogger(__name__)
VAE_FACTOR = 8  # pixels per latent pixel of the SD 1.x/2.x/SDXL VAEs (the motion is given in pixels)


class TextToVideoSampler(comfy.samplers.Sampler):
    """A SAMPLER for SamplerCustom/SamplerCustomAdvanced that runs `inner` (a k-diffusion KSAMPLER) on the
    paper's schedule: the latent batch holds the frames."""

    def __init__(self, inner: Any, motion: Any, t0: int, t1: int) -> None:
        if not isinstance(inner, comfy.samplers.KSAMPLER):
            raise UserError(f"The Text2Video-Zero sampler wraps ComfyUI's k-diffusion samplers (a SAMPLER from "
                            f"KSamplerSelect), not {type(inner).__name__}.")
        check_t0_t1(t0, t1, 1000)  # again at sampling time against the model's own number of timesteps
        self.inner, self.motion, self.t0, self.t1 = inner, motion, int(t0), int(t1)

    def sample(self, model_wrap: Any, sigmas: torch.Tensor, extra_args: dict[str, Any], callback: Any,
               noise: torch.Tensor, latent_image: torch.Tensor | None = None, denoise_mask: torch.Tensor | None = None,
               disable_pbar: bool = False) -> torch.Tensor:
        if denoise_mask is not None:
            raise UserError("The Text2Video-Zero sampler cannot take a latent noise mask (inpainting); remove the "
                            "mask from the latent.")
        model_sampling = model_wrap.inner_model.model_sampling
        check_model_sampling(model_sampling)
        if noise.shape[0] > 1 and not torch.count_nonzero(noise):
            raise UserError("The Text2Video-Zero sampler re-noises frames 2..N with the sampler's noise, but the noise "
                            "is off; turn noise on (add_noise, or RandomNoise instead of DisableNoise).")
        # The unscaled noise travels with this call only: the SAMPLER itself may serve several runs.
        run = functools.partial(sample_video, inner=self.inner, motion=self.motion, t0=self.t0, t1=self.t1,
                                noise=noise, model_sampling=model_sampling, controls=controls_of(model_wrap))
        call = comfy.samplers.KSAMPLER(run, inpaint_options=self.inner.inpaint_options)
        return call.sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)


def check_model_sampling(model_sampling: Any) -> None:
    """The jump and t0/t1 need Stable Diffusion's kind of noise schedule: discrete training timesteps and latents
    x0 + σ·ε (epsilon or v prediction)."""
    ms = comfy.model_sampling
    if not isinstance(model_sampling, ms.ModelSamplingDiscrete) or not isinstance(model_sampling, ms.EPS) or \
            isinstance(model_sampling, ms.ModelSamplingDiscreteEDM):
        kinds = "+".join(b.__name__ for b in type(model_sampling).__bases__) or type(model_sampling).__name__
        raise UserError(f"The Text2Video-Zero sampler needs a Stable Diffusion noise schedule (discrete timesteps, "
                        f"noise added as x + sigma * noise), but this model samples with {kinds}.")


def controls_of(guider: Any) -> list[Any]:
    """The ControlNets (and T2I adapters) of a guider's conditions, chained ones included."""
    found = []
    for conds in getattr(guider, "conds", {}).values():
        for cond in conds or ():
            control = cond.get("control")
            while control is not None and all(control is not c for c in found):
                found.append(control)
                control = getattr(control, "previous_controlnet", None)
    return found


def forget_control_images(controls: list[Any]) -> None:
    """A ControlNet keeps its control images fitted to the first batch it saw; frame 1 alone would leave every
    frame with frame 1's image. Dropping the fitted copy makes it fit them again to all frames."""
    for control in controls:
        if hasattr(control, "cond_hint"):
            control.cond_hint = None


def schedule_positions(model_sampling: Any, sigmas: torch.Tensor, t0: int, t1: int) -> JumpSteps:
    """Where t1 and t0 fall in a sigma schedule: each step's sigma is mapped to its training timestep by the
    model's own `timestep`, and t0/t1 snap to the nearest steps as in the library."""
    starts = sigmas[:-1]  # the latents "at" a step are its inputs; the last sigma only ends the schedule
    if len(starts) < 1:
        raise UserError("Text2Video-Zero needs at least 1 sampling step.")
    # float64 on the CPU: accelerators such as Apple's MPS have no float64.
    timesteps = model_sampling.timestep(starts.float()).float().cpu().double()
    return jump_steps(timesteps, t0, t1, len(model_sampling.sigmas))


@torch.no_grad()
def sample_video(model: Any, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any] | None = None,
                 callback: Callable | None = None, disable: bool | None = None, *, inner: Any, motion: Any,
                 t0: int, t1: int, noise: torch.Tensor, model_sampling: Any, controls: list[Any] = ()) -> torch.Tensor:
    """A k-diffusion sampler function over a batch of frames (x: frames, scaled noise); `noise` is the unscaled
    sampler noise, whose frames 2..N re-noise the moved latents; `controls` the conditions' ControlNets."""
    extra_args = {} if extra_args is None else extra_args

    def run(latents: torch.Tensor, part: torch.Tensor, offset: int, stretch: int = 0) -> torch.Tensor:
        # k-diffusion's ancestral samplers seed their step noise from extra_args["seed"] at every call: each of the
        # three stretches gets its own seed, so frame 1 never draws the same noise twice along its trajectory.
        args = dict(extra_args)
        if args.get("seed") is not None:
            args["seed"] = (args["seed"] + stretch) % 2**64  # the widget's seeds fill 64 bits: wrap, not overflow
        return _run(inner, model, latents, part, args, _shifted(callback, offset), disable)

    frames = x.shape[0]
    if frames == 1:
        log.info("Text2Video-Zero: the latent batch holds one frame, so it is sampled as a still image "
                 "(text-to-image); use a batch of frames for a video.")
        return run(x, sigmas, 0)
    if not has_cross_frame(extra_args.get("model_options", {})):
        log.warning("Text2Video-Zero: the MODEL has no cross-frame attention, so frames do not attend to frame 1; "
                    "add the Cross-Frame Attention node unless this is intended.")
    i1, i0 = schedule_positions(model_sampling, sigmas, t0, t1)
    x_t1 = run(x[:1], sigmas[: i1 + 1], 0)
    x_t0 = run(x_t1, sigmas[i1 : i0 + 1], i1, stretch=1)
    height, width = x.shape[-2:]
    moved = motion_value.warp(x_t0.expand(frames - 1, *x_t0.shape[1:]), motion, range(1, frames),
                              (width * VAE_FACTOR, height * VAE_FACTOR))
    jumped = sigma_space_jump(moved, noise[1:].to(moved), float(sigmas[i0]), float(sigmas[i1]))
    forget_control_images(controls)
    return run(torch.cat([x_t1, jumped]), sigmas[i1:], i1, stretch=2)


def _run(inner: Any, model: Any, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any],
         callback: Callable | None, disable: bool | None) -> torch.Tensor:
    if len(sigmas) < 2:  # no step to take (t1 on the first step)
        return x
    return inner.sampler_function(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable,
                                  **inner.extra_options)


def _shifted(callback: Callable | None, offset: int) -> Callable | None:
    """A k-diffusion callback that reports a stretch's steps at their places in the whole schedule."""
    if callback is None:
        return None
    return lambda info: callback({**info, "i": info["i"] + offset})

"""Samplers by name: any of diffusers' schedulers, built from the model's own noise schedule.

`make_scheduler(base, "dpmpp-2m")` keeps the model's betas, prediction type and training steps and
changes only the sampler; `timestep_spacing` picks where a short schedule's steps fall ("trailing"
starts at the last training step, what few-step models such as SD-Turbo expect).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .errors import UserError


class Sampler(NamedTuple):
    cls: str
    options: dict[str, Any]
    spacing: bool  # whether its set_timesteps reads `timestep_spacing`
    steps: int | None = None  # its own default step count (few-step samplers)


SCHEDULERS: dict[str, Sampler] = {
    "ddim": Sampler("DDIMScheduler", {}, True),
    "dpmpp-2m": Sampler("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, True),
    "dpmpp-2m-karras": Sampler("DPMSolverMultistepScheduler",
                               {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}, True),
    "dpmpp-2s": Sampler("DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, False),
    "unipc": Sampler("UniPCMultistepScheduler", {}, True),
    "euler": Sampler("EulerDiscreteScheduler", {}, True),
    "euler-a": Sampler("EulerAncestralDiscreteScheduler", {}, True),
    "heun": Sampler("HeunDiscreteScheduler", {}, True),
    "kdpm2": Sampler("KDPM2DiscreteScheduler", {}, True),
    "lms": Sampler("LMSDiscreteScheduler", {}, True),
    "pndm": Sampler("PNDMScheduler", {"skip_prk_steps": True}, True),
    "lcm": Sampler("LCMScheduler", {}, False, 4),
    "tcd": Sampler("TCDScheduler", {}, False, 4),
}
SPACINGS = ("leading", "trailing", "linspace")
_NO_SPACING = {s.cls for s in SCHEDULERS.values() if not s.spacing}


def check_scheduler_args(name: str | None, timestep_spacing: str | None) -> None:
    """Names checked before any model is loaded."""
    if name is not None and name not in SCHEDULERS:
        raise UserError(f"unknown scheduler {name!r}; use one of {', '.join(SCHEDULERS)}")
    if timestep_spacing is not None and timestep_spacing not in SPACINGS:
        raise UserError(f"unknown timestep spacing {timestep_spacing!r}; use one of {', '.join(SPACINGS)}")
    if name is not None and timestep_spacing is not None and not SCHEDULERS[name].spacing:
        raise UserError(f"scheduler {name!r} has no timestep spacing (its steps are fixed by its own schedule); "
                        "drop --timestep-spacing")


def make_scheduler(base: Any, name: str | None = None, timestep_spacing: str | None = None) -> Any:
    """`base` itself, or a new scheduler `name` on `base`'s noise schedule, with `timestep_spacing` set."""
    check_scheduler_args(name, timestep_spacing)
    if name is None and timestep_spacing is None:
        return base
    import diffusers

    if name is None:
        cls, options = type(base), {}
        if cls.__name__ in _NO_SPACING or "timestep_spacing" not in base.config:
            raise UserError(f"the model's scheduler {cls.__name__} has no timestep spacing; drop --timestep-spacing "
                            "or pick a --scheduler that has one")
    else:
        sampler = SCHEDULERS[name]
        cls, options = getattr(diffusers, sampler.cls), dict(sampler.options)
    if timestep_spacing is not None:
        options["timestep_spacing"] = timestep_spacing
    try:
        return cls.from_config(base.config, **options)
    except ImportError as exc:  # diffusers' stand-in for a scheduler whose backend is missing (LMS: scipy)
        reason = " ".join(str(exc).split())
        raise UserError(f"scheduler {name or cls.__name__} is unavailable: {reason}") from None


def default_steps(name: str | None) -> int | None:
    """The step count a few-step sampler is meant for (LCM, TCD: 4), else None (the model's)."""
    return SCHEDULERS[name].steps if name in SCHEDULERS else None


def check_steps_before_loading(model: str | None, config: str | None, steps: int | None) -> None:
    """Refuse more steps than the model's noise schedule has, read from its scheduler config before any weights
    load (a hub id or a single file without --config is checked once loaded)."""
    import json
    from pathlib import Path

    from .models import DEFAULT_MODEL_DIR

    if steps is None:
        return
    folder = Path(config or model or DEFAULT_MODEL_DIR).expanduser()
    try:
        train = int(json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["num_train_timesteps"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    _check_train_steps(steps, train)


def _check_train_steps(steps: int, train: int) -> None:
    if steps > train:
        raise UserError(f"{steps} steps is more than this scheduler's {train} training timesteps; use --steps {train} "
                        "or fewer")


def set_timesteps(scheduler: Any, steps: int, device: Any) -> None:
    """`scheduler.set_timesteps`, with the limits it enforces as one-line errors."""
    _check_train_steps(steps, int(scheduler.config.num_train_timesteps))
    try:
        scheduler.set_timesteps(steps, device=device)
    except ValueError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise UserError(f"{type(scheduler).__name__} cannot take {steps} steps: {reason}") from None

"""The video commands (generate, animate, control, edit, restyle), each as one `Mode`: the only
implementation of its checks before any weights load, its memory plan, what it loads, the warnings
that need the loaded models, and its render (options -> the Python API call -> frames).

The command line (`t2vzero.commands.line`), `t2vzero batch` (`t2vzero.batch`) and Ray
(`t2vzero.distributed`) all go through these, so a batch job or a split render equals the same command
run alone. `params` are always the command's click arguments by name (a job line is parsed by the
command's own click parameters, `t2vzero.jobs`). Heavy imports happen inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .common import Loaded, Planned, Rendered, Shape, plan


@dataclass(frozen=True)
class Mode:
    """One video command: `check(params)` makes every check before weights load and tells the video's
    `Shape`; `inputs(params, needed)` reads what the render needs besides the models (a clip, condition
    maps, an image; `needed`: the frame ids a part renders, None for all); `load_key` names what
    `load(params)` loads (jobs with equal keys share a load); `warn(loaded, params, inputs)` returns the
    warnings that need the loaded models; `render(loaded, params, inputs, frame_ids=None, anchor=None,
    progress=False)` makes the frames, all or a subset (after `anchor`, the shared first phase of a split
    render where the mode has one)."""

    command: str
    check: Callable[[dict[str, Any]], Shape]
    inputs: Callable[[dict[str, Any], Sequence[int] | None], Any]
    load_key: Callable[[dict[str, Any]], tuple]
    load: Callable[[dict[str, Any]], Loaded]
    warn: Callable[[Loaded, dict[str, Any], Any], list[str]]
    render: Callable[..., Rendered]
    uses: frozenset[str]  # every command parameter the mode reads (a new option must be mapped)
    anchor: Callable[[Loaded, dict[str, Any], Any], Any] | None = None
    splittable: Callable[[dict[str, Any]], bool] = lambda params: True

    def plan(self, params: dict[str, Any], shape: Shape) -> Planned:
        """The memory plan of the run `check` accepted (`t2vzero.plan`): the chunk size to run with, notes,
        and a refusal where it cannot fit (unless --force)."""
        return plan(self.command, params, shape)


def _modes() -> dict[str, Mode]:
    from . import clip, text

    return {"generate": text.GENERATE, "animate": text.ANIMATE, "control": clip.CONTROL, "edit": clip.EDIT,
            "restyle": clip.RESTYLE}


MODES: dict[str, Mode] = _modes()

__all__ = ["MODES", "Loaded", "Mode", "Planned", "Rendered", "Shape"]

"""Jobs: one video each, named by a mode and the options of that mode's command.

A job's options are its command's long option names with dashes as underscores (`frames`, `steps`,
`chunk_size`, `background_smoothing`, `controlnet`), its values what one types after the option
(JSON numbers or text; a list for a repeatable option; true for a flag); `prompt` and, for the
video-to-video modes, `input` (for `animate`, `image`) are the command's arguments. A job is parsed by
its command's own click parameters, so it accepts exactly what the command accepts, with the same
defaults and ranges, and then goes through the command's own checks and memory plan
(`t2vzero.commands.MODES`): a line is accepted only if the command itself would start.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

import click

from .errors import UserError

# Command parameters that belong to the run rather than to one job: where outputs go (batch names
# them), the dry run, --force (batch's own) and how the work is spread (--ray and its options).
RUN_PARAMS = frozenset({"output", "sheet", "dry_run", "force", "ray", "workers", "gpus_per_worker", "cpus_per_worker",
                        "max_retries"})
ARGUMENT_KEYS = {"prompt": "prompt", "instruction": "prompt", "input_video": "input", "image": "image"}
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class Job:
    """One validated job: its id, mode, the command's parsed arguments (paths absolute, the planned chunk size),
    the options as written (the job's identity for resuming), its line, its frame count and the plan's notes."""

    id: str
    mode: str
    params: dict[str, Any]
    options: dict[str, Any]  # every option by job key, defaults filled in
    line: int
    frames: int = 0
    notes: tuple[str, ...] = ()

    @property
    def seed(self) -> int:
        return int(self.params["seed"])

    @property
    def load_key(self) -> tuple:
        from .commands import MODES

        return MODES[self.mode].load_key(self.params)

    @classmethod
    def of_command(cls, mode: str, params: dict[str, Any], frames: int) -> Job:
        """A single command's run as a job (for Ray), its paths absolute for workers on other nodes."""
        from .options import absolute_paths

        return cls("video", mode, absolute_paths(params), {}, 0, frames)


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


def parse_job(record: Any, line: int, *, force: bool = False, ray: str | None = None) -> Job:
    """A job from one decoded JSON line, checked and planned as its command would be; every problem is a
    UserError naming the line. `force`: run jobs the memory plan would refuse (batch --force); `ray`: the jobs
    run on Ray workers (batch --ray), whose devices this machine may lack."""
    from .commands import MODES
    from .commands.common import plain
    from .options import absolute_paths

    if not isinstance(record, dict):
        raise UserError(f"line {line}: a job is a JSON object like {{\"id\": \"a\", \"prompt\": \"...\"}}, "
                        f"not {type(record).__name__}")
    spec = dict(record)
    job_id = spec.pop("id", f"line-{line}")
    if not isinstance(job_id, str) or not ID_PATTERN.fullmatch(job_id):
        raise UserError(f"line {line}: id {job_id!r} must be text of letters, digits, '.', '_' or '-' "
                        "(it names the output file)")
    name = spec.pop("mode", "generate")
    if not isinstance(name, str) or name not in MODES:
        raise UserError(f"line {line}: unknown mode {name!r}; use one of {', '.join(MODES)}")
    cmd = command(MODES[name].command)
    if not isinstance(spec.get("prompt", "" if _optional_prompt(cmd) else None), str):
        raise UserError(f"line {line}: the job has no \"prompt\" text (for edit: the instruction)")
    keys = option_keys(cmd)
    unknown = [k for k in spec if k not in keys]
    if unknown:
        close = difflib.get_close_matches(unknown[0], keys, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; {name} takes: {', '.join(sorted(keys))}"
        raise UserError(f"line {line}: unknown option {unknown[0]!r} for mode {name}{hint}")
    given = _click_parse(cmd, keys, spec, line)
    params = {**absolute_paths(given), "force": force, "ray": ray}
    mode = MODES[name]
    try:
        shape = mode.check(params)
        planned = mode.plan(params, shape)
        if planned.refusal:
            raise UserError(planned.refusal)
    except UserError as exc:
        raise UserError(f"line {line} ({job_id}): {exc}") from None
    options = {key: plain(given[p.name]) for key, p in keys.items()}
    return Job(job_id, name, {**params, "chunk_size": planned.chunk_size}, options, line, shape.frames,
               tuple(planned.notes))


def _optional_prompt(cmd: click.Command) -> bool:
    return any(isinstance(p, click.Argument) and ARGUMENT_KEYS.get(p.name) == "prompt" and not p.required
               for p in cmd.params)


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
    missing = [ARGUMENT_KEYS.get(p.name, p.name) for p in cmd.params
               if isinstance(p, click.Argument) and p.required and p.name not in arguments]
    if missing:
        raise UserError(f"line {line}: the job needs {' and '.join(repr(m) for m in missing)}")
    for name, value in arguments.items():
        if not isinstance(value, str):
            raise UserError(f"line {line}: {ARGUMENT_KEYS.get(name, name)!r} must be text")
    # Arguments in order; an optional one left out is last (animate's PROMPT), so nothing after it shifts.
    positional = [arguments[p.name] for p in cmd.params if isinstance(p, click.Argument) and p.name in arguments]
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

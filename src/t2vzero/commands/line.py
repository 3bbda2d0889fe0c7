"""One video command from the command line, the same way for every mode: check -> output paths -> memory plan
(--dry-run prints it and stops) -> on Ray (--ray) or here: inputs -> load -> warnings -> render -> write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from . import MODES, Planned


def run_command_line(name: str, params: dict[str, Any]) -> int | None:
    """Run command `name` with its click arguments; None or an exit code (Ray's)."""
    from ..distributed import check_pool
    from ..errors import UserError

    mode = MODES[name]
    check_pool(params)
    shape = mode.check(params)
    output, sheet = check_outputs(params["output"], params["sheet"])
    planned = mode.plan(params, shape)
    if params["dry_run"]:
        _show_dry_run(planned)
        return None
    if planned.refusal:
        raise UserError(planned.refusal)
    for note in planned.notes:
        click.echo(note, err=True)
    params = {**params, "chunk_size": planned.chunk_size}
    if params.get("ray") is not None:
        from ..distributed import run_on_ray
        from ..jobs import Job

        return run_on_ray(Job.of_command(name, params, shape.frames), output, sheet, params)
    inputs = mode.inputs(params, None)
    loaded = mode.load(params)
    for line in mode.warn(loaded, params, inputs):
        click.echo(line, err=True)
    rendered = mode.render(loaded, params, inputs, progress=True)
    from .common import write_outputs

    click.echo(str(write_outputs(rendered, output, sheet)))
    return None


def check_outputs(output: str, sheet: bool) -> tuple[str, Path | None]:
    """The video's path (as given: a trailing '/' names a folder of frames) and, with --sheet, the contact
    sheet's, both checked before any work."""
    from ..video import check_file_path, check_output_path, sheet_path

    check_output_path(output)
    return output, check_file_path(sheet_path(output), "contact sheet") if sheet else None


def _show_dry_run(planned: Planned) -> None:
    click.echo(planned.estimate)
    if planned.refusal:
        click.echo(f"it would be refused: {planned.refusal}")
        return
    for note in planned.notes:
        click.echo(note)

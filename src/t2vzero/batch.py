"""`t2vzero batch`: many jobs, one model load per worker and model, outputs and a manifest that resume.

The same pieces run locally (one process) and on Ray (`t2vzero.distributed`): `Worker` holds loaded
models and executes `Task`s (a whole job, or a split job's anchor or part) through the job's mode
(`t2vzero.commands`, what the command line runs too); `Collector`, on the driver, turns results into
`OUT/<id>.mp4` (atomically) and one manifest line per finished job.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .commands import MODES, Rendered
from .errors import UserError
from .jobs import Job, parse_job
from .stops import Stopped, stop_code

MANIFEST = "manifest.jsonl"
FORMATS = {"mp4": ".mp4", "webm": ".webm", "gif": ".gif", "frames": ""}  # "frames": a folder of PNGs


def read_jobs(path: str | Path, *, force: bool = False, ray: str | None = None) -> list[Job]:
    """Every job of a JSONL file, all checked and planned before any runs (see `parse_job`); errors name the
    line."""
    src = Path(path)
    if not src.is_file():
        raise UserError(f"jobs file {src} does not exist (or is a folder); give a JSONL file, one job a line")
    jobs, seen = [], {}
    try:
        text = src.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark (Windows editors) is skipped
    except UnicodeDecodeError:
        raise UserError(f"jobs file {src} is not UTF-8 text") from None
    for line, raw in enumerate(json_lines(text), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise UserError(f"line {line}: not JSON ({exc.msg} at column {exc.colno})") from None
        except (ValueError, RecursionError) as exc:  # a number of over 4300 digits, arrays nested too deep
            raise UserError(f"line {line}: JSON this reader refuses ({one_line(exc)[:120]})") from None
        job = parse_job(record, line, force=force, ray=ray)
        if job.id in seen:
            raise UserError(f"line {line}: id {job.id!r} repeats line {seen[job.id]}; give every job its own id")
        seen[job.id] = line
        jobs.append(job)
    if not jobs:
        raise UserError(f"jobs file {src} holds no jobs")
    return jobs


def json_lines(text: str) -> list[str]:
    """JSON Lines split at newlines only: str.splitlines() would also split inside strings at U+2028, U+0085 and
    the like, which JSON writes raw (json.dumps(..., ensure_ascii=False))."""
    return [raw.removesuffix("\r") for raw in text.split("\n")]


def check_out_dir(out: str | Path) -> Path:
    """The output folder: refused if it is a file or it (or, if missing, the folder it would be made in)
    is not writable; nothing is created."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"output {folder} is a file; give a folder, e.g. -o results/")
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {existing}, so not to output folder {folder}; choose another -o")
    manifest = folder / MANIFEST
    if manifest.exists() and not manifest.is_file():
        raise UserError(f"{manifest} is not a file, so the manifest cannot be kept there; move it away or choose "
                        "another -o")
    return folder


# --- the manifest ---------------------------------------------------------------------------------------------


class Manifest:
    """`OUT/manifest.jsonl`: the latest line per job id. Each finished job appends one line and syncs it to
    disk, so an interrupted run leaves every earlier line whole (a torn last line is skipped when read) and
    two runs writing one folder keep each other's lines."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / MANIFEST
        self.records: dict[str, dict[str, Any]] = {}
        if not self.path.is_file():
            return
        try:
            text = self.path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{self.path} is not UTF-8 text, so not a t2vzero manifest; move it away or choose "
                            "another -o") from None
        for raw in json_lines(text):
            try:
                record = json.loads(raw)
            except (ValueError, RecursionError):
                continue  # a line cut short by a stop, or not ours
            if isinstance(record, dict) and isinstance(record.get("id"), str):
                self.records[record["id"]] = record

    def add(self, record: dict[str, Any]) -> None:
        self.records[record["id"]] = record
        line = json.dumps(record, sort_keys=True) + "\n"
        with open(self.path, "a+b") as f:
            if f.tell() > 0:  # after a torn last line, start on a line of its own
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = "\n" + line
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())

    def is_done(self, job: Job, folder: Path, suffix: str, sheet: bool) -> bool:
        """Done before with the same options, and its outputs still there."""
        record = self.records.get(job.id)
        return (record is not None and record.get("status") == "done" and record.get("mode") == job.mode
                and record.get("options") == job.options and output_path(folder, job, suffix).exists()
                and (not sheet or sheet_file(folder, job).exists()))


def output_path(folder: Path, job: Job, suffix: str) -> Path:
    return folder / f"{job.id}{suffix}"


def sheet_file(folder: Path, job: Job) -> Path:
    return folder / f"{job.id}_sheet.png"


def check_outputs(jobs: Sequence[Job], todo: Sequence[Job], folder: Path, suffix: str, sheet: bool,
                  manifest: Manifest) -> None:
    """Refuse, before anything runs, outputs that would collide: two jobs (or a job and the manifest) writing one
    name, or a job to run whose output path holds something this batch did not write there (the manifest does not
    record it as that job's output) that writing would delete: a folder with files, or a file where frames go."""
    owners: dict[str, Job | None] = {MANIFEST: None}
    for job in jobs:
        for path in (output_path(folder, job, suffix), *([sheet_file(folder, job)] if sheet else [])):
            if path.name in owners:
                other = owners[path.name]
                what = "the batch's manifest" if other is None else f"line {other.line}'s ({other.id})"
                raise UserError(f"line {job.line} ({job.id}): its output {path.name} would also be {what}; give "
                                "the job another id")
            owners[path.name] = job
    for job in todo:
        path = output_path(folder, job, suffix)
        written = (manifest.records.get(job.id) or {}).get("output")
        if written is not None and Path(written).name == path.name:
            continue  # this job's own earlier output: a rerun replaces it
        full_folder = path.is_dir() and any(path.iterdir())
        file_for_frames = suffix == "" and path.exists() and not path.is_dir()
        if full_folder or file_for_frames:
            raise UserError(f"line {job.line} ({job.id}): {path} exists and this batch did not write it (not in "
                            f"its manifest), so it is not replaced; move it away or choose another -o")


# --- work units and the worker that runs them -------------------------------------------------------------------


@dataclass(eq=False)
class Task:
    """A unit of work: a whole job (`kind` "job"), a split job's first phase ("anchor") or frames ("part")."""

    job: Job
    kind: str = "job"
    frame_ids: list[int] | None = None
    rows: bool = False  # return the contact-sheet rows (inputs, conditions) too
    avoid_host: str | None = None  # the machine a worker died on running it: retried on another where there is one


@dataclass
class Result:
    """What a worker returns: `Rendered` frames, an Anchor, or an error line."""

    ok: bool
    value: Any = None
    error: str | None = None
    bad_input: bool = False  # the error is the user's (a UserError), not the machine's
    host: str = ""
    worker: str = ""  # host:pid


def one_line(exc: BaseException) -> str:
    """An exception as one line: the message of bad input, else its type and first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, UserError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Worker:
    """Holds the models of one load key at a time and executes tasks on them (locally or as a Ray actor)."""

    def __init__(self, threads: int | None = None) -> None:
        if threads is not None:
            import torch

            os.environ["OMP_NUM_THREADS"] = str(threads)
            torch.set_num_threads(threads)
        self.key: tuple | None = None
        self.loaded: Any = None
        self.host = socket.gethostname()
        self.name = f"{self.host}:{os.getpid()}"  # one worker process

    def ready(self) -> str:
        return self.name

    def describe(self) -> dict[str, Any]:
        """Where and how this worker runs (host, process, torch threads)."""
        import torch

        return {"host": self.host, "pid": os.getpid(), "threads": torch.get_num_threads()}

    def execute(self, task: Task, anchor: Any = None) -> Result:
        """Run one task; any failure comes back as a `Result` with its one-line error."""
        try:
            value = self._execute(task, anchor)
        except Exception as exc:  # a failed job is recorded; the worker serves the next one
            if not isinstance(exc, UserError) and os.environ.get("T2VZERO_DEBUG"):
                traceback.print_exc()
            self._forget_after_oom(exc)
            return Result(False, error=one_line(exc), bad_input=isinstance(exc, UserError), host=self.host,
                          worker=self.name)
        return Result(True, value, host=self.host, worker=self.name)

    def _execute(self, task: Task, anchor: Any) -> Any:
        job, mode = task.job, MODES[task.job.mode]
        # A part's inputs hold what it renders (frame 1 and its own frames); the sheet's rows need them all.
        inputs = mode.inputs(job.params, None if task.rows else task.frame_ids)
        loaded = self._load(job)
        if task.kind == "anchor":
            return mode.anchor(loaded, job.params, inputs)
        rendered = mode.render(loaded, job.params, inputs, task.frame_ids, anchor)
        rendered.warnings = mode.warn(loaded, job.params, inputs)
        if not task.rows:
            rendered.rows = []
        return rendered

    def _load(self, job: Job) -> Any:
        key = job.load_key
        if key != self.key:
            self.key, self.loaded = None, None  # free the old models before loading the next
            self.loaded, self.key = MODES[job.mode].load(job.params), key
        return self.loaded

    def _forget_after_oom(self, exc: Exception) -> None:
        if "out of memory" in str(exc).lower():
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


# --- the driver side: results to files and manifest lines -------------------------------------------------------


@dataclass
class _Progress:
    started: float | None = None
    hosts: set[str] = field(default_factory=set)
    workers: set[str] = field(default_factory=set)
    parts: list[Rendered] = field(default_factory=list)
    waiting: int = 0
    rows: list[Any] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    attempts: int = 1


class Collector:
    """Turns task results into outputs and manifest lines, and says what to run next.

    `outputs(job)` names a job's video and contact sheet (None: no sheet); `split(job)` returns the
    frame-id groups of a job rendered in parts (after one anchor task where the mode has one), or
    None to render it whole. `records` holds the last manifest line of each job (kept with or without
    a manifest file).
    """

    def __init__(self, outputs: Callable[[Job], tuple[Path, Path | None]], manifest: Manifest | None = None, *,
                 max_retries: int = 2, split: Callable[[Job], list[list[int]] | None] = lambda job: None,
                 bar: Any = None) -> None:
        self.outputs, self.manifest, self.max_retries, self.split, self.bar = outputs, manifest, max_retries, split, bar
        self.state: dict[str, _Progress] = {}
        self.bad_input = False  # a job failed on input found bad only once its models were loaded
        self.done: list[Job] = []
        self.failed: list[tuple[Job, str]] = []
        self.records: dict[str, dict[str, Any]] = {}  # ids of the jobs done or failed, and their lines

    def start(self, job: Job) -> list[Task]:
        """The first tasks of a job."""
        self.state[job.id] = _Progress(warnings=list(job.notes))
        groups = self.split(job)
        if groups is None:
            return [Task(job, "job", rows=self._sheet(job))]
        if MODES[job.mode].anchor is not None:
            return [Task(job, "anchor")]
        return self._parts(job, groups)

    def _parts(self, job: Job, groups: list[list[int]], rows: bool = True) -> list[Task]:
        self.state[job.id].waiting += len(groups)
        return [Task(job, "part", ids, rows=rows and self._sheet(job) and i == 0) for i, ids in enumerate(groups)]

    def _sheet(self, job: Job) -> bool:
        return self.outputs(job)[1] is not None

    def dispatched(self, task: Task) -> None:
        """A task went to a worker: a job's time runs from its first task's dispatch."""
        state = self.state[task.job.id]
        state.started = state.started if state.started is not None else time.perf_counter()

    def is_over(self, job: Job) -> bool:
        return job.id in self.records

    def finished(self, task: Task, result: Result) -> list[Task]:
        """Record a task's result; returns the tasks it makes runnable (a split job's parts after its anchor,
        or parts for frames a split missed)."""
        job = task.job
        state = self.state[job.id]
        if self.is_over(job):
            return []  # another part failed already
        state.hosts.add(result.host)
        state.workers.add(result.worker)
        if not result.ok:
            self._fail(job, result.error or "failed", result.bad_input)
            return []
        if task.kind == "anchor":
            return self._parts(job, self.split(job) or [])
        state.warnings += [w for w in result.value.warnings if w not in state.warnings]
        if task.kind == "job":
            self._finish(job, result.value)
            return []
        state.parts.append(result.value)
        state.rows = state.rows or result.value.rows
        state.waiting -= 1
        if state.waiting == 0:
            missing = _missing(state.parts)
            if missing:  # a clip holds more frames than its stored duration told: render those too
                return self._parts(job, _groups(missing, job.params.get("chunk_size") or len(missing) + 1), False)
            self._finish(job, _join(state.parts, state.rows))
        return []

    def died(self, task: Task, error: str, host: str | None = None) -> list[Task]:
        """A worker died running `task` (on `host`): retry it, on another machine where there is one, up to
        `max_retries` times per job."""
        state = self.state[task.job.id]
        if self.is_over(task.job):
            return []
        if state.attempts > self.max_retries:
            self._fail(task.job, f"worker died {state.attempts} times ({error}); giving up")
            return []
        state.attempts += 1
        return [Task(task.job, task.kind, task.frame_ids, task.rows, avoid_host=host)]

    def give_up(self, jobs: Sequence[Job], error: str) -> None:
        """Record every job of `jobs` not over yet as failed with `error` (the pool cannot go on)."""
        for job in jobs:
            if not self.is_over(job):
                self.state.setdefault(job.id, _Progress())
                self._fail(job, error)

    def _finish(self, job: Job, rendered: Rendered) -> None:
        from .commands.common import write_outputs
        from .video import VIDEO_SUFFIXES  # here, not at the top: `t2vzero --help` reads FORMATS from this module

        path, sheet = self.outputs(job)
        # Frames go to a folder named after the id; the trailing separator says so even where the id has a dot.
        target = path if path.suffix.lower() in VIDEO_SUFFIXES else f"{path}{os.sep}"
        try:
            _replacing(path, lambda: write_outputs(rendered, target, sheet))
        except (UserError, OSError) as exc:
            self._fail(job, f"could not write {path}: {one_line(exc)}")
            return
        self._record(job, "done", None, output=str(path), sheet=str(sheet) if sheet else None,
                     resolved=rendered.resolved)
        self.done.append(job)

    def _fail(self, job: Job, error: str, bad_input: bool = False) -> None:
        self._record(job, "failed", error)
        self.failed.append((job, error))
        self.bad_input |= bad_input

    def _record(self, job: Job, status: str, error: str | None, **extra: Any) -> None:
        state = self.state[job.id]
        started = state.started if state.started is not None else time.perf_counter()
        record = {"id": job.id, "mode": job.mode, "status": status, "options": job.options, "seed": job.seed,
                  "seconds": round(time.perf_counter() - started, 3), "host": ",".join(sorted(state.hosts)),
                  "workers": sorted(state.workers), "attempts": state.attempts, "error": error, "line": job.line,
                  "output": None, "sheet": None, "resolved": None, "warnings": state.warnings, **extra}
        self.records[job.id] = record
        if self.manifest is not None:
            self.manifest.add(record)
        if self.bar is not None:
            self.bar.job_over(status == "done")


def _replacing(path: Path, write: Callable[[], Any]) -> None:
    """Write a job's output over an older one; a folder of frames is moved aside first and removed once
    the new one is in place (files are replaced by their atomic rename)."""
    if not path.is_dir():
        write()
        return
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    os.replace(path, old)
    try:
        write()
    except BaseException:
        os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _missing(parts: Sequence[Rendered]) -> list[int]:
    """Frames of the video no part rendered."""
    done = {k for part in parts for k in part.frame_ids}
    return [k for k in range(max(part.total for part in parts)) if k not in done]


def _groups(ids: list[int], chunk_size: int) -> list[list[int]]:
    """`ids` in parts of `chunk_size - 1` (each part also denoises frame 1)."""
    step = max(1, chunk_size - 1)
    return [ids[i:i + step] for i in range(0, len(ids), step)]


def _join(parts: Sequence[Rendered], rows: list[Any]) -> Rendered:
    """One video from parts rendered apart, frames in id order."""
    import numpy as np

    by_id = {k: frame for part in parts for k, frame in zip(part.frame_ids, part.frames, strict=True)}
    ids = sorted(by_id)
    first = next(p for p in parts if p.frame_ids)
    return Rendered(np.stack([by_id[k] for k in ids]), ids, first.fps, rows,
                    next((p.resolved for p in parts if p.resolved), {}), first.total)


# --- progress -------------------------------------------------------------------------------------------------


class Bar:
    """done / failed / remaining jobs and an ETA (tqdm's, from the rate of finished jobs) on stderr."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        from tqdm.auto import tqdm

        self.done = self.failed = 0
        self.total = total
        self.bar = tqdm(total=total, unit="job", desc="batch", disable=not enabled, dynamic_ncols=True)
        self._show()

    def job_over(self, ok: bool) -> None:
        if ok:
            self.done += 1
        else:
            self.failed += 1
        self._show(refresh=False)
        self.bar.update(1)

    def _show(self, refresh: bool = True) -> None:
        left = self.total - self.done - self.failed
        self.bar.set_postfix_str(f"done {self.done}, failed {self.failed}, left {left}", refresh=refresh)

    def close(self) -> None:
        self.bar.close()


# --- running -------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How a batch ended: the jobs done now, skipped (done before), failed (with errors), and whether interrupted."""

    done: list[Job]
    skipped: list[Job]
    failed: list[tuple[Job, str]]
    interrupted: int | None = None  # the exit code of the stop (Ctrl-C 130, SIGTERM 143, SIGHUP 129)

    @property
    def exit_code(self) -> int:
        return self.interrupted if self.interrupted is not None else (1 if self.failed else 0)

    def summary(self) -> list[str]:
        lines = [f"{len(self.done)} done, {len(self.failed)} failed, {len(self.skipped)} already done"]
        lines += [f"failed: {job.id} (line {job.line}): {error}" for job, error in self.failed]
        if self.interrupted:
            lines.append("interrupted: finished jobs are in the manifest; run the same command again to resume")
        return lines


def by_model(jobs: Sequence[Job]) -> list[Job]:
    """Jobs grouped by what they load (stable: file order within a group), so each model loads once."""
    first: dict[tuple, int] = {}
    for i, job in enumerate(jobs):
        first.setdefault(job.load_key, i)
    return sorted(jobs, key=lambda job: first[job.load_key])


def run_local(jobs: Sequence[Job], collector: Collector, worker: Worker | None = None) -> int | None:
    """Run jobs one after another in this process, each model loaded once; the exit code when stopped
    (Ctrl-C, SIGTERM, SIGHUP), else None."""
    worker = worker or Worker()
    try:
        for job in by_model(jobs):
            queue = collector.start(job)
            while queue:
                task = queue.pop(0)
                collector.dispatched(task)
                queue[:0] = collector.finished(task, worker.execute(task))
    except (KeyboardInterrupt, Stopped) as stop:
        return stop_code(stop)
    return None


def run_batch(jobs_file: str | Path, out: str | Path, *, sheet: bool = False, fmt: str = "mp4",
              ray: str | None = None, workers: int | None = None, gpus_per_worker: float | None = None,
              cpus_per_worker: float = 1.0, max_retries: int = 2, force: bool = False, progress: bool = True,
              events: Callable[..., None] | None = None, say: Callable[[str], Any] | None = None) -> Outcome:
    """Check and plan every job, skip those done before with the same options, run the rest (here, or on Ray
    with `ray` = auto or an address); see `Outcome`. `say` gets the plans' notes (e.g. a chunk size chosen to
    fit), one line per note, before anything runs."""
    from .distributed import check_pool

    check_pool({"ray": ray, "workers": workers, "gpus_per_worker": gpus_per_worker,
                "cpus_per_worker": cpus_per_worker, "max_retries": max_retries})
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    jobs = read_jobs(jobs_file, force=force, ray=ray)
    folder = check_out_dir(out)
    manifest = Manifest(folder)
    suffix = FORMATS[fmt]
    skipped = [job for job in jobs if manifest.is_done(job, folder, suffix, sheet)]
    done_before = {job.id for job in skipped}
    todo = [job for job in jobs if job.id not in done_before]
    check_outputs(jobs, todo, folder, suffix, sheet, manifest)
    for job in todo:
        for note in job.notes:
            (say or (lambda line: None))(f"line {job.line} ({job.id}): {note}")
    if not todo:
        return Outcome([], skipped, [])

    def outputs(job: Job) -> tuple[Path, Path | None]:
        return output_path(folder, job, suffix), sheet_file(folder, job) if sheet else None

    def run(split: Callable[[Job], list[list[int]] | None], runner: Callable[[Collector], int | None]) -> Outcome:
        folder.mkdir(parents=True, exist_ok=True)
        bar = Bar(len(todo), enabled=progress)
        collector = Collector(outputs, manifest, max_retries=max_retries, split=split, bar=bar)
        try:
            stopped = runner(collector)
        finally:
            bar.close()
        return Outcome(collector.done, skipped, collector.failed, interrupted=stopped)

    if ray is None:
        return run(lambda job: None, lambda collector: run_local(todo, collector))
    from .distributed import Cluster

    with Cluster.connect(ray, workers=workers, gpus_per_worker=gpus_per_worker,
                         cpus_per_worker=cpus_per_worker) as cluster:
        cluster.size_for(todo)
        return run(cluster.splitter(), lambda collector: cluster.run(todo, collector, events=events))

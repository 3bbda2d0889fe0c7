"""Jobs on a Ray cluster: a pool of model-holding actors, one task at a time each.

Each worker is a Ray actor wrapping `t2vzero.batch.Worker` (it loads a model once and serves every
job for it). The driver hands a task to whichever worker is free, preferring one that already holds
the task's model, and waits on Ray for results (`ray.wait`), so a job that fails is recorded and the
rest go on, and a worker whose process dies is replaced by a new actor while its task is retried
(on another machine where there is one). A long video whose job has a chunk size is split: the anchor
pass (text-to-video, animate) runs once, its `Anchor` is put in Ray's object store, and its chunks
render on different workers; control, edit and restyle render each chunk with frame 1 (`frame_ids=`).

Ray is imported only inside these functions: it is an optional extra (`pip install 't2vzero[ray]'`).
"""

from __future__ import annotations

import math
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .batch import Collector, Task, Worker, by_model
from .commands import MODES
from .errors import UserError
from .jobs import Job
from .stops import INTERRUPTED, Stopped, stop_code

WAIT_S = 10.0  # how long to wait for the cluster to offer what the workers ask for (autoscaling, joining nodes)
START_S = 300.0  # how long a worker may take to start (import torch and diffusers on a busy node)
STALL_S = 300.0  # how long jobs may wait with nothing running (replacement workers that cannot be scheduled)
POLL_S = 5.0  # how often the pool's loop looks up from waiting on Ray
CONNECT_S = 5.0  # how long to try reaching an explicit --ray address
MAX_REPLACEMENTS = 10  # per worker slot, before the run stops (a worker that cannot live at all)


def check_pool(params: dict[str, Any]) -> None:
    """The worker pool's options (`--ray`, `--workers`, `--gpus-per-worker`, `--cpus-per-worker`,
    `--max-retries`), checked here once for every command and for `run_batch`."""
    workers, gpus = params.get("workers"), params.get("gpus_per_worker")
    cpus, retries = params.get("cpus_per_worker", 1.0), params.get("max_retries", 2)
    if params.get("ray") is None and (workers is not None or gpus is not None):
        raise UserError("--workers and --gpus-per-worker spread the work over Ray workers: add --ray auto "
                        "(or the cluster's address)")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if retries is not None and retries < 0:
        raise UserError(f"--max-retries must be 0 or more, got {retries}")
    if (cpus is not None and not cpus > 0) or (gpus is not None and not gpus >= 0):
        raise UserError("--cpus-per-worker must be above 0 and --gpus-per-worker 0 or more")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray, which is not installed: pip install 't2vzero[ray]'") from None
    return ray


def check_reachable(address: str, timeout: float = CONNECT_S) -> None:
    """A clear error at once for an address nothing listens on (Ray itself retries for minutes)."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UserError(f"--ray {address!r} is not auto or HOST:PORT (e.g. 10.0.0.5:6379, as `ray start --head` "
                        "prints it)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one with "
                        "`ray start --head` and pass the address it prints, or use --ray auto") from None


def capacity(nodes: Sequence[dict[str, Any]], gpus: float, cpus: float) -> int:
    """How many workers of `gpus` GPUs and `cpus` CPUs the alive nodes hold, node by node."""
    total = 0
    for node in nodes:
        if not node.get("Alive", True):
            continue
        res = node.get("Resources", {})
        fits = math.floor(res.get("CPU", 0) / cpus + 1e-9) if cpus > 0 else 10**6
        if gpus > 0:
            fits = min(fits, math.floor(res.get("GPU", 0) / gpus + 1e-9))
        total += fits
    return total


def split_frames_for_workers(num_frames: int, chunk_size: int) -> list[list[int]]:
    """Frame ids in parts of one chunk each: the first holds frame 1, the others `chunk_size − 1` frames,
    since every part also denoises frame 1 (all frames attend to it), so each part is one chunk."""
    groups = [list(range(min(chunk_size, num_frames)))]
    for start in range(chunk_size, num_frames, chunk_size - 1):
        groups.append(list(range(start, min(start + chunk_size - 1, num_frames))))
    return groups


@dataclass
class _Slot:
    """One worker: its actor, whether it has started, its machine, and the models it holds (the load key of its
    last task)."""

    index: int
    actor: Any
    starting: Any  # the `ready` reference until the actor has started, then None
    key: tuple | None = None
    host: str | None = None


class Cluster:
    """A connection to a Ray cluster and the shape of the worker pool to run on it; a context manager that
    shuts Ray down on leaving if it started it (errors included)."""

    def __init__(self, ray: Any, workers: int, gpus_per_worker: float, cpus_per_worker: float, owned: bool,
                 fits: int | None = None, asked: int | None = None) -> None:
        self.ray, self.workers, self.gpus, self.cpus, self.owned = ray, workers, gpus_per_worker, cpus_per_worker, owned
        self.fits, self.asked = fits if fits is not None else workers, asked

    @classmethod
    def connect(cls, address: str, *, workers: int | None = None, gpus_per_worker: float | None = None,
                cpus_per_worker: float = 1.0, wait_s: float | None = None) -> Cluster:
        """Connect (`auto`: the cluster this machine belongs to, else a new local one) and size the pool.

        Asking for more than the cluster holds is an error after `wait_s` seconds, not a hang."""
        ray = import_ray()
        check_pool({"ray": address, "workers": workers, "gpus_per_worker": gpus_per_worker,
                    "cpus_per_worker": cpus_per_worker})
        check_reachable(address)
        owned = not ray.is_initialized()
        if owned:
            _init(ray, address)
        try:
            gpus = gpus_per_worker if gpus_per_worker is not None else (1.0 if _cluster_gpus(ray) else 0.0)
            fits = _wait_for_capacity(ray, gpus, cpus_per_worker, workers or 1, WAIT_S if wait_s is None else wait_s)
        except BaseException:
            if owned:
                ray.shutdown()
            raise
        return cls(ray, workers or fits, gpus, cpus_per_worker, owned, fits=fits, asked=workers)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.owned:
            self.ray.shutdown()

    def size_for(self, jobs: Sequence[Job]) -> None:
        """Without --workers, as many workers as the jobs can keep busy (their tasks, a split job's parts
        counted) and the cluster fits: one model copy per worker is too costly to start idle ones."""
        if self.asked is None:
            parts = sum(len(groups) for groups in map(self._groups, jobs))
            self.workers = max(1, min(self.fits, parts))

    def _groups(self, job: Job) -> list[list[int]]:
        mode, chunk = MODES[job.mode], job.params.get("chunk_size")
        if not chunk or not mode.splittable(job.params) or job.frames <= chunk:
            return [list(range(job.frames))]
        return split_frames_for_workers(job.frames, chunk)

    def splitter(self) -> Callable[[Job], list[list[int]] | None]:
        """Which jobs render in parts on several workers: those with a chunk size below their frame count."""

        def split(job: Job) -> list[list[int]] | None:
            groups = self._groups(job)
            return groups if self.workers >= 2 and len(groups) > 1 else None

        return split

    def run(self, jobs: Sequence[Job], collector: Collector,
            events: Callable[..., None] | None = None) -> int | None:
        """Run jobs on the pool until all finished; the exit code when stopped (Ctrl-C, SIGTERM), else None."""
        pool = _Pool(self, collector, events or (lambda *args: None))
        try:
            return pool.run(jobs)
        finally:
            pool.close()


def _init(ray: Any, address: str) -> None:
    """`ray.init`, keeping this process's own signal handlers: Ray installs one that turns SIGTERM into
    `sys.exit`, which would skip t2vzero's clean stop (exit 143, the manifest whole, nothing half-written)."""
    import logging

    keep = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None), signal.SIGINT) if s is not None]
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.getsignal(s) for s in keep} if main else {}
    try:
        ray.init(address=None if address == "auto" else address, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
    except Exception as exc:
        raise UserError(f"cannot connect to Ray at {address}: {str(exc).strip().splitlines()[0]}") from None
    finally:
        for s, handler in previous.items():
            if handler is not None:
                signal.signal(s, handler)


class _Pool:
    """The driver's loop: give free workers tasks, collect results, replace dead workers; jobs that cannot go on
    (workers that keep dying, or that cannot be started again) are recorded as failed, one line each."""

    def __init__(self, cluster: Cluster, collector: Collector, events: Callable[..., None]) -> None:
        self.cluster, self.ray, self.collector, self.events = cluster, cluster.ray, collector, events
        self.remote = self.ray.remote(Worker)
        self.slots: list[_Slot] = []
        self.running: dict[Any, tuple[_Slot, Task]] = {}
        self.anchors: dict[str, Any] = {}  # job id -> the Anchor in the object store
        self.replaced = 0
        self.broken: str | None = None  # why the pool cannot go on

    def _start(self, index: int) -> _Slot:
        actor = self.remote.options(num_cpus=self.cluster.cpus, num_gpus=self.cluster.gpus, max_restarts=0,
                                    max_task_retries=0).remote(max(1, int(self.cluster.cpus)))
        return _Slot(index, actor, actor.ready.remote())

    def run(self, jobs: Sequence[Job]) -> int | None:
        """Start the workers and serve `jobs`; the exit code when stopped (Ctrl-C, SIGTERM), else None."""
        queue: deque[Task] = deque()
        try:
            self.slots = [self._start(i) for i in range(self.cluster.workers)]
            self._wait_for_workers()
            queue.extend(task for job in by_model(jobs) for task in self.collector.start(job))
            self._serve(queue)
        except (KeyboardInterrupt, Stopped, SystemError) as exc:
            return stop_code(_stop_behind(exc))
        if self.broken is not None:
            self.collector.give_up([t.job for t in queue] + [t.job for _, t in self.running.values()], self.broken)
        return None

    def _serve(self, queue: deque[Task]) -> None:
        """Until every task is done or the pool is broken; waiting on Ray at most POLL_S at a time, so that jobs
        left with nothing running (no worker can be started) end after STALL_S instead of hanging."""
        stalled = None
        while (queue or self.running) and self.broken is None:
            self._dispatch(queue)
            stalled = None if self.running or not queue else (stalled or time.monotonic())
            if stalled is not None and time.monotonic() - stalled > STALL_S:
                self.broken = (f"no Ray worker could take the remaining jobs for {STALL_S:.0f} s (workers died and "
                               "new ones could not start: the cluster's resources are taken or a node is lost)")
                return
            starting = [s.starting for s in self.slots if s.starting is not None]
            ready, _ = self.ray.wait([*self.running, *starting], num_returns=1, timeout=POLL_S)
            for ref in ready:
                self._handle(ref, queue)

    def _wait_for_workers(self) -> None:
        """Start with every worker that is up within START_S (so the first split job spreads over all);
        none up is an error, and a worker that cannot start at all is one too."""
        refs = [s.starting for s in self.slots]
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=START_S)
        if not ready:
            raise UserError(f"no Ray worker started within {START_S:.0f} s: the cluster's resources are taken; "
                            "free them or lower --workers")
        for slot in self.slots:
            if slot.starting in ready:
                try:
                    self._started(slot)
                except self.ray.exceptions.RayError as exc:
                    raise UserError(f"the Ray workers cannot start ({_first_line(exc)}); is t2vzero installed on "
                                    "every node?") from None

    def _started(self, slot: _Slot) -> None:
        name = self.ray.get(slot.starting)  # host:pid
        slot.host, slot.starting = name.rsplit(":", 1)[0], None

    def _dispatch(self, queue: deque[Task]) -> None:
        busy = {id(slot) for slot, _ in self.running.values()}
        for slot in self.slots:
            if not queue:
                return
            if slot.starting is not None or id(slot) in busy:
                continue
            task = _pick(queue, slot)
            queue.remove(task)
            anchor = self.anchors.get(task.job.id) if task.kind == "part" else None
            ref = slot.actor.execute.remote(task, anchor)
            self.running[ref] = (slot, task)
            slot.key = task.job.load_key
            self.collector.dispatched(task)
            self.events("dispatch", task, slot.actor)

    def _handle(self, ref: Any, queue: deque[Task]) -> None:
        errors = self.ray.exceptions
        if ref not in self.running:  # a worker finished starting
            slot = next(s for s in self.slots if s.starting == ref)
            try:
                self._started(slot)
            except errors.RayError:
                self._replace(slot)
            return
        slot, task = self.running.pop(ref)
        try:
            result = self.ray.get(ref)
        except errors.RayTaskError as exc:  # the worker's own code raised past its guard: a job failure
            from .batch import Result

            result = Result(False, error=_first_line(exc), host="?")
        except errors.RayError as exc:  # the worker process died (killed, out of host memory, node lost)
            self.events("died", task, slot.actor)
            host = slot.host
            self._replace(slot)
            queue.extendleft(self.collector.died(task, _first_line(exc), host))
            return
        if task.kind == "anchor" and result.ok:
            self.anchors[task.job.id] = self.ray.put(result.value)
        queue.extendleft(reversed(self.collector.finished(task, result)))
        if self.collector.is_over(task.job):
            self.anchors.pop(task.job.id, None)

    def _replace(self, slot: _Slot) -> None:
        """A new actor for a dead one, unless workers keep dying (then the pool stops, its jobs failed)."""
        self.ray.kill(slot.actor, no_restart=True)
        self.replaced += 1
        if self.replaced > MAX_REPLACEMENTS * len(self.slots):
            self.broken = (f"Ray workers keep dying ({self.replaced} died); see the Ray logs "
                           "(/tmp/ray/session_latest)")
            slot.starting = None
            return
        fresh = self._start(slot.index)
        slot.actor, slot.starting, slot.key, slot.host = fresh.actor, fresh.starting, None, None

    def close(self) -> None:
        for slot in self.slots:
            try:
                self.ray.kill(slot.actor, no_restart=True)
            except Exception:  # already gone
                pass


def _pick(queue: deque[Task], slot: _Slot) -> Task:
    """The next task for a free worker: not one whose worker died on this machine, if another can take it,
    preferably one for the models it holds."""
    window = list(queue)[:256]
    order = min(range(len(window)), key=lambda i: (window[i].avoid_host is not None and window[i].avoid_host ==
                                                   slot.host, window[i].job.load_key != slot.key, i))
    return window[order]


def _stop_behind(exc: BaseException) -> BaseException:
    """The stop (Ctrl-C, a caught signal) `exc` is: Ray's wait and get hand a signal handler's exception back
    wrapped in a SystemError. Any other error is raised again."""
    stop = (exc.__cause__ or exc.__context__) if isinstance(exc, SystemError) else exc
    if not isinstance(stop, KeyboardInterrupt | Stopped):
        raise exc
    return stop


def _cluster_gpus(ray: Any) -> float:
    return float(ray.cluster_resources().get("GPU", 0))


def _wait_for_capacity(ray: Any, gpus: float, cpus: float, wanted: int, wait_s: float) -> int:
    """How many workers fit, once at least `wanted` do; an error naming the shortfall after `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        fits = capacity(ray.nodes(), gpus, cpus)
        if fits >= wanted:
            return fits
        if time.monotonic() >= deadline:
            have = ray.cluster_resources()
            shape = f"{gpus:g} GPU(s) and {cpus:g} CPU(s)"
            raise UserError(f"the Ray cluster ({have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs) fits "
                            f"{fits} worker(s) of {shape}, not {wanted}; lower --workers, --gpus-per-worker or "
                            "--cpus-per-worker, or add nodes")
        time.sleep(0.5)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def ray_options(fn: Any) -> Any:
    """--ray and the worker pool's shape, for `batch` and the commands that render one video (their values are
    checked by `check_pool`)."""
    import click

    options = [
        click.option("--ray", "ray", default=None, metavar="auto|ADDRESS",
                     help="Run on Ray: auto (this machine's cluster, else a new local one) or HOST:PORT of a "
                     "cluster's head (`ray start --head`). Needs pip install 't2vzero[ray]'."),
        click.option("--workers", type=int, default=None,
                     help="Ray workers, each holding its own models [default: as many as the work keeps busy and "
                     "the cluster fits]."),
        click.option("--gpus-per-worker", type=float, default=None,
                     help="GPUs per Ray worker; fractions share a GPU [default: 1 on a cluster with GPUs, else 0]."),
        click.option("--cpus-per-worker", type=float, default=1.0, show_default=True,
                     help="CPUs per Ray worker (also its torch threads)."),
        click.option("--max-retries", type=int, default=2, show_default=True,
                     help="Retries of a job whose Ray worker died (the worker is replaced)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def run_on_ray(job: Job, output: str, sheet: Path | None, params: dict[str, Any]) -> int:
    """One command's video on Ray (its chunks on different workers where it splits), written here; Ctrl-C and
    SIGTERM stop it as they stop a local run."""
    import click

    with Cluster.connect(params["ray"], workers=params.get("workers"), gpus_per_worker=params.get("gpus_per_worker"),
                         cpus_per_worker=params.get("cpus_per_worker", 1.0)) as cluster:
        cluster.size_for([job])
        collector = Collector(lambda job: (Path(output), sheet), max_retries=params.get("max_retries", 2),
                              split=cluster.splitter())
        stopped = cluster.run([job], collector)
    if stopped is not None:
        raise KeyboardInterrupt if stopped == INTERRUPTED else Stopped(stopped - 128)
    record = collector.records[job.id]
    for warning in record["warnings"]:
        click.echo(warning, err=True)
    if collector.failed:
        _, error = collector.failed[0]
        if collector.bad_input:
            raise UserError(error)
        click.echo(f"error: {error}", err=True)
        return 1
    click.echo(record["output"])
    return 0

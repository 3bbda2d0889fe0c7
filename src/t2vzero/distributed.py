"""Jobs on a Ray cluster: a pool of model-holding actors, one task at a time each.

Each worker is a Ray actor wrapping `t2vzero.batch.Worker` (it loads a model once and serves every
job for it). The driver hands a task to whichever worker is free, preferring one that already holds
the task's model, and waits on Ray for results (`ray.wait`), so a job that fails is recorded and the
rest go on, and a worker whose process dies is replaced by a new actor while its task is retried
elsewhere. A long video whose job has a chunk size is split: the anchor pass (text-to-video) runs
once, its `Anchor` is put in Ray's object store, and its chunks render on different workers.

Ray is imported only inside these functions: it is an optional extra (`pip install 't2vzero[ray]'`).
"""

from __future__ import annotations

import math
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .batch import Collector, Task, Worker, by_model
from .errors import UserError
from .jobs import MODES, Job
from .stops import Stopped, stop_code

WAIT_S = 10.0  # how long to wait for the cluster to offer what the workers ask for (autoscaling, joining nodes)
START_S = 300.0  # how long a worker may take to start (import torch and diffusers on a busy node)
CONNECT_S = 5.0  # how long to try reaching an explicit --ray address
MAX_REPLACEMENTS = 10  # per worker slot, before the run stops (a worker that cannot live at all)


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
    """One worker: its actor, whether it has started, and the models it holds (the load key of its last task)."""

    index: int
    actor: Any
    starting: Any  # the `ready` reference until the actor has started, then None
    key: tuple | None = None


class Cluster:
    """A connection to a Ray cluster and the shape of the worker pool to run on it."""

    def __init__(self, ray: Any, workers: int, gpus_per_worker: float, cpus_per_worker: float, owned: bool) -> None:
        self.ray, self.workers, self.gpus, self.cpus, self.owned = ray, workers, gpus_per_worker, cpus_per_worker, owned

    @classmethod
    def connect(cls, address: str, *, workers: int | None = None, gpus_per_worker: float | None = None,
                cpus_per_worker: float = 1.0, wait_s: float | None = None) -> Cluster:
        """Connect (`auto`: the cluster this machine belongs to, else a new local one) and size the pool.

        Asking for more than the cluster holds is an error after `wait_s` seconds, not a hang."""
        ray = import_ray()
        if cpus_per_worker <= 0 or (gpus_per_worker is not None and gpus_per_worker < 0):
            raise UserError("--cpus-per-worker must be above 0 and --gpus-per-worker 0 or more")
        if workers is not None and workers < 1:
            raise UserError(f"--workers must be at least 1, got {workers}")
        check_reachable(address)
        owned = not ray.is_initialized()
        if owned:
            import logging

            try:
                ray.init(address=None if address == "auto" else address, include_dashboard=False,
                         log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
            except Exception as exc:
                raise UserError(f"cannot connect to Ray at {address}: {str(exc).strip().splitlines()[0]}") from None
        try:
            gpus = gpus_per_worker if gpus_per_worker is not None else (1.0 if _cluster_gpus(ray) else 0.0)
            fits = _wait_for_capacity(ray, gpus, cpus_per_worker, workers or 1, WAIT_S if wait_s is None else wait_s)
        except UserError:
            if owned:
                ray.shutdown()
            raise
        return cls(ray, workers or fits, gpus, cpus_per_worker, owned)

    def splitter(self) -> Callable[[Job], list[list[int]] | None]:
        """Which jobs render in parts on several workers: those with a chunk size below their frame count."""

        def split(job: Job) -> list[list[int]] | None:
            mode, chunk = MODES[job.mode], job.params.get("chunk_size")
            if self.workers < 2 or not chunk or not mode.splittable(job.params):
                return None
            frames = mode.frame_count(job.params)
            return split_frames_for_workers(frames, chunk) if frames > chunk else None

        return split

    def run(self, jobs: Sequence[Job], collector: Collector,
            events: Callable[..., None] | None = None) -> int | None:
        """Run jobs on the pool until all finished; the exit code when stopped (Ctrl-C, SIGTERM), else None."""
        pool = _Pool(self, collector, events or (lambda *args: None))
        try:
            return pool.run([task for job in by_model(jobs) for task in collector.start(job)])
        finally:
            pool.close()
            if self.owned:
                self.ray.shutdown()


class _Pool:
    """The driver's loop: give free workers tasks, collect results, replace dead workers."""

    def __init__(self, cluster: Cluster, collector: Collector, events: Callable[..., None]) -> None:
        self.cluster, self.ray, self.collector, self.events = cluster, cluster.ray, collector, events
        self.remote = self.ray.remote(Worker)
        self.slots = [self._start(i) for i in range(cluster.workers)]
        self.running: dict[Any, tuple[_Slot, Task]] = {}
        self.anchors: dict[str, Any] = {}  # job id -> the Anchor in the object store
        self.replaced = 0

    def _start(self, index: int) -> _Slot:
        actor = self.remote.options(num_cpus=self.cluster.cpus, num_gpus=self.cluster.gpus, max_restarts=0,
                                    max_task_retries=0).remote(max(1, int(self.cluster.cpus)))
        return _Slot(index, actor, actor.ready.remote())

    def run(self, tasks: list[Task]) -> int | None:
        queue = deque(tasks)
        self._wait_for_workers()
        try:
            while queue or self.running:
                self._dispatch(queue)
                starting = [s.starting for s in self.slots if s.starting is not None]
                ready, _ = self.ray.wait([*self.running, *starting], num_returns=1)
                for ref in ready:
                    self._handle(ref, queue)
        except (KeyboardInterrupt, Stopped) as stop:
            return stop_code(stop)
        return None

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
                    self.ray.get(slot.starting)
                except self.ray.exceptions.RayError as exc:
                    raise UserError(f"the Ray workers cannot start ({_first_line(exc)}); is t2vzero installed on "
                                    "every node?") from None
                slot.starting = None

    def _dispatch(self, queue: deque[Task]) -> None:
        idle = [s for s in self.slots if s.starting is None and all(s is not r[0] for r in self.running.values())]
        for slot in idle:
            if not queue:
                return
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
                self.ray.get(ref)
                slot.starting = None
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
            self._replace(slot)
            queue.extendleft(self.collector.died(task, _first_line(exc), slot.index))
            return
        if task.kind == "anchor" and result.ok:
            self.anchors[task.job.id] = self.ray.put(result.value)
        queue.extendleft(reversed(self.collector.finished(task, result)))
        if self.collector.is_over(task.job):
            self.anchors.pop(task.job.id, None)

    def _replace(self, slot: _Slot) -> None:
        self.replaced += 1
        if self.replaced > MAX_REPLACEMENTS * len(self.slots):
            raise RuntimeError(f"Ray workers died {self.replaced} times; see the Ray logs (/tmp/ray/session_latest)")
        self.ray.kill(slot.actor, no_restart=True)
        fresh = self._start(slot.index)
        slot.actor, slot.starting, slot.key = fresh.actor, fresh.starting, None

    def close(self) -> None:
        for slot in self.slots:
            try:
                self.ray.kill(slot.actor, no_restart=True)
            except Exception:  # already gone
                pass


def _pick(queue: deque[Task], slot: _Slot) -> Task:
    """The next task for a free worker: not one that died on it, preferably one for the models it holds."""
    window = list(queue)[:256]
    order = min(range(len(window)),
                key=lambda i: (window[i].avoid == slot.index, window[i].job.load_key != slot.key, i))
    return window[order]


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
    """--ray and the worker pool's shape, for `batch` and the commands that render one video."""
    import click

    options = [
        click.option("--ray", "ray", default=None, metavar="auto|ADDRESS",
                     help="Run on Ray: auto (this machine's cluster, else a new local one) or HOST:PORT of a "
                     "cluster's head (`ray start --head`). Needs pip install 't2vzero[ray]'."),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="Ray workers, each holding its own models [default: as many as the cluster fits]."),
        click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=None,
                     help="GPUs per Ray worker; fractions share a GPU [default: 1 on a cluster with GPUs, else 0]."),
        click.option("--cpus-per-worker", type=click.FloatRange(min=0, min_open=True), default=1.0,
                     show_default=True, help="CPUs per Ray worker (also its torch threads)."),
        click.option("--max-retries", type=click.IntRange(min=0), default=2, show_default=True,
                     help="Retries of a job whose Ray worker died (the worker is replaced)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def wants_ray(params: dict[str, Any]) -> bool:
    """Whether a command runs on Ray; pool options without --ray are refused."""
    if params.get("ray") is None and (params.get("workers") is not None or params.get("gpus_per_worker") is not None):
        raise UserError("--workers and --gpus-per-worker spread the work over Ray workers: add --ray auto "
                        "(or the cluster's address)")
    return params.get("ray") is not None


def run_command(mode: str, params: dict[str, Any]) -> int:
    """One `generate`/`control`/`edit` on Ray: the job's chunks on different workers, the video written here."""
    import click

    from .video import check_file_path, check_output_path, sheet_path

    job = Job("video", mode, dict(params), {}, 0)
    MODES[mode].check(job.params)
    output = check_output_path(params["output"])
    sheet = check_file_path(sheet_path(params["output"]), "contact sheet") if params.get("sheet") else None
    cluster = Cluster.connect(params["ray"], workers=params.get("workers"),
                              gpus_per_worker=params.get("gpus_per_worker"),
                              cpus_per_worker=params.get("cpus_per_worker", 1.0))
    collector = Collector(lambda job: (output, sheet), max_retries=params.get("max_retries", 2),
                          split=cluster.splitter())
    stopped = cluster.run([job], collector)
    if stopped is not None:
        click.echo("stopped; nothing was written", err=True)
        return stopped
    if collector.failed:
        _, error = collector.failed[0]
        if collector.bad_input:
            raise UserError(error)
        click.echo(f"error: {error}", err=True)
        return 1
    click.echo(str(output))
    return 0

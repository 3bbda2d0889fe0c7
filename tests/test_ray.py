"""Batches and long videos on a local Ray cluster (one for the whole session: `ray_cluster`, 2 CPUs).

Each run starts two worker actors with one CPU and one torch thread each; the jobs are tiny.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from t2vzero import distributed
from t2vzero.batch import run_batch
from t2vzero.cli import run
from t2vzero.errors import UserError
from t2vzero.video import read_video

pytest.importorskip("ray", reason="Ray is not installed (pip install 't2vzero[ray]')")

FAST = {"size": "64x64", "steps": 3, "frames": 3}


def write_jobs(path, *jobs):
    path.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    return path


def frames_of(path):
    return read_video(path)[0].astype(np.float32) / 255.0


def manifest(out):
    return {r["id"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def jobs_file(tmp_path_factory, tiny_model_dir, tiny_controlnet_dir, square_clip_dir):
    model = {"model": str(tiny_model_dir), **FAST}
    folder = tmp_path_factory.mktemp("jobs")
    junk = folder / "junk.safetensors"  # exists, so the job passes the checks; it fails once its worker loads it
    junk.write_bytes(b"not a LoRA")
    return write_jobs(
        folder / "jobs.jsonl",
        {"id": "a", "prompt": "a red circle", **model, "seed": 1},
        {"id": "b", "prompt": "a blue square", **model, "seed": 2},
        {"id": "long", "prompt": "a green triangle", **model, "frames": 7, "chunk_size": 3, "seed": 3},
        {"id": "bad", "prompt": "a square", **model, "lora": str(junk)},
        {"id": "c", "mode": "control", "prompt": "a red square", "model": str(tiny_model_dir),
         "controlnet": str(tiny_controlnet_dir), "input": str(square_clip_dir), "resolution": 64, "steps": 3,
         "chunk_size": 3, "seed": 5},
        {"id": "d", "prompt": "a yellow circle", **model, "seed": 4})


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, jobs_file):
    """The same jobs in one process, without Ray: what every Ray run must equal."""
    out = tmp_path_factory.mktemp("local")
    outcome = run_batch(jobs_file, out, fmt="frames", progress=False)
    assert [j.id for j, _ in outcome.failed] == ["bad"]
    return out


def test_jobs_on_two_workers_equal_one_process_and_a_bad_job_fails_alone(ray_cluster, tmp_path, jobs_file,
                                                                         local_run):
    out = tmp_path / "out"
    dispatched = []
    outcome = run_batch(jobs_file, out, fmt="frames", ray="auto", workers=2, progress=False,
                        events=lambda kind, task, actor: dispatched.append((kind, task.job.id, task.kind)))
    assert outcome.exit_code == 1 and [j.id for j, _ in outcome.failed] == ["bad"]
    assert "LoRA" in outcome.failed[0][1]
    records = manifest(out)
    assert {k: r["status"] for k, r in records.items()} == {**dict.fromkeys("abcd", "done"), "long": "done",
                                                             "bad": "failed"}
    # The long text-to-video job: one anchor, then its chunks on different tasks; the control job in chunks too.
    assert [t for _, j, t in dispatched if j == "long"] == ["anchor", "part", "part", "part"]
    assert [t for _, j, t in dispatched if j == "c"] == ["part", "part", "part"]
    assert len({w for r in records.values() for w in r["workers"]}) == 2  # both workers served jobs
    for job_id in ("a", "b", "c", "d", "long"):  # frames depend only on the job, not on the worker or the split
        got, want = frames_of(out / job_id), frames_of(local_run / job_id)
        assert got.shape == want.shape and np.abs(got - want).max() <= 1 / 255, job_id
    assert np.abs(frames_of(out / "a") - frames_of(out / "b")).max() > 4 / 255  # jobs differ: it can fail


def test_a_partial_batch_resumes_on_ray(ray_cluster, tmp_path, jobs_file, local_run):
    out = tmp_path / "out"
    out.mkdir()
    # A partial run: "a" and "d" done (copied with their manifest lines), "b" done with other options.
    lines = manifest(local_run)
    for job_id in ("a", "b", "d"):
        (out / job_id).mkdir()
        for frame in (local_run / job_id).iterdir():
            (out / job_id / frame.name).write_bytes(frame.read_bytes())
    lines["b"]["options"] = {**lines["b"]["options"], "seed": 99}
    (out / "manifest.jsonl").write_text("".join(json.dumps(lines[k]) + "\n" for k in ("a", "b", "d")))
    ran = []
    outcome = run_batch(jobs_file, out, fmt="frames", ray="auto", workers=2, progress=False,
                        events=lambda kind, task, actor: ran.append(task.job.id))
    assert sorted(j.id for j in outcome.skipped) == ["a", "d"]
    assert sorted(set(ran)) == ["b", "bad", "c", "long"]
    assert sorted(j.id for j in outcome.done) == ["b", "c", "long"] and outcome.exit_code == 1
    assert manifest(out)["b"]["options"]["seed"] == 2


def kill_on_dispatch(ray, job_id, times=1):
    """Events that kill the worker a job was just handed to, before it can have finished it (the driver hands a
    worker its next task only after it took this one's result, so the kill hits this job), `times` times."""
    seen = []

    def events(kind, task, actor):
        if kind == "dispatch" and task.job.id == job_id and seen.count("killed") < times:
            seen.append("killed")
            ray.kill(actor)
        if kind == "died":
            seen.append("died")

    return seen, events


def test_a_killed_worker_is_replaced_and_its_job_retried(ray_cluster, tmp_path, jobs_file, local_run):
    jobs = [json.loads(x) for x in jobs_file.read_text().splitlines()]
    small = write_jobs(tmp_path / "jobs.jsonl", *[j for j in jobs if j["id"] in ("a", "b")])
    seen, events = kill_on_dispatch(ray_cluster, "a")
    out = tmp_path / "out"
    outcome = run_batch(small, out, fmt="frames", ray="auto", workers=2, progress=False, events=events)
    assert seen == ["killed", "died"] and outcome.exit_code == 0
    record = manifest(out)["a"]
    assert record["attempts"] == 2 and record["status"] == "done" and len(record["workers"]) == 1
    assert np.abs(frames_of(out / "a") - frames_of(local_run / "a")).max() <= 1 / 255


def test_the_pool_gives_each_worker_one_torch_thread_per_cpu(ray_cluster):
    from t2vzero.batch import Collector
    from t2vzero.distributed import Cluster, _Pool

    for cpus, threads in ((2.0, 2), (1.5, 1)):
        pool = _Pool(Cluster(ray_cluster, 1, 0.0, cpus, owned=False), Collector(lambda job: None), lambda *a: None)
        try:
            slot = pool._start(0)
            pool.slots = [slot]
            assert ray_cluster.get(slot.actor.describe.remote(), timeout=120)["threads"] == threads
        finally:
            pool.close()


def test_workers_that_keep_dying_fail_the_remaining_jobs(ray_cluster, tmp_path, jobs_file, monkeypatch):
    jobs = [json.loads(x) for x in jobs_file.read_text().splitlines()]
    small = write_jobs(tmp_path / "jobs.jsonl", *[j for j in jobs if j["id"] in ("a", "b")])
    monkeypatch.setattr(distributed, "MAX_REPLACEMENTS", 0)  # the first death is one too many
    seen, events = kill_on_dispatch(ray_cluster, "a")
    outcome = run_batch(small, tmp_path / "out", fmt="frames", ray="auto", workers=1, max_retries=5, progress=False,
                        events=events)
    assert seen == ["killed", "died"] and outcome.exit_code == 1 and [j.id for j in outcome.done] == []
    assert {j.id: e for j, e in outcome.failed} == dict.fromkeys("ab", "Ray workers keep dying (1 died); see the Ray "
                                                                      "logs (/tmp/ray/session_latest)")
    assert {r["status"] for r in manifest(tmp_path / "out").values()} == {"failed"}


def test_jobs_waiting_on_workers_that_cannot_start_again_fail_instead_of_hanging(ray_cluster, tmp_path, jobs_file,
                                                                               monkeypatch):
    jobs = [json.loads(x) for x in jobs_file.read_text().splitlines()]
    small = write_jobs(tmp_path / "jobs.jsonl", *[j for j in jobs if j["id"] in ("a", "b")])
    real_start, started = distributed._Pool._start, []

    def replacements_never_fit(self, index):
        started.append(index)
        if len(started) == 1:
            return real_start(self, index)
        actor = self.remote.options(num_cpus=64).remote(1)  # more than the cluster has: never scheduled
        return distributed._Slot(index, actor, actor.ready.remote())

    monkeypatch.setattr(distributed._Pool, "_start", replacements_never_fit)
    monkeypatch.setattr(distributed, "STALL_S", 2.0)
    monkeypatch.setattr(distributed, "POLL_S", 0.5)
    seen, events = kill_on_dispatch(ray_cluster, "a")
    start = time.monotonic()
    outcome = run_batch(small, tmp_path / "out", ray="auto", workers=1, progress=False, events=events)
    assert time.monotonic() - start < 120 and seen == ["killed", "died"] and len(started) == 2
    assert sorted(j.id for j, _ in outcome.failed) == ["a", "b"]
    assert all(error.startswith("no Ray worker could take the remaining jobs for 2 s") for _, error in outcome.failed)


def test_the_pool_has_as_many_workers_as_the_work_keeps_busy(ray_cluster, tmp_path, jobs_file, monkeypatch):
    jobs = [json.loads(x) for x in jobs_file.read_text().splitlines()]
    one = write_jobs(tmp_path / "jobs.jsonl", next(j for j in jobs if j["id"] == "a"))
    real_start, started = distributed._Pool._start, []
    monkeypatch.setattr(distributed._Pool, "_start", lambda self, i: started.append(i) or real_start(self, i))
    outcome = run_batch(one, tmp_path / "out", ray="auto", progress=False)
    assert outcome.exit_code == 0 and started == [0]  # one job: one worker, though the cluster fits two
    from t2vzero.distributed import Cluster
    from t2vzero.jobs import parse_job

    cluster = Cluster(ray_cluster, 1, 0.0, 1.0, owned=False, fits=2)
    cluster.size_for([parse_job(next(j for j in jobs if j["id"] == "long"), 1)])  # 7 frames in chunks of 3
    assert cluster.workers == 2


def test_sigterm_stops_a_ray_batch_cleanly(ray_cluster, tmp_path, tiny_model_dir):
    """Ray's own SIGTERM handler (sys.exit) must not replace t2vzero's: exit 143, whole manifest lines."""
    address = ray_cluster.get_runtime_context().gcs_address
    jobs = write_jobs(tmp_path / "jobs.jsonl", *({"id": f"j{i}", "prompt": "a red circle", "model": str(tiny_model_dir),
                                                  "size": "64x64", "steps": 3, "frames": 4 + 8 * i, "seed": i}
                                                 for i in range(3)))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "t2vzero", "batch", str(jobs), "-o", str(out), "--ray", address,
                             "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.monotonic() + 300
    while not (out / "manifest.jsonl").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the first job is done; the next is running
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, (stdout, stderr[-2000:])
    assert "run the same command again to resume" in stdout and "Traceback" not in stderr
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(x)["status"] for x in lines] == ["done"] * len(lines) and 1 <= len(lines) < 3
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_one_long_video_split_over_two_workers_equals_one_process(ray_cluster, tmp_path, tiny_model_dir, capsys):
    args = ["generate", "a red circle", "--model", str(tiny_model_dir), "--size", "64x64", "--steps", "3",
            "--frames", "9", "--chunk-size", "4", "--seed", "6"]
    assert run([*args, "-o", f"{tmp_path / 'one'}/"]) == 0
    assert run([*args, "--ray", "auto", "--workers", "2", "-o", f"{tmp_path / 'two'}/", "--sheet"]) == 0
    out, _ = capsys.readouterr()
    assert out.strip().splitlines()[-1] == str(tmp_path / 'two')  # as without --ray
    one, two = frames_of(tmp_path / "one"), frames_of(tmp_path / "two")
    assert one.shape == two.shape == (9, 64, 64, 3) and np.abs(one - two).max() <= 1 / 255
    assert np.abs(one[1:] - one[:1]).max() > 4 / 255  # the frames differ: the comparison can fail
    assert (tmp_path / "two_sheet.png").is_file()
    # The same job from a batch line: its chunks went to both workers.
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"id": "long", "prompt": "a red circle", "model": str(tiny_model_dir),
                                                "size": "64x64", "steps": 3, "frames": 9, "chunk_size": 4, "seed": 6})
    actors = []
    outcome = run_batch(jobs, tmp_path / "out", fmt="frames", ray="auto", workers=2, progress=False,
                        events=lambda kind, task, actor: actors.append((task.kind, actor)))
    assert outcome.exit_code == 0 and [kind for kind, _ in actors] == ["anchor", "part", "part", "part"]
    assert len({id(actor) for _, actor in actors[1:]}) == 2 and len(manifest(tmp_path / "out")["long"]["workers"]) == 2
    assert np.abs(frames_of(tmp_path / "out" / "long") - one).max() <= 1 / 255


def test_more_than_the_cluster_holds_is_a_clear_error(ray_cluster, tmp_path, jobs_file, monkeypatch, capsys):
    monkeypatch.setattr(distributed, "WAIT_S", 0.5)
    with pytest.raises(UserError, match=r"fits 0 worker\(s\) of 1 GPU"):
        run_batch(jobs_file, tmp_path / "out", ray="auto", gpus_per_worker=1, progress=False)
    assert run(["batch", str(jobs_file), "-o", str(tmp_path / "out"), "--ray", "auto", "--workers", "3"]) == 2
    assert "fits 2 worker(s)" in capsys.readouterr().err
    assert not (tmp_path / "out" / "manifest.jsonl").exists()

"""Batch throughput: jobs per minute of `t2vzero batch` against a loop of `t2vzero generate` calls.

All rows run the same N text-to-video jobs (the built-in model, small videos) in this one process's
session, one torch thread per process:

- a loop of `generate` commands (in this process: no interpreter start-up, but each call loads the
  model again, as a shell loop does);
- `t2vzero batch` without Ray (one process, the model loaded once);
- `t2vzero batch --ray` with 1 and with 2 workers of one CPU each, on a local Ray cluster started
  beforehand (as `ray start --head` would be); the workers' start-up is part of the batch's time.

Ratios are against the loop. On a machine with fewer free cores than workers, 2 workers cannot beat 1.

    python benchmarks/batch.py [--jobs 16] [--frames 4] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray rows")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"

    import torch

    torch.set_num_threads(1)
    from t2vzero.batch import run_batch
    from t2vzero.cli import run

    colours = ["red", "green", "blue", "yellow"]
    jobs = [{"id": f"j{i}", "prompt": f"a {colours[i % 4]} circle on a {colours[(i + 1) % 4]} background",
             "seed": i, "frames": args.frames, "steps": args.steps} for i in range(args.jobs)]
    work = Path(tempfile.mkdtemp(prefix="t2vzero-bench-"))
    jobs_file = work / "jobs.jsonl"
    jobs_file.write_text("".join(json.dumps(j) + "\n" for j in jobs))

    def loop() -> None:
        for j in jobs:
            code = run(["generate", j["prompt"], "--seed", str(j["seed"]), "--frames", str(args.frames), "--steps",
                        str(args.steps), "-o", str(work / "loop" / f"{j['id']}.mp4")])
            assert code == 0

    (work / "loop").mkdir()
    # Warm up (imports, first-call allocations) outside the timings, so the loop pays only its model loads.
    assert run(["generate", "a red circle on a blue background", "--frames", "2", "--steps", "2", "-o",
                str(work / "warm.mp4")]) == 0
    rows = [("loop of generate calls (model loaded per call)", timed(loop))]
    rows.append(("batch, one process", timed(lambda: check(run_batch(jobs_file, work / "local", progress=False)))))
    if not args.no_ray:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            for workers in (1, 2):
                rows.append((f"batch on Ray, {workers} worker(s) of 1 CPU", timed(lambda w=workers: check(
                    run_batch(jobs_file, work / f"ray{w}", ray="auto", workers=w, progress=False)))))
        finally:
            ray.shutdown()
    base = rows[0][1]
    print(f"{args.jobs} jobs, built-in model, {args.frames} frames, {args.steps} steps, 1 torch thread per process")
    print(f"{'':50s} {'seconds':>8s} {'jobs/min':>9s} {'× loop':>7s}")
    for name, seconds in rows:
        print(f"{name:50s} {seconds:8.1f} {args.jobs / seconds * 60:9.1f} {base / seconds:7.2f}")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def check(outcome) -> None:
    assert outcome.exit_code == 0, outcome.summary()


if __name__ == "__main__":
    main()

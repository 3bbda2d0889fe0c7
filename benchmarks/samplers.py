"""Quality per cost of samplers on the built-in model: identity, prompt, motion, warp error, seconds per video.

Each row generates the same seeded videos (8 frames, the model's defaults but for the sampler and its
step count) and judges them as `benchmarks/ablation.py` does. Time is wall time per video on this
machine, so compare rows of one run.

    python benchmarks/samplers.py [--videos 96] [--seed 1000] [--rows ddim:50,dpmpp-2m:25,...]

A row is SCHEDULER:STEPS with optional :OPTION parts: a timestep spacing (`trailing`), `tome=RATIO`
(token merging) or `cache=N` (feature reuse every N steps), e.g. `ddim:50:tome=0.5`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

DEFAULT_ROWS = "ddim:50,ddim:25,ddim:20,dpmpp-2m:25,dpmpp-2m:15,dpmpp-2m:10,unipc:10,unipc:25,euler:25"


def parse_row(text: str) -> tuple[str, str, int, dict]:
    """'ddim:50:tome=0.5' -> (label, scheduler, steps, pipeline keyword arguments)."""
    name, steps, *options = text.split(":")
    extra: dict = {}
    for option in options:
        key, _, value = option.partition("=")
        if key == "tome":
            extra["token_merging"] = float(value)
        elif key == "cache":
            extra["cache_interval"] = int(value)
        else:
            extra["timestep_spacing"] = key
    return " ".join([name, steps, *options]), name, int(steps), extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=96)
    parser.add_argument("--seed", type=int, default=1000, help="seed of the first video (the README's held-out set)")
    parser.add_argument("--rows", default=DEFAULT_ROWS, help="comma-separated SCHEDULER:STEPS[:OPTION...]")
    parser.add_argument("--model", default=None, help="default: the built-in model")
    args = parser.parse_args()

    import torch
    from ablation import run_variant

    from t2vzero import TextToVideoZero
    from t2vzero.default_model.evaluate_images import evaluation_prompts

    torch.set_num_threads(1)
    pipe = TextToVideoZero.from_pretrained(args.model)
    prompts = [f"a {c} {s} on a {b} background" for c, s, b in evaluation_prompts(args.videos)]
    rows = [parse_row(r) for r in args.rows.split(",")]
    print(f"{len(prompts)} videos of 8 frames per row, seeds {args.seed}..{args.seed + len(prompts) - 1}, "
          f"size {pipe.native_size()}, t0/t1 {pipe.defaults.get('t0')}/{pipe.defaults.get('t1')}, 1 thread")
    print(f"{'sampler':24s} {'identity':>8s} {'prompt':>7s} {'monotone':>8s} {'warp err':>8s} {'s/video':>8s} "
          f"{'time vs first':>13s}")
    first = None
    for label, name, steps, extra in rows:
        t = time.perf_counter()
        result = run_variant(pipe, prompts, cross_frame=True, motion=None, frames=8, steps=steps, seed=args.seed,
                             scheduler=name, **extra)
        per_video = (time.perf_counter() - t) / len(prompts)
        first = first or per_video
        mono = [r["monotone"] for r in result if r["monotone"] is not None]
        print(f"{label:24s} {np.mean([r['identity'] for r in result]):8.0%} "
              f"{np.mean([r['prompt'] for r in result]):7.0%} {(f'{np.mean(mono):.0%}' if mono else '-'):>8s} "
              f"{1e3 * np.mean([r['warp'] for r in result]):8.2f} {per_video:8.2f} {per_video / first:12.2f}x",
              flush=True)


if __name__ == "__main__":
    main()

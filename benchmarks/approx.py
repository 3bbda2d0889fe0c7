"""Speed of the approximate options on the mid-size model: token merging and feature reuse.

One 8-frame video per row on `t2vzero.tiny.make_mid_components` (SD 1.5 layout), same seed, in this
one process: wall time, its ratio to the plain run, and how far the frames move (max |Δ| in /255).
Quality on the built-in model: `benchmarks/samplers.py --rows ddim:50:tome=0.5,ddim:50:cache=3`.

    python benchmarks/approx.py [--size 512] [--steps 20] [--frames 8]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--tiny", action="store_true", help="the tiny test model (a smoke run of this script)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from t2vzero import TextToVideoZero
    from t2vzero.tiny import make_mid_components, make_tiny_components

    pipe = TextToVideoZero(**(make_tiny_components(0) if args.tiny else make_mid_components(0)))
    size = 64 if args.tiny else args.size
    kw = dict(video_length=args.frames, height=size, width=size, num_inference_steps=args.steps, progress=False)
    rows = [("plain", {}), ("tome 0.5", {"token_merging": 0.5}), ("tome 0.75", {"token_merging": 0.75}),
            ("cache-interval 2", {"cache_interval": 2}), ("cache-interval 3", {"cache_interval": 3}),
            ("tome 0.5 + cache-interval 3", {"token_merging": 0.5, "cache_interval": 3})]
    results = []
    with torch.no_grad():
        for name, extra in rows:
            t = time.perf_counter()
            frames = pipe("a horse galloping on a beach", generator=torch.Generator().manual_seed(0), **kw,
                          **extra).frames
            results.append((name, time.perf_counter() - t, frames))
    print(f"{'tiny' if args.tiny else 'mid-size SD-1.5-layout model'}; {size}x{size}, {args.frames} frames, "
          f"{args.steps} DDIM steps, guidance 7.5; cpu, {torch.get_num_threads()} threads")
    print(f"{'option':30s} {'wall s':>8s} {'time / plain':>12s} {'max |Δ| /255':>12s}")
    for name, s, frames in results:
        print(f"{name:30s} {s:8.1f} {s / results[0][1]:11.2f}x {np.abs(frames - results[0][2]).max() * 255:12.1f}")


if __name__ == "__main__":
    main()

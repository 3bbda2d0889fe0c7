"""Where the time of a run goes: the UNet, the VAE, the text encoder, and everything else (our overhead).

Runs one text-to-video generation on the mid-size model under `torch.profiler` and with timers around
each model's forward, then prints each share of the wall time and the profiler's top operators.
"Everything else" (the loop, warps, schedulers, guidance arithmetic, decoding glue) is the budget the
issue allows t2vzero itself: ≤ 3 %.

    python benchmarks/time_profile.py [--size 256] [--frames 8] [--steps 20] [--chunk-size N]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--tiny", action="store_true", help="the tiny test model (a smoke run of this script)")
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from t2vzero import TextToVideoZero
    from t2vzero.tiny import make_mid_components, make_tiny_components

    parts = make_tiny_components(0) if args.tiny else make_mid_components(0)
    pipe = TextToVideoZero(**parts)
    spent: dict[str, float] = defaultdict(float)

    def timed(name, module, method="forward"):
        original = getattr(module, method)

        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t

        setattr(module, method, wrapper)

    timed("UNet", parts["unet"])
    timed("VAE decode", parts["vae"], "decode")
    timed("text encoder", parts["text_encoder"])
    size = 64 if args.tiny else args.size
    kw = dict(video_length=args.frames, height=size, width=size, num_inference_steps=args.steps,
              chunk_size=args.chunk_size, progress=False)
    pipe("warm up", **{**kw, "video_length": 2, "num_inference_steps": 2})
    spent.clear()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        pipe("a horse galloping on a beach", generator=torch.Generator().manual_seed(0), **kw)
        wall = time.perf_counter() - t
    print(f"{'tiny' if args.tiny else 'mid-size model'}; {size}x{size}, {args.frames} frames, {args.steps} DDIM steps, "
          f"chunk {args.chunk_size or args.frames}; cpu, {torch.get_num_threads()} threads; wall {wall:.2f} s")
    other = wall - sum(spent.values())
    for name, s in [*sorted(spent.items(), key=lambda kv: -kv[1]), ("everything else (t2vzero)", other)]:
        print(f"  {name:28s} {s:8.3f} s {100 * s / wall:6.2f} %")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()

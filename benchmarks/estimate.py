"""How close `--dry-run`'s activation estimate comes to the measured peak, on the mid-size model.

For a few sizes and chunk sizes: the estimated activations (`t2vzero.estimate`, the larger of one UNet
call over a chunk and one VAE decode batch) against the resident-memory growth measured during the run
(weights are loaded before, so the growth is activations plus allocator slack).

    python benchmarks/estimate.py [--steps 3]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="the tiny test model (a smoke run of this script)")
    args = parser.parse_args()

    import torch
    from compare_diffusers import peak_rss_during

    from t2vzero import TextToVideoZero
    from t2vzero.estimate import estimate_run
    from t2vzero.tiny import make_mid_components, make_tiny_components

    parts = make_tiny_components(0) if args.tiny else make_mid_components(0)
    pipe = TextToVideoZero(**parts)
    cases = [(64, 8, None), (64, 8, 4)] if args.tiny else [(256, 8, None), (256, 16, 4), (384, 8, None),
                                                            (384, 8, 2)]
    print(f"{'tiny' if args.tiny else 'mid-size model'}; float32 on cpu; {args.steps} DDIM steps")
    print(f"{'size':>5s} {'frames':>6s} {'chunk':>5s} {'estimate MiB':>12s} {'measured MiB':>12s} {'ratio':>6s}")
    for size, frames, chunk in cases:
        est = estimate_run(parts["unet"].config, parts["vae"].config, 0, height=size, width=size, frames=frames,
                           chunk_size=chunk, groups=2, videos=1, steps=args.steps, dtype="float32")
        with torch.no_grad():
            _, _, measured = peak_rss_during(lambda s=size, f=frames, c=chunk: pipe(
                "a horse", video_length=f, height=s, width=s, num_inference_steps=args.steps, chunk_size=c,
                t0=881, t1=941, progress=False))
        estimate = max(est.unet_activations, est.vae_activations) / 2**20
        print(f"{size:5d} {frames:6d} {chunk or frames:5d} {estimate:12.0f} {measured:12.0f} "
              f"{estimate / max(measured, 1e-9):6.2f}")


if __name__ == "__main__":
    main()

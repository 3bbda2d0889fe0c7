"""Chunking: what a chunked video costs against an unchunked one, and the memory it saves.

Rows for one 16-frame video on the mid-size model (`t2vzero.tiny.make_mid_components`, SD 1.5 layout),
all in this one process: unchunked; chunks of 2, 4 and 8 advanced in lockstep (frame 1 once per step,
today's `chunk_size`); and the same chunks rendered as separate calls, each with frame 1 again — the
previous design's cost (frame 1 re-denoised in every chunk), and what separate workers pay. Then peak
memory of 64 frames at chunk 8 against 8 frames unchunked.

    python benchmarks/chunks.py [--size 256] [--steps 20] [--frames 16]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--tiny", action="store_true", help="the tiny test model (a smoke run of this script)")
    args = parser.parse_args()

    import torch
    from compare_diffusers import peak_rss_during

    from t2vzero import TextToVideoZero
    from t2vzero.modes.text2video import render_latents
    from t2vzero.tiny import make_mid_components, make_tiny_components

    parts = make_tiny_components(0) if args.tiny else make_mid_components(0)
    size = 64 if args.tiny else args.size
    pipe = TextToVideoZero(**parts)
    kw = dict(height=size, width=size, num_inference_steps=args.steps, t0=881, t1=941)

    def anchor(frames):
        return pipe.anchor("a horse galloping on a beach", video_length=frames,
                           generator=torch.Generator().manual_seed(0), **kw)

    def lockstep(a, chunk):
        return render_latents(pipe.components, a, range(a.num_frames), chunk_size=chunk)

    def per_chunk(a, chunk):  # the previous design: each chunk [0, k..k+chunk-2] on its own
        others = list(range(1, a.num_frames))
        parts = [render_latents(pipe.components, a, [0, *others[i:i + chunk - 1]]) for i in range(0, len(others),
                                                                                                    chunk - 1)]
        return torch.cat([parts[0]] + [p[:, 1:] for p in parts[1:]], dim=1)

    with torch.no_grad():
        a = anchor(args.frames)
        rows = [("unchunked", *peak_rss_during(lambda: lockstep(a, None)))]
        for chunk in (2, 4, 8):
            rows.append((f"chunk {chunk}, lockstep (frame 1 once)", *peak_rss_during(lambda c=chunk: lockstep(a, c))))
            rows.append((f"chunk {chunk}, frame 1 per chunk (before)",
                         *peak_rss_during(lambda c=chunk: per_chunk(a, c))))
        full = rows[0][1]
        print(f"{'tiny' if args.tiny else 'mid-size SD-1.5-layout model'}; {size}x{size}, {args.frames} frames, "
              f"{args.steps} DDIM steps after the anchor pass, guidance 7.5; cpu, {torch.get_num_threads()} threads")
        print(f"{'render':40s} {'wall s':>8s} {'peak MiB':>9s} {'time / unchunked':>16s} {'max |Δ| latents':>15s}")
        for name, out, s, mb in rows:
            print(f"{name:40s} {s:8.1f} {mb:9.0f} {s / rows[0][2]:15.2f}x {float((out - full).abs().max()):15.2e}")
        _, _, mem8 = peak_rss_during(lambda: lockstep(anchor(8), None))
        _, _, mem64 = peak_rss_during(lambda: lockstep(anchor(64), 8))
        # The returned float32 frames grow with the frame count whatever the chunking; the rest must not.
        out64, out8 = (n * size * size * 3 * 4 / 2**20 for n in (64, 8))
        print(f"peak memory: 64 frames at chunk 8 {mem64:.0f} MiB, 8 frames unchunked {mem8:.0f} MiB, "
              f"ratio {mem64 / max(mem8, 1e-9):.2f}x; without the returned frames ({out64:.0f} and {out8:.0f} MiB) "
              f"{(mem64 - out64) / max(mem8 - out8, 1e-9):.2f}x (target <= 1.2x)")


if __name__ == "__main__":
    main()

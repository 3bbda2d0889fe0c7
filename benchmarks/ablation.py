"""The paper's ablation (§4.4) as numbers, on the built-in model, judged analytically.

For each variant — (a) full method, (b) without cross-frame attention, (c) without motion, (d) neither —
it generates the same seeded videos (8 frames, the model's defaults) and reports:
- identity kept: share of videos whose object keeps frame 1's colour and shape in every frame;
- prompt kept: share of frames whose background, object colour and shape match the prompt;
- |Δx|, |Δy|: mean absolute centroid displacement from frame 1 to the last frame, in pixels;
- monotone: share of videos whose centroid moves monotonically the way the motion field implies;
- warp err: mean warp error between consecutive frames (`t2vzero.metrics.warp_errors`, x 1e-3), which also
  sees changes in texture and shading that leave the judged colour and shape alone.

    python benchmarks/ablation.py [--videos 24] [--seed 0] [--t0 T0 --t1 T1] [--steps N] [--model DIR]

Video i uses prompt i and seed `--seed` + i; other seeds than the tests' (0..23) give a held-out measure.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def run_variant(pipe, prompts, *, cross_frame: bool, motion: tuple[float, float] | None, frames: int,
                t0: int | None = None, t1: int | None = None, steps: int | None = None, seed: int = 0,
                **extra):
    """Judge one variant's videos; `extra` goes to the pipeline call (e.g. scheduler=...)."""
    import torch

    from t2vzero.evaluate import judge_metrics, moves_monotonically
    from t2vzero.metrics import warp_errors

    delta = motion if motion is not None else tuple(pipe.defaults.get("motion", (12.0, 12.0)))
    rows = []
    for i, prompt in enumerate(prompts):
        out = pipe(prompt, video_length=frames, generator=torch.Generator().manual_seed(seed + i), motion=motion,
                   cross_frame_attention=cross_frame, t0=t0, t1=t1, num_inference_steps=steps, progress=False,
                   **extra)
        video = out.uint8()[0]
        m = judge_metrics(video, prompt)
        # Positive δ moves content left/up (as the reference): x and y decrease.
        mono_x = moves_monotonically(m["centroid_x"], -np.sign(delta[0])) if delta[0] else None
        mono_y = moves_monotonically(m["centroid_y"], -np.sign(delta[1])) if delta[1] else None
        moved = [v for v in (mono_x, mono_y) if v is not None]
        rows.append({
            "identity": m["identity_kept"], "prompt": m["frames_matching_prompt"],
            "dx": abs(m["displacement"][0]) if m["displacement"] else 0.0,
            "dy": abs(m["displacement"][1]) if m["displacement"] else 0.0,
            "monotone": all(moved) if moved else None,
            "warp": float(warp_errors(video).mean()),
        })
    return rows


def _at_least(low: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=_at_least(1), default=24)
    parser.add_argument("--seed", type=int, default=0, help="seed of the first video (video i: seed + i)")
    parser.add_argument("--frames", type=_at_least(2), default=8, help="at least 2 (motion needs two frames)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's)")
    parser.add_argument("--model", default=None, help="default: the built-in model")
    parser.add_argument("--t0", type=int, default=None, help="default: the model's (paper: 881)")
    parser.add_argument("--t1", type=int, default=None, help="default: the model's (paper: 941)")
    args = parser.parse_args()

    from t2vzero import TextToVideoZero
    from t2vzero.default_model.evaluate_images import evaluation_prompts

    pipe = TextToVideoZero.from_pretrained(args.model)
    prompts = [f"a {c} {s} on a {b} background" for c, s, b in evaluation_prompts(args.videos)]
    variants = [("(a) full method", True, None), ("(b) no cross-frame attention", False, None),
                ("(c) no motion", True, (0.0, 0.0)), ("(d) neither", False, (0.0, 0.0))]
    print(f"{len(prompts)} seeded videos of {args.frames} frames per variant, "
          f"motion {tuple(pipe.defaults.get('motion', (12, 12)))} on a 512 grid, size {pipe.native_size()}, "
          f"t0/t1 {args.t0 or pipe.defaults.get('t0', 881)}/{args.t1 or pipe.defaults.get('t1', 941)}, "
          f"{args.steps or pipe.defaults.get('num_inference_steps', 50)} steps, "
          f"seeds {args.seed}..{args.seed + len(prompts) - 1}")
    print(f"{'variant':32s} {'identity kept':>13s} {'prompt kept':>11s} {'|Δx| px':>8s} {'|Δy| px':>8s} "
          f"{'monotone':>8s} {'warp err':>8s} {'s':>6s}")
    for name, cross_frame, motion in variants:
        t = time.perf_counter()
        rows = run_variant(pipe, prompts, cross_frame=cross_frame, motion=motion, frames=args.frames,
                           t0=args.t0, t1=args.t1, steps=args.steps, seed=args.seed)
        mono = [r["monotone"] for r in rows if r["monotone"] is not None]
        print(f"{name:32s} {np.mean([r['identity'] for r in rows]):13.0%} {np.mean([r['prompt'] for r in rows]):11.0%}"
              f" {np.mean([r['dx'] for r in rows]):8.1f} {np.mean([r['dy'] for r in rows]):8.1f} "
              f"{(f'{np.mean(mono):.0%}' if mono else '-'):>8s} {1e3 * np.mean([r['warp'] for r in rows]):8.2f}"
              f" {time.perf_counter() - t:6.1f}")


if __name__ == "__main__":
    main()

"""Camera paths (issue 16) on the built-in model, judged analytically: the README's table.

    python benchmarks/camera.py [--videos 24] [--seed 0] [--steps N]

For each path it collects seeded 8-frame videos (candidate i: prompt i, seed `--seed` + i) and reads every
frame with the judge (`t2vzero.default_model.evaluate_camera` says what is measured and why zoom and pan
keep only videos whose frame-1 object the path can keep in view). Seeds other than the tests' (0..) give a
held-out measure. It also prints the decoder's background ripple, on generated frames and on the VAE's
reconstructions of training images (0 would be a flat background).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def ripple_of_reconstructions(pipe, n: int = 64) -> float:
    """Mean background ripple of the shipped VAE's reconstructions of `n` labelled training images."""
    import torch

    from t2vzero.default_model.data import make_batch
    from t2vzero.default_model.evaluate_camera import background_ripple
    from t2vzero.default_model.train import to_tensor
    from t2vzero.generate import VideoOutput, decode_latents

    images, _ = make_batch(np.random.default_rng(4242), n)
    vae = pipe.components["vae"]
    with torch.no_grad():
        latents = vae.encode(to_tensor(images).to(vae.dtype)).latent_dist.mean * vae.config.scaling_factor
        frames = VideoOutput(decode_latents(vae, latents)).uint8()
    return float(np.mean([r for r in map(background_ripple, frames) if r is not None]))


def table(zoom: dict, pan: dict, rotate: dict) -> list[str]:
    """The README's markdown rows."""
    def pct(x: float) -> str:
        return f"{x:.0%}".replace("%", " %")

    def kept(m: dict) -> str:
        return f"{m['videos']} of {m['tried']}"

    def median(values: list[float], fmt: str) -> str:
        return format(np.median(values), fmt) if values else "-"

    return [
        "| path | videos (candidates) | identity kept | measure | result | issue's target |",
        "|---|---|---|---|---|---|",
        f"| `zoom:1.05` | {kept(zoom)} | {pct(zoom['identity'])} | object area grows monotonically | "
        f"{pct(zoom['monotone'])} | ≥ 90 % |",
        f"| | | | area growth, frame 8 / frame 1 (median; path ×{zoom['target']:.2f}) | "
        f"×{median(zoom['growth'], '.2f')} | |",
        f"| | | | growth within 25 % of the path's | {pct(zoom['within_25'])} | ≥ 90 % |",
        f"| keyframes: 8 px right, then 8 px down | {kept(pan)} | {pct(pan['identity'])} | centroid within 8 px "
        f"of the path in every frame | {pct(pan['follows'])} | ≥ 90 % |",
        f"| | | | largest distance from the path (median) | {median(pan['errors'], '.1f')} px | |",
        f"| `rotate:6` (squares, triangles) | {kept(rotate)} | {pct(rotate['identity'])} | orientation within 10° "
        f"of the path's in every frame | {pct(rotate['follows'])} | follows |",
        f"| | | | the same, over the {rotate['whole']} videos whose frame-1 object is whole (not at the edge) | "
        f"{pct(rotate['follows_whole'])} | |",
        f"| | | | turned by frame 8 (median; path {rotate['target']:.0f}°) | {median(rotate['turned'], '.1f')}° | |",
        f"| | | | centroid within 8 px of the turn's arc (median arc {median(rotate['arc_length'], '.1f')} px)"
        f" | {pct(rotate['arc_follows'])} | |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0, help="seed of the first candidate (candidate i: seed + i)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's)")
    parser.add_argument("--model", default=None, help="a model folder (default: the built-in model)")
    parser.add_argument("--paths", default="zoom,pan,rotate", help="which paths to measure, comma-separated")
    parser.add_argument("--turned", action="store_true",
                        help="judge zoom and pan shapes at any angle (a model of the 'camera' data world draws turned "
                             "squares and triangles); rotate always does")
    args = parser.parse_args()
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not paths or set(paths) - {"zoom", "pan", "rotate"}:
        parser.error(f"--paths takes zoom, pan and rotate, comma-separated; got {args.paths!r}")
    if args.videos < 1:
        parser.error(f"--videos must be at least 1, got {args.videos}")

    import torch

    from t2vzero import TextToVideoZero
    from t2vzero.default_model import evaluate_camera as ec

    torch.set_num_threads(1)
    pipe = TextToVideoZero.from_pretrained(args.model)
    extra = {"num_inference_steps": args.steps} if args.steps else {}
    start = time.perf_counter()
    results = {name: getattr(ec, f"measure_{name}")(pipe, args.videos, args.seed, **extra,
                                                    **({"turned": True} if args.turned and name != "rotate" else {}))
               for name in paths}
    print(f"{args.videos} seeded {ec.FRAMES}-frame videos per path from seed {args.seed}, "
          f"{args.model or 'the built-in model'}'s "
          f"defaults ({pipe.defaults.get('num_inference_steps')} steps unless --steps, t0/t1 "
          f"{pipe.defaults.get('t0')}/{pipe.defaults.get('t1')}), {time.perf_counter() - start:.0f} s")
    if len(results) == 3:
        print("\n".join(table(results["zoom"], results["pan"], results["rotate"])))
    else:
        for name, r in results.items():
            print(name, {k: v for k, v in r.items() if not isinstance(v, list)},
                  {k: float(np.median(v)) for k, v in r.items() if isinstance(v, list) and v})
    generated = [ec.background_ripple(v[0]) for v in ec.collect(pipe, (0.0, 0.0), min(16, args.videos),
                                                               seed=args.seed, frames=1, in_view=False,
                                                               **extra).videos]
    print(f"background ripple (mean |pixel - median|, 0-255): generated frames "
          f"{np.mean([r for r in generated if r is not None]):.1f}, VAE reconstructions of training images "
          f"{ripple_of_reconstructions(pipe):.1f}")


if __name__ == "__main__":
    main()

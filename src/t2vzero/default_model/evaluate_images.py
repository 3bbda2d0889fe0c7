"""Measure the default model's text-to-image accuracy with the analytic judge.

    python -m t2vzero.default_model.evaluate_images MODEL_DIR [--n 96] [--grid grid.png]

Generates one image per seeded prompt with diffusers' ``StableDiffusionPipeline`` (the model's
``t2vzero.json`` defaults for size, DDIM steps and guidance unless overridden) and prints the share
of images whose background colour, object colour and shape the judge finds right. Targets for the
shipped model: background >= 95 %, object colour >= 90 %, shape >= 75 %.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from t2vzero.default_model.data import COLOURS, SHAPES, caption
from t2vzero.default_model.judge import judge
from t2vzero.errors import UserError
from t2vzero.video import check_file_path

TARGETS = {"background": 0.95, "colour": 0.90, "shape": 0.75}


def evaluation_prompts(n: int = 96, seed: int = 0) -> list[tuple[str, str, str]]:
    """`n` (colour, shape, background) triples cycling through every object colour x shape (24 combos),
    each with a seeded random background colour different from the object's."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        colour, shape = COLOURS[(i // len(SHAPES)) % len(COLOURS)], SHAPES[i % len(SHAPES)]
        others = [c for c in COLOURS if c != colour]
        out.append((colour, shape, others[int(rng.integers(len(others)))]))
    return out


def generate(model_dir: str | Path, prompts: list[str], *, seeds: list[int], num_inference_steps: int,
             guidance_scale: float, height: int, width: int, batch: int = 16) -> np.ndarray:
    """uint8 NxHxWx3 images from the model dir's StableDiffusionPipeline, one seeded generator per prompt."""
    import torch
    from diffusers import StableDiffusionPipeline

    from t2vzero.models import dtype_keyword

    pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None, **{dtype_keyword(): torch.float32})
    pipe.set_progress_bar_config(disable=True)
    images = []
    for i in range(0, len(prompts), batch):
        gens = [torch.Generator().manual_seed(s) for s in seeds[i:i + batch]]
        out = pipe(prompts[i:i + batch], height=height, width=width, num_inference_steps=num_inference_steps,
                   guidance_scale=guidance_scale, generator=gens, output_type="np").images
        images.append(np.clip(np.rint(out * 255), 0, 255).astype(np.uint8))
    return np.concatenate(images)


def evaluate(model_dir: str | Path, n: int = 96, seed: int = 0, num_inference_steps: int | None = None,
             guidance_scale: float | None = None, grid: str | Path | None = None,
             turned: bool = False) -> dict[str, Any]:
    """Generate `n` judged samples; returns the three rates (plus all-right and no-object rates). `turned`
    judges squares and triangles at any angle (`judge.classify_shape`), for a model of a turning data world."""
    from t2vzero.models import read_model_defaults

    model_dir = Path(model_dir)
    defaults = read_model_defaults(model_dir)
    steps = num_inference_steps if num_inference_steps is not None else defaults.get("num_inference_steps", 25)
    guidance = guidance_scale if guidance_scale is not None else defaults.get("guidance_scale", 6.0)
    triples = evaluation_prompts(n, seed)
    images = generate(model_dir, [caption(*t) for t in triples], seeds=[seed * 100_000 + i for i in range(n)],
                      num_inference_steps=steps, guidance_scale=guidance, height=defaults.get("height", 64),
                      width=defaults.get("width", 64))
    verdicts = [judge(img, turned) for img in images]
    right = {"background": [], "colour": [], "shape": [], "all": []}
    for (colour, shape, bg), v in zip(triples, verdicts, strict=True):
        right["background"].append(v.background == bg)
        right["colour"].append(v.colour == colour)
        right["shape"].append(v.shape == shape)
        right["all"].append(v.matches(colour, shape, bg))
    result: dict[str, Any] = {k: float(np.mean(v)) for k, v in right.items()}
    result.update(no_object=float(np.mean([not v.found for v in verdicts])), n=n, num_inference_steps=steps,
                  guidance_scale=guidance)
    result["meets_targets"] = all(result[k] >= t for k, t in TARGETS.items())
    if grid is not None:
        _save_grid(images, grid)
    return result


def _save_grid(images: np.ndarray, path: str | Path, columns: int = 12) -> None:
    import cv2

    rows = [np.concatenate(list(images[i:i + columns]), axis=1) for i in range(0, len(images), columns)]
    if len(rows) > 1 and rows[-1].shape != rows[0].shape:
        pad = np.zeros_like(rows[0])
        pad[:, : rows[-1].shape[1]] = rows[-1]
        rows[-1] = pad
    if not cv2.imwrite(str(path), np.concatenate(rows, axis=0)[..., ::-1]):
        raise UserError(f"could not write the grid {path}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; exit code 0 when the targets are met, 1 otherwise, 2 on bad input."""
    p = argparse.ArgumentParser(description="Judge the default model's text-to-image samples.")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--n", type=_at_least_one, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=_at_least_one, default=None, help="DDIM steps (default: t2vzero.json)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: t2vzero.json)")
    p.add_argument("--grid", type=Path, default=None, help="also save the samples as a PNG grid")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--turned", action="store_true", help="judge squares and triangles at any angle (for a model "
                   "trained on the 'camera' or 'framed' data world, which turns half of them)")
    args = p.parse_args(argv)
    try:
        if not (args.model_dir / "model_index.json").is_file():
            raise UserError(f"{args.model_dir} is not a model folder (no model_index.json)")
        if args.grid is not None:
            if args.grid.suffix.lower() not in (".png", ".jpg", ".jpeg"):
                raise UserError(f"--grid {args.grid} must end in .png or .jpg")
            check_file_path(args.grid, "--grid")
        return _run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _run(args: argparse.Namespace) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    r = evaluate(args.model_dir, args.n, args.seed, args.steps, args.guidance, args.grid, args.turned)
    print(f"background {r['background']:.1%}  object colour {r['colour']:.1%}  shape {r['shape']:.1%}  "
          f"all {r['all']:.1%}  no object {r['no_object']:.1%}  (n={r['n']}, {r['num_inference_steps']} DDIM "
          f"steps, guidance {r['guidance_scale']})")
    print(json.dumps(r))
    return 0 if r["meets_targets"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

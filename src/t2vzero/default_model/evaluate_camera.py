"""Camera paths on the built-in model, measured with the analytic judge (issue 16's targets).

Each measurement collects seeded 8-frame videos along one camera path (candidate i: prompt i of
`evaluation_prompts`, seed `seed + i`) and reads every frame with `t2vzero.default_model.judge`:

- zoom: the object's area (the judge's mask, a fraction of the frame) should grow by the path's
  scale squared: zoom F per frame over frames 1..8 scales lengths by F⁷ and areas by F¹⁴ (1.05: ×1.98).
  "Monotone" allows the judge's frame-to-frame jitter (`AREA_JITTER`) on a step that does not grow.
- pan: keyframes right, then down; the object's centroid should sit where the path carries frame 1's
  centroid (content moves against the camera), within 8 px (one latent pixel of an x8 VAE at 64 px).
- rotate (squares and triangles): the fitted orientation minus frame 1's should follow the path's angle.

A path can only be followed by an object it keeps in view: one carried across the frame's edge is
cut, one inside the band the border mirrors in merges with its mirror image. Frame 1 does not depend
on the path, so candidates whose frame-1 object the path cannot keep in view (`keeps_in_view`) are
skipped before the other frames are rendered; the report says how many candidates that took.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from t2vzero.default_model.evaluate_images import evaluation_prompts
from t2vzero.default_model.judge import PERIODS, Verdict, judge, object_mask, orientation, parse_caption
from t2vzero.motion import Motion, as_motion, latent_sources, parse_keyframes

FRAMES = 8
ZOOM = "zoom:1.05"
# The camera pans 8 px at 64 px (64 on the 512 grid; one latent pixel of an x8 VAE) right over frames 1..5, then
# 8 px down over frames 5..8: a larger step leaves too few objects of the classic world (20-45 % of the side) in view.
PAN_KEYS = [{"frame": 0, "dx": 0, "dy": 0, "zoom": 1, "rotate": 0},
            {"frame": 4, "dx": 64, "dy": 0, "zoom": 1, "rotate": 0},
            {"frame": 7, "dx": 64, "dy": 64, "zoom": 1, "rotate": 0}]
ROTATE = "rotate:6"
AREA_JITTER = 0.03  # the judge's area of a still object varies by up to ~2 % between frames
PAN_TOLERANCE = 8.0  # the "one latent pixel (8 px)": an x8 VAE's at 64 px
ANGLE_TOLERANCE = 10.0  # degrees
# Candidates looked at per wanted video: the shipped model needs under 4, but a model of the "camera" world draws
# objects of up to 80 % of the side and past the edge, and only 1 in 13 to 18 leaves the room a 1.41x zoom or
# the keyframed pan needs (6 of 80, and 24 of 430, for the 16x16-latent candidate in the README).
MAX_TRIES = 40


@dataclass
class Run:
    """One path's collected videos, their prompts and the judge's verdicts."""

    motion: Motion
    prompts: list[str] = field(default_factory=list)
    videos: list[np.ndarray] = field(default_factory=list)  # (frames, H, W, 3) uint8 each
    verdicts: list[list[Verdict]] = field(default_factory=list)
    tried: int = 0  # candidates looked at (the rest left the view)


def prompts_for(n: int, shapes: tuple[str, ...] | None = None) -> list[str]:
    """`n` evaluation prompts (every colour × shape in turn), only of `shapes` when given."""
    out, k = [], n
    while len(out) < n:
        k += n
        out = [f"a {c} {s} on a {b} background" for c, s, b in evaluation_prompts(k) if not shapes or s in shapes]
    return out[:n]


def keeps_in_view(mask: np.ndarray, motion: Motion, frames: int, factor: int = 8) -> bool:
    """Whether the path can carry frame 1's object (its judged `mask`) whole and alone through every frame.

    Checked on the latent grid the warp moves (`factor` pixels a side; a latent pixel holds the object
    if any of its pixels does): no object latent pixel may be left unsampled (carried out of the frame,
    where it is cut), and none may be mirrored in by the border (`t2vzero.motion` mirrors out-of-frame
    samples; a mirrored twin next to the object merges with it).
    """
    h, w = mask.shape[0] // factor, mask.shape[1] // factor
    held = mask[: h * factor, : w * factor].reshape(h, factor, w, factor).any(axis=(1, 3))
    sources = latent_sources(motion, range(1, frames), (mask.shape[1], mask.shape[0]), (w, h))
    xs, ys = (np.floor(np.asarray(v)).astype(int) for v in sources)
    for ix, iy in zip(xs, ys, strict=True):
        inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
        mirrored_x = np.where(ix % (2 * w) < w, ix % (2 * w), 2 * w - 1 - ix % (2 * w))
        mirrored_y = np.where(iy % (2 * h) < h, iy % (2 * h), 2 * h - 1 - iy % (2 * h))
        if held[mirrored_y[~inside], mirrored_x[~inside]].any():
            return False
        sampled = np.zeros_like(held)
        sampled[iy[inside], ix[inside]] = True
        if (held & ~sampled).any():
            return False
    return True


def collect(pipe: Any, motion: Any, n: int, *, seed: int = 0, shapes: tuple[str, ...] | None = None,
            frames: int = FRAMES, max_tries: int | None = None, in_view: bool = True, turned: bool = False,
            **kwargs: Any) -> Run:
    """Up to `n` seeded videos along `motion` whose frame-1 object the path keeps in view (every video when
    not `in_view`); `turned` judges shapes at any angle (see `judge.classify_shape`)."""
    import torch

    from t2vzero.generate import vae_factor

    run = Run(as_motion(motion))
    factor = vae_factor(pipe.components["vae"])
    candidates = prompts_for(max_tries or MAX_TRIES * n, shapes)
    for i, prompt in enumerate(candidates):
        if len(run.videos) == n:
            break
        run.tried = i + 1
        anchor = pipe.anchor(prompt, motion=run.motion, video_length=frames,
                             generator=torch.Generator().manual_seed(seed + i), **kwargs)
        first = pipe.render(anchor, [0]).uint8()[0, 0]
        mask = object_mask(first)
        if in_view and (mask is None or not keeps_in_view(mask, run.motion, frames, factor)):
            continue
        video = pipe.render(anchor).uint8()[0]
        run.prompts.append(prompt)
        run.videos.append(video)
        run.verdicts.append([judge(f, turned) for f in video])
    return run


def expected_centroids(motion: Motion, first: tuple[float, float], frames: int,
                       size: tuple[int, int]) -> np.ndarray:
    """(frames, 2) where the path carries frame 1's centroid: the inverse of each frame's sampling map."""
    point = np.array([first[0], first[1], 1.0])
    return np.stack([np.linalg.solve(motion.matrix(k, size), point)[:2] for k in range(frames)])


def area_growth(verdicts: list[Verdict]) -> tuple[bool, float | None]:
    """(monotone, last area / first area) of the judged object; (False, None) when a frame has none."""
    if not all(v.found for v in verdicts):
        return False, None
    areas = np.array([v.area for v in verdicts])
    monotone = bool((areas[1:] >= areas[:-1] * (1 - AREA_JITTER)).all() and areas[-1] > areas[0])
    return monotone, float(areas[-1] / areas[0])


def path_error(verdicts: list[Verdict], motion: Motion, size: tuple[int, int]) -> float | None:
    """Largest distance (px) of the judged centroid from where the path carries frame 1's; None if lost."""
    if not all(v.found for v in verdicts):
        return None
    expected = expected_centroids(motion, verdicts[0].centroid, len(verdicts), size)
    got = np.array([v.centroid for v in verdicts])
    return float(np.hypot(*(got - expected).T).max())


def turn_errors(video: np.ndarray, shape: str, degrees: float) -> np.ndarray | None:
    """Per-frame fitted turn since frame 1 minus degrees·k, wrapped into ± half the shape's period (a
    square turned by 90° looks unturned); None if the object is lost in a frame."""
    angles = [orientation(f, shape) for f in video]
    if any(a is None for a in angles):
        return None
    period = PERIODS[shape]
    turned = np.array(angles) - angles[0]
    want = degrees * np.arange(len(video))
    return (turned - want + period / 2) % period - period / 2


def touches_edge(mask: np.ndarray | None) -> bool:
    """Whether a judged object mask reaches the frame's edge (so the object may be cut); True for no object."""
    if mask is None:
        return True
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def identity_kept(run: Run) -> list[bool]:
    """Per video: the prompt's colour and shape in every frame."""
    out = []
    for prompt, verdicts in zip(run.prompts, run.verdicts, strict=True):
        colour, shape, _ = parse_caption(prompt)
        out.append(all(v.found and (v.colour, v.shape) == (colour, shape) for v in verdicts))
    return out


def background_ripple(frame: np.ndarray, clearance: int = 3) -> float | None:
    """Mean absolute deviation (0-255) of the background from its median colour, `clearance` px away from
    the judged object: 0 for the flat backgrounds of the training images; the decoder's ripples raise it."""
    import cv2

    mask = object_mask(frame)
    if mask is None:
        return None
    near = cv2.dilate(mask.astype(np.uint8), np.ones((2 * clearance + 1,) * 2, np.uint8)) > 0
    background = frame[~near].astype(np.float32)
    return float(np.abs(background - np.median(background, axis=0)).mean())


def _summary(run: Run) -> dict[str, Any]:
    return {"videos": len(run.videos), "tried": run.tried, "identity": float(np.mean(identity_kept(run)))}


def measure_zoom(pipe: Any, n: int = 24, seed: int = 0, spec: str = ZOOM, **kwargs: Any) -> dict[str, Any]:
    """Share of videos whose object area grows monotonically, and of those within 25 % of the path's growth."""
    run = collect(pipe, spec, n, seed=seed, **kwargs)
    factor = float(spec.split(":")[1])
    results = [area_growth(v) for v in run.verdicts]
    target = factor ** (2 * (len(run.videos[0]) - 1))
    return {**_summary(run), "monotone": float(np.mean([m for m, _ in results])),
            "growth": [g for _, g in results if g is not None], "target": target,
            "within_25": float(np.mean([g is not None and abs(g / target - 1) <= 0.25 for _, g in results]))}


def measure_pan(pipe: Any, n: int = 24, seed: int = 0, **kwargs: Any) -> dict[str, Any]:
    """Share of videos whose centroid follows the keyframed pan within `PAN_TOLERANCE`, and the errors."""
    run = collect(pipe, parse_keyframes(PAN_KEYS), n, seed=seed, **kwargs)
    size = (run.videos[0].shape[2], run.videos[0].shape[1])
    errors = [path_error(v, run.motion, size) for v in run.verdicts]
    return {**_summary(run), "follows": float(np.mean([e is not None and e <= PAN_TOLERANCE for e in errors])),
            "errors": [e for e in errors if e is not None]}


def measure_rotate(pipe: Any, n: int = 24, seed: int = 0, spec: str = ROTATE, **kwargs: Any) -> dict[str, Any]:
    """On squares and triangles: share of videos whose orientation follows the angle within
    `ANGLE_TOLERANCE` in every frame, the mean error, and how far the objects turned by the last frame.

    Every candidate counts: a turn about the frame's centre mirrors the corners in, and at 64 px almost
    no object of this model stays clear of them (1 in 240 at 6° a frame).
    """
    degrees = float(spec.split(":")[1])
    run = collect(pipe, spec, n, seed=seed, shapes=("square", "triangle"), in_view=False, turned=True, **kwargs)
    errors = [turn_errors(v, parse_caption(p)[1], degrees) for p, v in zip(run.prompts, run.videos, strict=True)]
    found = [e for e in errors if e is not None]
    last = degrees * (len(run.videos[0]) - 1)
    size = (run.videos[0].shape[2], run.videos[0].shape[1])
    arcs = [path_error(v, run.motion, size) for v in run.verdicts]
    # How far the turn carries each object's centroid: a centroid that stayed put would be off by this much.
    carried = [float(np.hypot(*(expected_centroids(run.motion, v[0].centroid, len(v), size)[-1] - v[0].centroid)))
               for v in run.verdicts if v[0].found]
    follows = [e is not None and np.abs(e).max() <= ANGLE_TOLERANCE for e in errors]
    # A cut silhouette's orientation is ambiguous even on labelled images (a triangle's corner reads as another
    # corner), so the share is also given over the videos whose frame-1 object is whole.
    whole = [not touches_edge(object_mask(v[0])) for v in run.videos]
    return {**_summary(run), "arc_follows": float(np.mean([e is not None and e <= PAN_TOLERANCE for e in arcs])),
            "arc_errors": [e for e in arcs if e is not None], "arc_length": carried,
            "follows": float(np.mean(follows)), "whole": int(sum(whole)),
            "follows_whole": float(np.mean([f for f, w in zip(follows, whole, strict=True) if w])) if any(whole)
            else float("nan"),
            "mean_error": float(np.mean([np.abs(e[1:]).mean() for e in found])) if found else float("nan"),
            "turned": [float(last + e[-1]) for e in found], "target": last}

"""An analytic judge for images of the default model's world (no learned model).

Given a frame it reports the background colour, the object's colour and shape, its centroid and area.
It is built to tolerate the soft, slightly noisy images a tiny diffusion model produces:

- background = the most common palette colour among the border pixels (after snapping);
- object = pixels far from the background colour; its colour is a robust median of the pixels that
  are clearly object (the "core"), snapped to the palette;
- the object mask is then re-thresholded half-way along the background->object colour line (the 0.5
  iso-line of a blurred edge stays at the true edge), and the largest connected component is kept;
- shape = the ideal silhouette (circle, square, upright triangle, as `data.render_mask` draws them) that
  overlaps the object mask best (intersection over union), each fitted in position and size. Only pixels
  inside the frame count, so an object partly pushed out of the frame is read as the clipped shape it is.
  Measured on labelled images (VAE reconstructions of training images, which blur corners like generated
  frames do), this reads the shape right more often than the fill-ratio prototypes it replaced; see
  `tests/test_default_model.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np

from t2vzero.default_model.data import COLOURS, PALETTE, SHAPES

_RGB = np.array([PALETTE[c] for c in COLOURS], np.float32)
_CAPTION = re.compile(
    rf"^\s*an?\s+({'|'.join(COLOURS)})\s+({'|'.join(SHAPES)})\s+on\s+an?\s+({'|'.join(COLOURS)})\s+background\s*\.?\s*$",
    re.IGNORECASE,
)
MIN_AREA_FRACTION = 0.01  # smaller blobs are noise: the smallest training shape (circle, 20 %) covers ~3 %


@dataclass(frozen=True)
class Verdict:
    """What the judge saw in one frame. Object fields are None when `found` is False."""

    background: str
    found: bool
    colour: str | None = None
    shape: str | None = None
    centroid: tuple[float, float] | None = None  # (x, y) in pixels, pixel centres at integer + 0.5
    area: float = 0.0  # object area as a fraction of the frame
    fill_ratio: float | None = None  # object area / bounding-box area

    def matches(self, colour: str, shape: str, bg: str) -> bool:
        """Whether every judged attribute equals the given caption's."""
        return self.found and (self.colour, self.shape, self.background) == (colour, shape, bg)


def parse_caption(prompt: str) -> tuple[str, str, str] | None:
    """``"a red circle on a blue background"`` -> ``("red", "circle", "blue")``; None for other prompts."""
    m = _CAPTION.match(prompt)
    return (m.group(1).lower(), m.group(2).lower(), m.group(3).lower()) if m else None


def nearest_colour(rgb: np.ndarray, exclude: str | None = None) -> str:
    """The palette name nearest (Euclidean RGB) to one colour, optionally never `exclude`."""
    d = np.linalg.norm(_RGB - np.asarray(rgb, np.float32), axis=1)
    if exclude is not None:
        d[COLOURS.index(exclude)] = np.inf
    return COLOURS[int(np.argmin(d))]


def _snap(pixels: np.ndarray) -> np.ndarray:
    """Palette index nearest to each of N x 3 pixels."""
    return np.argmin(((pixels[:, None, :] - _RGB[None]) ** 2).sum(-1), axis=1)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(mask, bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == biggest


def shape_coverage(shape: str, cx: np.ndarray, cy: np.ndarray, size: np.ndarray, xs: np.ndarray,
                   ys: np.ndarray, angle: np.ndarray | float = 0.0) -> np.ndarray:
    """Coverage in [0, 1] of ideal shapes at pixel centres (xs, ys), broadcast over candidate parameters.

    The geometry is `data.render_mask`'s (size = diameter / side / base and height, (cx, cy) = bounding-box
    centre, triangles apex up, turned by `angle` degrees counter-clockwise on screen about (cx, cy)) with a
    one-pixel linear edge instead of supersampling, so that hundreds of candidates can be scored at once.
    """
    if np.any(angle):  # sample the upright shape at the points turned back (clockwise on screen)
        c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        xs, ys = cx + c * (xs - cx) - s * (ys - cy), cy + s * (xs - cx) + c * (ys - cy)
    half = size / 2
    if shape == "circle":
        return np.clip(half - np.hypot(xs - cx, ys - cy) + 0.5, 0, 1)
    if shape == "square":
        return np.clip(half - np.abs(xs - cx) + 0.5, 0, 1) * np.clip(half - np.abs(ys - cy) + 0.5, 0, 1)
    if shape != "triangle":
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    below_apex = ys - (cy - half)  # the sides run from the apex with slope 2 (half the base over the height)
    inside_right = (below_apex - 2 * (xs - cx)) / np.sqrt(5)
    inside_left = (below_apex + 2 * (xs - cx)) / np.sqrt(5)
    return (np.clip(cy + half - ys + 0.5, 0, 1) * np.clip(inside_right + 0.5, 0, 1)
            * np.clip(inside_left + 0.5, 0, 1))


def _best_fit(shape: str, mask: np.ndarray, xs: np.ndarray, ys: np.ndarray,
              start: tuple[float, float, float], spread: tuple[float, float, float], n: int) -> tuple[float, ...]:
    """(IoU, cx, cy, size) of the best of n^3 candidates on a grid of +-spread around start."""
    grid = np.linspace(-1, 1, n, dtype=np.float32)
    cx, cy, size = (a.reshape(-1, 1, 1) for a in np.meshgrid(
        start[0] + spread[0] * grid, start[1] + spread[1] * grid, start[2] * (1 + spread[2] * grid), indexing="ij"))
    cover = shape_coverage(shape, cx, cy, size, xs, ys)
    iou = np.minimum(cover, mask).sum((1, 2)) / np.maximum(np.maximum(cover, mask).sum((1, 2)), 1e-6)
    i = int(np.argmax(iou))
    return float(iou[i]), float(cx[i, 0, 0]), float(cy[i, 0, 0]), float(size[i, 0, 0])


def shape_scores(mask: np.ndarray) -> dict[str, float]:
    """Best intersection over union of each shape with a binary object mask, fitted in position and size.

    The search starts from the mask's bounding box (every shape is as wide as it is tall) and widens along
    an axis where the mask touches the frame, since the box there is the clipped one.
    """
    h, w = mask.shape
    ys_, xs_ = np.nonzero(mask)
    x0, x1, y0, y1 = int(xs_.min()), int(xs_.max()) + 1, int(ys_.min()), int(ys_.max()) + 1
    side = float(max(x1 - x0, y1 - y0))
    clipped_x, clipped_y = x0 == 0 or x1 == w, y0 == 0 or y1 == h
    coarse = (side * (0.5 if clipped_x else 0.1), side * (0.5 if clipped_y else 0.1),
              0.4 if clipped_x or clipped_y else 0.15)
    fine = (0.05 * side, 0.05 * side, 0.05)
    # The window holds every in-frame pixel any candidate can cover, so each IoU counts all of its area.
    pad = int(np.ceil(max(coarse[:2]) + fine[0] + side * (coarse[2] + fine[2]) / 2)) + 2
    wx0, wx1, wy0, wy1 = max(0, x0 - pad), min(w, x1 + pad), max(0, y0 - pad), min(h, y1 + pad)
    window = mask[wy0:wy1, wx0:wx1].astype(np.float32)
    ys, xs = (g[None].astype(np.float32) + 0.5 for g in np.mgrid[wy0:wy1, wx0:wx1])
    scores = {}
    for shape in SHAPES:
        fit = _best_fit(shape, window, xs, ys, ((x0 + x1) / 2, (y0 + y1) / 2, side), coarse, 7)
        fit = _best_fit(shape, window, xs, ys, fit[1:], fine, 5)
        scores[shape] = fit[0]
    return scores


def classify_shape(mask: np.ndarray, turned: bool = False) -> tuple[str, float]:
    """Shape name (best-fitting silhouette) and fill ratio (area / bounding-box area) of a binary object mask.

    `turned` also fits squares and triangles at any angle (`fit_orientation`), for a model trained on turned
    shapes (the "camera" data world); upright fits stay the default, which the shipped model's numbers use.
    """
    scores = shape_scores(mask)
    if turned:
        for shape in PERIODS:
            scores[shape] = max(scores[shape], fit_orientation(mask, shape)[1])
    ys, xs = np.nonzero(mask)
    fill = float(mask.sum() / ((xs.max() + 1 - xs.min()) * (ys.max() + 1 - ys.min())))
    return max(scores, key=scores.__getitem__), fill


PERIODS = {"square": 90.0, "triangle": 360.0}  # the angles after which each shape looks the same again


def fit_orientation(mask: np.ndarray, shape: str, step: float = 3.0) -> tuple[float, float]:
    """(angle, IoU): the turn, in degrees counter-clockwise on screen within the shape's period, of the
    `data.render_mask` silhouette that best overlaps a binary object mask.

    The silhouette is placed at the mask's centroid with the size its area implies (a square's side is
    √area, a triangle's base and height √(2·area)); a coarse search over angle, position and size is then
    refined around the best. Only in-frame pixels count, as in `shape_scores`.
    """
    if shape not in PERIODS:
        raise ValueError(f"{shape!r} has no orientation; expected one of {tuple(PERIODS)}")
    ys_, xs_ = np.nonzero(mask)
    mx, my = float(xs_.mean() + 0.5), float(ys_.mean() + 0.5)
    size = float(np.sqrt(len(xs_) * (2.0 if shape == "triangle" else 1.0)))
    h, w = mask.shape
    pad = int(size) + 2
    wx0, wx1 = max(0, int(mx) - pad), min(w, int(mx) + pad)
    wy0, wy1 = max(0, int(my) - pad), min(h, int(my) + pad)
    window = mask[wy0:wy1, wx0:wx1].astype(np.float32)
    ys, xs = (g[None].astype(np.float32) + 0.5 for g in np.mgrid[wy0:wy1, wx0:wx1])
    best = (0.0, 0.0, mx, my, size)
    # Angle alone first (the centroid and area already place the silhouette), then all four around the best.
    for span, angle_step, shift, scale in ((PERIODS[shape], step, 0.0, 0.0), (2 * step, step / 3, 0.05 * size, 0.06),
                                           (step / 1.5, step / 6, 0.02 * size, 0.03)):
        best = _orientation_search(shape, window, xs, ys, best[1:], span, angle_step, shift, scale)
    return best[1] % PERIODS[shape], best[0]


def _orientation_search(shape: str, mask: np.ndarray, xs: np.ndarray, ys: np.ndarray, start: tuple[float, ...],
                        span: float, angle_step: float, shift: float, scale: float) -> tuple[float, ...]:
    """(IoU, angle, centroid x, centroid y, size) of the best candidate on a grid around `start`."""
    angle0, mx0, my0, size0 = start
    grid = np.array([-1.0, 0.0, 1.0] if shift else [0.0], np.float32)
    angles = angle0 + np.arange(-span / 2, span / 2 + 1e-6, angle_step)
    a, dx, dy, k = (v.reshape(-1, 1, 1) for v in np.meshgrid(angles, shift * grid, shift * grid, 1 + scale * grid,
                                                             indexing="ij"))
    size = size0 * k
    # Silhouettes are turned about their bounding-box centre; a triangle's centroid sits size/6 below it.
    drop = size / 6 if shape == "triangle" else 0.0
    c, s = np.cos(np.radians(a)), np.sin(np.radians(a))
    cx, cy = mx0 + dx - s * drop, my0 + dy - c * drop
    cover = shape_coverage(shape, cx, cy, size, xs, ys, a)
    iou = np.minimum(cover, mask).sum((1, 2)) / np.maximum(np.maximum(cover, mask).sum((1, 2)), 1e-6)
    i = int(np.argmax(iou))
    return (float(iou[i]), float(a[i, 0, 0]), float(mx0 + dx[i, 0, 0]), float(my0 + dy[i, 0, 0]),
            float(size[i, 0, 0]))


def object_mask(frame: np.ndarray) -> np.ndarray | None:
    """The judge's binary object mask of one RGB frame, or None when it finds no object."""
    return _read(frame)[1]


def orientation(frame: np.ndarray, shape: str) -> float | None:
    """The object's fitted orientation (degrees counter-clockwise, within the shape's period; see
    `fit_orientation`), or None when no object is found."""
    mask = object_mask(frame)
    return None if mask is None else fit_orientation(mask, shape)[0]


def judge(frame: np.ndarray, turned: bool = False) -> Verdict:
    """Judge one uint8 HxWx3 RGB frame (any size); `turned`: see `classify_shape`."""
    (background, colour), mask = _read(frame)
    if mask is None:
        return Verdict(background=background, found=False)
    shape, fill = classify_shape(mask, turned)
    ys, xs = np.nonzero(mask)
    return Verdict(background=background, found=True, colour=colour, shape=shape,
                   centroid=(float(xs.mean() + 0.5), float(ys.mean() + 0.5)), area=float(mask.mean()),
                   fill_ratio=fill)


def _read(frame: np.ndarray) -> tuple[tuple[str, str | None], np.ndarray | None]:
    """((background, object colour), object mask) of one frame; the mask is None when nothing stands out."""
    img = np.asarray(frame)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB frame, got shape {img.shape}")
    if img.dtype != np.uint8:  # accept float frames in [0, 1] too
        img = np.clip(np.rint(img.astype(np.float32) * 255), 0, 255).astype(np.uint8)
    pix = img.astype(np.float32)
    h, w = pix.shape[:2]
    bw = max(1, min(h, w) // 32)  # 2-pixel border ring at 64x64
    border = np.concatenate([pix[:bw].reshape(-1, 3), pix[-bw:].reshape(-1, 3),
                             pix[:, :bw].reshape(-1, 3), pix[:, -bw:].reshape(-1, 3)])
    bg_idx = int(np.bincount(_snap(border), minlength=len(COLOURS)).argmax())
    background = COLOURS[bg_idx]
    votes = _snap(border) == bg_idx
    bg_rgb = np.median(border[votes], axis=0)  # the actual background shade, robust to an object on the edge

    # Rough object: further from the background than the background's nearest other palette colour is
    # half-way to (so a yellow object on orange still counts, but background noise does not).
    dist = np.linalg.norm(pix - bg_rgb, axis=-1)
    others = np.linalg.norm(_RGB - bg_rgb, axis=1)
    others[bg_idx] = np.inf
    rough = _largest_component(cv2.morphologyEx((dist > max(25.0, 0.45 * others.min())).astype(np.uint8),
                                                 cv2.MORPH_OPEN, np.ones((2, 2), np.uint8)) > 0)
    if rough.sum() < MIN_AREA_FRACTION * h * w:
        return (background, None), None

    # Object colour from its core (the half of the pixels furthest from the background): edges are blends.
    core = pix[rough][dist[rough] >= np.median(dist[rough])]
    obj_rgb = np.median(core, axis=0)
    colour = nearest_colour(obj_rgb, exclude=background)

    # Refined mask: more than half-way from the background to the object colour.
    axis = obj_rgb - bg_rgb
    t = ((pix - bg_rgb) @ axis) / max(float(axis @ axis), 1e-6)
    t = cv2.GaussianBlur(t.astype(np.float32), (0, 0), max(h, w) / 64)  # pixel noise would make edges ragged
    mask = _largest_component(t > 0.5)
    if mask.sum() < MIN_AREA_FRACTION * h * w:
        return (background, colour), None
    return (background, colour), mask

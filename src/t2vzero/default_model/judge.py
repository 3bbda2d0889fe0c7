"""An analytic judge for images of the default model's world (no learned model).

Given a frame it reports the background colour, the object's colour and shape, its centroid and area.
It is built to tolerate the soft, slightly noisy images a tiny diffusion model produces:

- background = the most common palette colour among the border pixels (after snapping);
- object = pixels far from the background colour; its colour is a robust median of the pixels that
  are clearly object (the "core"), snapped to the palette;
- the object mask is then re-thresholded half-way along the background->object colour line (the 0.5
  iso-line of a blurred edge stays at the true edge), and the largest connected component is kept;
- shape = nearest prototype in (fill ratio of the bounding box, vertical centroid position in the box,
  taper = upper / lower row width): circle (pi/4, 1/2, 1), square (~1, 1/2, 1), triangle (1/2, 2/3, 3/7).
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
# (fill ratio, centroid height within the bounding box from the top, taper) of the ideal shapes; the square's
# fill is taken a little under 1 because soft images round its corners
_PROTOTYPES = {"circle": np.array([np.pi / 4, 0.5, 1.0]), "square": np.array([0.97, 0.5, 1.0]),
               "triangle": np.array([0.5, 2 / 3, 3 / 7])}
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


def classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """Shape name and fill ratio of a binary object mask."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    box = mask[y0:y1, x0:x1]
    fill = float(box.mean())
    ycen = (ys.mean() + 0.5 - y0) / (y1 - y0)
    # Taper: mean row width in the upper band over that in the lower band; 1 for circles and squares,
    # ~0.43 for an upright triangle, and unlike fill it survives a blunted (blurred) apex.
    rows = box.sum(axis=1).astype(np.float32)
    n = len(rows)
    upper = rows[int(0.2 * n): max(int(0.4 * n), int(0.2 * n) + 1)].mean()
    lower = rows[int(0.6 * n): max(int(0.8 * n), int(0.6 * n) + 1)].mean()
    taper = float(upper / max(lower, 1.0))
    feats = np.array([fill, ycen, taper])
    weights = np.array([1.0, 1.8, 0.5])  # a 1/6-box centroid shift ~ a 0.3 fill change ~ a 0.6 taper change
    score = {name: float(np.abs(feats - proto) @ weights) for name, proto in _PROTOTYPES.items()}
    return min(score, key=score.__getitem__), fill


def judge(frame: np.ndarray) -> Verdict:
    """Judge one uint8 HxWx3 RGB frame (any size)."""
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
        return Verdict(background=background, found=False)

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
        return Verdict(background=background, found=False)
    shape, fill = classify_shape(mask)
    ys, xs = np.nonzero(mask)
    return Verdict(background=background, found=True, colour=colour, shape=shape,
                   centroid=(float(xs.mean() + 0.5), float(ys.mean() + 0.5)), area=float(mask.mean()),
                   fill_ratio=fill)

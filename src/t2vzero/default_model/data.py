"""Seeded synthetic training data: one filled shape on a plain background.

Captions follow the grammar ``a {colour} {shape} on a {colour} background`` with object and
background colours always different. Shapes are drawn 4x supersampled and area-downsampled, so edges
are anti-aliased like a real photo rather than hard-stepped.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "white": (240, 240, 240),
    "black": (20, 20, 20),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
RESOLUTION = 64
MIN_SIZE, MAX_SIZE = 0.20, 0.45  # shape extent as a fraction of the frame side (the shipped model's world)
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class World:
    """What the images may show: shape sizes (fractions of the frame side), the share of squares and
    triangles turned to a uniformly random angle, how far a shape may reach beyond the frame's edge
    (a fraction of its size; 0 keeps it whole), and the share of images in which it may (the rest keep it
    whole)."""

    min_size: float = MIN_SIZE
    max_size: float = MAX_SIZE
    turned: float = 0.0
    outside: float = 0.0
    crossing: float = 1.0


# "classic" is what the shipped model was trained on. "camera" is for camera paths (issue 16): zoom makes
# objects larger and carries them across the edge, rotation turns them, so the model must have seen that.
# In "camera" most shapes touch the edge, so a text-to-video frame 1 often shows a cut shape whose reading
# changes as the pan moves it; "framed" keeps 70 % of the shapes whole, as a first frame should mostly be.
WORLDS: dict[str, World] = {"classic": World(), "camera": World(max_size=0.80, turned=0.5, outside=0.3),
                            "framed": World(max_size=0.80, turned=0.5, outside=0.3, crossing=0.3)}


def caption(colour: str, shape: str, bg: str) -> str:
    """The training caption for one image."""
    return f"a {colour} {shape} on a {bg} background"


def all_captions() -> list[str]:
    """Every caption the grammar allows (8 x 7 colour pairs x 3 shapes = 168)."""
    return [caption(c, s, b) for c in COLOURS for b in COLOURS if b != c for s in SHAPES]


def caption_words() -> list[str]:
    """The words the tokenizer must keep whole."""
    return ["a", "on", "background", *SHAPES, *COLOURS]


def turn_points(points: list[tuple[float, float]], centre: tuple[float, float],
                angle: float) -> list[tuple[float, float]]:
    """Points turned by `angle` degrees counter-clockwise on screen (y grows downwards) about `centre`."""
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    cx, cy = centre
    return [(cx + c * (x - cx) + s * (y - cy), cy - s * (x - cx) + c * (y - cy)) for x, y in points]


def render_mask(shape: str, size: float, centre: tuple[float, float], resolution: int = RESOLUTION,
                angle: float = 0.0) -> np.ndarray:
    """Coverage in [0, 1] (float32, HxW) of a filled shape.

    `size` is the side / diameter / base-and-height in pixels; `centre` is the (x, y) centre of the
    shape's bounding box in pixels (pixel centres at integer + 0.5). Triangles are upright (apex up)
    at `angle` 0; squares and triangles turn by `angle` degrees counter-clockwise about `centre`.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    s = _SUPERSAMPLE
    big = np.zeros((resolution * s, resolution * s), np.uint8)
    shift = 4  # cv2 fixed-point fraction bits, so sub-pixel sizes and centres are honoured
    scale = s * (1 << shift)
    cx, cy = centre
    half = size / 2
    if shape == "circle":
        cv2.circle(big, (round(cx * scale), round(cy * scale)), round(half * scale), 255, -1, cv2.LINE_8, shift)
    else:
        if shape == "square":
            pts = [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half), (cx - half, cy + half)]
        else:
            pts = [(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)]
        if angle:
            pts = turn_points(pts, centre, angle)
        poly = np.array([[round(x * scale), round(y * scale)] for x, y in pts], np.int32)
        cv2.fillPoly(big, [poly], 255, cv2.LINE_8, shift)
    small = cv2.resize(big, (resolution, resolution), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


def render_image(shape: str, colour: str | tuple[int, int, int], bg: str | tuple[int, int, int], size: float,
                 centre: tuple[float, float], resolution: int = RESOLUTION, angle: float = 0.0) -> np.ndarray:
    """One uint8 HxWx3 RGB image: a filled `shape` of `colour` on a plain `bg` (names or RGB tuples)."""
    fg_rgb = np.array(PALETTE[colour] if isinstance(colour, str) else colour, np.float32)
    bg_rgb = np.array(PALETTE[bg] if isinstance(bg, str) else bg, np.float32)
    cover = render_mask(shape, size, centre, resolution, angle)[..., None]
    img = bg_rgb * (1 - cover) + fg_rgb * cover
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Sample:
    """The parameters of one training image."""

    colour: str
    shape: str
    bg: str
    size: float
    centre: tuple[float, float]
    angle: float = 0.0  # degrees counter-clockwise on screen (squares and triangles)

    @property
    def caption(self) -> str:
        """The image's caption."""
        return caption(self.colour, self.shape, self.bg)

    def render(self, resolution: int = RESOLUTION) -> np.ndarray:
        """The image, uint8 HxWx3."""
        return render_image(self.shape, self.colour, self.bg, self.size, self.centre, resolution, self.angle)


def random_sample(rng: np.random.Generator, resolution: int = RESOLUTION, world: World = WORLDS["classic"]) -> Sample:
    """Draw one sample's parameters: uniform colours (object != background), shape, size, position, and in a
    world with turned shapes an angle. The classic world draws exactly what it always drew."""
    colour, bg = rng.choice(len(COLOURS), size=2, replace=False)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    size = float(rng.uniform(world.min_size, world.max_size)) * resolution
    # The extra draw only where a world mixes both, so the others draw exactly what they always drew.
    crosses = world.crossing >= 1.0 or (world.outside > 0 and rng.random() < world.crossing)
    inset = size / 2 - world.outside * size * crosses  # 0 outside: the whole shape stays inside the frame
    cx, cy = rng.uniform(inset, resolution - inset, size=2)
    angle = 0.0
    if world.turned and shape != "circle" and rng.random() < world.turned:
        angle = float(rng.uniform(0.0, 360.0))
    return Sample(COLOURS[colour], shape, COLOURS[bg], size, (float(cx), float(cy)), angle)


def make_batch(rng: np.random.Generator, n: int, resolution: int = RESOLUTION,
               world: World = WORLDS["classic"]) -> tuple[np.ndarray, list[str]]:
    """`n` random images (uint8 NxHxWx3) and their captions, fully determined by `rng`'s state."""
    samples = [random_sample(rng, resolution, world) for _ in range(n)]
    images = np.stack([s.render(resolution) for s in samples])
    return images, [s.caption for s in samples]

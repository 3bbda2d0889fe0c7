"""Camera paths: motion dynamics in the latents (Text2Video-Zero, paper §3.3.1, generalised).

The paper moves frame 1's latent at t0 by a global translation δ·k for frame k. Here δ·k is one kind
of camera path among several; every path says, for each frame k (0 is frame 1, which never moves),
where frame k's pixels take their content from in frame 1: a *sampling map*, the inverse of how the
content moves. Conventions, for every kind:

- coordinates are output pixels, origin at the frame's top-left corner, pixel centres at i + 0.5;
- `Pan(dx, dy)`: the paper's δ in pixels of a 512 grid per frame, whatever the output size (as the
  reference implementations): frame k samples at p + δ·k·size/512, so positive δ moves content
  left/up, exactly as in the reference;
- `Zoom(f)`: content scales by f per frame about the frame's centre (f > 1 zooms in);
- `Rotate(deg)`: content turns by deg degrees per frame about the centre, counter-clockwise on screen;
- `Combined(a, b, ...)`: content moves by a, then by b ("zoom:1.02+pan:4,0" zooms, then pans on screen);
- `Keyframes`: the camera's state (dx, dy in 512-grid pixels, total zoom, total degrees) at key frames,
  linear between keys (zoom geometrically, so its rate is constant between keys), held after the last;
  frame k moves by the change from frame 0's state;
- `Flow`: a dense backward flow (frames−1, 2, H, W) in output pixels: flow[k−1, :, y, x] = (u, v) means
  frame k's pixel (x, y) shows frame 1's content at (x + u, y + v); it is averaged over each latent
  pixel's footprint to move the latent;
- `AffineFunction(fn)`: fn(k) returns frame k's 2×3 sampling map in the units above.

The latent is warped with nearest sampling: every value is a value of the latent, so its noise
statistics are kept (bilinear sampling would shrink the variance). A pure translation is exactly the
whole-pixel shift of `translate_latents`. Samples that fall outside the frame are mirrored back in
(reflection about the outer pixel edges, the reference's padding): the border continues the
background's own values instead of smearing its edge (clamping) or inventing content (zeros).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UserError

if TYPE_CHECKING:
    import torch

REFERENCE_GRID = 512
GRAMMAR = "DX,DY | pan:DX,DY | zoom:F | rotate:DEG, parts joined by '+' (e.g. zoom:1.02+pan:4,0)"
KEY_FIELDS = ("frame", "dx", "dy", "zoom", "rotate")
# The largest total scale (either way) a path may reach from frame 1. Far before it every pixel of a frame samples
# one latent pixel of frame 1 (or frame 1 shrinks to a speck); far beyond it the powers overflow to inf/NaN maps.
MAX_TOTAL_ZOOM = 1e4


class Motion:
    """A camera path: frame k's 2×3 sampling map into frame 1 (see the module docstring for units)."""

    def sampling_map(self, frame: int, size: tuple[int, int]) -> np.ndarray:
        """Frame `frame`'s (2, 3) float64 sampling map for a `size` = (width, height) output."""
        return self.matrix(frame, size)[:2]

    def matrix(self, frame: int, size: tuple[int, int]) -> np.ndarray:
        """The sampling map as a 3×3 homogeneous matrix (identity for frame 0)."""
        raise NotImplementedError

    def check(self, num_frames: int, size: tuple[int, int] | None = None) -> None:
        """Refuse a path that does not fit a video of `num_frames` frames of `size` (when known)."""
        with np.errstate(all="ignore"):  # huge but finite parts (pan:1e308,0) may overflow once combined
            for k in range(1, num_frames):
                if not np.isfinite(self.matrix(k, size or (REFERENCE_GRID, REFERENCE_GRID))).all():
                    raise UserError(f"motion {self.spec} overflows by frame {k} (its values are too large to "
                                    "compute with); choose smaller pan, zoom or rotate values")

    @property
    def spec(self) -> str:
        """The path in --motion's grammar where it has one (records such as a batch manifest), else its kind."""
        return type(self).__name__.lower()


@dataclass(frozen=True)
class Pan(Motion):
    """The paper's translation δ = (dx, dy), in pixels of a 512 grid per frame."""

    dx: float
    dy: float

    def matrix(self, frame: int, size: tuple[int, int]) -> np.ndarray:
        return _translation(self.dx * frame * size[0] / REFERENCE_GRID, self.dy * frame * size[1] / REFERENCE_GRID)

    @property
    def spec(self) -> str:
        return f"pan:{_number(self.dx)},{_number(self.dy)}"


@dataclass(frozen=True)
class Zoom(Motion):
    """Content scales by `factor` per frame about the centre (> 1 zooms in)."""

    factor: float

    def matrix(self, frame: int, size: tuple[int, int]) -> np.ndarray:
        scale = self.factor ** frame
        return _about_centre(np.eye(2) / scale, size)

    def check(self, num_frames: int, size: tuple[int, int] | None = None) -> None:
        if not (math.isfinite(self.factor) and self.factor > 0):
            raise UserError(f"zoom must be a finite scale per frame > 0 (1.03 zooms in, 0.97 out), got {self.factor}")
        if abs(math.log(self.factor)) * max(num_frames - 1, 0) > math.log(MAX_TOTAL_ZOOM):
            raise UserError(f"motion zoom:{self.factor:g} scales the content by {self.factor:g}^{num_frames - 1} over "
                            f"{num_frames} frames, beyond x{MAX_TOTAL_ZOOM:g} either way; choose a factor nearer 1 "
                            "(1.03 zooms in, 0.97 out)")
        super().check(num_frames, size)

    @property
    def spec(self) -> str:
        return f"zoom:{_number(self.factor)}"


@dataclass(frozen=True)
class Rotate(Motion):
    """Content turns by `degrees` per frame about the centre, counter-clockwise on screen."""

    degrees: float

    def matrix(self, frame: int, size: tuple[int, int]) -> np.ndarray:
        return _about_centre(_turn(self.degrees * frame), size)

    @property
    def spec(self) -> str:
        return f"rotate:{_number(self.degrees)}"


@dataclass(frozen=True)
class Combined(Motion):
    """Parts applied to the content in order: the sampling maps compose the other way round."""

    parts: tuple[Motion, ...]

    def matrix(self, frame: int, size: tuple[int, int]) -> np.ndarray:
        out = np.eye(3)
        for part in self.parts:
            out = out @ part.matrix(frame, size)
        return out

    def check(self, num_frames: int, size: tuple[int, int] | None = None) -> None:
        for part in self.parts:
            part.check(num_frames, size)
        super().check(num_frames, size)

    @property
    def spec(self) -> str:
        return "+".join(part.spec for part in self.parts)


@dataclass(frozen=True)
class Key:
    """The camera's state at one frame: total pan (512-grid pixels), total zoom, total degrees."""

    frame: int
    dx: float = 0.0
    dy: float = 0.0
    zoom: float = 1.0
    rotate: float = 0.0

    def matrix(self, size: tuple[int, int]) -> np.ndarray:
        """Zoom, then rotate, then pan the content (as "zoom:..+rotate:..+pan:.."), as a sampling map."""
        pan = _translation(self.dx * size[0] / REFERENCE_GRID, self.dy * size[1] / REFERENCE_GRID)
        return _about_centre(np.eye(2) / self.zoom, size) @ _about_centre(_turn(self.rotate), size) @ pan


@dataclass(frozen=True)
class Keyframes(Motion):
    """Key states in increasing frame order, the first at frame 0; interpolated between keys."""

    keys: tuple[Key, ...]

    def state(self, frame: int) -> Key:
        """The interpolated state at `frame` (held after the last key)."""
        later = [i for i, key in enumerate(self.keys) if key.frame >= frame]
        if not later:
            return self.keys[-1]
        b = self.keys[later[0]]
        if b.frame == frame or later[0] == 0:
            return b
        a = self.keys[later[0] - 1]
        t = (frame - a.frame) / (b.frame - a.frame)
        return Key(frame, a.dx + t * (b.dx - a.dx), a.dy + t * (b.dy - a.dy), a.zoom * (b.zoom / a.zoom) ** t,
                   a.rotate + t * (b.rotate - a.rotate))

    def matrix(self, frame: int, size: tuple[int, int]) -> np.ndarray:
        if frame == 0:
            return np.eye(3)
        return np.linalg.inv(self.state(0).matrix(size)) @ self.state(frame).matrix(size)

    def check(self, num_frames: int, size: tuple[int, int] | None = None) -> None:
        last = self.keys[-1].frame
        if last > num_frames - 1:
            raise UserError(f"the keyframe at frame {last} is out of range: the video's frames are 0..{num_frames - 1}"
                            f"; drop it or generate {last + 1} frames")
        super().check(num_frames, size)


@dataclass(frozen=True, eq=False)
class Flow(Motion):
    """A dense backward flow, (frames−1, 2, H, W) float32 in output pixels; flow[k−1] is frame k's."""

    flow: np.ndarray

    def matrix(self, frame: int, size: tuple[int, int]) -> np.ndarray:
        raise UserError("a dense flow has no affine sampling map; warp it with warp_latents")

    def check(self, num_frames: int, size: tuple[int, int] | None = None) -> None:
        n, _, h, w = self.flow.shape
        if n != num_frames - 1:
            raise UserError(f"the flow has {n} frames of motion but a {num_frames}-frame video needs "
                            f"{num_frames - 1} (shape (frames-1, 2, H, W)); generate {n + 1} frames")
        if size is not None and (w, h) != tuple(size):
            raise UserError(f"the flow is {w}x{h} but the video is {size[0]}x{size[1]}; give a flow of the output "
                            f"size: shape ({n}, 2, {size[1]}, {size[0]})")


@dataclass(frozen=True)
class AffineFunction(Motion):
    """A user's function frame -> 2×3 sampling map (output pixels); frame 0 is never moved.

    To ship it to other processes (Ray), pass a module-level function: lambdas do not pickle.
    """

    fn: Callable[[int], Any]

    def matrix(self, frame: int, size: tuple[int, int]) -> np.ndarray:
        if frame == 0:
            return np.eye(3)
        try:
            value = np.asarray(self.fn(frame), dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise UserError(f"the motion function's value for frame {frame} is not a 2x3 matrix of numbers ({exc})") \
                from None
        if value.shape not in ((2, 3), (3, 3)) or not np.isfinite(value).all():
            raise UserError(f"the motion function must return a finite 2x3 sampling map; for frame {frame} it "
                            f"returned shape {value.shape}")
        return np.vstack([value[:2], [0.0, 0.0, 1.0]])

    def check(self, num_frames: int, size: tuple[int, int] | None = None) -> None:
        for k in range(1, num_frames):
            self.matrix(k, size or (512, 512))


def _number(value: float) -> str:
    """The shortest text that reads back as exactly `value` (12, not 12.0; 1.0000001, not 1), so a manifest's
    spec replays the very same path."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def _turn(degrees: float) -> np.ndarray:
    """The sampling rotation of content turned counter-clockwise on screen (y grows downwards)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[c, -s], [s, c]])


def _about_centre(linear: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """p -> c + L (p - c) with c the frame's centre, as a 3×3 matrix."""
    centre = np.array([size[0] / 2, size[1] / 2])
    out = np.eye(3)
    out[:2, :2] = linear
    out[:2, 2] = centre - linear @ centre
    return out


# --- Building paths: tuples, specs, files, functions ---

def as_motion(value: Any) -> Motion:
    """A `Motion` from a (dx, dy) pair (the paper's δ), a spec string, a dense flow array, a function
    frame -> 2×3 sampling map, or a Motion."""
    if isinstance(value, Motion):
        return value
    if isinstance(value, str):
        return parse_motion(value)
    if isinstance(value, np.ndarray) and value.ndim == 4:
        return Flow(_checked_flow(value, "the flow"))
    if isinstance(value, list | tuple) and len(value) == 2:
        return Pan(*(_finite(v, f"motion {axis}") for v, axis in zip(value, ("dx", "dy"), strict=True)))
    if callable(value):
        return AffineFunction(value)
    raise UserError(f"motion must be a (dx, dy) pair, a spec ({GRAMMAR}), a Motion or a function frame -> 2x3; "
                    f"got {type(value).__name__}")


def _finite(value: Any, what: str) -> float:
    try:
        if isinstance(value, bool | str | bytes):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a number, got {value!r}") from None
    except OverflowError:  # an int beyond float64's range
        raise UserError(f"{what} must be a finite number, got an integer of {len(str(abs(value)))} digits") from None
    if not math.isfinite(number):
        raise UserError(f"{what} must be a finite number, got {value}")
    return number


_PART = re.compile(r"^(?:(?P<kind>[a-z]+)\s*:)?\s*(?P<args>.*)$")
_ARITY = {"pan": 2, "zoom": 1, "rotate": 1}


def parse_motion(spec: str) -> Motion:
    """`DX,DY` (the paper's δ: a `Pan`), `pan:DX,DY`, `zoom:F`, `rotate:DEG`, or parts joined by '+'."""
    parts = [p.strip() for p in _split_parts(spec.strip())]
    if not spec.strip() or not all(parts):
        raise UserError(f"motion {spec!r} is empty or has an empty part; the grammar: {GRAMMAR}")
    motions = [_parse_part(part, alone=len(parts) == 1) for part in parts]
    return motions[0] if len(motions) == 1 else Combined(tuple(motions))


def _split_parts(spec: str) -> list[str]:
    """Split at each '+' that joins parts; a '+' after 'e', ',', ':' or at the start is a number's sign."""
    parts, start = [], 0
    for i, char in enumerate(spec):
        before = spec[:i].rstrip()
        if char == "+" and before and before[-1] not in "eE,:":
            parts.append(spec[start:i])
            start = i + 1
    return [*parts, spec[start:]]


def _parse_part(part: str, alone: bool) -> Motion:
    match = _PART.match(part.lower())
    kind = match.group("kind") if match else None
    if kind is None and alone:
        kind = "pan"  # today's bare DX,DY
    if kind not in _ARITY:
        raise UserError(f"motion part {part!r} is not of the form pan:DX,DY, zoom:F or rotate:DEG; the grammar: "
                        f"{GRAMMAR}")
    try:
        values = [float(v) for v in match.group("args").split(",")]
    except ValueError:
        values = []
    if len(values) != _ARITY[kind]:
        raise UserError(f"motion part {part!r} is not of the form {kind}:{'DX,DY' if kind == 'pan' else 'X'} "
                        f"(numbers); the grammar: {GRAMMAR}")
    if not all(math.isfinite(v) for v in values):
        raise UserError(f"motion part {part!r} must hold finite numbers; the grammar: {GRAMMAR}")
    if kind == "zoom" and values[0] <= 0:
        raise UserError(f"motion part {part!r}: zoom is a scale per frame and must be > 0 (1.03 zooms in, 0.97 "
                        "out)")
    return Pan(*values) if kind == "pan" else Zoom(values[0]) if kind == "zoom" else Rotate(values[0])


def load_motion_file(path: str | Path) -> Motion:
    """A camera path from a file: `.json` keyframes or a `.npy` dense flow, checked (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"motion file {path} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise UserError(f"motion file {path} is not valid JSON ({str(exc).splitlines()[0]})") from None
        return parse_keyframes(data, str(path))
    if suffix == ".npy":
        try:
            flow = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise UserError(f"motion file {path} is not a readable .npy array ({str(exc).splitlines()[0]})") from None
        return Flow(_checked_flow(flow, f"flow file {path}"))
    raise UserError(f"motion file {path} must be .json keyframes or a .npy dense flow, not {suffix or 'no suffix'!r}")


def parse_keyframes(data: Any, source: str = "keyframes") -> Keyframes:
    """`Keyframes` from a list of {"frame", "dx", "dy", "zoom", "rotate"} objects, checked."""
    example = '[{"frame": 0, "dx": 0, "dy": 0, "zoom": 1, "rotate": 0}, ...]'
    if not isinstance(data, list) or not data:
        raise UserError(f"{source} must be a non-empty JSON list of keyframes like {example}")
    keys = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or set(item) != set(KEY_FIELDS):
            have = sorted(item) if isinstance(item, dict) else type(item).__name__
            raise UserError(f"{source}: keyframe {i} must have exactly the fields {', '.join(KEY_FIELDS)}; it has "
                            f"{have}")
        frame = item["frame"]
        if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
            raise UserError(f"{source}: keyframe {i} has frame {frame!r}, out of range: frames are whole numbers >= 0")
        values = {f.name: _finite(item[f.name], f"{source}: keyframe {i}'s {f.name}") for f in fields(Key)[1:]}
        if not 1 / MAX_TOTAL_ZOOM <= values["zoom"] <= MAX_TOTAL_ZOOM:
            raise UserError(f"{source}: keyframe {i}'s zoom is {values['zoom']:g}; it is a total scale (1 is none) "
                            f"and must be from {1 / MAX_TOTAL_ZOOM:g} to {MAX_TOTAL_ZOOM:g}")
        keys.append(Key(frame, **values))
    frames = [k.frame for k in keys]
    if frames[0] != 0:
        raise UserError(f"{source}: the first keyframe must be frame 0 (the video's first frame), not {frames[0]}")
    for i in range(1, len(frames)):
        if frames[i] <= frames[i - 1]:
            raise UserError(f"{source}: keyframes are out of order: frame {frames[i]} (keyframe {i}) follows frame "
                            f"{frames[i - 1]}; list them in increasing frame order")
    return Keyframes(tuple(keys))


def _checked_flow(flow: np.ndarray, what: str) -> np.ndarray:
    """A read-only float32 copy of a (frames−1, 2, H, W) finite flow."""
    if flow.ndim != 4 or flow.shape[1] != 2 or min(flow.shape) < 1:
        raise UserError(f"{what} has shape {flow.shape}; a dense flow is (frames-1, 2, H, W) in pixels")
    if not np.issubdtype(flow.dtype, np.number) or np.issubdtype(flow.dtype, np.complexfloating):
        raise UserError(f"{what} holds {flow.dtype}, not real numbers")
    with np.errstate(over="ignore"):  # values beyond float32's range become inf here and are refused below
        out = np.array(flow, dtype=np.float32)
    if not np.isfinite(out).all():
        raise UserError(f"{what} holds NaN or infinite values (or values beyond float32's range); every displacement "
                        "must be a finite number of pixels")
    out.setflags(write=False)
    return out


def check_motion(motion: Motion, num_frames: int, size: tuple[int, int] | None = None) -> None:
    """Refuse a path that does not fit the video: keyframes beyond its end, a flow of another length or size."""
    motion.check(num_frames, size)


def is_translation(motion: Motion, frame_ids: Sequence[int], size: tuple[int, int]) -> bool:
    """Whether every given frame's sampling map is a pure translation (the paper's kind of motion)."""
    if isinstance(motion, Pan):
        return True
    if isinstance(motion, Flow):
        return False
    return all(np.allclose(motion.matrix(k, size)[:2, :2], np.eye(2), rtol=0, atol=1e-12) for k in frame_ids)


# --- Warping the latent (torch) ---

def motion_field(frame_ids: Sequence[int], strength: tuple[float, float], size: tuple[int, int]) -> torch.Tensor:
    """Per-frame translation (dx, dy) in pixels of a `size` = (width, height) frame: δ·k·size/512.

    Returns a float64 tensor of shape (len(frame_ids), 2).
    """
    import torch

    k = torch.as_tensor(list(frame_ids), dtype=torch.float64)[:, None]
    scale = torch.tensor([strength[0] * size[0], strength[1] * size[1]], dtype=torch.float64) / REFERENCE_GRID
    return k * scale


def latent_shifts(frame_ids: Sequence[int], strength: tuple[float, float], size: tuple[int, int],
                  latent_size: tuple[int, int]) -> torch.Tensor:
    """`motion_field` in latent pixels of a (width, height) = `latent_size` latent: (len(frame_ids), 2)."""
    import torch

    per_pixel = torch.tensor(latent_size, dtype=torch.float64) / torch.tensor(size, dtype=torch.float64)
    return motion_field(frame_ids, strength, size) * per_pixel


def _reflect(index: torch.Tensor, n: int) -> torch.Tensor:
    """Mirror indices into [0, n) about the outer pixel edges (grid_sample's 'reflection' padding)."""
    import torch

    period = 2 * n
    index = index % period
    return torch.where(index < n, index, period - 1 - index)


def translate_latents(latents: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Warp each latent by a whole-pixel translation: out[..., y, x] = in[..., y + sy, x + sx].

    `latents` is (F, C, h, w); `shifts` is (F, 2) in latent pixels and is rounded half-up, since
    nearest-neighbour warping keeps the latent's noise statistics (bilinear would shrink its
    variance) and an exact integer shift avoids the column doubling a half-pixel tie would cause.
    Out-of-frame samples are mirrored back in, as with the reference's reflection padding.
    """
    import torch

    f, _, h, w = latents.shape
    steps = torch.floor(shifts.to(torch.float64) + 0.5).long()
    out = torch.empty_like(latents)
    cols = torch.arange(w)
    rows = torch.arange(h)
    for i in range(f):
        xs = _reflect(cols + steps[i, 0], w).to(latents.device)
        ys = _reflect(rows + steps[i, 1], h).to(latents.device)
        out[i] = latents[i][:, ys][:, :, xs]
    return out


def sample_nearest(latents: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """out[i, :, y, x] = latents[i, :, ⌊ys[i, y, x]⌋, ⌊xs[i, y, x]⌋], sources mirrored into the frame.

    `xs`, `ys` (F, h, w) are source points in latent pixels (corner origin): the pixel that contains a
    point is its nearest pixel centre. Every output value is one of the latent's (noise statistics kept).
    """
    import torch

    _, _, h, w = latents.shape
    cols = _reflect(torch.floor(xs).long(), w).to(latents.device)
    rows = _reflect(torch.floor(ys).long(), h).to(latents.device)
    return torch.stack([latents[i][:, rows[i], cols[i]] for i in range(len(latents))])


def affine_sources(maps: np.ndarray, size: tuple[int, int], latent_size: tuple[int, int]) -> tuple[Any, Any]:
    """Source points (F, h, w) in latent pixels of each latent pixel centre under (F, 2, 3) output-pixel maps."""
    import torch

    w, h = latent_size
    scale = np.array([size[0] / w, size[1] / h])  # output pixels per latent pixel
    gx, gy = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    px, py = gx * scale[0], gy * scale[1]
    sx = maps[:, 0, 0, None, None] * px + maps[:, 0, 1, None, None] * py + maps[:, 0, 2, None, None]
    sy = maps[:, 1, 0, None, None] * px + maps[:, 1, 1, None, None] * py + maps[:, 1, 2, None, None]
    return torch.from_numpy(sx / scale[0]), torch.from_numpy(sy / scale[1])


def flow_sources(flow: np.ndarray, frame_ids: Sequence[int], latent_size: tuple[int, int]) -> tuple[Any, Any]:
    """Source points (F, h, w) in latent pixels from a dense output-pixel flow, averaged per latent pixel."""
    import torch

    w, h = latent_size
    n, _, height, width = flow.shape
    fy, fx = height // h, width // w
    per_frame = np.zeros((n + 1, 2, h, w))  # frame 0 never moves
    per_frame[1:] = flow.reshape(n, 2, h, fy, w, fx).mean(axis=(3, 5), dtype=np.float64)
    picked = per_frame[list(frame_ids)]
    gx, gy = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    return torch.from_numpy(gx + picked[:, 0] / fx), torch.from_numpy(gy + picked[:, 1] / fy)


def latent_sources(motion: Any, frame_ids: Sequence[int], size: tuple[int, int],
                   latent_size: tuple[int, int]) -> tuple[Any, Any]:
    """(xs, ys), each (F, h, w): where `warp_latents` samples each latent pixel, in latent pixels (corner
    origin), before out-of-frame points are mirrored in; a translation's points are its rounded shift."""
    import torch

    motion = as_motion(motion)
    w, h = latent_size
    if isinstance(motion, Flow):
        return flow_sources(motion.flow, frame_ids, latent_size)
    if isinstance(motion, Pan) or is_translation(motion, frame_ids, size):
        shifts = (latent_shifts(frame_ids, (motion.dx, motion.dy), size, latent_size) if isinstance(motion, Pan) else
                  torch.from_numpy(np.stack([motion.sampling_map(k, size)[:, 2] for k in frame_ids])
                                   * np.array(latent_size, np.float64) / np.array(size, np.float64)))
        steps = torch.floor(shifts + 0.5)
        gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                                indexing="ij")
        return gx[None] + steps[:, 0, None, None], gy[None] + steps[:, 1, None, None]
    return affine_sources(np.stack([motion.sampling_map(k, size) for k in frame_ids]), size, latent_size)


def warp_latents(latents: torch.Tensor, motion: Any, frame_ids: Sequence[int], size: tuple[int, int]) -> torch.Tensor:
    """Move (F, C, h, w) copies of frame 1's t0 latent to frames `frame_ids` along `motion` (paper §3.3.1).

    Nearest sampling with mirrored borders (see the module docstring); a pure translation is exactly
    `translate_latents`' whole-pixel shift, so δ pairs give today's frames bit for bit. `size` is the
    output's (width, height) in pixels.
    """
    import torch

    motion = as_motion(motion)
    latent_size = (latents.shape[-1], latents.shape[-2])
    if isinstance(motion, Pan):
        return translate_latents(latents, latent_shifts(frame_ids, (motion.dx, motion.dy), size, latent_size))
    if isinstance(motion, Flow):
        motion.check(motion.flow.shape[0] + 1, size)
        return sample_nearest(latents, *flow_sources(motion.flow, frame_ids, latent_size))
    maps = np.stack([motion.sampling_map(k, size) for k in frame_ids])
    if is_translation(motion, frame_ids, size):
        per_pixel = np.array(latent_size, np.float64) / np.array(size, np.float64)
        return translate_latents(latents, torch.from_numpy(maps[:, :, 2] * per_pixel))
    return sample_nearest(latents, *affine_sources(maps, size, latent_size))


def reference_offsets(motion: Motion, frame_ids: Sequence[int], size: tuple[int, int]) -> list[tuple[float, float]]:
    """A translation path's per-frame offsets on the reference's 512 grid (δ·k for a `Pan`)."""
    if isinstance(motion, Pan):
        return [(motion.dx * k, motion.dy * k) for k in frame_ids]
    return [(float(m[0, 2]) * REFERENCE_GRID / size[0], float(m[1, 2]) * REFERENCE_GRID / size[1])
            for m in (motion.sampling_map(k, size) for k in frame_ids)]


def reference_warp_latents(latents: torch.Tensor, frame_ids: Sequence[int],
                           strength: tuple[float, float]) -> torch.Tensor:
    """The warp of diffusers' deprecated TextToVideoZeroPipeline, for `compat="diffusers"`: δ·k."""
    return reference_warp_offsets(latents, [(strength[0] * k, strength[1] * k) for k in frame_ids])


def reference_warp_offsets(latents: torch.Tensor, offsets: Sequence[tuple[float, float]]) -> torch.Tensor:
    """The reference's warp by per-frame offsets in pixels of its 512 grid.

    It builds the flow on a 512×512 pixel grid, normalises it with the pixel-corner convention,
    bilinearly resizes the sampling grid to the latent size and samples nearest with reflection.
    That places samples about 1/16 latent pixel off the pixel centres; we reproduce it bit-exactly.
    """
    import torch
    import torch.nn.functional as F

    _, _, h, w = latents.shape
    n = REFERENCE_GRID
    ys, xs = torch.meshgrid(torch.arange(n, device=latents.device), torch.arange(n, device=latents.device),
                            indexing="ij")
    base = torch.stack([xs, ys]).to(latents.dtype)[None]
    out = torch.empty_like(latents)
    for i, (ox, oy) in enumerate(offsets):
        flow = torch.empty_like(base)
        flow[:, 0] = ox
        flow[:, 1] = oy
        coords = base + flow
        coords[:, 0] /= n
        coords[:, 1] /= n
        coords = F.interpolate(coords * 2.0 - 1.0, size=(h, w), mode="bilinear", align_corners=False)
        grid = coords.permute(0, 2, 3, 1)
        out[i] = F.grid_sample(latents[i : i + 1], grid, mode="nearest", padding_mode="reflection",
                               align_corners=False)[0]
    return out

"""Input videos for video-to-video: clipping, striding, resizing, and condition maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .checks import MAX_SIDE, check_finite
from .errors import UserError
from .video import VideoSource, open_video, pil_rgb

ANNOTATORS = ("canny", "depth", "pose")


def load_clip(path: str | Path, *, start: float | None = None, end: float | None = None, every: int = 1,
              max_frames: int | None = None, fps: float | None = None,
              max_seconds: float | None = None) -> tuple[np.ndarray, float | None]:
    """Frames of `path` between `start` and `end` seconds, every `every`-th, at most `max_frames`.

    Returns the frames and the output rate (source fps / stride). A folder of frames has no rate of its
    own; `fps` stands in for it. The clip is decoded as a stream and only the frames kept are held, so
    memory does not grow with the clip's length; `max_seconds` bounds the time the kept frames span and
    is checked from the container's metadata before anything is decoded.
    """
    source = open_video(path)
    try:
        first, last, wanted, src_fps = _selection(path, source, start, end, every, max_frames, fps)
        if max_seconds is not None and src_fps and wanted and wanted / src_fps > max_seconds + 1e-6:
            raise UserError(f"the clip is longer than the limit of {max_seconds:g} s; lower the frame count "
                            "(max frames) or the time range")
        frames = []
        for i, frame in enumerate(source.frames):
            if (last is not None and i >= last) or (max_frames is not None and len(frames) >= max_frames):
                break  # nothing further is decoded
            if i >= first and (i - first) % every == 0:
                frames.append(frame)
    finally:
        source.close()
    if not frames:
        _no_frames(path, start, end)
    return np.stack(frames), (src_fps / every if src_fps else None)


def clip_shape(path: str | Path, *, start: float | None = None, end: float | None = None, every: int = 1,
               max_frames: int | None = None, fps: float | None = None) -> tuple[int, tuple[int, int], float | None]:
    """What `load_clip` would return, told from the container's metadata with no frame decoded: the frame
    count, the (width, height) and the output rate. The count of an encoded video comes from its stored
    duration (exact for folders and GIFs); where the duration is unknown, the clip is read to count."""
    source = open_video(path)
    try:
        _, _, wanted, src_fps = _selection(path, source, start, end, every, max_frames, fps)
        size = source.size
    finally:
        source.close()
    if not source.count or size is None:  # nothing stored to tell it by
        frames, rate = load_clip(path, start=start, end=end, every=every, max_frames=max_frames, fps=fps)
        return len(frames), (frames.shape[2], frames.shape[1]), rate
    if not wanted:
        _no_frames(path, start, end)
    return wanted, size, (src_fps / every if src_fps else None)


def _selection(path: str | Path, source: VideoSource, start: float | None, end: float | None, every: int,
               max_frames: int | None, fps: float | None) -> tuple[int, int | None, int | None, float | None]:
    """The clip's [first, last) source frames, how many it keeps (as far as the metadata tells), and the rate."""
    if every < 1:
        raise UserError(f"--every must be at least 1, got {every}")
    if max_frames is not None and max_frames < 1:
        raise UserError(f"--max-frames must be at least 1, got {max_frames}")
    check_finite({"--start": start, "--end": end, "--fps": fps})
    src_fps = source.fps or fps
    first, last = _frame_range(path, source.count, src_fps, start, end)
    wanted = max_frames or source.count or None  # frames to keep, as far as known before decoding
    if last is not None or source.count:
        span = max(0, -(-((source.count if last is None else min(last, source.count or last)) - first) // every))
        wanted = span if max_frames is None else min(span, max_frames)
    return first, last, wanted, src_fps


def _no_frames(path: str | Path, start: float | None, end: float | None) -> None:
    if start is not None or end is not None:
        raise UserError(f"no frame of {path} lies between {start or 0:g}s and {end:g}s; widen --start/--end"
                        if end is not None else f"no frame of {path} lies after {start:g}s")
    raise UserError(f"{path} holds no video frames")


def _frame_range(path: str | Path, count: int, fps: float | None, start: float | None,
                 end: float | None) -> tuple[int, int | None]:
    """The [first, last) frame indices of a time range (last None: to the end of the clip)."""
    if start is None and end is None:
        return 0, None
    if not fps:
        raise UserError(f"{path} has no frame rate, so --start/--end need --fps")
    duration = count / fps
    lo, hi = start or 0.0, duration if end is None else end
    if lo < 0 or hi <= lo or (count and (lo >= duration or hi > duration + 0.5 / fps)):
        raise UserError(f"time range {lo:g}s–{hi:g}s is outside {path}, which is {duration:.2f}s long")
    return round(lo * fps), (round(hi * fps) if end is not None else None)


def fit_resolution(frames: np.ndarray, resolution: int) -> np.ndarray:
    """Resize so the longer side is `resolution`, both sides multiples of 8, aspect kept."""
    import cv2

    h, w = frames.shape[1:3]
    new_w, new_h = fitted_size((w, h), resolution)
    scale = resolution / max(h, w)
    if (new_h, new_w) == (h, w):
        return frames
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (new_w, new_h), interpolation=interp) for f in frames])


def fitted_size(size: tuple[int, int], resolution: int) -> tuple[int, int]:
    """(width, height) resized so the longer side is `resolution`, both multiples of 8, aspect kept."""
    if not 8 <= resolution <= MAX_SIDE:
        raise UserError(f"--resolution must be from 8 to {MAX_SIDE}, got {resolution}")
    scale = resolution / max(size)
    w, h = (max(8, round(s * scale / 8) * 8) for s in size)
    return w, h


def canny(frames: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """OpenCV Canny edges as 3-channel uint8 maps (white edges on black), the canny ControlNet's input."""
    import cv2

    edges = [cv2.Canny(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), low, high) for f in frames]
    return np.repeat(np.stack(edges)[..., None], 3, axis=-1)


def annotate(frames: np.ndarray, kind: str, annotator_path: str | None = None, *, low: int = 100,
             high: int = 200) -> np.ndarray:
    """Condition maps for `kind` (canny, depth, pose); depth and pose use controlnet_aux annotators."""
    if kind == "canny":
        return canny(frames, low, high)
    if kind not in ANNOTATORS:
        raise UserError(f"unknown condition {kind!r}; use canny, depth, pose or a condition video path")
    try:
        import controlnet_aux
    except ImportError:
        raise UserError(f"--condition {kind} needs the controlnet_aux annotators (pip install controlnet-aux) and "
                        "their weights via --annotator PATH; or pass precomputed maps with --condition-video") from None
    if not annotator_path:
        raise UserError(f"--condition {kind} needs annotator weights: --annotator PATH (a local copy of "
                        "lllyasviel/Annotators, or that id when online); or use --condition-video")
    from PIL import Image

    detector_cls = controlnet_aux.MidasDetector if kind == "depth" else controlnet_aux.OpenposeDetector
    try:
        detector = detector_cls.from_pretrained(annotator_path)
    except Exception as exc:
        raise UserError(f"could not load {kind} annotator weights from {annotator_path}: "
                        f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from exc
    h, w = frames.shape[1:3]
    maps = [np.asarray(detector(Image.fromarray(f)).convert("RGB").resize((w, h))) for f in frames]
    return np.stack(maps)


def match_condition_video(condition: np.ndarray, frames: np.ndarray, name: str) -> np.ndarray:
    """Check a precomputed condition video against the input (frame count, aspect) and resize it."""
    import cv2

    if len(condition) != len(frames):
        raise UserError(f"condition video {name} has {len(condition)} frames but the input has {len(frames)}; "
                        "clip both the same way")
    ch, cw = condition.shape[1:3]
    h, w = frames.shape[1:3]
    # The frames were fitted to --resolution in multiples of 8, which bends their aspect a little (65x49 -> 72x56):
    # a map of the source's shape fits the same way.
    same_fit = fitted_size((cw, ch), max(w, h)) == (w, h) if max(w, h) >= 8 else False
    if abs(cw / ch - w / h) > 0.02 * (w / h) and not same_fit:
        raise UserError(f"condition video {name} is {cw}x{ch} but the input is {w}x{h}: their aspect ratios differ")
    if (ch, cw) != (h, w):
        condition = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_NEAREST) for c in condition])
    return condition


MIN_IMAGE_SIDE = 8  # one latent pixel of an SD VAE: anything smaller holds nothing to animate


def read_image(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB (the first frame of an animated one); at least 8 pixels a side."""
    from PIL import Image, UnidentifiedImageError

    src = Path(path)
    if not src.is_file():
        raise UserError(f"image {src} does not exist or is not a file")
    try:
        with Image.open(src) as image:
            arr = pil_rgb(image)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{src} is not a readable image ({reason}); give a PNG, JPEG, WebP or BMP file") from None
    return check_image_size(arr, f"image {src}")


def check_image_size(image: np.ndarray, name: str = "the image") -> np.ndarray:
    """Refuse an image with a side under 8 pixels (one latent pixel)."""
    h, w = image.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise UserError(f"{name} is {w}x{h}, too small: each side needs at least {MIN_IMAGE_SIDE} pixels")
    return image

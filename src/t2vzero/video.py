"""Reading and writing videos (.mp4, .webm, .gif, numbered PNG folders) and contact sheets.

Every output is written to a temporary name beside the target and renamed into place, so an
interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import errno
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError

VIDEO_SUFFIXES = {".mp4": "libx264", ".webm": "libvpx-vp9", ".gif": None}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


# PIL modes of 16- and 32-bit greyscale (16-bit PNGs, TIFFs): convert("RGB") would clip them, not scale them.
_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def pil_rgb(image: Any) -> np.ndarray:
    """A PIL image as (H, W, 3) uint8 RGB as a viewer shows it: EXIF orientation applied (phone photos), 16-bit
    greyscale scaled to 0-255."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in _WIDE_GREY:
        grey = np.clip(np.round(np.asarray(image, dtype=np.float64) / 257), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def _frame_order(path: Path) -> tuple:
    """Numbers in a name compare as numbers: 2.png before 10.png (ffmpeg's %d.png), as 002.png before 010.png."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.name))


def is_frame_dir(path: str | Path) -> bool:
    """A path names a folder of frames when it ends with a separator or has no suffix."""
    text = str(path)
    return text.endswith(("/", os.sep)) or Path(text).suffix == "" or Path(text).is_dir()


MIN_FPS, MAX_FPS = 0.1, 1000.0


def check_fps(fps: float) -> float:
    """A frame rate every writer can store (GIF keeps frame times in 1/100 s, ffmpeg needs a sane rate)."""
    if not math.isfinite(fps) or not MIN_FPS <= fps <= MAX_FPS:
        raise UserError(f"fps must be a number from {MIN_FPS:g} to {MAX_FPS:g}, got {fps}; e.g. --fps 8")
    return fps


def check_file_path(path: str | Path, what: str = "output") -> Path:
    """A file to be written: its folder exists and is writable, and it is not itself a folder. `what` names it
    in errors: an option (--report) is also the option the fix names."""
    out = Path(path)
    if not str(path) or out.is_dir():
        raise UserError(f"{what} {str(path)!r} is a folder or empty; give a file name")
    _check_writable_parent(out, what if what.startswith("--") else "--output")
    return out


def _check_writable_parent(out: Path, option: str = "--output") -> None:
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"output folder {parent} does not exist; create it or choose another {option}")
    try:  # a real write, since os.access says yes to root even on read-only mounts
        fd, probe = tempfile.mkstemp(prefix=".t2vzero-probe.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError:
        raise UserError(f"output folder {parent} is not writable; choose another {option}") from None


def check_output_path(path: str | Path) -> Path:
    """Validate an output path before any work: known format, writable folder, no clobbered folder."""
    if not str(path).strip():
        raise UserError("the output path is empty; give e.g. -o video.mp4 or -o frames/")
    out = Path(path)
    if not is_frame_dir(path) and out.suffix.lower() not in VIDEO_SUFFIXES:
        raise UserError(f"unknown output format {out.suffix!r}; use .mp4, .webm, .gif or a folder like frames/")
    if out.is_symlink() and (out.is_dir() or not out.exists()):
        what = "a folder" if out.is_dir() else "nothing (a dangling link)"
        raise UserError(f"output {out} is a symbolic link to {what}; give a real path or choose another --output")
    if out.exists() and not out.is_dir() and not out.is_file():
        raise UserError(f"output {out} is not a regular file (a device?); choose another --output")
    _check_writable_parent(out)
    if is_frame_dir(path) and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"output folder {out} exists and is not empty; remove it or choose another --output")
    return out


def _umask_mode(directory: bool) -> int:
    """The permissions a plain open()/mkdir() would give (mkstemp/mkdtemp use private 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it into place (never half-written)."""
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=out.suffix, dir=parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, _umask_mode(directory=False))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def write_video(frames: np.ndarray, path: str | Path, fps: float = 4.0) -> Path:
    """Write (F, H, W, 3) uint8 frames to `path` (format from the suffix, folder → numbered PNGs)."""
    out = check_output_path(path)
    check_fps(fps)
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"expected (frames, height, width, 3) uint8, got {frames.shape}")
    if is_frame_dir(path):
        return _write_frame_dir(frames, out)
    if out.suffix.lower() == ".gif":
        return atomic_write(out, lambda tmp: _write_gif(frames, tmp, fps))
    return atomic_write(out, lambda tmp: _write_ffmpeg(frames, tmp, fps, VIDEO_SUFFIXES[out.suffix.lower()]))


def _write_ffmpeg(frames: np.ndarray, path: Path, fps: float, codec: str) -> None:
    import imageio_ffmpeg

    h, w = frames.shape[1:3]
    # H.264/VP9 in yuv420p (what browsers play) need even sides; pad by one edge pixel if odd.
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        h, w = frames.shape[1:3]
    params = ["-crf", "18"] if codec == "libx264" else ["-crf", "30", "-b:v", "0"]
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, codec=codec, pix_fmt_out="yuv420p",
                                         macro_block_size=1, quality=None, output_params=params)
    try:
        writer.send(None)
        for frame in frames:
            writer.send(frame)
    finally:  # also when stopped mid-write: ffmpeg is ended before the caller removes the temporary file
        writer.close()
    # imageio-ffmpeg does not report ffmpeg's own failures; an empty or short file must not replace
    # a good one, so count what was written before the rename.
    written = imageio_ffmpeg.count_frames_and_secs(str(path))[0] if path.stat().st_size else 0
    if written != len(frames):
        raise UserError(f"ffmpeg could not encode the video ({codec}): it wrote {written} of {len(frames)} frames")


def _write_gif(frames: np.ndarray, path: Path, fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=round(1000 / fps), disposal=1)


def _write_frame_dir(frames: np.ndarray, out: Path) -> Path:
    from PIL import Image

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        digits = max(4, len(str(len(frames))))
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(tmp / f"{i:0{digits}d}.png")
        os.chmod(tmp, _umask_mode(directory=True))
        try:
            os.replace(tmp, out)  # replaces an empty folder (check_output_path saw it empty), never a full one
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
            raise UserError(f"output folder {out} was filled by another writer while these frames were written; "
                            "choose another --output") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


@dataclass
class VideoSource:
    """A video opened for reading, frames decoded one at a time as `frames` is iterated (close it to stop).

    `fps` is the stored rate (None for a folder of frames); `count` the frame count, from the container's
    duration for encoded videos (an estimate; exact for folders and GIFs); `size` (width, height) from the
    header (a folder's: its first frame's)."""

    frames: Iterator[np.ndarray]
    fps: float | None
    count: int
    size: tuple[int, int] | None = None

    def close(self) -> None:
        close = getattr(self.frames, "close", None)
        if close is not None:
            close()  # a generator's close ends its decoder (ffmpeg) too


def open_video(path: str | Path) -> VideoSource:
    """Open a video file or a folder of numbered frames for streamed reading; one-line errors for bad input."""
    src = Path(path)
    if not src.exists():
        raise UserError(f"input {src} does not exist")
    if src.is_dir():
        files = sorted((p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_frame_order)
        if not files:
            raise UserError(f"folder {src} holds no image frames (.png/.jpg)")
        return VideoSource(_folder_frames(src, files), None, len(files), _image_size(files[0], src))
    if src.suffix.lower() == ".gif":
        return _open_gif(src)
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(src), output_params=_each_frame_once())
    try:
        meta = next(reader)
        w, h = meta["size"]
    except (RuntimeError, OSError, StopIteration, KeyError) as exc:
        reader.close()
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "no video stream"
        raise UserError(f"{src} is not a readable video ({reason})") from exc
    fps = meta.get("fps") or None
    count = round(float(meta.get("duration") or 0) * fps) if fps else 0
    return VideoSource(_ffmpeg_frames(src, reader, w, h), fps, count, (w, h))


def _each_frame_once() -> list[str]:
    """ffmpeg's options to output every decoded frame once. By default its raw output is constant-rate at the
    stream's tbr, so a variable-rate clip gets duplicated frames (16 frames over 3.6 s came out as 32) that then
    play at the average rate, too slowly; `-fps_mode` is ffmpeg >= 5.1's name for the older `-vsync`."""
    import imageio_ffmpeg

    found = re.search(r"(\d+)\.(\d+)", imageio_ffmpeg.get_ffmpeg_version() or "")
    old = found is not None and (int(found.group(1)), int(found.group(2))) < (5, 1)
    return ["-vsync", "0"] if old else ["-fps_mode", "passthrough"]


def _image_size(path: Path, folder: Path) -> tuple[int, int]:
    """(width, height) from an image file's header, without decoding it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            w, h = image.size
            return (h, w) if image.getexif().get(0x0112) in _TURNED else (w, h)
    except OSError as exc:  # PIL's UnidentifiedImageError included
        raise UserError(f"a frame in {folder} is not a readable image: {exc}") from None


def _ffmpeg_frames(src: Path, reader: Iterator[bytes], w: int, h: int) -> Iterator[np.ndarray]:
    try:
        for raw in reader:
            yield np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3)
    except (RuntimeError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "decoding failed"
        raise UserError(f"{src} is not a readable video ({reason})") from exc
    finally:
        close = getattr(reader, "close", None)
        if close is not None:
            close()


def _folder_frames(src: Path, files: list[Path]) -> Iterator[np.ndarray]:
    from PIL import Image

    shape = None
    for f in files:
        try:
            with Image.open(f) as image:
                frame = pil_rgb(image)
        except OSError as exc:  # PIL's UnidentifiedImageError included
            raise UserError(f"a frame in {src} is not a readable image: {exc}") from None
        if shape is not None and frame.shape != shape:
            raise UserError(f"frames in {src} do not all have the same size")
        shape = frame.shape
        yield frame


def _open_gif(src: Path) -> VideoSource:
    from PIL import Image, ImageSequence

    try:
        image = Image.open(src)
        count = getattr(image, "n_frames", 1)
        duration = image.info.get("duration")
    except OSError as exc:
        raise UserError(f"{src} is not a readable GIF: {exc}") from exc
    size = image.size

    def frames() -> Iterator[np.ndarray]:
        try:
            for f in ImageSequence.Iterator(image):
                yield np.asarray(f.convert("RGB"))
        except OSError as exc:
            raise UserError(f"{src} is not a readable GIF: {exc}") from exc
        finally:
            image.close()

    return VideoSource(frames(), 1000.0 / duration if duration else None, count, size)


def read_video(path: str | Path) -> tuple[np.ndarray, float | None]:
    """Read a whole video file or folder of numbered frames → ((F, H, W, 3) uint8, fps or None)."""
    source = open_video(path)
    try:
        frames = list(source.frames)
    finally:
        source.close()
    if not frames:
        raise UserError(f"{path} holds no video frames")
    return np.stack(frames), source.fps


SHEET_MIN_SIDE = 128  # what the CLI and the app enlarge small frames to on a contact sheet


def contact_sheet(rows: list[np.ndarray], path: str | Path, max_columns: int = 8, min_side: int = 1) -> Path:
    """Save a PNG grid: one band per row of frames (e.g. input, condition, output), wrapped at `max_columns`.

    Frames whose shorter side is below `min_side` are enlarged by a whole factor, nearest (no blur), so that a
    64-pixel video can be seen.
    """
    from PIL import Image

    bands = []
    for frames in rows:
        frames = np.asarray(frames, dtype=np.uint8)
        factor = -(-min_side // min(frames.shape[1:3]))
        if factor > 1:
            frames = frames.repeat(factor, axis=1).repeat(factor, axis=2)
        cols = min(max_columns, len(frames))
        pad = (-len(frames)) % cols
        if pad:
            frames = np.concatenate([frames, np.full((pad, *frames.shape[1:]), 255, np.uint8)])
        grid = frames.reshape(-1, cols, *frames.shape[1:])
        bands.append(np.concatenate([np.concatenate(list(r), axis=1) for r in grid], axis=0))
    width = max(b.shape[1] for b in bands)
    bands = [np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in bands]
    sheet = Image.fromarray(np.concatenate(bands, axis=0))
    return atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"))


def sheet_path(video_path: str | Path) -> Path:
    """Where `--sheet` puts the contact sheet: beside the video, `<name>_sheet.png`."""
    p = Path(video_path)
    return p.parent / f"{p.name.rstrip('/') if not p.suffix else p.stem}_sheet.png"

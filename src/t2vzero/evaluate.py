"""`t2vzero eval`: metrics per video (see `t2vzero.metrics`), a JSON report and a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .metrics import ClipScorer, clip_scores, warp_errors
from .video import atomic_write, read_video


def moves_monotonically(path: list[float | None], sign: float, tolerance: float = 0.75) -> bool:
    """True when every step of `path` goes the `sign` way (or holds within `tolerance` px) and it moves > 1 px.

    The tolerance absorbs the judge's sub-pixel centroid jitter on a frame that does not move.
    """
    values = [v for v in path if v is not None]
    if len(values) < 2 or sign == 0:
        return False
    steps = np.diff(values) * sign
    return bool((steps >= -tolerance).all() and steps.sum() > 1.0)


def judge_metrics(frames: np.ndarray, prompt: str | None) -> dict[str, Any] | None:
    """For videos of the built-in model (prompts in its caption grammar): the analytic judge per frame."""
    from .default_model.judge import judge, parse_caption

    caption = parse_caption(prompt) if prompt else None
    if caption is None:
        return None
    colour, shape, background = caption
    verdicts = [judge(f) for f in frames]
    first = verdicts[0]
    same = [v.found and v.colour == first.colour and v.shape == first.shape for v in verdicts]
    right = [v.found and v.colour == colour and v.shape == shape and v.background == background for v in verdicts]
    xs = [v.centroid[0] if v.centroid else None for v in verdicts]
    ys = [v.centroid[1] if v.centroid else None for v in verdicts]
    found = [v for v in verdicts if v.centroid]
    return {
        "identity_kept": bool(first.found and all(same)),
        "frames_matching_prompt": float(np.mean(right)),
        "background_right": float(np.mean([v.background == background for v in verdicts])),
        "object_colour_right": float(np.mean([v.colour == colour for v in verdicts])),
        "shape_right": float(np.mean([v.shape == shape for v in verdicts])),
        "centroid_x": xs, "centroid_y": ys,
        "displacement": ([found[-1].centroid[0] - found[0].centroid[0], found[-1].centroid[1] - found[0].centroid[1]]
                         if len(found) > 1 else None),
    }


def evaluate_video(path: str | Path, *, prompt: str | None = None, source: str | Path | None = None,
                   scorer: ClipScorer | None = None) -> dict[str, Any]:
    """Every metric that applies to one video; per-frame series under `per_frame`."""
    frames, fps = read_video(path)
    if len(frames) < 2:
        raise UserError(f"{path} has {len(frames)} frame; temporal metrics need at least 2")
    source_frames = None
    if source is not None:
        source_frames, _ = read_video(source)
        if len(source_frames) != len(frames):
            raise UserError(f"source {source} has {len(source_frames)} frames but {path} has {len(frames)}; "
                            "give the clip the edit was made from")
    warp = warp_errors(frames, source_frames)
    report: dict[str, Any] = {"video": str(path), "frames": len(frames), "fps": fps, "prompt": prompt,
                              "source": str(source) if source else None, "metrics": {}, "per_frame": {}}
    report["metrics"]["warp_error"] = float(warp.mean())
    report["per_frame"]["warp_error"] = warp.tolist()
    if scorer is not None:
        for name, values in clip_scores(scorer, frames, prompt).items():
            report["metrics"][name] = float(np.mean(values))
            report["per_frame"][name] = values
    judged = judge_metrics(frames, prompt)
    if judged is not None:
        report["judge"] = judged
        report["per_frame"]["centroid_x"] = judged["centroid_x"]
    return report


def plot_reports(reports: list[dict[str, Any]], path: str | Path) -> Path:
    """One panel per per-frame metric, one line per video; written as PNG (temp file + rename)."""
    from PIL import Image, ImageDraw

    names = sorted({n for r in reports for n in r["per_frame"]})
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
    pw, ph, pad = 420, 220, 40
    legend = 18 * len(reports) + 10
    image = Image.new("RGB", (pw, (ph + pad) * len(names) + legend + 10), "white")
    draw = ImageDraw.Draw(image)
    for i, (r, c) in enumerate(zip(reports, colours * 10, strict=False)):
        draw.line([(10, 12 + 18 * i), (30, 12 + 18 * i)], fill=c, width=3)
        draw.text((36, 6 + 18 * i), Path(r["video"]).name, fill="black")
    for row, name in enumerate(names):
        top = legend + row * (ph + pad) + 20
        box = (pad, top, pw - 10, top + ph - 20)
        draw.rectangle(box, outline="black")
        draw.text((pad, top - 16), f"{name} per frame", fill="black")
        series = [[v for v in r["per_frame"].get(name, []) if v is not None] for r in reports]
        values = [v for s in series for v in s]
        if not values:
            continue
        lo, hi = min(values), max(values)
        hi = hi if hi > lo else lo + 1e-9
        draw.text((2, box[1]), f"{hi:.3g}", fill="black")
        draw.text((2, box[3] - 10), f"{lo:.3g}", fill="black")
        for s, c in zip(series, colours * 10, strict=False):
            if len(s) == 0:
                continue
            xs = [box[0] + 5 + (box[2] - box[0] - 10) * i / max(len(s) - 1, 1) for i in range(len(s))]
            ys = [box[3] - 5 - (box[3] - box[1] - 10) * (v - lo) / (hi - lo) for v in s]
            if len(s) > 1:
                draw.line(list(zip(xs, ys, strict=True)), fill=c, width=2)
            for x, y in zip(xs, ys, strict=True):
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=c)
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def write_json(data: Any, path: str | Path) -> Path:
    """JSON report, written to a temp file and renamed."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2), encoding="utf-8"))


def table(reports: list[dict[str, Any]]) -> str:
    """A plain-text table: one row per video, one column per metric."""
    names = sorted({n for r in reports for n in r["metrics"]})
    extra = ["identity_kept", "frames_matching_prompt"] if any("judge" in r for r in reports) else []
    header = ["video", *names, *extra]
    rows = [header]
    for r in reports:
        row = [Path(r["video"]).name] + [f"{r['metrics'][n]:.4f}" if n in r["metrics"] else "-" for n in names]
        row += [str(r["judge"][e]) if "judge" in r else "-" for e in extra]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)

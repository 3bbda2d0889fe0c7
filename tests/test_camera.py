"""Camera paths on the built-in model (issue 16), read by the analytic judge at a reduced count: 8 videos per
path at 20 DDIM steps. The full table (24 videos, the model's 50 steps, held-out seeds) is benchmarks/camera.py."""

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from t2vzero import TextToVideoZero
from t2vzero.cli import run
from t2vzero.default_model import evaluate_camera as ec
from t2vzero.default_model.judge import judge, object_mask
from t2vzero.motion import load_motion_file
from t2vzero.video import read_video

N, STEPS = 8, 20
ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def pipe():
    return TextToVideoZero.from_pretrained(None)


@pytest.fixture(scope="module")
def zoom(pipe):
    return ec.measure_zoom(pipe, N, num_inference_steps=STEPS)


@pytest.fixture(scope="module")
def rotate(pipe):
    return ec.measure_rotate(pipe, N, num_inference_steps=STEPS)


def test_keyframed_pan_right_then_down_is_followed_within_one_latent_pixel(pipe):
    # The issue's target: within 8 px in >= 90 % (benchmark: 100 % of 24, seeds 0.. and 1000..).
    pan = ec.measure_pan(pipe, N, num_inference_steps=STEPS)
    assert pan["videos"] == N and pan["follows"] >= 0.9 and pan["identity"] >= 0.85, pan
    # A still object would end 8·√2 ≈ 11.3 px from the path; following it leaves only the warp's rounding.
    assert np.median(pan["errors"]) < 6.0, pan


def test_zoom_grows_the_object(zoom):
    # What the shipped model does (benchmark: monotone 75 % / 67 %, growth ×1.17 / ×1.16 for the path's ×1.98;
    # the same videos without zoom: ×1.00): the object grows, by far less than the path asks.
    assert zoom["videos"] == N and zoom["identity"] >= 0.85, zoom
    assert zoom["monotone"] >= 0.5 and np.median(zoom["growth"]) >= 1.1, zoom


@pytest.mark.xfail(strict=True, reason="issue 16's zoom target needs the retrained built-in model (data world "
                   "'camera': objects up to 80 %, past the edge); see README, Camera paths")
def test_zoom_meets_the_issue_target(zoom):
    assert zoom["monotone"] >= 0.9 and zoom["within_25"] >= 0.9, zoom


def test_rotation_carries_objects_along_the_turn(rotate):
    # The centroid follows the turn about the frame's centre (a still one would be off by the whole arc).
    assert rotate["videos"] == N and rotate["arc_follows"] >= 0.75, rotate
    assert np.mean(rotate["arc_errors"]) < 0.5 * np.mean(rotate["arc_length"]), rotate


@pytest.mark.xfail(strict=True, reason="the shipped model only ever saw upright shapes and redraws them upright "
                   "(turned 0° of 42°); needs the retrained built-in model (data world 'camera')")
def test_rotation_turns_the_object_as_the_issue_asks(rotate):
    assert rotate["follows"] >= 0.9, rotate


def _demo_arguments() -> list[str]:
    """The arguments `make demo` passes to `t2vzero generate` (read from the Makefile, so they cannot drift)."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    line = re.search(r"^DEMO := \$\(VENV\)/bin/t2vzero (.*)$", text, re.MULTILINE).group(1)
    return shlex.split(line)


def test_the_demo_keeps_its_object_in_view_with_an_enlarged_sheet(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    args = _demo_arguments()
    assert run([*args, "-o", str(tmp_path / "demo.mp4"), "--sheet"]) == 0, capsys.readouterr().err
    frames, _ = read_video(tmp_path / "demo.mp4")
    assert len(frames) >= 16
    path = load_motion_file(args[args.index("--motion-file") + 1])
    assert ec.keeps_in_view(object_mask(frames[0]), path, len(frames))
    verdicts = [judge(f) for f in frames]
    assert all(v.matches("red", "circle", "blue") for v in verdicts)
    xs = [v.centroid[0] for v in verdicts]
    assert max(xs) - min(xs) >= 12  # it visibly moves
    sheet = Image.open(tmp_path / "demo_sheet.png")
    assert sheet.height >= 2 * 128 and sheet.width == 8 * 128  # two rows of eight frames, each at least 128 px


def test_camera_benchmark_prints_the_readme_table():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "benchmarks/camera.py", "--videos", "1", "--steps", str(STEPS)], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("|")]
    assert len(rows) == 2 + 8 and rows[2].startswith("| `zoom:1.05` |") and "background ripple" in out, out
    assert all(line.count("|") == 7 for line in rows), out

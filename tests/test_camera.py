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
from t2vzero.generate import vae_factor
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


@pytest.mark.xfail(strict=True, reason="issue 16's zoom target needs finer latents than the shipped 8x8: the "
                   "16x16-latent candidate (train --world camera --latent-factor 4) meets it but fails other tests' "
                   "thresholds; see README, Camera paths")
def test_zoom_meets_the_issue_target(zoom):
    assert zoom["monotone"] >= 0.9 and zoom["within_25"] >= 0.9, zoom


def test_rotation_carries_objects_along_the_turn(rotate):
    # The centroid follows the turn about the frame's centre (a still one would be off by the whole arc).
    assert rotate["videos"] == N and rotate["arc_follows"] >= 0.75, rotate
    assert np.mean(rotate["arc_errors"]) < 0.5 * np.mean(rotate["arc_length"]), rotate


@pytest.mark.xfail(strict=True, reason="the shipped model only ever saw upright shapes and its 8x8 latents cannot "
                   "hold a 6° turn (turned 0° of 42°); a perfect denoiser reaches ~70 % over the world's sizes on "
                   "16x16 latents and ~80-85 % on 32x32 (small objects need the finer grid, large ones fail on any "
                   "as their corners reach the mirrored border); see README, Camera paths")
def test_rotation_turns_the_object_as_the_issue_asks(rotate):
    assert rotate["follows"] >= 0.9, rotate


def _demo_arguments() -> list[str]:
    """The arguments `make demo` passes to `t2vzero generate` (read from the Makefile, so they cannot drift)."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    line = re.search(r"^DEMO := \$\(VENV\)/bin/t2vzero (.*)$", text, re.MULTILINE).group(1)
    return shlex.split(line)


def test_the_demo_keeps_its_object_in_view_with_an_enlarged_sheet(pipe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    args = _demo_arguments()
    assert run([*args, "-o", str(tmp_path / "demo.mp4"), "--sheet"]) == 0, capsys.readouterr().err
    frames, _ = read_video(tmp_path / "demo.mp4")
    assert len(frames) >= 16
    path = load_motion_file(args[args.index("--motion-file") + 1])
    assert ec.keeps_in_view(object_mask(frames[0]), path, len(frames), vae_factor(pipe.components["vae"]))
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
    assert len(rows) == 2 + 9 and rows[2].startswith("| `zoom:1.05` |") and "background ripple" in out, out
    assert all(line.count("|") == 7 for line in rows), out


def test_the_view_check_runs_on_the_given_latent_grid():
    """`keeps_in_view` reads the mask on the warp's own latent grid: a 6° turn moves no latent pixel of a small
    centred object on 8x8 latents (it stays in view), while on 16x16 latents it moves and leaves one unsampled."""
    from t2vzero.motion import as_motion

    mask = np.zeros((64, 64), bool)
    mask[28:36, 32:38] = True
    turn = as_motion("rotate:6")
    assert ec.keeps_in_view(mask, turn, 8, 8) and not ec.keeps_in_view(mask, turn, 8, 4)
    pan = as_motion("pan:64,0")  # 8 px a frame at 64 px: this object is cut on either grid
    assert not ec.keeps_in_view(mask, pan, 8, 8) and not ec.keeps_in_view(mask, pan, 8, 4)


def test_an_object_at_the_frame_edge_counts_as_possibly_cut():
    mask = np.zeros((64, 64), bool)
    mask[20:30, 20:30] = True
    assert not ec.touches_edge(mask)
    for edge in (np.s_[0, 25], np.s_[63, 25], np.s_[25, 0], np.s_[25, 63]):
        touching = mask.copy()
        touching[edge] = True
        assert ec.touches_edge(touching)
    assert ec.touches_edge(None)  # no object: nothing whole to read

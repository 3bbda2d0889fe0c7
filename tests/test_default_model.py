"""The shipped built-in model, measured with the analytic judge (reduced counts; the full table is
benchmarks/ablation.py and `python -m t2vzero.default_model.evaluate_images`)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from t2vzero import TextToVideoZero
from t2vzero.default_model.data import make_batch
from t2vzero.default_model.evaluate_images import evaluation_prompts
from t2vzero.default_model.judge import judge, parse_caption
from t2vzero.default_model.train import GENERATION_DEFAULTS, to_tensor
from t2vzero.evaluate import judge_metrics, moves_monotonically
from t2vzero.generate import VideoOutput, decode_latents
from t2vzero.models import DEFAULT_MODEL_DIR

PROMPTS = evaluation_prompts(24)  # every object colour × shape once, seeded backgrounds
IMAGE_PROMPTS = evaluation_prompts(96)  # the full image count: single frames are cheap


@pytest.fixture(scope="module")
def pipe():
    return TextToVideoZero.from_pretrained(None)


def caption(colour, shape, background):
    return f"a {colour} {shape} on a {background} background"


def test_shipped_in_the_diffusers_layout_as_safetensors_under_30_mb():
    files = [p for p in DEFAULT_MODEL_DIR.rglob("*") if p.is_file()]
    assert (DEFAULT_MODEL_DIR / "model_index.json").is_file()
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert {p.parent.name for p in weights} >= {"unet", "vae", "text_encoder"}
    assert not [p for p in files if p.suffix in (".bin", ".ckpt", ".pt")]
    assert sum(p.stat().st_size for p in files) <= 30 * 2**20
    defaults = json.loads((DEFAULT_MODEL_DIR / "t2vzero.json").read_text())
    assert {"height", "width", "motion"} <= defaults.keys()
    # The trainer writes its GENERATION_DEFAULTS; the shipped ones were retuned later and must stay in step.
    assert {k: defaults[k] for k in GENERATION_DEFAULTS} == GENERATION_DEFAULTS


def test_judge_reads_labelled_images_through_the_shipped_vae(pipe):
    """Every number below is the judge's reading, so it is checked on images whose truth is known, passed
    through the shipped autoencoder (which softens corners and small shapes as generated frames are soft)."""
    images, captions = make_batch(np.random.default_rng(4242), 192)
    vae = pipe.components["vae"]
    with torch.no_grad():  # the same decode and rounding as generated frames
        latents = vae.encode(to_tensor(images).to(vae.dtype)).latent_dist.mean * vae.config.scaling_factor
        frames = VideoOutput(decode_latents(vae, latents)).uint8()
    truth = [parse_caption(c) for c in captions]
    verdicts = [judge(f) for f in frames]
    colour = np.mean([v.colour == t[0] and v.background == t[2] for v, t in zip(verdicts, truth, strict=True)])
    shape = np.mean([v.shape == t[1] for v, t in zip(verdicts, truth, strict=True)])
    # Measured on 2048 such images: shape 93 % (the fill-ratio judge it replaced: 89 %), colours 99.9 %.
    assert colour >= 0.98 and shape >= 0.9, (colour, shape)


def test_text_to_image_gets_background_colour_and_shape_right(pipe):
    right = {"background": [], "colour": [], "shape": []}
    for i, (colour, shape, background) in enumerate(IMAGE_PROMPTS):
        image = pipe(caption(colour, shape, background), video_length=1, generator=torch.Generator().manual_seed(i),
                     progress=False).uint8()[0, 0]
        verdict = judge(image)
        right["background"].append(verdict.background == background)
        right["colour"].append(verdict.colour == colour)
        right["shape"].append(verdict.shape == shape)
    rates = {k: float(np.mean(v)) for k, v in right.items()}
    assert rates["background"] >= 0.95 and rates["colour"] >= 0.90 and rates["shape"] >= 0.75, rates


@pytest.fixture(scope="module")
def videos(pipe):
    """The issue's 24 seeded 8-frame videos at the model's defaults (as benchmarks/ablation.py (a))."""
    out = []
    for i, p in enumerate(PROMPTS):
        prompt = caption(*p)
        out.append((prompt, pipe(prompt, generator=torch.Generator().manual_seed(i), progress=False).uint8()[0]))
    return out


def test_videos_keep_the_object_and_move_it_monotonically_left(videos):
    # The targets: identity kept in >= 90 % of the 24 videos, and monotone motion (over 192 held-out
    # videos: identity 95 %, monotone 95 %; the weights card).
    metrics = [judge_metrics(frames, prompt) for prompt, frames in videos]
    kept = [m["identity_kept"] for m in metrics]
    monotone = [moves_monotonically(m["centroid_x"], -1.0) for m in metrics]
    assert np.mean(kept) >= 0.9, kept
    assert np.mean(monotone) >= 0.8, monotone


def test_positive_motion_moves_content_left_and_no_motion_does_not(pipe):
    moved, still = [], []
    for i, p in enumerate(PROMPTS[1::3]):
        prompt = caption(*p)
        for delta, out in (((pipe.defaults["motion"][0] or 16, 0.0), moved), ((0.0, 0.0), still)):
            frames = pipe(prompt, motion=delta, generator=torch.Generator().manual_seed(100 + i),
                          progress=False).uint8()[0]
            m = judge_metrics(frames, prompt)
            out.append(m["displacement"][0] if m["displacement"] else 0.0)
    # Content moves left (as in the reference) by several pixels; without motion it stays put on average.
    assert np.mean(moved) < -4.0 and abs(np.mean(still)) < abs(np.mean(moved)) / 2, (moved, still)


def test_cli_uses_the_built_in_model_and_warns_about_unknown_words(tmp_path):
    env_cmd = [sys.executable, "-m", "t2vzero", "generate"]
    ok = subprocess.run([*env_cmd, "A red circle on a blue background.", "-o", str(tmp_path / "a.mp4")],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.strip() == str(tmp_path / "a.mp4") and "warning" not in ok.stderr
    odd = subprocess.run([*env_cmd, "a zebra on the moon", "--frames", "2", "-o", str(tmp_path / "b.gif")],
                         capture_output=True, text=True)
    assert odd.returncode == 0 and (tmp_path / "b.gif").is_file()
    warnings = [line for line in odd.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "zebra" in warnings[0] and "moon" in warnings[0]


def test_ablation_benchmark_prints_the_four_variants():
    """A small run of benchmarks/ablation.py (the README's table): motion moves content, no motion does not."""
    out = subprocess.run([sys.executable, "benchmarks/ablation.py", "--videos", "1", "--frames", "3", "--steps", "10"],
                         capture_output=True, text=True, cwd=Path(__file__).parents[1], check=True).stdout
    rows = {line[:3]: line[32:].split() for line in out.splitlines() if line[:3] in ("(a)", "(b)", "(c)", "(d)")}
    assert set(rows) == {"(a)", "(b)", "(c)", "(d)"}, out
    dx = {k: float(v[2]) for k, v in rows.items()}  # identity, prompt, |Δx|, |Δy|, monotone, warp err, seconds
    assert min(dx["(a)"], dx["(b)"]) > 2.0 > max(dx["(c)"], dx["(d)"]), out
    assert all(float(v[5]) >= 0 for v in rows.values()), out

"""Metrics on synthetic videos with known answers, and the `t2vzero eval` command."""

import json

import cv2
import numpy as np
import pytest

from t2vzero.cli import run
from t2vzero.metrics import ClipScorer, clip_scores, warp_errors
from t2vzero.video import write_video


def texture(seed=0, h=96, w=128):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur((rng.random((h, w, 3)) * 255).astype(np.uint8), (0, 0), 2)


def static_video(n=5):
    return np.stack([texture()[:64, :64]] * n)


def panning_video(n=5, step=3):
    tex = texture()
    return np.stack([tex[:64, step * i: step * i + 64] for i in range(n)])


def random_video(n=5):
    return (np.random.default_rng(1).random((n, 64, 64, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from t2vzero.tiny import make_clip_tokenizer

    tokenizer = make_clip_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_attention_heads=4,
                         num_hidden_layers=2, max_position_embeddings=77, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    path = tmp_path_factory.mktemp("clip") / "tiny-clip"
    CLIPModel(config).save_pretrained(path)
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                  tokenizer=tokenizer).save_pretrained(path)
    return path


def test_static_video_has_no_warp_error():
    assert warp_errors(static_video()).max() < 1e-9


def test_panning_video_compensated_by_true_flow_has_low_warp_error():
    pan = panning_video()
    naive = (((pan[1:].astype(float) - pan[:-1]) / 255) ** 2).mean()
    assert warp_errors(pan).mean() < naive / 20


def test_random_frames_score_badly():
    assert warp_errors(random_video()).mean() > 100 * warp_errors(panning_video()).mean() + 0.01


def test_flow_from_the_source_judges_an_edit():
    pan = panning_video()
    edited = 255 - pan  # a per-pixel edit that follows the source motion exactly
    assert warp_errors(edited, flow_source=pan).mean() < 1e-3
    assert warp_errors(random_video(), flow_source=pan).mean() > 0.05


def test_clip_f_is_one_for_a_static_video_and_lower_for_random_frames(clip_dir):
    scorer = ClipScorer(str(clip_dir))
    still = clip_scores(scorer, static_video(), "a red circle")
    assert np.allclose(still["clip_f"], 1.0, atol=1e-5) and len(still["clip_t"]) == 5
    assert np.mean(clip_scores(scorer, random_video(), None)["clip_f"]) < 0.9999


def test_eval_command_writes_report_and_plot(tmp_path, clip_dir, capsys):
    a = write_video(static_video(), tmp_path / "a/", fps=4)
    b = write_video(random_video(), tmp_path / "b/", fps=4)
    code = run(["eval", "--compare", str(a), str(b), "--prompt", "a red circle on a blue background",
                "--clip", str(clip_dir), "--report", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")])
    out, err = capsys.readouterr()
    assert code == 0, err
    reports = json.loads((tmp_path / "r.json").read_text())
    assert [len(r["per_frame"]["warp_error"]) for r in reports] == [4, 4]
    assert reports[0]["metrics"]["clip_f"] == pytest.approx(1.0, abs=1e-5)
    assert reports[0]["metrics"]["warp_error"] < reports[1]["metrics"]["warp_error"]
    assert "judge" in reports[0] and "clip_t" in out
    from PIL import Image

    assert Image.open(tmp_path / "r.png").size[0] > 100


def test_eval_without_clip_notes_the_skip_and_runs_the_rest(tmp_path, capsys):
    a = write_video(panning_video(), tmp_path / "pan.mp4", fps=4)
    code = run(["eval", str(a)])
    out, err = capsys.readouterr()
    assert code == 0 and "skipped" in err and "warp_error" in out
    assert (tmp_path / "pan_eval.json").is_file() and (tmp_path / "pan_eval.png").is_file()


@pytest.mark.parametrize("args,match", [(["missing.mp4"], "does not exist"), (["a.mp4", "b.mp4"], "--compare"),
                                        (["pan.mp4", "--report", "nodir/r.json"], "another --report"),
                                        (["pan.mp4", "--plot", "nodir/p.png"], "does not exist; create it or "
                                                                               "choose another --plot"),
                                        (["pan.mp4", "--report", "."], "is a folder")])
def test_eval_bad_input(tmp_path, capsys, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    write_video(panning_video(), tmp_path / "pan.mp4", fps=4)
    assert run(["eval", *args]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pan.mp4"]  # nothing half-written


def test_warp_error_works_on_frames_smaller_than_the_flows_window():
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    for k in range(3):
        frames[k, 2:5, 1 + k:4 + k] = 255
    errors = warp_errors(frames)
    assert len(errors) == 2 and np.isfinite(errors).all()

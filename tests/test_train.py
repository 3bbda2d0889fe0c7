"""The built-in model's trainer: refuses to clobber, writes a loadable model, reproducible by seed."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

TINY = ["--ae-steps", "2", "--dec-steps", "2", "--unet-steps", "2", "--pool", "64", "--ae-batch", "4",
        "--unet-batch", "4", "--threads", "1"]


def train(out, *extra):
    return subprocess.run([sys.executable, "-m", "t2vzero.default_model.train", "--out", str(out), *TINY, *extra],
                          capture_output=True, text=True)


def test_a_non_empty_output_folder_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for extra in ((), ("--overwrite",)):  # --overwrite replaces a model, never an arbitrary folder
        refused = train(out, *extra)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    assert train(out).returncode == 0  # an empty folder is fine
    (out / "keep.txt").write_text("mine")
    assert train(out).returncode == 2 and (out / "keep.txt").exists()
    assert train(out, "--overwrite").returncode == 0 and not (out / "keep.txt").exists()
    assert (out / "model_index.json").is_file() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bad_options_and_output_paths_are_one_line_errors(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out, extra, match in ((tmp_path / "m", ("--ae-steps", "0"), "--ae-steps"),
                              (tmp_path / "m", ("--unet-minutes", "-1"), "--unet-minutes"),
                              (tmp_path / "m", ("--pool", "0"), "--pool"),
                              (a_file, (), "is a file"),
                              (a_file / "sub", (), "cannot create")):
        run = train(out, *extra)
        assert run.returncode == 2 and match in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("signum,code", [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_stopped_training_leaves_nothing_behind(tmp_path, signum, code):
    import signal
    import time

    out = tmp_path / "model"
    args = [sys.executable, "-m", "t2vzero.default_model.train", "--out", str(out), *TINY, "--ae-steps", "100000"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".model.partial") for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # inside the VAE phase
    proc.send_signal(getattr(signal, signum))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code and "training interrupted" in err and "Traceback" not in err, err
    assert not any(tmp_path.iterdir())  # neither the model nor its partial folder


def test_a_short_run_writes_a_loadable_model_reproducibly(tmp_path):
    from t2vzero import TextToVideoZero

    first, second = tmp_path / "a", tmp_path / "b"
    assert train(first).returncode == 0 and train(second).returncode == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    for part in ("unet", "vae", "text_encoder"):
        name = "model.safetensors" if part == "text_encoder" else "diffusion_pytorch_model.safetensors"
        a, b = load_file(first / part / name), load_file(second / part / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    phases = [json.loads(line)["phase"] for line in (first / "train_log.jsonl").read_text().splitlines()]
    assert [p for p in dict.fromkeys(phases)] == ["vae", "decoder", "encode", "unet", "done"]
    assert json.loads((first / "t2vzero.json").read_text())["vocabulary"]  # the CLI's unknown-word warning reads it
    pipe = TextToVideoZero.from_pretrained(str(first))
    frames = pipe("a red circle on a blue background", video_length=2, num_inference_steps=2,
                  generator=torch.Generator().manual_seed(0), progress=False).frames
    assert frames.shape == (1, 2, 64, 64, 3) and np.isfinite(frames).all()


def test_image_evaluation_refuses_bad_input_before_any_work(tmp_path, capsys):
    from t2vzero.default_model.evaluate_images import main
    from t2vzero.models import DEFAULT_MODEL_DIR

    model = str(DEFAULT_MODEL_DIR)
    for argv, match in (([str(tmp_path)], "not a model folder"),
                        ([model, "--grid", str(tmp_path / "missing" / "g.png")], "does not exist"),
                        ([model, "--grid", str(tmp_path / "g.txt")], ".png or .jpg")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit) as exit_info:
        main([model, "--n", "0"])
    assert exit_info.value.code == 2


def test_the_camera_world_trains_and_is_named_in_the_model_card(tmp_path):
    """`--world camera` (issue 16's retrain data: larger, turned shapes reaching past the edge) runs end to end."""
    out = tmp_path / "camera"
    done = train(out, "--world", "camera")
    assert done.returncode == 0, done.stderr
    card = (out / "README.md").read_text()
    assert "world `camera`" in card and "20-80 % of the frame side" in card and "turned" in card
    refused = train(tmp_path / "other", "--world", "moon")
    assert refused.returncode == 2 and "invalid choice" in refused.stderr


def test_latent_factor_4_trains_a_16x16_latent_model_that_generates(tmp_path):
    """`--latent-factor 4`: a 3-block VAE (64 px <-> 16x16 latents) and a UNet of sample size 16; the pipeline
    reads the factor from the VAE, so the model makes 64 px videos; --init refuses the option."""
    from t2vzero import TextToVideoZero
    from t2vzero.generate import vae_factor

    out = tmp_path / "x4"
    done = train(out, "--latent-factor", "4", "--world", "camera")
    assert done.returncode == 0, done.stderr
    vae = json.loads((out / "vae" / "config.json").read_text())
    assert len(vae["block_out_channels"]) == 3 and json.loads((out / "unet" / "config.json").read_text())[
        "sample_size"] == 16
    assert "x4 downsampling" in (out / "README.md").read_text()
    pipe = TextToVideoZero.from_pretrained(str(out))
    assert vae_factor(pipe.components["vae"]) == 4
    video = pipe("a red square on a white background", video_length=2, num_inference_steps=2, motion="zoom:1.05",
                 progress=False).uint8()
    assert video.shape == (1, 2, 64, 64, 3)
    for extra, match in ((("--latent-factor", "3"), "invalid choice"),
                         (("--init", str(out), "--latent-factor", "4"), "--init keeps its model's latent grid")):
        refused = train(tmp_path / "other", *extra)
        assert refused.returncode == 2 and match in refused.stderr and "Traceback" not in refused.stderr


def test_a_fine_tune_keeps_the_latent_space_and_moves_the_unet_and_decoder(tmp_path):
    """`--init DIR`: the VAE encoder (so the latent space), latent scale, tokenizer and tuned defaults are DIR's;
    the decoder and UNet train on; `--unet-steps 0` trains the decoder alone."""
    base, tuned, decoder_only = tmp_path / "base", tmp_path / "tuned", tmp_path / "decoder"
    assert train(base).returncode == 0
    (base / "t2vzero.json").write_text(json.dumps({**json.loads((base / "t2vzero.json").read_text()), "t1": 333}))
    done = train(tuned, "--init", str(base), "--world", "framed", "--unet-lr", "1e-2", "--dec-lr", "1e-2")
    assert done.returncode == 0, done.stderr
    done = train(decoder_only, "--init", str(base), "--unet-steps", "0", "--dec-lr", "1e-2")
    assert done.returncode == 0, done.stderr

    def weights(folder, part):
        name = "model.safetensors" if part == "text_encoder" else "diffusion_pytorch_model.safetensors"
        return load_file(folder / part / name)

    def same(a, b, prefix=""):
        return all(torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))

    vae = weights(base, "vae")
    for folder in (tuned, decoder_only):
        other = weights(folder, "vae")
        assert same(vae, other, "encoder.") and same(vae, other, "quant_conv.")
        assert not same(vae, other, "decoder.")
        scale = [json.loads((d / "vae" / "config.json").read_text())["scaling_factor"] for d in (base, folder)]
        assert scale[0] == scale[1] and json.loads((folder / "t2vzero.json").read_text())["t1"] == 333
    assert not same(weights(base, "unet"), weights(tuned, "unet"))
    assert same(weights(base, "unet"), weights(decoder_only, "unet"))
    assert same(weights(base, "text_encoder"), weights(decoder_only, "text_encoder"))
    phases = [json.loads(line)["phase"] for line in (tuned / "train_log.jsonl").read_text().splitlines()]
    assert "vae" not in phases and "decoder" in phases and "unet" in phases
    card = (tuned / "README.md").read_text()
    assert card.startswith((base / "README.md").read_text().rstrip()) and "Fine-tune on the world `framed`" in card
    assert "past the frame's edge in 30 % of the images" in card
    for extra, match in ((("--init", str(tmp_path / "missing")), "not a trained model folder"),
                         (("--unet-steps", "0"), "from scratch the UNet phase must run"),
                         (("--init", str(base), "--unet-steps", "0", "--dec-steps", "0"), "train nothing")):
        refused = train(tmp_path / "other", *extra)
        assert refused.returncode == 2 and match in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and not (tmp_path / "other").exists()

"""The command line: a real generation, and every bad input as one line, exit code 2, nothing written."""

import os
import subprocess
import sys

import numpy as np
import pytest

from t2vzero.cli import run
from t2vzero.errors import UserError
from t2vzero.motion import Pan

FAST = ["--size", "64x64", "--steps", "4", "--frames", "3"]


def cli(capsys, *args):
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_writes_the_video_and_prints_its_path(capsys, tmp_path, tiny_model_dir):
    out_path = tmp_path / "clip.mp4"
    code, out, err = cli(capsys, "generate", "a red circle", "--model", str(tiny_model_dir), *FAST,
                         "--fps", "6", "-o", str(out_path), "--sheet", "--chunk-size", "2")
    assert code == 0, err
    assert out.strip() == str(out_path)
    from t2vzero.video import read_video

    frames, fps = read_video(out_path)
    assert frames.shape == (3, 64, 64, 3) and fps == pytest.approx(6)
    assert (tmp_path / "clip_sheet.png").is_file()


def test_generate_to_a_png_folder_with_ablations_and_compat(capsys, tmp_path, tiny_model_dir):
    out_dir = tmp_path / "frames"
    code, _, err = cli(capsys, "generate", "", "--model", str(tiny_model_dir), *FAST, "--no-motion",
                       "--no-cross-frame-attention", "--compat", "diffusers", "--guidance", "1", "-o", f"{out_dir}/")
    assert code == 0, err
    assert sorted(os.listdir(out_dir)) == ["0000.png", "0001.png", "0002.png"]


def test_generate_with_background_smoothing(capsys, tmp_path, tiny_model_dir):
    code, out, err = cli(capsys, "generate", "a red circle", "--model", str(tiny_model_dir), *FAST,
                         "--background-smoothing", "0.6", "-o", str(tmp_path / "s.gif"))
    assert code == 0 and out.strip() == str(tmp_path / "s.gif"), err


@pytest.fixture
def pipeline_calls(monkeypatch):
    """The keyword arguments every text-to-video call receives (the real call still runs)."""
    import t2vzero.modes.text2video as t2v

    calls, real = [], t2v.text_to_video

    def recording(components, prompt, **kwargs):
        calls.append(kwargs)
        return real(components, prompt, **kwargs)

    monkeypatch.setattr(t2v, "text_to_video", recording)
    return calls


def test_every_generation_option_reaches_the_pipeline(capsys, tmp_path, tiny_model_dir, pipeline_calls):
    model = ["--model", str(tiny_model_dir), *FAST]
    code, _, err = cli(capsys, "generate", "a red circle", *model, "--no-motion", "--no-cross-frame-attention",
                       "--compat", "diffusers", "--scheduler", "euler", "--timestep-spacing", "trailing",
                       "--t0", "300", "--t1", "700", "--guidance", "3", "--seed", "9", "--tome", "0.5",
                       "--cache-interval", "2", "-o", str(tmp_path / "a.gif"))
    assert code == 0, err
    code, _, err = cli(capsys, "generate", "a red circle", *model, "--background-smoothing", "0.6", "--chunk-size",
                       "2", "--motion", "8,-4", "-o", str(tmp_path / "b.gif"))
    assert code == 0, err
    first, second = pipeline_calls
    assert first["motion"] == Pan(0.0, 0.0) and first["cross_frame"] is False and first["compat"] == "diffusers"
    assert (first["scheduler"], first["timestep_spacing"]) == ("euler", "trailing")
    assert (first["t0"], first["t1"], first["guidance_scale"], first["num_inference_steps"]) == (300, 700, 3.0, 4)
    assert first["generator"].initial_seed() == 9 and first["video_length"] == 3
    assert (first["token_merging"], first["cache_interval"]) == (0.5, 2)
    assert second["background_smoothing"] == 0.6 and second["chunk_size"] == 2 and second["motion"] == Pan(8.0, -4.0)
    assert second["compat"] == "t2vzero" and second["cross_frame"] is True and second["scheduler"] is None
    assert (second["token_merging"], second["cache_interval"]) == (None, None)


@pytest.mark.parametrize("args,match", [
    (["--frames", "0"], "frames must be at least 1"),
    (["--size", "30x30"], "multiples of 8"),
    (["--size", "0x64"], "multiples of 8"),
    (["--size", "big"], "not of the form"),
    (["--motion", "1;2"], "not of the form"),
    (["--t0", "941", "--t1", "881"], "t0=941 must be smaller"),
    (["--steps", "0"], "steps must be at least 1"),
    (["--chunk-size", "1"], "chunk size must be at least 2"),
    (["--fps", "0"], "fps must be a number from"),
    (["--fps", "1e-9"], "fps must be a number from"),
    (["--fps", "nan"], "fps must be a number from"),
    (["--motion", "nan,0"], "finite"),
    (["--motion", "1e400,0"], "finite"),
    (["--guidance", "inf"], "--guidance must be a finite number"),
    (["--seed", str(2**64)], "seed"),
    (["--size", "8192x8192"], "larger than 4096"),
    (["--motion", "4,0", "--no-motion"], "contradict"),
    (["--background-smoothing", "1.5"], "--background-smoothing"),
    (["--config", "somewhere"], "--config only applies"),
    (["--lora", "style.safetensors:abc"], "not a number"),
    (["--lora", "style.safetensors:nan"], "finite"),
    (["--device", "meta"], "not supported"),
    (["--device", "tpu"], "unknown device"),
    (["--device", "bogus"], "unknown device"),
    (["-o", ""], "output path is empty"),
    (["-o", "/dev/null"], "not a regular file"),
    (["-o", "v.mp4", "--sheet", "--frames", "0"], "frames must be at least 1"),
    (["-o", "video.avi"], "unknown output format"),
    (["-o", "no/such/dir/video.mp4"], "does not exist"),
    (["-o", "/proc/video.mp4"], "not writable"),
    (["--model", "no/such/model"], "does not exist"),
    (["--dtype", "float8"], "unknown dtype"),
    (["--frames", "x"], "frames"),
])
def test_bad_input_is_one_line_and_exit_code_2(capsys, tmp_path, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "generate", "a red circle", *args)
    assert code == 2
    assert match in err and err.startswith("error:") and err.count("\n") == 1, err
    assert out == "" and os.listdir(tmp_path) == []


@pytest.mark.parametrize("args,match", [
    (["--t1", "1000"], "t0=881, t1=1000"),
])
def test_schedule_errors_after_loading_the_model(capsys, tmp_path, tiny_model_dir, args, match):
    out = tmp_path / "v.mp4"
    code, _, err = cli(capsys, "generate", "x", "--model", str(tiny_model_dir), "--size", "64x64", *args,
                       "-o", str(out))
    assert code == 2 and match in err and err.count("\n") == 1, err
    assert not out.exists()


def test_models_that_are_not_checkpoints_or_are_pickles(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"\x80\x04.")
    bins = tmp_path / "bins"
    (bins / "unet").mkdir(parents=True)
    (bins / "model_index.json").write_text("{}")
    (bins / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04.")
    mixed = tmp_path / "mixed"  # safetensors for one component, pickle only for another
    for part, name in (("text_encoder", "model.safetensors"), ("unet", "diffusion_pytorch_model.bin")):
        (mixed / part).mkdir(parents=True)
        (mixed / part / name).write_bytes(b"\x80\x04.")
    (mixed / "model_index.json").write_text("{}")
    cases = [(empty, "not a Stable Diffusion checkpoint"), (junk, "could not load"),
             (pickle, "--allow-pickle"), (bins, "--allow-pickle"), (mixed, "unet holds only pickle")]
    for model, match in cases:
        code, _, err = cli(capsys, "generate", "a", "--model", str(model), "-o", str(tmp_path / "v.mp4"))
        assert code == 2 and match in err and err.count("\n") == 1, (model, err)
    assert not (tmp_path / "v.mp4").exists()


@pytest.mark.parametrize("prompt", ["a\x01b", "caf\udce9", "a red circle \ud800"])
def test_a_prompt_that_is_not_text_is_refused(capsys, tmp_path, prompt):
    code, _, err = cli(capsys, "generate", prompt, "-o", str(tmp_path / "v.mp4"))
    assert code == 2 and "not text" in err


def test_subprocess_error_has_no_traceback_and_help_does_not_import_torch(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    bad = subprocess.run([sys.executable, "-m", "t2vzero", "generate", "x", "--frames", "-3"],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1
    probe = ("import sys, t2vzero.cli as c; c.run(['--help']); c.run(['generate', 'x', '--size', '7x7']); "
             "print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))")
    helped = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    # neither help nor a bad generate argument waits for torch to import
    assert helped.returncode == 0 and "generate" in helped.stdout and helped.stdout.strip().endswith("[]")
    assert "multiples of 8" in helped.stderr


def test_lora_spec_parsing():
    from t2vzero.models import parse_lora

    assert parse_lora("style.safetensors:0.7") == ("style.safetensors", 0.7)
    assert parse_lora("style.safetensors") == ("style.safetensors", 1.0)
    assert parse_lora("C:/loras/style.safetensors") == ("C:/loras/style.safetensors", 1.0)
    assert np.isclose(parse_lora("dir/x:1e-1")[1], 0.1)
    assert parse_lora("C:\\loras\\style.safetensors") == ("C:\\loras\\style.safetensors", 1.0)
    for bad in ("x.safetensors:abc", "x.safetensors:", "x.safetensors:inf"):
        with pytest.raises(UserError, match="scale"):
            parse_lora(bad)


def test_ctrl_c_says_nothing_was_written(capsys, monkeypatch):
    import t2vzero.options

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(t2vzero.options, "check_prompt_text", interrupted)
    code, _, err = cli(capsys, "generate", "a red circle")
    assert code == 130 and err.strip() == "interrupted; nothing was written"


def test_a_prompt_longer_than_the_tokenizer_reads_is_warned_about(capsys, tmp_path, tiny_model_dir):
    long = " ".join(["red circle"] * 60)
    code, _, err = cli(capsys, "generate", long, "--model", str(tiny_model_dir), *FAST, "-o", str(tmp_path / "v.mp4"))
    assert code == 0 and "longer than the model's" in err
    code, _, err = cli(capsys, "generate", "a red circle", "--model", str(tiny_model_dir), *FAST,
                       "-o", str(tmp_path / "w.mp4"))
    assert code == 0 and "longer" not in err


def test_too_many_steps_are_refused_before_any_weights_load(capsys, tmp_path, tiny_model_dir, monkeypatch):
    import t2vzero.models

    monkeypatch.setattr(t2vzero.models, "load_components", lambda *a, **k: pytest.fail("weights were loaded"))
    out = tmp_path / "v.mp4"
    clip = tmp_path / "clip.gif"
    from t2vzero.video import write_video

    write_video(np.zeros((2, 64, 64, 3), np.uint8), clip, fps=4)
    for command in (["generate", "x"], ["edit", str(clip), "x"], ["control", str(clip), "x", "--controlnet", "cn"]):
        code, _, err = cli(capsys, *command, "--model", str(tiny_model_dir), "--steps", "100000", "-o", str(out))
        assert code == 2 and "use --steps 1000 or fewer" in err and err.count("\n") == 1, (command, err)
    assert not out.exists()


def test_output_paths_through_symbolic_links(capsys, tmp_path, tiny_model_dir):
    real_dir, real_file = tmp_path / "real", tmp_path / "target.gif"
    real_dir.mkdir()
    real_file.write_bytes(b"keep me")
    (tmp_path / "to-dir").symlink_to(real_dir, target_is_directory=True)
    (tmp_path / "dangling.gif").symlink_to(tmp_path / "missing.gif")
    (tmp_path / "to-file.gif").symlink_to(real_file)
    args = ["--model", str(tiny_model_dir), "--steps", "2", "--frames", "2"]
    for name, match in (("to-dir", "symbolic link to a folder"), ("to-dir/", "symbolic link to a folder"),
                        ("dangling.gif", "dangling link")):
        code, _, err = cli(capsys, "generate", "x", *args, "-o", str(tmp_path / name))
        assert code == 2 and match in err and err.count("\n") == 1, err
    assert list(real_dir.iterdir()) == []
    # A link to a file is replaced by the new video; the file it pointed to is never overwritten.
    code, _, err = cli(capsys, "generate", "x", *args, "-o", str(tmp_path / "to-file.gif"))
    assert code == 0, err
    assert real_file.read_bytes() == b"keep me" and not (tmp_path / "to-file.gif").is_symlink()
    assert (tmp_path / "to-file.gif").stat().st_size > 0


def test_two_writers_of_one_frame_folder_in_one_process(tmp_path):
    import threading

    from t2vzero.video import write_video

    out = tmp_path / "frames/"
    results, barrier = [], threading.Barrier(2)

    def writer(value):
        frames = np.full((40, 32, 32, 3), value, np.uint8)
        barrier.wait()
        try:
            write_video(frames, out)
            results.append("ok")
        except UserError as exc:
            results.append(str(exc))

    threads = [threading.Thread(target=writer, args=(v,)) for v in (10, 200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # One wins; the other is told in one line (found full before or after writing), never a raw OSError.
    assert results.count("ok") == 1, results
    loser = next(r for r in results if r != "ok")
    assert "another writer" in loser or "not empty" in loser, loser
    assert len(list(out.iterdir())) == 40 and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_lora_for_another_unet_names_the_first_mismatching_layer(tmp_path, tiny_model_dir):
    from diffusers import StableDiffusionPipeline

    from loras import random_lora
    from t2vzero.models import load_components
    from t2vzero.tiny import make_tiny_components

    other = make_tiny_components(seed=1, block_out_channels=(32, 32))  # same text width, other channels
    lora = random_lora(other["unet"], tmp_path / "lora", StableDiffusionPipeline)
    with pytest.raises(UserError) as error:
        load_components(str(tiny_model_dir), lora=[str(lora)])
    message = str(error.value)
    assert "\n" not in message and "has shape [" in message and "but this model's has [" in message, message
    assert "layer(s) differ" in message and "made for this one" in message


@pytest.mark.parametrize("prompt,unknown", [("🐱🚀", "🐱, 🚀"), ("a red circle 🙂", "🙂"), ("a zebra", "zebra")])
def test_words_and_symbols_the_built_in_model_never_saw_are_named(prompt, unknown):
    from t2vzero.options import unknown_words_warning

    assert f"it never saw: {unknown}" in unknown_words_warning(prompt, ["a", "red", "circle"])
    assert unknown_words_warning("A red circle.", ["a", "red", "circle"]) is None

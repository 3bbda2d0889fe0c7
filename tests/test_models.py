"""Loading checkpoints: diffusers folders, LoRA with a scale, device and dtype resolution."""

import copy

import numpy as np
import pytest
import torch

from t2vzero import TextToVideoZero
from t2vzero.errors import UserError
from t2vzero.models import load_components, resolve_device, resolve_dtype

KW = dict(video_length=2, height=64, width=64, num_inference_steps=4, progress=False)


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory, tiny):
    """A random LoRA on the tiny UNet's attention projections, saved the way diffusers saves LoRAs."""
    from diffusers import StableDiffusionPipeline

    from loras import random_lora

    return random_lora(tiny["unet"], tmp_path_factory.mktemp("lora"), StableDiffusionPipeline)


def video(pipe):
    return pipe("a red circle", generator=torch.Generator().manual_seed(0), **KW).frames


def test_a_diffusers_folder_loads_the_same_weights(tiny, tiny_model_dir):
    loaded = TextToVideoZero.from_pretrained(str(tiny_model_dir), device="cpu")
    assert loaded.unet.dtype == torch.float32 and loaded.defaults == {}
    assert np.abs(video(loaded) - video(TextToVideoZero(**tiny))).max() < 1e-5


def test_loading_passes_the_dtype_without_a_deprecation_warning(tiny_model_dir):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # diffusers warns when given the old `torch_dtype` name
        components, _ = load_components(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    assert components["unet"].dtype == torch.bfloat16


def test_lora_scale_zero_is_the_base_model_and_scale_changes_output(tiny_model_dir, lora_file):
    base = video(TextToVideoZero.from_pretrained(str(tiny_model_dir)))
    zero = video(TextToVideoZero.from_pretrained(str(tiny_model_dir), lora=[f"{lora_file}:0"]))
    half = video(TextToVideoZero.from_pretrained(str(tiny_model_dir), lora=[(str(lora_file), 0.5)]))
    full = video(TextToVideoZero.from_pretrained(str(tiny_model_dir), lora=[str(lora_file)]))
    assert np.abs(zero - base).max() < 1e-5
    assert np.abs(full - base).max() > 1e-3 and np.abs(full - half).max() > 1e-4


def test_lora_errors(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_components(str(tiny_model_dir), lora=[str(tmp_path / "none.safetensors")])
    pickled = tmp_path / "lora.bin"
    pickled.write_bytes(b"\x80\x04.")
    with pytest.raises(UserError, match="--allow-pickle"):
        load_components(str(tiny_model_dir), lora=[str(pickled)])


def test_model_defaults_file_is_read(tiny_model_dir, tmp_path):
    import json
    import shutil

    model = tmp_path / "with-defaults"
    shutil.copytree(tiny_model_dir, model)
    (model / "t2vzero.json").write_text(json.dumps({"height": 64, "width": 64, "motion": [24, 0]}))
    pipe = TextToVideoZero.from_pretrained(str(model))
    assert pipe.native_size() == (64, 64) and pipe.defaults["motion"] == [24, 0]


def test_device_and_dtype_resolution():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda", "mps")
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.float16
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(UserError, match="unknown dtype"):
        resolve_dtype("int8", "cpu")


def test_single_file_safetensors_loads_offline_with_a_config_folder(tiny, tiny_model_dir, tmp_path, capsys):
    from ldm_format import save_ldm_checkpoint
    from t2vzero.cli import run

    path = tmp_path / "tiny-sd.safetensors"
    save_ldm_checkpoint(tiny, path)
    components, _ = load_components(str(path), config=str(tiny_model_dir))
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = tiny[name].state_dict(), components[name].state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k].reshape(ours[k].shape)) for k in ours)
    out = tmp_path / "v.gif"
    code = run(["generate", "a red circle", "--model", str(path), "--config", str(tiny_model_dir), "--size", "64x64",
                "--steps", "3", "--frames", "2", "-o", str(out)])
    assert code == 0 and out.is_file(), capsys.readouterr().err


def test_every_video_command_takes_a_single_file_with_its_config(tiny, tiny_model_dir, image_path, tmp_path, capsys):
    from clips import moving_square
    from ldm_format import save_ldm_checkpoint
    from t2vzero.cli import run
    from t2vzero.video import write_video

    path = tmp_path / "tiny-sd.safetensors"
    save_ldm_checkpoint(tiny, path)
    clip = write_video(moving_square(3, 48, 64, top=12, side=20, left=4, step=5, colour=(220, 40, 40), ground=240),
                       tmp_path / "clip/", fps=8)
    fast = ["--model", str(path), "--config", str(tiny_model_dir), "--steps", "4"]
    for i, args in enumerate((["animate", str(image_path), "a red square", "--frames", "2"],
                              ["restyle", str(clip), "a blue square", "--resolution", "64"])):
        out = tmp_path / f"{i}.gif"
        code = run([*args, *fast, "-o", str(out)])
        assert code == 0 and out.is_file(), (args[0], capsys.readouterr().err)
    for command in ("control", "edit"):  # the same loading options (their runs need a ControlNet or an 8-channel UNet)
        assert run([command, "--help"]) == 0 and "--config" in capsys.readouterr().out
    # Without it, offline, the fix named is an option the command has; a folder needs none.
    code = run(["animate", str(image_path), "x", "--model", str(path), "-o", str(tmp_path / "n.gif")])
    err = capsys.readouterr().err
    assert code == 2 and err.splitlines()[-1].startswith("error:") and "needs --config" in err.splitlines()[-1], err
    code = run(["restyle", str(clip), "x", "--model", str(tiny_model_dir), "--config", str(tiny_model_dir),
                "-o", str(tmp_path / "n.gif")])
    err = capsys.readouterr().err
    assert code == 2 and "--config only applies to a single-file" in err, err
    assert not (tmp_path / "n.gif").exists()


def test_one_lora_may_be_given_as_a_string_or_path(tiny_model_dir, lora_file):
    as_list = video(TextToVideoZero.from_pretrained(str(tiny_model_dir), lora=[str(lora_file)]))
    for one in (str(lora_file), lora_file, [lora_file]):
        assert np.abs(video(TextToVideoZero.from_pretrained(str(tiny_model_dir), lora=one)) - as_list).max() < 1e-6


@pytest.mark.parametrize("text,match", [
    ("{not json", "not valid JSON"), ("[1, 2]", "JSON object"), ('{"heigth": 64}', "unknown key 'heigth'"),
    ('{"height": "abc"}', "height must be"), ('{"motion": 5}', "motion must be"),
    ('{"guidance_scale": NaN}', "guidance_scale must be"), ('{"vocabulary": "red"}', "vocabulary must be"),
])
def test_a_bad_defaults_file_is_named(tiny_model_dir, tmp_path, text, match):
    import shutil

    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    (model / "t2vzero.json").write_text(text)
    with pytest.raises(UserError, match=match):
        load_components(str(model))


def test_a_home_relative_model_keeps_its_defaults(tiny_model_dir, tmp_path, monkeypatch):
    import json
    import shutil

    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copytree(tiny_model_dir, tmp_path / "m")
    (tmp_path / "m" / "t2vzero.json").write_text(json.dumps({"height": 32, "width": 48}))
    pipe = TextToVideoZero.from_pretrained("~/m", device="cpu")
    assert pipe.native_size() == (32, 48)


def test_a_tokenizer_without_a_length_uses_the_text_encoders(tiny):
    tokenizer = copy.deepcopy(tiny["tokenizer"])
    tokenizer.model_max_length = int(1e30)  # what transformers sets when a tokenizer config has no length
    out = video(TextToVideoZero(**{**tiny, "tokenizer": tokenizer}))
    assert np.abs(out - video(TextToVideoZero(**tiny))).max() < 1e-6


def test_a_junk_safetensors_header_is_unreadable_not_a_memory_error(tmp_path):
    from t2vzero.models import safetensors_header

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a LoRA")  # its first 8 bytes read as a header length of ~7e18
    assert safetensors_header(junk) is None
    good = tmp_path / "good.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2, 3)}, str(good))
    assert safetensors_header(good)["w"]["shape"] == [2, 3]

"""Camera paths through the one generation loop, the Python API and the command line (tiny models)."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from t2vzero import TextToVideoZero
from t2vzero.cli import run
from t2vzero.errors import UserError
from t2vzero.modes.text2video import latents_at_t1
from t2vzero.motion import Keyframes, Pan, Rotate, Zoom, as_motion, warp_latents
from t2vzero.options import motion_from_options
from t2vzero.schedule import forward_jump

KW = dict(video_length=4, height=64, width=64, num_inference_steps=8, t0=300, t1=700, progress=False)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def pipe():
    from t2vzero.tiny import make_tiny_components

    return TextToVideoZero(**make_tiny_components(seed=3))


def test_a_pair_a_spec_and_a_pan_give_the_same_frames(pipe, latent_output):
    runs = [pipe("a red circle", motion=m, generator=seeded(1), **KW).frames[0]
            for m in ((64.0, 0.0), "64,0", "pan:64,0", Pan(64.0, 0.0), as_motion([64, 0]))]
    assert all(np.array_equal(runs[0], r) for r in runs[1:])
    other = pipe("a red circle", motion="zoom:1.5", generator=seeded(1), **KW).frames[0]
    assert np.array_equal(other[0], runs[0][0]) and not np.array_equal(other[1:], runs[0][1:])  # frame 1 unmoved


def test_frames_start_from_frame_one_moved_along_the_path(pipe):
    path = "zoom:1.5+rotate:30"
    anchor = pipe.anchor("a red circle", motion=path, generator=seeded(2), **{k: v for k, v in KW.items()
                                                                              if k != "progress"})
    assert anchor.motion == as_motion(path)
    got = latents_at_t1(anchor, [0, 1, 3])
    sched = anchor.scheduler_at_t1
    moved = warp_latents(anchor.x_t0[0][None].expand(2, -1, -1, -1), path, [1, 3], anchor.size)
    expected = forward_jump(moved, anchor.forward_noise[0, [0, 2]], sched.alphas_cumprod, anchor.jump.t0,
                            anchor.jump.t1, alpha_bars=anchor.jump.alpha_bars)
    assert torch.equal(got[0, 0], anchor.x_t1[0]) and torch.allclose(got[0, 1:], expected)
    unmoved = forward_jump(anchor.x_t0[0][None].expand(2, -1, -1, -1), anchor.forward_noise[0, [0, 2]],
                           sched.alphas_cumprod, anchor.jump.t0, anchor.jump.t1, alpha_bars=anchor.jump.alpha_bars)
    assert not torch.allclose(got[0, 1:], unmoved)


def test_background_smoothing_moves_frame_one_along_the_same_path(pipe, latent_output):
    def background(frames):
        return np.zeros(frames.shape[:3], bool)

    out = pipe("a red circle", motion=Zoom(2.0), generator=seeded(1), background_smoothing=1.0,
               foreground_masks=background, **KW).frames[0]
    first = torch.from_numpy(out[0]).permute(2, 0, 1)[None]  # latent_output gives (h, w, C) per frame
    for k in range(1, 4):
        expected = warp_latents(first, Zoom(2.0), [k], (64, 64))[0].permute(1, 2, 0).numpy()
        assert np.abs(out[k] - expected).max() < 1e-5, k
    assert np.abs(out[1] - out[0]).max() > 1e-3  # the check can fail: frame 2 is not frame 1


def test_compat_mode_takes_translations_and_refuses_other_paths(pipe):
    keys = Keyframes(as_motion_keys([(0, 0, 0), (3, 96, -32)]))
    out = pipe("a red circle", motion=keys, compat="diffusers", generator=seeded(1), **KW).frames[0]
    assert out.shape == (4, 64, 64, 3)
    for path in ("zoom:1.1", Rotate(5.0), np.zeros((3, 2, 64, 64))):
        with pytest.raises(UserError, match="translation only") as err:
            pipe("a red circle", motion=path, compat="diffusers", **KW)
        assert "\n" not in str(err.value)


def as_motion_keys(points):
    from t2vzero.motion import Key

    return tuple(Key(frame, dx, dy) for frame, dx, dy in points)


def test_the_api_checks_paths_against_the_video(pipe):
    with pytest.raises(UserError, match="out of range"):
        pipe("a red circle", motion=Keyframes(as_motion_keys([(0, 0, 0), (6, 64, 0)])), **KW)
    with pytest.raises(UserError, match="needs 3"):
        pipe("a red circle", motion=np.zeros((5, 2, 64, 64)), **KW)
    with pytest.raises(UserError, match="the flow is 32x32"):
        pipe("a red circle", motion=np.zeros((3, 2, 32, 32)), **KW)
    with pytest.raises(UserError, match="2x3 sampling map"):
        pipe("a red circle", motion=lambda k: np.eye(4), **KW)


def test_a_model_folder_may_default_to_a_camera_path(tiny_model_dir, tmp_path):
    model = tmp_path / "with-path"
    shutil.copytree(tiny_model_dir, model)
    (model / "t2vzero.json").write_text(json.dumps({"motion": "zoom:1.05+pan:8,0"}))
    pipe = TextToVideoZero.from_pretrained(str(model))
    assert pipe.generation_args()["motion"] == as_motion("zoom:1.05+pan:8,0")
    (model / "t2vzero.json").write_text(json.dumps({"motion": "spin:3"}))
    with pytest.raises(UserError, match="motion must be"):
        TextToVideoZero.from_pretrained(str(model))


# --- Command line ---

def cli(capsys, *args):
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


FAST = ["--size", "64x64", "--steps", "4", "--frames", "3"]
KEYS = [{"frame": 0, "dx": 0, "dy": 0, "zoom": 1, "rotate": 0}, {"frame": 2, "dx": 64, "dy": 0, "zoom": 1.2,
                                                                  "rotate": 10}]


def test_generate_with_a_camera_path_and_a_keyframe_file(capsys, tmp_path, tiny_model_dir):
    code, out, err = cli(capsys, "generate", "a red circle", "--model", str(tiny_model_dir), *FAST,
                         "--motion", "zoom:1.05+rotate:3", "-o", str(tmp_path / "a.gif"))
    assert code == 0 and out.strip() == str(tmp_path / "a.gif"), err
    (tmp_path / "path.json").write_text(json.dumps(KEYS))
    code, out, err = cli(capsys, "generate", "a red circle", "--model", str(tiny_model_dir), *FAST,
                         "--motion-file", str(tmp_path / "path.json"), "-o", str(tmp_path / "b.gif"))
    assert code == 0 and (tmp_path / "b.gif").is_file(), err


def test_motion_options_helper():
    assert motion_from_options(None, None) is None
    assert motion_from_options(None, None, True) == Pan(0.0, 0.0)
    assert motion_from_options("zoom:1.1", None) == Zoom(1.1)
    with pytest.raises(UserError, match="--motion and --motion-file contradict"):
        motion_from_options("zoom:1.1", "path.json")


def _files(tmp_path):
    (tmp_path / "unordered.json").write_text(json.dumps([KEYS[0], {**KEYS[1], "frame": 2}, {**KEYS[1], "frame": 1}]))
    (tmp_path / "long.json").write_text(json.dumps([KEYS[0], {**KEYS[1], "frame": 5}]))
    (tmp_path / "partial.json").write_text(json.dumps([{"frame": 0, "dx": 0}]))
    np.save(tmp_path / "flat.npy", np.zeros((2, 64, 64)))
    np.save(tmp_path / "nan.npy", np.full((2, 2, 64, 64), np.nan))
    np.save(tmp_path / "short.npy", np.zeros((1, 2, 64, 64)))
    np.save(tmp_path / "small.npy", np.zeros((2, 2, 32, 32)))


@pytest.mark.parametrize("args,match", [
    (["--motion", "zoom:1.02+wobble:3"], "'wobble:3'"),
    (["--motion", "zoom:x"], "zoom:F"),
    (["--motion", "4,0", "--motion-file", "unordered.json"], "--motion and --motion-file contradict"),
    (["--motion-file", "unordered.json", "--no-motion"], "--motion-file and --no-motion contradict"),
    (["--motion-file", "unordered.json"], "out of order"),
    (["--motion-file", "long.json"], "frame 5 is out of range"),
    (["--motion-file", "partial.json"], "exactly the fields"),
    (["--motion-file", "flat.npy"], "shape (2, 64, 64)"),
    (["--motion-file", "nan.npy"], "NaN"),
    (["--motion-file", "short.npy"], "needs 2"),
    (["--motion-file", "small.npy"], "the flow is 32x32"),
    (["--motion-file", "none.json"], "does not exist"),
])
def test_bad_camera_paths_are_one_line_exit_2_before_loading_weights(capsys, tmp_path, monkeypatch, args, match):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    _files(inputs)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(inputs)
    # A model that does not exist: had weights been loaded first, the error would be about the model.
    code, out, err = cli(capsys, "generate", "a red circle", "--model", "no/such/model", *FAST, *args,
                         "-o", str(work / "v.mp4"), "--sheet")
    assert code == 2 and match in err and err.startswith("error:") and err.count("\n") == 1, err
    if args[0] == "--motion" and "contradict" not in match:
        assert "the grammar: DX,DY | pan:DX,DY" in err
    assert out == "" and os.listdir(work) == []


def test_a_flow_of_another_size_is_refused_before_loading_when_the_size_comes_from_the_model_or_image(
        capsys, tmp_path, monkeypatch, tiny_model_dir, image_path):
    from t2vzero.plan import native_size_before_loading

    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded before the flow's size was checked")

    monkeypatch.setattr(TextToVideoZero, "from_pretrained", classmethod(no_loading))
    native = native_size_before_loading(str(tiny_model_dir))
    np.save(tmp_path / "flow.npy", np.zeros((2, 2, native[1] + 8, native[0]), np.float32))
    code, _out, err = cli(capsys, "generate", "a red circle", "--model", str(tiny_model_dir), "--frames", "3",
                         "--motion-file", str(tmp_path / "flow.npy"), "-o", str(tmp_path / "v.mp4"))
    assert code == 2 and f"but the video is {native[0]}x{native[1]}" in err and err.count("\n") == 1, err
    # animate's size is its image's (64x48) fitted to --resolution; its error names no option it lacks (--size).
    np.save(tmp_path / "square.npy", np.zeros((2, 2, 64, 64), np.float32))
    code, _out, err = cli(capsys, "animate", str(image_path), "x", "--model", str(tiny_model_dir), "--frames", "3",
                         "--resolution", "64", "--motion-file", str(tmp_path / "square.npy"),
                         "-o", str(tmp_path / "a.mp4"))
    assert code == 2 and "the flow is 64x64 but the video is 64x48" in err and "--size" not in err, err
    code, _out, err = cli(capsys, "animate", str(image_path), "x", "--model", str(tiny_model_dir), "--frames", "40",
                         "--motion", "zoom:1e10", "-o", str(tmp_path / "z.mp4"))  # overflowed with a traceback
    assert code == 2 and "beyond x10000 either way" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.npy", "square.npy"]

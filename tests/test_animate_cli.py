"""`t2vzero animate` and `t2vzero restyle` end to end on tiny models, and their bad inputs."""

import numpy as np
import pytest
from PIL import Image

from clips import moving_square
from t2vzero.cli import run
from t2vzero.video import read_video, write_video


def cli(capsys, *args):
    code = run([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    video = moving_square(5, 48, 64, top=12, side=20, left=4, step=5, colour=(220, 40, 40), ground=240)
    return write_video(video, tmp_path_factory.mktemp("clip") / "clip/", fps=8)


@pytest.fixture(scope="module")
def controlnet_dir(tmp_path_factory, tiny):
    from diffusers import ControlNetModel

    path = tmp_path_factory.mktemp("cn") / "controlnet"
    ControlNetModel.from_unet(tiny["unet"]).save_pretrained(path, safe_serialization=True)
    return path


def test_animate_writes_a_video_and_sheet_at_the_images_size(capsys, tmp_path, tiny_model_dir, image_path):
    out = tmp_path / "anim.mp4"
    code, stdout, err = cli(capsys, "animate", image_path, "a red square", "--model", tiny_model_dir,
                            "--resolution", 64, "--frames", 3, "--steps", 4, "--motion", "16,0", "--chunk-size", 2,
                            "-o", out, "--sheet")
    assert code == 0, err
    frames, _ = read_video(out)
    assert frames.shape == (3, 48, 64, 3) and stdout.strip() == str(out) and (tmp_path / "anim_sheet.png").is_file()
    assert "note" not in err  # 64x48 is already a multiple of 8 at --resolution 64


def test_animate_resizes_an_odd_image_with_a_note(capsys, tmp_path, tiny_model_dir):
    odd = tmp_path / "odd.png"
    Image.fromarray(np.full((30, 50, 3), 128, np.uint8)).save(odd)
    code, _, err = cli(capsys, "animate", odd, "--model", tiny_model_dir, "--frames", 2, "--steps", 3,
                       "-o", tmp_path / "frames/")
    assert code == 0, err
    assert "note: " in err and "50x30 to 64x40" in err  # the model's native size (64) on the longer side
    assert len(list((tmp_path / "frames").iterdir())) == 2


def test_restyle_writes_a_video_with_and_without_a_controlnet(capsys, tmp_path, tiny_model_dir, clip_path,
                                                               controlnet_dir):
    out = tmp_path / "restyled.mp4"
    code, _, err = cli(capsys, "restyle", clip_path, "a blue square", "--model", tiny_model_dir, "--strength", 0.6,
                       "--resolution", 64, "--steps", 5, "--chunk-size", 2, "-o", out, "--sheet", "--fps", 5)
    assert code == 0, err
    frames, fps = read_video(out)
    assert frames.shape == (5, 48, 64, 3) and fps == pytest.approx(5)
    code, _, err = cli(capsys, "restyle", clip_path, "a blue square", "--model", tiny_model_dir, "--resolution", 64,
                       "--steps", 5, "--controlnet", f"{controlnet_dir}:0.5", "--condition", "canny",
                       "-o", tmp_path / "cn.gif")
    assert code == 0, err and (tmp_path / "cn.gif").is_file()


def test_restyle_invert_starts_from_the_frames_own_inversion(capsys, tmp_path, tiny_model_dir, clip_path):
    videos = {}
    for invert in (True, False):
        for seed in (0, 1):
            out = tmp_path / f"r{invert}{seed}.gif"
            code, _, err = cli(capsys, "restyle", clip_path, "a blue square", "--model", tiny_model_dir,
                               "--resolution", 64, "--steps", 5, "--seed", seed, *(["--invert"] if invert else []),
                               "-o", out)
            assert code == 0, err
            videos[invert, seed] = read_video(out)[0]
    assert np.array_equal(videos[True, 0], videos[True, 1])  # no noise drawn: the seed has no effect
    assert not np.array_equal(videos[False, 0], videos[False, 1])
    assert not np.array_equal(videos[True, 0], videos[False, 0])


@pytest.mark.parametrize("case", ["not-image", "missing", "small", "motion", "both-motions", "resolution", "frames",
                                  "strength-0", "strength-big", "strength-nan", "no-step", "compat", "condition",
                                  "not-video", "sheet"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(capsys, tmp_path, tiny_model_dir, image_path, clip_path,
                                                         case):
    text = tmp_path / "notes.png"
    text.write_text("hello")
    tiny_png = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tiny_png)
    out = tmp_path / "out.mp4"
    animate = ["animate", image_path, "--model", tiny_model_dir, "--steps", 2, "-o", out]
    restyle = ["restyle", clip_path, "x", "--model", tiny_model_dir, "--resolution", 64, "--steps", 4, "-o", out]
    args, match = {
        "not-image": (["animate", text, "--model", tiny_model_dir, "-o", out], "not a readable image"),
        "missing": (["animate", tmp_path / "none.png", "--model", tiny_model_dir, "-o", out], "does not exist"),
        "small": (["animate", tiny_png, "--model", tiny_model_dir, "-o", out], "too small"),
        "motion": ([*animate, "--motion", "1,2,3"], "motion"),
        "both-motions": ([*animate, "--motion", "1,2", "--no-motion"], "contradict"),
        "resolution": ([*animate, "--resolution", 4], "--resolution"),
        "frames": ([*animate, "--frames", 0], "frames"),
        "strength-0": ([*restyle, "--strength", 0], "strength must be in (0, 1]"),
        "strength-big": ([*restyle, "--strength", 1.5], "strength must be in (0, 1]"),
        "strength-nan": ([*restyle, "--strength", "nan"], "strength must be in (0, 1]"),
        "no-step": ([*restyle, "--strength", 0.1], "runs no step"),
        "compat": ([*restyle, "--compat", "diffusers"], "no diffusers reference"),
        "condition": ([*restyle, "--condition", "canny"], "1 conditions for 0 ControlNets"),
        "not-video": (["restyle", text, "x", "--model", tiny_model_dir, "-o", out], "not a readable video"),
        "sheet": ([*animate, "--sheet"], "contact sheet"),
    }[case]
    if case == "sheet":
        (tmp_path / "out_sheet.png").mkdir()
    code, _out, err = cli(capsys, *args)
    assert code == 2 and match in err and err.startswith("error:") and err.count("\n") == 1, err
    assert not out.exists()

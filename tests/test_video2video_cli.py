"""`t2vzero control` and `t2vzero edit` end to end on tiny models, and their bad inputs."""

import os

import numpy as np
import pytest

from clips import moving_square
from t2vzero.cli import run
from t2vzero.errors import UserError
from t2vzero.inputs import canny, fit_resolution, load_clip
from t2vzero.video import read_video, write_video


def square_video(frames=6, h=48, w=64):
    return moving_square(frames, h, w, top=12, side=20, left=4, step=5, colour=(230, 60, 40), ground=30)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return write_video(square_video(), tmp_path_factory.mktemp("in") / "clip/", fps=8)


@pytest.fixture(scope="module")
def controlnet_dir(tmp_path_factory, tiny):
    from diffusers import ControlNetModel

    path = tmp_path_factory.mktemp("cn") / "controlnet"
    ControlNetModel.from_unet(tiny["unet"]).save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def pix2pix_dir(tmp_path_factory):
    from diffusers import StableDiffusionInstructPix2PixPipeline

    from t2vzero.tiny import make_tiny_components

    path = tmp_path_factory.mktemp("p2p") / "pix2pix"
    StableDiffusionInstructPix2PixPipeline(**make_tiny_components(seed=3, in_channels=8), safety_checker=None,
                                           feature_extractor=None, requires_safety_checker=False).save_pretrained(
        path, safe_serialization=True)
    return path


def cli(capsys, *args):
    code = run([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_load_clip_range_stride_and_limits(tmp_path):
    path = write_video(square_video(frames=16), tmp_path / "v.mp4", fps=8)
    frames, fps = load_clip(path, start=0.5, end=1.5, every=2)
    assert len(frames) == 4 and fps == pytest.approx(4.0)
    frames, _ = load_clip(path, max_frames=3)
    assert len(frames) == 3
    for start, end in ((3.0, None), (0.5, 0.25), (0.0, 5.0), (-1.0, None)):
        with pytest.raises(UserError, match="outside"):
            load_clip(path, start=start, end=end)
    with pytest.raises(UserError, match="finite"):
        load_clip(path, start=float("nan"))
    with pytest.raises(UserError, match="no frame"):  # a range narrower than one frame
        load_clip(path, start=0.70, end=0.74)


def test_fit_resolution_keeps_aspect_with_multiples_of_8():
    out = fit_resolution(np.zeros((2, 480, 640, 3), np.uint8), 512)
    assert out.shape == (2, 384, 512, 3)
    out = fit_resolution(np.zeros((1, 100, 50, 3), np.uint8), 64)
    assert out.shape[1:3] == (64, 32)


def test_canny_finds_the_square_edges():
    edges = canny(square_video(frames=1))
    assert edges.shape == (1, 48, 64, 3) and edges.dtype == np.uint8
    ys, xs = np.nonzero(edges[0, ..., 0])
    assert 10 <= ys.min() <= 13 and 30 <= ys.max() <= 33 and 2 <= xs.min() <= 5


def test_control_writes_video_and_sheet(capsys, tmp_path, tiny_model_dir, controlnet_dir, clip_dir):
    out = tmp_path / "ctrl.mp4"
    code, stdout, err = cli(capsys, "control", clip_dir, "a red square", "--model", tiny_model_dir,
                            "--controlnet", f"{controlnet_dir}:0.8", "--controlnet", controlnet_dir,
                            "--condition", "canny", "--condition", clip_dir, "--resolution", 64,
                            "--steps", 3, "--chunk-size", 3, "-o", out, "--sheet", "--fps", 5)
    assert code == 0, err
    frames, fps = read_video(out)
    assert frames.shape == (6, 48, 64, 3) and fps == pytest.approx(5)
    assert stdout.strip() == str(out) and (tmp_path / "ctrl_sheet.png").is_file()


def test_edit_writes_video_at_source_rate_over_stride(capsys, tmp_path, pix2pix_dir):
    src = write_video(square_video(frames=8), tmp_path / "src.mp4", fps=8)
    out = tmp_path / "edit"
    code, _, err = cli(capsys, "edit", src, "make it blue", "--model", pix2pix_dir, "--resolution", 64,
                       "--steps", 3, "--every", 2, "-o", f"{out}/")
    assert code == 0, err
    assert len(os.listdir(out)) == 4


@pytest.mark.parametrize("case", ["not-video", "empty", "range", "frames", "aspect", "not-a-controlnet", "canny",
                                  "mixed", "arch", "channels", "depth", "typo", "fps", "guidance", "sheet"])
def test_video_to_video_bad_input(capsys, tmp_path, tiny_model_dir, controlnet_dir, pix2pix_dir, clip_dir, case):
    text = tmp_path / "notes.mp4"
    text.write_text("hello")
    empty = tmp_path / "empty"
    empty.mkdir()
    short = write_video(square_video(frames=3), tmp_path / "short/", fps=8)
    square = write_video(np.zeros((6, 64, 64, 3), np.uint8), tmp_path / "square/", fps=8)
    from diffusers import ControlNetModel

    other = tmp_path / "other-cn"
    ControlNetModel(block_out_channels=(32, 64), cross_attention_dim=16, norm_num_groups=16,
                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), attention_head_dim=8,
                    ).save_pretrained(other)
    base = ["--model", tiny_model_dir, "--resolution", 64, "--steps", 2, "-o", tmp_path / "out.mp4"]
    control = ["control", clip_dir, "x", "--controlnet", controlnet_dir]
    args, match = {
        "not-video": (["control", text, "x", "--controlnet", controlnet_dir], "not a readable video"),
        "empty": (["control", empty, "x", "--controlnet", controlnet_dir], "no image frames"),
        "range": ([*control, "--start", 10, "--fps", 8], "outside"),
        "frames": ([*control, "--condition-video", short], "has 3 frames but the input has 6"),
        "aspect": ([*control, "--condition-video", square], "aspect ratios differ"),
        "not-a-controlnet": (["control", clip_dir, "x", "--controlnet", tiny_model_dir / "unet", "--dry-run"],
                             "holds a UNet2DConditionModel (its config.json), not a ControlNet"),
        "canny": ([*control, "--canny-low", 300, "--canny-high", 100], "thresholds must be >= 0 with low <= high"),
        "mixed": ([*control, "--controlnet", controlnet_dir, "--condition", "canny", "--condition-video", clip_dir],
                  "cannot say which ControlNet each map is for"),
        "arch": (["control", clip_dir, "x", "--controlnet", other], "does not match the base model"),
        "channels": (["edit", clip_dir, "x"], "input channels"),
        "depth": ([*control, "--condition", "depth"], "--condition-video"),
        "typo": ([*control, "--condition", "cany"], "neither canny"),
        "fps": ([*control, "--fps", "1e-6"], "fps must be a number"),
        "guidance": (["edit", clip_dir, "x", "--image-guidance", "nan"], "--image-guidance must be a finite"),
        "sheet": ([*control, "--sheet"], "contact sheet"),
    }[case]
    if case == "sheet":
        (tmp_path / "out_sheet.png").mkdir()
    code, _out, err = cli(capsys, *args, *base)
    assert code == 2 and match in err and err.startswith("error:") and err.count("\n") == 1, err
    assert not (tmp_path / "out.mp4").exists()
    if case == "channels":
        code, _, err = cli(capsys, "edit", clip_dir, "x", "--model", pix2pix_dir, "--resolution", 64, "--steps", 0,
                           "-o", tmp_path / "out.mp4")
        assert code == 2 and "steps" in err


def test_annotator_weights_must_exist_for_pose():
    with pytest.raises(UserError, match="--condition-video"):
        from t2vzero.inputs import annotate

        annotate(square_video(frames=1), "pose", None)


def test_depth_and_pose_use_controlnet_aux_detectors_from_the_given_weights(monkeypatch):
    """The annotator plumbing, with a stand-in controlnet_aux module (the real one needs downloaded weights)."""
    import sys
    import types

    from PIL import Image

    loaded = []

    class Detector:
        @classmethod
        def from_pretrained(cls, path):
            loaded.append((cls.__name__, path))
            return cls()

        def __call__(self, image):
            grey = np.asarray(image.convert("L"))
            return Image.fromarray(255 - grey).resize((32, 16))  # detectors may answer at their own size

    fake = types.ModuleType("controlnet_aux")
    fake.MidasDetector = type("MidasDetector", (Detector,), {})
    fake.OpenposeDetector = type("OpenposeDetector", (Detector,), {})
    monkeypatch.setitem(sys.modules, "controlnet_aux", fake)
    from t2vzero.inputs import annotate

    frames = square_video(frames=3)
    depth = annotate(frames, "depth", "/models/annotators")
    pose = annotate(frames, "pose", "/models/annotators")
    assert depth.shape == pose.shape == (3, 48, 64, 3) and depth.dtype == np.uint8
    assert loaded == [("MidasDetector", "/models/annotators"), ("OpenposeDetector", "/models/annotators")]
    with pytest.raises(UserError, match="--annotator"):
        annotate(frames, "depth", None)


def test_dry_run_of_control_and_edit_estimates_from_the_clip_and_loads_nothing(clip_dir, tiny_model_dir,
                                                                              controlnet_dir, pix2pix_dir, tmp_path,
                                                                              monkeypatch, capsys):
    import t2vzero.models

    monkeypatch.setattr(t2vzero.models, "load_components", lambda *a, **k: pytest.fail("weights were loaded"))
    monkeypatch.setattr(t2vzero.models, "load_controlnet", lambda *a, **k: pytest.fail("a ControlNet was loaded"))
    out = tmp_path / "out.mp4"
    common = ["--resolution", "64", "--max-frames", "4", "-o", str(out), "--sheet", "--dry-run"]
    assert run(["control", str(clip_dir), "a red square", "--model", str(tiny_model_dir), "--controlnet",
                str(controlnet_dir), "--chunk-size", "2", *common]) == 0
    with_net = capsys.readouterr().out
    assert "64x48, 4 frames, chunk 2" in with_net and "UNet calls of 4 rows" in with_net  # 2 frames x 2 groups
    assert run(["edit", str(clip_dir), "make it blue", "--model", str(pix2pix_dir), *common]) == 0
    edit = capsys.readouterr().out
    assert "64x48, 4 frames, chunk 4" in edit and "UNet calls of 12 rows" in edit  # 4 frames x 3 groups
    assert run(["edit", str(clip_dir), "make it blue", "--model", str(pix2pix_dir), "--guidance", "1", *common]) == 0
    assert "UNet calls of 4 rows" in capsys.readouterr().out  # guidance off: one group
    assert not any(tmp_path.iterdir())


def test_a_controlnets_weights_and_residuals_add_to_the_estimate(tiny_model_dir, controlnet_dir):
    from t2vzero.plan import plan_run

    kw = dict(mode="control", frames=4, size=(64, 64), steps=20, guidance=9.0, chunk_size=None, device="cpu",
              dtype="float32")
    alone = plan_run(str(tiny_model_dir), None, **kw).estimate
    with_net = plan_run(str(tiny_model_dir), None, controlnets=[str(controlnet_dir)], **kw).estimate
    from safetensors.torch import load_file

    net_params = sum(p.numel() for p in load_file(str(next(controlnet_dir.glob("*.safetensors")))).values())
    assert with_net.weights - alone.weights == 4 * net_params
    assert with_net.unet_activations > alone.unet_activations


@pytest.mark.parametrize("kind", ["clip.mp4", "clip.gif", "frames/"])
def test_streamed_clip_selection_equals_slicing_the_whole_video(tmp_path, kind):
    """The streamed reader keeps exactly the frames that slicing the decoded whole video would keep."""
    path = write_video(square_video(frames=10), tmp_path / kind, fps=10)  # all distinct (GIF merges repeats)
    whole, fps = read_video(path)
    assert len(whole) == 10
    rate = fps or 10.0
    for start, end, every, most in ((None, None, 1, None), (0.3, 0.8, 3, None), (None, None, 4, 2),
                                    (0.5, None, 2, 3), (None, 0.6, 1, 100)):
        frames, out_fps = load_clip(path, start=start, end=end, every=every, max_frames=most, fps=10.0)
        lo = round((start or 0) * rate)
        hi = len(whole) if end is None else round(end * rate)
        expected = whole[lo:hi][::every][:most]
        assert np.array_equal(frames, expected), (kind, start, end, every, most)
        assert out_fps == pytest.approx(rate / every)


def test_a_long_clip_is_never_held_whole(tmp_path):
    """Peak memory of reading the first frames does not grow with the clip's length, and a clip over a time
    limit is refused from its metadata before any frame is decoded."""
    import tracemalloc

    import t2vzero.video as video

    frame = np.zeros((180, 320, 3), np.uint8)
    short = write_video(np.repeat(frame[None], 20, axis=0), tmp_path / "short.mp4", fps=25)
    long = write_video(np.repeat(frame[None], 600, axis=0), tmp_path / "long.mp4", fps=25)

    def peak(path):
        tracemalloc.start()
        frames, _ = load_clip(path, max_frames=2)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(frames) == 2
        return top

    assert peak(long) <= 1.2 * peak(short) + 2**20  # reading 2 of 600 frames costs what 2 of 20 does
    decoded = []
    real = video._ffmpeg_frames
    try:
        video._ffmpeg_frames = lambda *a: (decoded.append(1), (yield from real(*a)))[1]
        with pytest.raises(UserError, match="longer than the limit of 10 s"):
            load_clip(long, max_seconds=10.0)  # 24 s
    finally:
        video._ffmpeg_frames = real
    assert not decoded
    assert len(load_clip(long, max_seconds=10.0, max_frames=200)[0]) == 200  # 8 s of it is within the limit


def test_the_input_clip_is_accepted_as_its_own_condition_video_at_any_resolution():
    """Fitting to --resolution rounds the sides to multiples of 8 (65x49 -> 72x56), which bends the aspect by
    more than the check's 2 %: a map of the source's own shape must still fit, and a really other one not."""
    from t2vzero.errors import UserError
    from t2vzero.inputs import fit_resolution, match_condition_video

    for (w, h), resolution in (((65, 49), 72), ((512, 20), 256), ((64, 48), 40)):
        source = np.random.default_rng(0).integers(0, 255, (2, h, w, 3), dtype=np.uint8)
        frames = fit_resolution(source, resolution)
        assert match_condition_video(source, frames, "the clip").shape == frames.shape
    with pytest.raises(UserError, match="aspect ratios differ"):
        match_condition_video(np.zeros((2, 64, 64, 3), np.uint8), fit_resolution(source, 40), "square maps")


def test_a_base_model_of_the_wrong_kind_is_refused_before_loading(capsys, tmp_path, tiny_model_dir, pix2pix_dir,
                                                                   tiny_sdxl_dir, controlnet_dir, clip_dir):
    """What a run would refuse once its weights loaded is told from the configs, so --dry-run refuses it too."""
    common = ["--resolution", 64, "--dry-run", "-o", tmp_path / "out.mp4"]
    for args, match in (
            (["edit", clip_dir, "x", "--model", tiny_model_dir], "takes 4 input channels, not 8; give an Instruct"),
            (["restyle", clip_dir, "x", "--model", pix2pix_dir], "give a text-to-image model for restyle"),
            (["control", clip_dir, "x", "--model", pix2pix_dir, "--controlnet", controlnet_dir],
             "give a text-to-image model for control"),
            (["control", clip_dir, "x", "--model", tiny_sdxl_dir, "--controlnet", controlnet_dir],
             "is for SD 1.x (cross-attention dim 32); the base is SDXL")):
        code, out, err = cli(capsys, *args, *common)
        assert code == 2 and match in err and err.count("\n") == 1 and out == "", (args[0], err)
    assert list(tmp_path.iterdir()) == []

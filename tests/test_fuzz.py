"""The command line under random options and files: never a traceback, only the conventional exit codes, and
nothing left behind. Loading weights is where each example stops: every check before it runs for real."""

import json
import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from t2vzero.cli import run

EXIT_CODES = {0, 1, 2, 130, 143}
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Loaded(BaseException):
    """Raised where weights would load: the arguments passed every check before it."""


@pytest.fixture(scope="module")
def files(tiny_model_dir, tiny_controlnet_dir):
    """Inputs the options may name: a model, a clip, a non-video, a missing path, a folder, links."""
    root = Path(tempfile.mkdtemp(prefix="t2vzero-fuzz-"))
    from t2vzero.video import write_video

    clip = write_video(np.full((3, 32, 32, 3), 90, np.uint8), root / "clip.gif", fps=4)
    from PIL import Image

    Image.fromarray(np.full((24, 40, 3), 90, np.uint8)).save(root / "image.png")
    (root / "notes.txt").write_text("not a video")
    (root / "folder").mkdir()
    (root / "dangling").symlink_to(root / "nowhere")
    return {"model": str(tiny_model_dir), "controlnet": str(tiny_controlnet_dir), "clip": str(clip),
            "image": str(root / "image.png"), "text": str(root / "notes.txt"),
            "missing": str(root / "missing.mp4"), "folder": str(root / "folder"), "dangling": str(root / "dangling")}


@pytest.fixture
def stop_at_loading(monkeypatch):
    import t2vzero.models

    def loaded(*args, **kwargs):
        raise Loaded

    monkeypatch.setattr(t2vzero.models, "load_components", loaded)
    monkeypatch.setattr(t2vzero.models, "load_controlnet", loaded)


NUMBERS = st.one_of(st.integers(-10**6, 10**6), st.sampled_from(["nan", "inf", "-0", "1e309", "0x10", "", " "]),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr))
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
PATHS = st.sampled_from(["model", "clip", "text", "missing", "folder", "dangling", "controlnet"])


def typed(files):
    """Per option: mostly values of its own kind (so examples reach the deeper checks), sometimes anything."""
    ints = st.integers(-3, 3000).map(str)
    floats = st.one_of(st.floats(-20, 20).map(repr), st.sampled_from(["nan", "inf", "0", "1"]))
    sizes = st.tuples(st.integers(-8, 700), st.integers(-8, 700)).map(lambda p: f"{p[0]}x{p[1]}")
    motions = st.one_of(st.tuples(floats, floats).map(",".join),
                        st.sampled_from(["pan:4,0", "zoom:1.02+rotate:3", "zoom:0", "rotate:", "pan:1"]))
    paths = PATHS.map(lambda k: files[k])
    kinds = {
        "ints": ["--frames", "--steps", "--seed", "--t0", "--t1", "--chunk-size", "--cache-interval", "--every",
                 "--max-frames", "--resolution", "--canny-low", "--canny-high"],
        "floats": ["--guidance", "--fps", "--tome", "--guidance-rescale", "--background-smoothing", "--start",
                   "--end", "--image-guidance", "--strength"],
        "sizes": ["--size"], "motions": ["--motion"],
        "names": ["--scheduler", "--timestep-spacing", "--device", "--dtype", "--compat", "--offload", "--condition"],
        "paths": ["--lora", "--config", "--motion-file", "--controlnet"],
        "texts": ["--negative", "--prompt-2"],
    }
    names = st.sampled_from(["ddim", "euler-a", "lcm", "trailing", "leading", "model", "sequential", "cpu", "cuda",
                             "float16", "bfloat16", "auto", "diffusers", "t2vzero", "canny", "depth", "x"])
    own = {"ints": ints, "floats": floats, "sizes": sizes, "motions": motions, "names": names, "paths": paths,
           "texts": TEXT}
    junk = st.one_of(NUMBERS.map(str), TEXT, paths)
    return {option: st.one_of(own[kind], own[kind], own[kind], junk) for kind, options in kinds.items()
            for option in options}


OPTIONS = {
    "generate": ["--frames", "--steps", "--guidance", "--seed", "--size", "--motion", "--t0", "--t1", "--chunk-size",
                 "--fps", "--scheduler", "--timestep-spacing", "--tome", "--cache-interval", "--device", "--dtype",
                 "--lora", "--compat", "--negative", "--prompt-2", "--guidance-rescale", "--background-smoothing",
                 "--offload", "--config", "--motion-file"],
    "control": ["--condition", "--steps", "--guidance", "--start", "--end", "--every", "--max-frames",
                "--resolution", "--fps", "--chunk-size", "--canny-low", "--canny-high", "--scheduler", "--device"],
    "edit": ["--steps", "--guidance", "--image-guidance", "--start", "--end", "--every", "--max-frames",
             "--resolution", "--fps", "--chunk-size", "--scheduler", "--tome", "--device"],
    "animate": ["--frames", "--steps", "--guidance", "--seed", "--resolution", "--motion", "--t0", "--t1",
                "--chunk-size", "--fps", "--scheduler", "--device", "--dtype", "--lora", "--motion-file",
                "--cache-interval"],
    "restyle": ["--strength", "--condition", "--controlnet", "--steps", "--guidance", "--start", "--end", "--every",
                "--max-frames", "--resolution", "--fps", "--chunk-size", "--scheduler", "--device"],
}
FLAGS = ["--dry-run", "--sheet", "--no-motion", "--no-cross-frame-attention", "--force", "--compile",
         "--channels-last", "--vae-tiling", "--allow-pickle"]


def argv(files, command):
    values = typed(files)
    pairs = st.lists(st.sampled_from(OPTIONS[command]).flatmap(lambda o: st.tuples(st.just(o), values[o])),
                     max_size=5)
    flags = st.lists(st.sampled_from(FLAGS if command == "generate" else FLAGS[:2] + FLAGS[4:]), max_size=2)
    outputs = st.sampled_from(["out.mp4", "out.gif", "frames/", "out.avi", "", "folder", "dangling"])
    inputs = st.sampled_from(["clip", "clip", "missing", "text", "folder"]).map(lambda k: files[k])
    if command == "animate":
        inputs = st.sampled_from(["image", "image", "missing", "text", "clip"]).map(lambda k: files[k])
    prompts = st.one_of(st.sampled_from(["a red circle", ""]), TEXT)
    positional = st.tuples(prompts) if command == "generate" else st.tuples(inputs, prompts)
    if command == "control":  # its one required option
        positional = st.tuples(inputs, prompts, st.just("--controlnet"),
                               st.sampled_from(["controlnet", "controlnet", "missing", "model"]).map(
                                   lambda k: files[k]))
    return st.tuples(positional, pairs, flags, outputs, st.booleans())


def check(capsys, workdir, args):
    before = sorted(workdir.rglob("*"))
    try:
        code = run(args)
    except Loaded:
        code = None  # every check passed; the run would start here
    err = capsys.readouterr().err
    assert "Traceback" not in err, (args, err)
    assert code is None or code in EXIT_CODES, (args, code, err)
    if code == 2:
        assert err.startswith("error:") and err.count("\n") == 1, (args, err)
    assert sorted(workdir.rglob("*")) == before, (args, "files were left behind")


@pytest.mark.parametrize("command", ["generate", "control", "edit", "animate", "restyle"])
def test_random_command_lines_end_cleanly(command, files, stop_at_loading, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")

    @SETTINGS
    @given(argv(files, command))
    def example(parts):
        positional, pairs, flags, output, with_model = parts
        args = [command, *positional, *(x for pair in pairs for x in pair), *flags, "-o", output]
        if with_model:
            args += ["--model", files["model"]]
        check(capsys, tmp_path, args)

    example()


JOB_KEYS = ["id", "mode", "prompt", "seed", "frames", "steps", "model", "input", "size", "motion", "chunk_size",
            "guidance", "controlnet", "scheduler", "colour", "", "image", "strength"]


LINES = st.lists(st.one_of(
    st.dictionaries(st.sampled_from(JOB_KEYS),
                    st.one_of(st.integers(-5, 10**9), TEXT, st.none(), st.booleans(), st.floats(allow_nan=True),
                              st.lists(st.integers(), max_size=2)), max_size=6).map(json.dumps),
    st.text(alphabet=string.printable, max_size=20)), min_size=1, max_size=4)


def test_random_jobs_files_end_cleanly(files, stop_at_loading, capsys):
    @SETTINGS
    @given(LINES)
    def example(lines):
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            jobs = workdir / "jobs.jsonl"
            jobs.write_text("\n".join(lines) + "\n", encoding="utf-8")
            before = sorted(workdir.rglob("*"))
            try:
                code = run(["batch", str(jobs), "-o", str(workdir / "out")])
            except Loaded:
                code = None
            err = capsys.readouterr().err
            assert "Traceback" not in err, (lines, err)
            assert code is None or code in EXIT_CODES, (lines, code, err)
            if code == 2:  # refused before any job: nothing written, not even the output folder
                assert sorted(workdir.rglob("*")) == before, lines
            leftovers = [p for p in workdir.rglob("*") if p.name.startswith(".")]
            assert not leftovers, (lines, leftovers)

    example()

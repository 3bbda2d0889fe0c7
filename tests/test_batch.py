"""`t2vzero batch` without Ray: validation by line, the manifest, resuming, the local runner, and jobs
rendered in parts (as Ray workers render them) equal to the whole."""

import json
import os
import re
import sys
import time

import numpy as np
import pytest
import torch

from t2vzero.batch import Collector, Worker, read_jobs, run_local
from t2vzero.cli import main, run
from t2vzero.distributed import capacity, split_frames_for_workers
from t2vzero.errors import UserError
from t2vzero.commands import MODES
from t2vzero.jobs import RUN_PARAMS, option_keys
from t2vzero.video import read_video

FAST = {"size": "64x64", "steps": 3, "frames": 3}


def cli(capsys, *args):
    code = run([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def write_jobs(path, *jobs):
    path.write_text("".join((j if isinstance(j, str) else json.dumps(j)) + "\n" for j in jobs))
    return path


def frames_of(path):
    return read_video(path)[0].astype(np.float32) / 255.0


@pytest.fixture
def latent_pixels(monkeypatch):
    """Frames that show the final latents (3 of their channels, 8x8) instead of the tiny VAE's decoding,
    which is nearly flat whatever it is given; they stay RGB in [0, 1], so they can be written as videos."""
    import t2vzero.generate as generate

    def show(vae, latents, **_):
        return (latents[:, :3].permute(0, 2, 3, 1).float() * 0.25 + 0.5).clamp(0, 1).cpu().numpy()

    monkeypatch.setattr(generate, "decode_latents", show)


@pytest.fixture
def model(tiny_model_dir):
    return {"model": str(tiny_model_dir), **FAST}


# --- validation -------------------------------------------------------------------------------------------------


BAD_LINES = {
    "not-json": ('{"id": "a", "prompt": "x"', "line 2: not JSON"),
    "not-object": ('["a red circle"]', "line 2: a job is a JSON object"),
    "no-prompt": ({"id": "b", "frames": 3}, "line 2: the job has no \"prompt\""),
    "prompt-not-text": ({"id": "b", "prompt": 3}, "line 2: the job has no \"prompt\""),
    "unknown-mode": ({"id": "b", "prompt": "x", "mode": "paint"}, "line 2: unknown mode 'paint'"),
    "unknown-option": ({"id": "b", "prompt": "x", "frmes": 3}, "line 2: unknown option 'frmes'.*'frames'"),
    "api-name": ({"id": "b", "prompt": "x", "video_length": 3}, "line 2: unknown option 'video_length'"),
    "run-option": ({"id": "b", "prompt": "x", "output": "x.mp4"}, "line 2: unknown option 'output'"),
    "repeated-id": ({"id": "a", "prompt": "y"}, "line 2: id 'a' repeats line 1"),
    "bad-id": ({"id": "../a", "prompt": "y"}, "line 2: id '../a'"),
    "not-a-number": ({"id": "b", "prompt": "x", "frames": "abc"}, "line 2: .*'abc' is not a valid integer"),
    "fraction": ({"id": "b", "prompt": "x", "frames": 2.5}, "line 2: .*not a valid integer"),
    "out-of-range": ({"id": "b", "prompt": "x", "frames": 0}, r"line 2 \(b\): frames must be at least 1"),
    "flag": ({"id": "b", "prompt": "x", "no_motion": "yes"}, "line 2: 'no_motion' is a flag"),
    "list": ({"id": "b", "prompt": "x", "seed": [1, 2]}, "line 2: 'seed' takes one value"),
    "t0-t1": ({"id": "b", "prompt": "x", "t0": 900, "t1": 800}, "line 2 .*t0=900 must be smaller"),
    "no-input": ({"id": "b", "prompt": "x", "mode": "edit"}, "line 2: the job needs 'input'"),
    "missing-input": ({"id": "b", "prompt": "x", "mode": "edit", "input": "/no/such.mp4"},
                      "line 2 .*input /no/such.mp4 does not exist"),
    "condition": ({"id": "b", "prompt": "x", "mode": "control", "input": "IN", "controlnet": "cn", "condition": "cany"},
                  "line 2 .*neither canny"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_a_bad_line_is_named_and_nothing_runs(capsys, tmp_path, square_clip_dir, case):
    line, match = BAD_LINES[case]
    if isinstance(line, dict) and line.get("input") == "IN":
        line = {**line, "input": str(square_clip_dir)}
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"id": "a", "prompt": "a red circle"}, line)
    out = tmp_path / "out"
    code, _, err = cli(capsys, "batch", jobs, "-o", out)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert re.search(match, err), err
    assert not out.exists()  # checked before the output folder is made


@pytest.mark.parametrize("args, match", [
    (["-o", "{jobs}"], "is a file"),
    (["-o", "{out}", "--workers", "0"], "--workers"),
    (["-o", "{out}", "--workers", "2"], "add --ray"),
    (["-o", "{out}", "--ray", "127.0.0.1:{port}"], "cannot reach a Ray cluster at 127.0.0.1"),
    (["-o", "{out}", "--ray", "nowhere"], "is not auto or HOST:PORT"),
    (["-o", "{out}", "--max-retries", "-1"], "--max-retries"),
])
def test_bad_run_options_exit_2(capsys, tmp_path, args, match):
    import socket

    jobs = write_jobs(tmp_path / "jobs.jsonl", {"id": "a", "prompt": "a red circle"})
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    filled = [a.format(jobs=jobs, out=tmp_path / "out", port=port) for a in args]
    start = time.monotonic()
    code, _, err = cli(capsys, "batch", jobs, *filled)
    assert code == 2 and match in err, err
    assert time.monotonic() - start < 60


def test_a_missing_jobs_file_and_an_empty_one(capsys, tmp_path):
    code, _, err = cli(capsys, "batch", tmp_path / "none.jsonl", "-o", tmp_path / "out")
    assert code == 2 and "does not exist" in err
    code, _, err = cli(capsys, "batch", write_jobs(tmp_path / "empty.jsonl", ""), "-o", tmp_path / "out")
    assert code == 2 and "holds no jobs" in err


def test_ray_options_without_ray_installed_say_how_to_install(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"id": "a", "prompt": "a red circle"})
    code, _, err = cli(capsys, "batch", jobs, "-o", tmp_path / "out", "--ray", "auto")
    assert code == 2 and "pip install 't2vzero[ray]'" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(capsys, "generate", "a red circle", "--ray", "auto", "-o", tmp_path / "v.mp4")
    assert code == 2 and "pip install 't2vzero[ray]'" in err
    code, _, err = cli(capsys, "generate", "a red circle", "--workers", "2", "-o", tmp_path / "v.mp4")
    assert code == 2 and "add --ray" in err


def test_every_option_of_each_command_is_read_by_its_mode():
    """A new command option must reach batch jobs too: each mode lists the parameters it reads."""
    for name, mode in MODES.items():
        params = {p.name for p in main.commands[mode.command].params} - RUN_PARAMS
        assert params == set(mode.uses), (name, params ^ set(mode.uses))
        assert set(option_keys(main.commands[mode.command])) >= {"prompt", "seed", "model"}


def test_jobs_take_the_commands_option_names_values_and_defaults(tmp_path, tiny_model_dir, square_clip_dir):
    jobs = read_jobs(write_jobs(
        tmp_path / "jobs.jsonl",
        {"id": "g", "prompt": "a cat", "frames": 16, "chunk_size": 4, "motion": "8,-4", "background_smoothing": 0.6,
         "lora": "a.safetensors:0.5", "no_cross_frame_attention": True},
        {"id": "c", "mode": "control", "prompt": "a cat", "input": str(square_clip_dir), "controlnet": ["a", "b:0.5"],
         "condition": ["canny", "canny"], "resolution": 64},
        {"mode": "edit", "prompt": "make it blue", "input": str(square_clip_dir), "image_guidance": 2}))
    g, c, e = jobs
    assert (g.params["frames"], g.params["chunk_size"], g.params["smoothing"]) == (16, 4, 0.6)
    assert g.params["lora"] == ("a.safetensors:0.5",) and g.params["no_cross_frame_attention"] is True
    assert g.params["steps"] is None and g.params["seed"] == 0  # the command's defaults
    assert g.options["background_smoothing"] == 0.6 and g.options["lora"] == ["a.safetensors:0.5"]
    assert c.params["controlnets"] == ("a", "b:0.5") and c.params["steps"] == 20  # control's own default
    assert e.id == "line-3" and e.params["instruction"] == "make it blue" and e.params["image_guidance"] == 2.0


# --- running locally, the manifest, resuming ----------------------------------------------------------------------


@pytest.fixture
def load_counter(monkeypatch):
    """How many times a model was loaded (the real loading still runs)."""
    from t2vzero.pipeline import TextToVideoZero

    loads, real = [], TextToVideoZero.from_pretrained.__func__

    def counting(cls, model=None, **kwargs):
        loads.append(str(model))
        return real(cls, model, **kwargs)

    monkeypatch.setattr(TextToVideoZero, "from_pretrained", classmethod(counting))
    return loads


def test_a_local_batch_loads_each_model_once_records_and_resumes(capsys, tmp_path, model, tiny_pix2pix_dir,
                                                                   square_clip_dir, load_counter):
    edit = {"mode": "edit", "model": str(tiny_pix2pix_dir), "input": str(square_clip_dir), "resolution": 64,
            "steps": 3, "max_frames": 3}
    jobs = write_jobs(tmp_path / "jobs.jsonl",
                      {"id": "a", "prompt": "a red circle", **model, "seed": 1},
                      {"id": "e1", "prompt": "make it blue", **edit},
                      {"id": "b", "prompt": "a blue square", **model, "seed": 2},
                      {"id": "bad", "prompt": "a square", **model, "prompt_2": "only for SDXL"},
                      {"id": "e2", "prompt": "make it red", **edit, "seed": 4})
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "batch", jobs, "-o", out, "--sheet")
    assert code == 1, err
    assert load_counter == [model["model"], str(tiny_pix2pix_dir)]  # grouped by model: each loaded once
    assert "4 done, 1 failed, 0 already done" in stdout and "failed: bad (line 4): prompt_2" in stdout
    assert "done 4, failed 1, left 0" in err  # the progress bar's last state
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.jsonl", *(f"{i}.mp4" for i in ("a", "b", "e1", "e2")),
         *(f"{i}_sheet.png" for i in ("a", "b", "e1", "e2"))])
    records = {r["id"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert set(records) == {"a", "b", "bad", "e1", "e2"}
    a = records["a"]
    assert (a["status"], a["seed"], a["error"], a["output"], a["attempts"]) == ("done", 1, None, str(out / "a.mp4"), 1)
    assert a["options"]["frames"] == 3 and a["options"]["model"] == model["model"] and a["seconds"] > 0
    assert a["resolved"]["num_inference_steps"] == 3 and a["resolved"]["t0"] is not None and a["host"]
    assert records["bad"]["status"] == "failed" and "prompt_2" in records["bad"]["error"]
    assert frames_of(out / "e1.mp4").shape == (3, 48, 64, 3)

    # Again: the done jobs are skipped, the failed one is redone (and fails again).
    load_counter.clear()
    code, stdout, _ = cli(capsys, "batch", jobs, "-o", out, "--sheet")
    assert code == 1 and "0 done, 1 failed, 4 already done" in stdout and load_counter == [model["model"]]
    # A missing output, a changed option and a sheet asked for anew are redone; the bad job is dropped.
    (out / "a.mp4").unlink()
    write_jobs(jobs, {"id": "a", "prompt": "a red circle", **model, "seed": 1},
               {"id": "e1", "prompt": "make it blue", **edit},
               {"id": "b", "prompt": "a blue square", **model, "seed": 3},
               {"id": "e2", "prompt": "make it red", **edit, "seed": 4})
    before = (out / "e1.mp4").stat().st_mtime_ns
    code, stdout, _ = cli(capsys, "batch", jobs, "-o", out, "--sheet")
    assert code == 0 and "2 done, 0 failed, 2 already done" in stdout
    assert (out / "e1.mp4").stat().st_mtime_ns == before
    records = {r["id"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert records["b"]["seed"] == 3 and len(records) == 5  # one line per job id; the old bad line is kept


def test_a_batch_job_equals_the_same_command_run_alone(capsys, tmp_path, model, tiny_controlnet_dir,
                                                       square_clip_dir, latent_pixels):
    control = {"mode": "control", "input": str(square_clip_dir), "controlnet": f"{tiny_controlnet_dir}:0.8",
               "resolution": 64, "steps": 3, "chunk_size": 3, "model": model["model"]}
    jobs = write_jobs(tmp_path / "jobs.jsonl",
                      {"id": "g", "prompt": "a red circle", **model, "seed": 7, "motion": "8,-4", "chunk_size": 2},
                      {"id": "c", "prompt": "a red square", **control, "seed": 5})
    code, _, err = cli(capsys, "batch", jobs, "-o", tmp_path / "out", "--format", "frames")
    assert code == 0, err
    alone = {
        "g": ["generate", "a red circle", "--model", model["model"], "--size", "64x64", "--steps", 3, "--frames", 3,
              "--seed", 7, "--motion", "8,-4", "--chunk-size", 2],
        "c": ["control", square_clip_dir, "a red square", "--model", model["model"], "--controlnet",
              f"{tiny_controlnet_dir}:0.8", "--resolution", 64, "--steps", 3, "--chunk-size", 3, "--seed", 5],
    }
    for job_id, args in alone.items():
        code, _, err = cli(capsys, *args, "-o", f"{tmp_path / job_id}/")
        assert code == 0, err
        got, want = frames_of(tmp_path / "out" / job_id), frames_of(tmp_path / job_id)
        assert got.shape == want.shape and np.abs(got - want).max() <= 1 / 255, job_id
    # The comparison can fail: another seed gives other frames.
    code, _, _ = cli(capsys, *alone["g"][:-6], "--seed", 8, "--motion", "8,-4", "-o", f"{tmp_path / 'g8'}/")
    assert code == 0 and np.abs(frames_of(tmp_path / "g8") - frames_of(tmp_path / "g")).max() > 4 / 255


def test_ctrl_c_leaves_whole_manifest_lines_and_no_partial_video(capsys, tmp_path, model, monkeypatch):
    jobs = write_jobs(tmp_path / "jobs.jsonl", *({"id": f"j{i}", "prompt": "a red circle", **model, "seed": i}
                                                 for i in range(3)))
    real, calls = Worker.execute, []

    def interrupted_second(self, task, anchor=None):
        calls.append(task.job.id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, task, anchor)

    monkeypatch.setattr(Worker, "execute", interrupted_second)
    out = tmp_path / "out"
    code, stdout, _ = cli(capsys, "batch", jobs, "-o", out)
    assert code == 130 and "run the same command again to resume" in stdout
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["j0"]
    assert sorted(os.listdir(out)) == ["j0.mp4", "manifest.jsonl"]  # no temporary or half-written file
    monkeypatch.setattr(Worker, "execute", real)
    code, stdout, _ = cli(capsys, "batch", jobs, "-o", out)
    assert code == 0 and "2 done, 0 failed, 1 already done" in stdout


def test_a_torn_manifest_line_is_ignored_and_the_job_redone(capsys, tmp_path, model):
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"id": "a", "prompt": "a red circle", **model})
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.jsonl").write_text('{"id": "a", "status": "do')  # cut short by a stop: no newline
    code, stdout, _ = cli(capsys, "batch", jobs, "-o", out)
    assert code == 0 and "1 done" in stdout
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert lines[0] == '{"id": "a", "status": "do'  # appended after, never rewritten
    assert len(lines) == 2 and json.loads(lines[1])["status"] == "done"


# --- jobs in parts, as workers render them ------------------------------------------------------------------------


def run_split(jobs, out, groups):
    """Run jobs locally, each split into `groups` of frame ids (the anchor first where the mode has one)."""
    tasks = []
    real = Worker.execute

    class Recording(Worker):
        def execute(self, task, anchor=None):
            tasks.append((task.job.id, task.kind, task.frame_ids))
            return real(self, task, anchor)

    out.mkdir()
    collector = Collector(lambda job: (out / job.id, None), split=lambda job: groups)
    assert run_local(jobs, collector, Recording()) is None  # ran to the end
    assert not collector.failed, collector.failed
    return tasks


def test_a_job_rendered_in_parts_equals_the_whole(tmp_path, model, tiny_controlnet_dir, tiny_pix2pix_dir,
                                                  square_clip_dir, latent_pixels):
    clip = {"input": str(square_clip_dir), "resolution": 64, "steps": 3, "chunk_size": 3, "seed": 4}
    jobs = read_jobs(write_jobs(
        tmp_path / "jobs.jsonl",
        {"id": "g", "prompt": "a red circle", **model, "frames": 6, "chunk_size": 3, "seed": 2,
         "scheduler": "euler-a"},  # a stochastic sampler: step noise must follow each frame into its part
        {"id": "c", "mode": "control", "prompt": "a red square", "model": model["model"],
         "controlnet": str(tiny_controlnet_dir), **clip},
        {"id": "e", "mode": "edit", "prompt": "make it blue", "model": str(tiny_pix2pix_dir), **clip}))
    groups = split_frames_for_workers(6, 3)
    assert groups == [[0, 1, 2], [3, 4], [5]]
    tasks = run_split(jobs, tmp_path / "parts", groups)
    assert [t[1] for t in tasks if t[0] == "g"] == ["anchor", "part", "part", "part"]
    assert [t[2] for t in tasks if t[0] == "c"] == groups
    (tmp_path / "whole").mkdir()
    whole = Collector(lambda job: (tmp_path / "whole" / job.id, None))
    assert run_local(jobs, whole) is None
    for job in jobs:
        parts, full = frames_of(tmp_path / "parts" / job.id), frames_of(tmp_path / "whole" / job.id)
        assert parts.shape == full.shape == (6, *full.shape[1:])
        assert np.abs(parts - full).max() <= 1 / 255, job.id
        if job.mode != "control":  # (a tiny ControlNet moves frames less than this; its subsets are tested below)
            assert np.abs(full[1:] - full[:1]).max() > 4 / 255, job.id  # frames differ: the comparison can fail


def test_video_to_video_subsets_rendered_apart_equal_the_whole(tiny, tiny_controlnet_dir, latent_output):
    from diffusers import ControlNetModel

    from clips import moving_square
    from t2vzero.inputs import canny
    from t2vzero.modes.video2video import control_video

    video = moving_square(5, 32, 32, top=6, side=10, left=2, step=4, colour=(230, 60, 40), ground=30)
    net = ControlNetModel.from_pretrained(tiny_controlnet_dir)

    def go(ids=None, seed=3):
        return control_video(tiny, "a square", [canny(video)], [net], generator=torch.Generator().manual_seed(seed),
                             num_inference_steps=3, chunk_size=2, scheduler="euler-a", progress=False,
                             frame_ids=ids).frames[0]

    whole = go()
    tolerance = 1e-5 * np.abs(whole).max()
    stitched = np.concatenate([go([3, 1]), go([4]), go([2, 0])])[[4, 1, 3, 0, 2]]
    assert np.abs(stitched - whole).max() <= tolerance
    # The comparison can fail: each frame differs from the others (its condition) by far more.
    assert min(np.abs(whole[k] - whole[j]).max() for k in range(5) for j in range(k)) > 10 * tolerance
    with pytest.raises(UserError, match="frame ids"):
        go([5])


def test_capacity_counts_workers_node_by_node():
    nodes = [{"Alive": True, "Resources": {"CPU": 8, "GPU": 2}}, {"Alive": True, "Resources": {"CPU": 2}},
             {"Alive": False, "Resources": {"CPU": 64, "GPU": 8}}]
    assert capacity(nodes, gpus=0, cpus=1) == 10
    assert capacity(nodes, gpus=1, cpus=1) == 2
    assert capacity(nodes, gpus=0.5, cpus=2) == 4  # the first node: 4 by CPUs and by GPUs; the second has no GPU
    assert capacity(nodes, gpus=4, cpus=1) == 0


def test_split_frames_for_workers_covers_every_frame_once():
    for frames, chunk in ((64, 8), (7, 3), (5, 2), (3, 8)):
        groups = split_frames_for_workers(frames, chunk)
        assert sorted(k for g in groups for k in g) == list(range(frames))
        assert 0 in groups[0] and all(len(g) + (0 not in g) <= chunk for g in groups)


def test_which_jobs_are_split_over_workers(tmp_path):
    from t2vzero.distributed import Cluster

    base = {"prompt": "a red circle", "frames": 7, "chunk_size": 3}
    jobs = read_jobs(write_jobs(tmp_path / "jobs.jsonl", {"id": "split", **base},
                                {"id": "smoothing", **base, "background_smoothing": 0.6},
                                {"id": "compat", **base, "compat": "diffusers"},
                                {"id": "short", **base, "frames": 3}, {"id": "whole", **base, "chunk_size": None}))
    split = Cluster(None, 2, 0.0, 1.0, owned=False).splitter()
    assert {job.id: split(job) for job in jobs} == {"split": [[0, 1, 2], [3, 4], [5, 6]], "smoothing": None,
                                                     "compat": None, "short": None, "whole": None}
    assert Cluster(None, 1, 0.0, 1.0, owned=False).splitter()(jobs[0]) is None  # one worker: nothing to gain

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
from t2vzero.commands import MODES
from t2vzero.distributed import capacity, split_frames_for_workers
from t2vzero.errors import UserError
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
    "huge-number": ('{"id": "b", "prompt": "x", "seed": ' + "1" * 5000 + "}", "line 2: JSON this reader refuses"),
    "too-deep": ("[" * 100000 + "]" * 100000, "line 2: JSON this reader refuses"),
    "missing-lora": ({"id": "b", "prompt": "x", "lora": "missing.safetensors:0.5"},
                     "line 2 .*LoRA missing.safetensors does not exist"),
    "prompt-2-on-sd": ({"id": "b", "prompt": "x", "prompt_2": "y"}, "line 2 .*SDXL's second text encoder"),
    "surrogate": ({"id": "b", "prompt": "x \ud800"}, "line 2 .*not text"),
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


def test_a_line_is_checked_and_planned_as_its_command_would_be(capsys, tmp_path, tiny_model_dir, monkeypatch):
    """What the command alone refuses before loading weights, a batch refuses before running any job, with the
    command's own message after the line's number: the model, the step count, the memory plan."""
    import t2vzero.plan

    monkeypatch.chdir(tmp_path)
    model = {"model": str(tiny_model_dir), "frames": 3, "steps": 2}
    cases = [({"prompt": "x", "model": "no/such/model"}, ["--model", "no/such/model"]),
             ({"prompt": "x", **model, "steps": 100000}, ["--model", tiny_model_dir, "--frames", 3,
                                                          "--steps", 100000]),
             ({"prompt": "x", **model, "device": "tpu"}, ["--model", tiny_model_dir, "--device", "tpu"])]
    for line, args in cases:
        code, _, alone = cli(capsys, "generate", "x", *args, "-o", tmp_path / "v.mp4")
        assert code == 2 and alone.startswith("error: ")
        jobs = write_jobs(tmp_path / "jobs.jsonl", {"id": "a", "prompt": "a red circle", **model}, {"id": "b", **line})
        start = time.monotonic()
        code, _, err = cli(capsys, "batch", jobs, "-o", tmp_path / "out")
        assert code == 2 and err == f"error: line 2 (b): {alone[len('error: '):]}", (err, alone)
        assert time.monotonic() - start < 5 and not (tmp_path / "out").exists()
    # The memory plan: a job that cannot fit is refused before any runs, unless --force.
    monkeypatch.setattr(t2vzero.plan, "available_memory", lambda device: 2**20)
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"id": "a", "prompt": "a red circle", **model, "chunk_size": 3})
    code, _, err = cli(capsys, "batch", jobs, "-o", tmp_path / "out")
    assert code == 2 and err.startswith("error: line 1 (a): this run needs about") and "--force" in err, err
    assert not (tmp_path / "out").exists()
    code, _, err = cli(capsys, "batch", jobs, "-o", tmp_path / "out", "--force")
    assert code == 0 and "line 1 (a): warning: this run needs about" in err and "running anyway (--force)" in err
    record = json.loads((tmp_path / "out" / "manifest.jsonl").read_text())
    assert any("running anyway" in w for w in record["warnings"])


def test_the_plan_picks_a_batch_jobs_chunk_size_as_it_does_the_commands(tmp_path, tiny_model_dir, monkeypatch):
    import t2vzero.plan
    from t2vzero.plan import MARGIN, plan_run

    p = plan_run(str(tiny_model_dir), None, mode="generate", frames=100, size=(64, 64), steps=2, guidance=None,
                 chunk_size=None, device="cpu", dtype="float32")
    room = int(p.reestimate(60, (64, 64)).peak * MARGIN) + 1
    monkeypatch.setattr(t2vzero.plan, "available_memory", lambda device: room)
    job = read_jobs(write_jobs(tmp_path / "jobs.jsonl", {"id": "a", "prompt": "x", "model": str(tiny_model_dir),
                                                         "frames": 100, "size": "64x64", "steps": 2}))[0]
    assert job.params["chunk_size"] == 60 and job.options["chunk_size"] is None  # the plan's, not the line's
    assert "running in chunks of 60" in job.notes[0] and job.frames == 100


def test_a_jobs_paths_are_absolute_for_workers_elsewhere(tmp_path, tiny_model_dir, square_clip_dir, monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model_dir, tmp_path / "sd")
    shutil.copytree(square_clip_dir, tmp_path / "clip")
    (tmp_path / "style.safetensors").write_bytes(b"")
    job = read_jobs(write_jobs(tmp_path / "jobs.jsonl", {
        "id": "c", "mode": "control", "prompt": "x", "model": "sd", "input": "clip", "controlnet": ["sd:0.5", "hub/id"],
        "condition": ["canny", "clip"], "lora": "style.safetensors:0.7"}))[0]
    assert job.params["model"] == str(tmp_path / "sd") and job.params["input_video"] == str(tmp_path / "clip")
    assert job.params["controlnets"] == (f"{tmp_path / 'sd'}:0.5", "hub/id")
    assert job.params["conditions"] == ("canny", str(tmp_path / "clip"))
    assert job.params["lora"] == (f"{tmp_path / 'style.safetensors'}:0.7",)
    literal = ("sd", "clip", ["style.safetensors:0.7"])  # as written: the job's identity when resuming
    assert (job.options["model"], job.options["input"], job.options["lora"]) == literal


def test_the_pool_options_are_checked_in_one_place(capsys, tmp_path):
    for args, match in ((["--workers", "0", "--ray", "auto"], "--workers must be at least 1, got 0"),
                        (["--max-retries", "-1"], "--max-retries must be 0 or more, got -1"),
                        (["--cpus-per-worker", "0", "--ray", "auto"], "--cpus-per-worker must be above 0"),
                        (["--gpus-per-worker", "nan", "--ray", "auto"], "--gpus-per-worker 0 or more")):
        for command in (["generate", "x"], ["restyle", "clip", "x"], ["batch", "jobs.jsonl"]):
            code, _, err = cli(capsys, *command, *args, "-o", tmp_path / "v.mp4")
            assert code == 2 and match in err and err.count("\n") == 1, (command, err)


def test_a_dry_run_never_goes_to_ray(capsys, tmp_path, tiny_model_dir, square_clip_dir, tiny_controlnet_dir,
                                     tiny_pix2pix_dir, image_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # any use of Ray would fail
    common = ["--ray", "auto", "--dry-run", "-o", tmp_path / "v.mp4", "--sheet"]
    for args in (["generate", "x", "--frames", 4], ["animate", image_path, "x"],
                 ["control", square_clip_dir, "x", "--controlnet", tiny_controlnet_dir, "--resolution", 64],
                 ["restyle", square_clip_dir, "x", "--resolution", 64], ["edit", square_clip_dir, "x"]):
        model = tiny_pix2pix_dir if args[0] == "edit" else tiny_model_dir  # edit needs an Instruct-Pix2Pix UNet
        code, out, err = cli(capsys, *args, "--model", model, *common)
        assert code == 0 and "estimated peak memory" in out, (args, err)
    assert list(tmp_path.iterdir()) == []
    code, _, err = cli(capsys, "generate", "x", "--model", tiny_model_dir, "--ray", "auto", "-o", tmp_path / "v.mp4")
    assert code == 2 and "pip install 't2vzero[ray]'" in err  # the same line without --dry-run goes to Ray


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_only_the_ray_workers_have_is_left_to_them(capsys, tmp_path, monkeypatch):
    """A driver without CUDA refuses --device cuda for a run here, but not for one on Ray workers (they may have
    it); a device name that exists nowhere is refused either way."""
    monkeypatch.setitem(sys.modules, "ray", None)  # reaching Ray means every check passed
    out = ["-o", tmp_path / "v.mp4"]
    code, _, err = cli(capsys, "generate", "x", "--device", "cuda", *out)
    assert code == 2 and "CUDA is not available here" in err
    code, _, err = cli(capsys, "generate", "x", "--device", "cuda", "--offload", "model", "--ray", "auto", *out)
    assert code == 2 and "pip install 't2vzero[ray]'" in err and "memory plan is left to the Ray workers" in err
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"id": "a", "prompt": "x", "device": "cuda"})
    code, _, err = cli(capsys, "batch", jobs, "-o", tmp_path / "out")
    assert code == 2 and err.startswith("error: line 1 (a): device cuda asked for, but CUDA is not available")
    code, _, err = cli(capsys, "batch", jobs, "-o", tmp_path / "out", "--ray", "auto")
    assert code == 2 and "pip install 't2vzero[ray]'" in err
    for args in (["generate", "x", "--device", "tpu", "--ray", "auto", *out],
                 ["batch", write_jobs(tmp_path / "jobs.jsonl", {"prompt": "x", "device": "tpu"}), "-o", tmp_path / "o",
                  "--ray", "auto"]):
        code, _, err = cli(capsys, *args)
        assert code == 2 and "unknown device 'tpu'" in err, err


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


def test_every_video_command_is_a_batch_mode():
    """A video command (one with a --seed) missing from MODES could not be a batch job."""
    video_commands = {name for name, cmd in main.commands.items() if any(p.name == "seed" for p in cmd.params)}
    assert video_commands == set(MODES) == {"generate", "animate", "control", "edit", "restyle"}
    assert all(MODES[name].command == name for name in MODES)


def test_every_option_of_each_command_is_read_by_its_mode():
    """A new command option must reach batch jobs too: each mode lists the parameters it reads."""
    for name, mode in MODES.items():
        params = {p.name for p in main.commands[mode.command].params} - RUN_PARAMS
        assert params == set(mode.uses), (name, params ^ set(mode.uses))
        assert set(option_keys(main.commands[mode.command])) >= {"prompt", "seed", "model"}


def test_jobs_take_the_commands_option_names_values_and_defaults(tmp_path, tiny_model_dir, square_clip_dir,
                                                                 tiny_pix2pix_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.safetensors").write_bytes(b"")  # a LoRA must exist to pass the checks
    jobs = read_jobs(write_jobs(
        tmp_path / "jobs.jsonl",
        {"id": "g", "prompt": "a cat", "frames": 16, "chunk_size": 4, "motion": "8,-4", "background_smoothing": 0.6,
         "lora": "a.safetensors:0.5", "no_cross_frame_attention": True},
        {"id": "c", "mode": "control", "prompt": "a cat", "input": str(square_clip_dir), "controlnet": ["a", "b:0.5"],
         "condition": ["canny", "canny"], "resolution": 64},
        {"mode": "edit", "prompt": "make it blue", "input": str(square_clip_dir), "image_guidance": 2,
         "model": str(tiny_pix2pix_dir)}))
    g, c, e = jobs
    assert (g.params["frames"], g.params["chunk_size"], g.params["smoothing"]) == (16, 4, 0.6)
    assert g.params["lora"] == (str(tmp_path / "a.safetensors:0.5"),) and g.params["no_cross_frame_attention"] is True
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
    junk = tmp_path / "junk.safetensors"  # exists, so it passes the checks; found bad only when loaded
    junk.write_bytes(b"not a LoRA")
    jobs = write_jobs(tmp_path / "jobs.jsonl",
                      {"id": "a", "prompt": "a red circle", **model, "seed": 1},
                      {"id": "e1", "prompt": "make it blue", **edit},
                      {"id": "b", "prompt": "a blue square", **model, "seed": 2},
                      {"id": "bad", "prompt": "a square", **model, "lora": str(junk)},
                      {"id": "e2", "prompt": "make it red", **edit, "seed": 4})
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "batch", jobs, "-o", out, "--sheet")
    assert code == 1, err
    # Grouped by what they load: each model once (the bad job's model with its LoRA is a load of its own).
    assert load_counter == [model["model"], str(tiny_pix2pix_dir), model["model"]]
    assert "4 done, 1 failed, 0 already done" in stdout and "failed: bad (line 4): " in stdout and "LoRA" in stdout
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
    assert records["bad"]["status"] == "failed" and "LoRA" in records["bad"]["error"]
    assert frames_of(out / "e1.mp4").shape == (3, 48, 64, 3)
    resolved = records["e1"]["resolved"]  # what the edit ran with, the model's sampler named
    assert (resolved["num_inference_steps"], resolved["guidance_scale"], resolved["image_guidance_scale"]) == \
        (3, 7.5, 1.5)
    assert (resolved["video_length"], resolved["height"], resolved["width"], resolved["fps"]) == (3, 48, 64, 8.0)
    assert resolved["scheduler"] and a["resolved"]["scheduler"] and a["resolved"]["fps"] == 4.0

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
                                                       square_clip_dir, image_path, latent_pixels):
    control = {"mode": "control", "input": str(square_clip_dir), "controlnet": f"{tiny_controlnet_dir}:0.8",
               "resolution": 64, "steps": 3, "chunk_size": 3, "model": model["model"]}
    jobs = write_jobs(tmp_path / "jobs.jsonl",
                      {"id": "g", "prompt": "a red circle", **model, "seed": 7, "motion": "8,-4", "chunk_size": 2},
                      {"id": "c", "prompt": "a red square", **control, "seed": 5},
                      {"id": "a", "mode": "animate", "image": str(image_path), "prompt": "a red square",
                       "model": model["model"], "resolution": 64, "frames": 3, "steps": 3, "motion": "16,0",
                       "seed": 3},
                      {"id": "r", "mode": "restyle", "input": str(square_clip_dir), "prompt": "a blue square",
                       "model": model["model"], "strength": 0.6, "resolution": 64, "steps": 5, "chunk_size": 2,
                       "controlnet": str(tiny_controlnet_dir), "seed": 2})
    code, _, err = cli(capsys, "batch", jobs, "-o", tmp_path / "out", "--format", "frames")
    assert code == 0, err
    alone = {
        "g": ["generate", "a red circle", "--model", model["model"], "--size", "64x64", "--steps", 3, "--frames", 3,
              "--seed", 7, "--motion", "8,-4", "--chunk-size", 2],
        "c": ["control", square_clip_dir, "a red square", "--model", model["model"], "--controlnet",
              f"{tiny_controlnet_dir}:0.8", "--resolution", 64, "--steps", 3, "--chunk-size", 3, "--seed", 5],
        "a": ["animate", image_path, "a red square", "--model", model["model"], "--resolution", 64, "--frames", 3,
              "--steps", 3, "--motion", "16,0", "--seed", 3],
        "r": ["restyle", square_clip_dir, "a blue square", "--model", model["model"], "--strength", 0.6,
              "--resolution", 64, "--steps", 5, "--chunk-size", 2, "--controlnet", tiny_controlnet_dir, "--seed", 2],
    }
    for job_id, args in alone.items():
        code, _, err = cli(capsys, *args, "-o", f"{tmp_path / job_id}/")
        assert code == 0, err
        got, want = frames_of(tmp_path / "out" / job_id), frames_of(tmp_path / job_id)
        assert got.shape == want.shape and np.abs(got - want).max() <= 1 / 255, job_id
    # The comparison can fail: another seed gives other frames.
    code, _, _ = cli(capsys, *alone["g"][:-6], "--seed", 8, "--motion", "8,-4", "-o", f"{tmp_path / 'g8'}/")
    assert code == 0 and np.abs(frames_of(tmp_path / "g8") - frames_of(tmp_path / "g")).max() > 4 / 255
    code, _, _ = cli(capsys, *alone["r"][:-2], "--seed", 3, "-o", f"{tmp_path / 'r3'}/")
    assert code == 0 and np.abs(frames_of(tmp_path / "r3") - frames_of(tmp_path / "r")).max() > 4 / 255


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


def test_a_manifest_that_is_not_text_is_a_one_line_error(capsys, tmp_path, model):
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"id": "a", "prompt": "a red circle", **model})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.jsonl").write_bytes(b"\xff\xfe not utf-8")
    code, _, err = cli(capsys, "batch", jobs, "-o", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1 and "manifest.jsonl is not UTF-8 text" in err


def test_two_runs_writing_one_manifest_keep_each_others_lines(tmp_path):
    from t2vzero.batch import Manifest

    first, second = Manifest(tmp_path), Manifest(tmp_path)  # both read the folder before either writes
    first.add({"id": "a", "status": "done"})
    second.add({"id": "b", "status": "done"})
    first.add({"id": "a", "status": "failed"})
    assert Manifest(tmp_path).records == {"a": {"id": "a", "status": "failed"}, "b": {"id": "b", "status": "done"}}
    assert len((tmp_path / "manifest.jsonl").read_text().splitlines()) == 3  # appended, one line a job end


def test_a_stop_while_writing_a_video_leaves_the_manifest_whole_and_nothing_half_written(capsys, tmp_path, model,
                                                                                          monkeypatch):
    import signal

    import t2vzero.video
    from t2vzero.stops import Stopped

    jobs = write_jobs(tmp_path / "jobs.jsonl", *({"id": f"j{i}", "prompt": "a red circle", **model, "seed": i}
                                                 for i in range(3)))
    real, writes = t2vzero.video._write_ffmpeg, []

    def stopped_on_the_second(frames, path, fps, codec):
        writes.append(path)
        if len(writes) == 2:
            path.write_bytes(b"half a video")  # the temporary file beside the target holds a partial write
            raise Stopped(signal.SIGTERM)
        return real(frames, path, fps, codec)

    monkeypatch.setattr(t2vzero.video, "_write_ffmpeg", stopped_on_the_second)
    out = tmp_path / "out"
    code, stdout, _ = cli(capsys, "batch", jobs, "-o", out)
    assert code == 143 and "run the same command again to resume" in stdout
    assert writes[1].parent == out and writes[1].name.startswith(".j1")  # it was the temporary file
    assert sorted(os.listdir(out)) == ["j0.mp4", "manifest.jsonl"]
    assert [json.loads(x)["id"] for x in (out / "manifest.jsonl").read_text().splitlines()] == ["j0"]


def test_nothing_to_do_connects_to_nothing(capsys, tmp_path, model, monkeypatch):
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"id": "a", "prompt": "a red circle", **model})
    assert cli(capsys, "batch", jobs, "-o", tmp_path / "out")[0] == 0
    monkeypatch.setitem(sys.modules, "ray", None)  # connecting would fail
    code, stdout, err = cli(capsys, "batch", jobs, "-o", tmp_path / "out", "--ray", "auto")
    assert code == 0 and "0 done, 0 failed, 1 already done" in stdout, err


def test_a_cluster_shuts_down_the_ray_it_started_whatever_ends_the_run():
    from t2vzero.distributed import Cluster

    class Ray:
        shut = 0

        def shutdown(self):
            self.shut += 1

    ours, theirs = Ray(), Ray()
    with pytest.raises(RuntimeError), Cluster(ours, 1, 0.0, 1.0, owned=True):
        raise RuntimeError("between connecting and running")
    with Cluster(theirs, 1, 0.0, 1.0, owned=False):
        pass
    assert (ours.shut, theirs.shut) == (1, 0)  # a cluster this run joined is left running


def test_a_retried_task_prefers_a_worker_on_another_machine(tmp_path):
    from collections import deque

    from t2vzero.batch import Task
    from t2vzero.distributed import _pick, _Slot

    job = read_jobs(write_jobs(tmp_path / "jobs.jsonl", {"id": "j", "prompt": "x"}))[0]
    fresh, retried = Task(job), Task(job, avoid_host="node-a")
    queue = deque([retried, fresh])
    assert _pick(queue, _Slot(0, None, None, host="node-a")) is fresh
    assert _pick(queue, _Slot(1, None, None, host="node-b")) is retried
    assert _pick(deque([retried]), _Slot(0, None, None, host="node-a")) is retried  # rather than waiting


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
                                                  square_clip_dir, image_path, latent_pixels, monkeypatch):
    clip = {"input": str(square_clip_dir), "resolution": 64, "steps": 3, "chunk_size": 3, "seed": 4}
    jobs = read_jobs(write_jobs(
        tmp_path / "jobs.jsonl",
        {"id": "g", "prompt": "a red circle", **model, "frames": 6, "chunk_size": 3, "seed": 2,
         "scheduler": "euler-a"},  # a stochastic sampler: step noise must follow each frame into its part
        {"id": "c", "mode": "control", "prompt": "a red square", "model": model["model"],
         "controlnet": str(tiny_controlnet_dir), **clip},
        {"id": "e", "mode": "edit", "prompt": "make it blue", "model": str(tiny_pix2pix_dir), **clip},
        {"id": "a", "mode": "animate", "image": str(image_path), "prompt": "a red square", "model": model["model"],
         "resolution": 64, "frames": 6, "steps": 3, "chunk_size": 3, "seed": 5, "scheduler": "euler-a"},
        {"id": "r", "mode": "restyle", "prompt": "a blue square", "model": model["model"], "strength": 0.6,
         **{**clip, "steps": 5}}))
    groups = split_frames_for_workers(6, 3)
    assert groups == [[0, 1, 2], [3, 4], [5]]
    import t2vzero.inputs

    annotated, real_canny = [], t2vzero.inputs.canny
    monkeypatch.setattr(t2vzero.inputs, "canny", lambda frames, *a: annotated.append(len(frames)) or
                        real_canny(frames, *a))
    tasks = run_split(jobs, tmp_path / "parts", groups)
    assert [t[1] for t in tasks if t[0] == "g"] == ["anchor", "part", "part", "part"]
    assert [t[1] for t in tasks if t[0] == "a"] == ["anchor", "part", "part", "part"]
    assert [t[2] for t in tasks if t[0] == "c"] == [t[2] for t in tasks if t[0] == "r"] == groups
    assert annotated == [3, 3, 2]  # each part's edges: frame 1 and its own frames, never the whole clip
    (tmp_path / "whole").mkdir()
    whole = Collector(lambda job: (tmp_path / "whole" / job.id, None))
    assert run_local(jobs, whole) is None
    for job in jobs:
        parts, full = frames_of(tmp_path / "parts" / job.id), frames_of(tmp_path / "whole" / job.id)
        assert parts.shape == full.shape == (6, *full.shape[1:])
        assert np.abs(parts - full).max() <= 1 / 255, job.id
        if job.mode != "control":  # (a tiny ControlNet moves frames less than this; its subsets are tested below)
            assert np.abs(full[1:] - full[:1]).max() > 4 / 255, job.id  # frames differ: the comparison can fail


def test_a_split_from_a_wrong_stored_frame_count_still_gives_every_frame(tmp_path, model, tiny_controlnet_dir,
                                                                         square_clip_dir, latent_pixels):
    """A clip's frame count comes from its container's stored duration; where that is short, the parts for the
    frames it missed are rendered after; where it is long, parts past the end render nothing."""
    from dataclasses import replace

    job = read_jobs(write_jobs(tmp_path / "jobs.jsonl", {
        "id": "c", "mode": "control", "prompt": "a red square", "model": model["model"], "input": str(square_clip_dir),
        "controlnet": str(tiny_controlnet_dir), "resolution": 64, "steps": 3, "chunk_size": 3, "seed": 4}))[0]
    assert job.frames == 6
    (tmp_path / "whole").mkdir()
    assert run_local([job], Collector(lambda j: (tmp_path / "whole" / j.id, None))) is None
    whole = frames_of(tmp_path / "whole" / "c")
    for told in (4, 8):
        wrong = replace(job, frames=told)
        tasks = run_split([wrong], tmp_path / f"told{told}", split_frames_for_workers(told, 3))
        got = frames_of(tmp_path / f"told{told}" / "c")
        assert got.shape == whole.shape and np.abs(got - whole).max() <= 1 / 255, told
        assert [t[2] for t in tasks] == ([[0, 1, 2], [3], [4, 5]] if told == 4 else [[0, 1, 2], [3, 4], [5, 6], [7]])


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


def test_jobs_lines_split_at_newlines_only_and_a_byte_order_mark_is_skipped(tmp_path):
    prompt = "a red circle\u2028on a blue\x85background"  # what str.splitlines() would split
    line = json.dumps({"id": "a", "prompt": prompt}, ensure_ascii=False)
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (line + "\r\n" + json.dumps({"id": "b", "prompt": "x"}) + "\n").encode())
    jobs = read_jobs(path)
    assert [j.id for j in jobs] == ["a", "b"] and jobs[0].params["prompt"] == prompt


def test_outputs_that_would_collide_or_clobber_are_refused_before_anything_runs(capsys, tmp_path, model):
    out = tmp_path / "out"
    (out / "manifest.jsonl").mkdir(parents=True)
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"id": "a", "prompt": "x", **model})
    code, _, err = cli(capsys, "batch", jobs, "-o", out)
    assert code == 2 and "manifest.jsonl is not a file" in err and err.count("\n") == 1, err
    (out / "manifest.jsonl").rmdir()
    for pair, fmt, match in (((("a", "x"), ("a_sheet.png", "y")), "frames", "its output a_sheet.png would also be "
                              "line 1's (a)"), ((("manifest.jsonl", "x"),), "frames", "the batch's manifest")):
        jobs = write_jobs(tmp_path / "jobs.jsonl", *({"id": i, "prompt": p, **model} for i, p in pair))
        code, _, err = cli(capsys, "batch", jobs, "-o", out, "--format", fmt, "--sheet")
        assert code == 2 and match in err and err.count("\n") == 1, err
    # A folder this batch did not write is neither overwritten nor deleted (the command line refuses it too) ...
    (out / "clip").mkdir()
    (out / "clip" / "0001.png").write_bytes(b"mine")
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"id": "clip", "prompt": "x", **model})
    code, _, err = cli(capsys, "batch", jobs, "-o", out, "--format", "frames")
    assert code == 2 and "exists and this batch did not write it" in err, err
    assert os.listdir(out / "clip") == ["0001.png"] and sorted(os.listdir(out)) == ["clip"]
    # ... while its own output is replaced on a rerun with other options, and a dotted id names a folder of frames.
    (out / "clip" / "0001.png").unlink()
    (out / "clip").rmdir()
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"id": "cat.v2", "prompt": "x", **model})
    assert cli(capsys, "batch", jobs, "-o", out, "--format", "frames")[0] == 0
    assert sorted(os.listdir(out / "cat.v2")) == ["0000.png", "0001.png", "0002.png"]
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"id": "cat.v2", "prompt": "x", **model, "frames": 2})
    code, _, err = cli(capsys, "batch", jobs, "-o", out, "--format", "frames")
    assert code == 0 and sorted(os.listdir(out / "cat.v2")) == ["0000.png", "0001.png"], err

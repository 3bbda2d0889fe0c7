"""No run starts that cannot finish: the memory estimate decides before any weights load."""

import pytest

from t2vzero.cli import run
from t2vzero.errors import UserError
from t2vzero.plan import MARGIN, available_memory, fit, plan_run

KW = dict(mode="generate", size=(64, 64), steps=4, guidance=7.5, device="cpu", dtype="float32")


def plan(model_dir, frames=16, chunk_size=None, **kw):
    return plan_run(str(model_dir), None, frames=frames, chunk_size=chunk_size, **{**KW, **kw})


def test_a_run_that_fits_runs_as_asked(tiny_model_dir):
    p = plan(tiny_model_dir)
    decision = fit(p, available=int(p.estimate.peak * MARGIN) + 1)
    assert decision.chunk_size is None and decision.notes == []


def test_too_many_frames_without_a_chunk_size_get_the_largest_chunk_that_fits(tiny_model_dir):
    # (Below ~50 frames a call, this tiny model's peak is set by decoding 8 frames, whatever the chunk.)
    p = plan(tiny_model_dir, frames=128)
    at = {c: p.reestimate(c, (64, 64)).peak for c in (60, 80, 81, 127)}
    assert at[60] < at[80] < at[81] < at[127] < p.estimate.peak  # activations grow with the chunk
    decision = fit(p, available=int(at[80] * MARGIN) + 1)
    assert decision.chunk_size == 80 and "running in chunks of 80 (--chunk-size 80)" in decision.notes[0]


def test_the_fitting_chunk_is_found_in_a_few_estimates_even_for_a_million_frames(tiny_model_dir):
    """A job line or command with a huge frame count is planned at once, not one estimate per chunk size."""
    import dataclasses

    p = plan(tiny_model_dir, frames=10**6)
    calls = []
    counted = dataclasses.replace(p, reestimate=lambda chunk, size: calls.append(chunk) or p.reestimate(chunk, size))
    room = int(p.reestimate(1000, (64, 64)).peak * MARGIN) + 1
    chunk = fit(counted, available=room).chunk_size
    assert chunk >= 1000 and p.reestimate(chunk + 1, (64, 64)).peak * MARGIN > room  # the largest that fits
    assert len(calls) < 40


def test_a_run_that_cannot_fit_is_refused_with_what_would_fit(tiny_model_dir):
    p = plan(tiny_model_dir, frames=128, chunk_size=100)
    room = int(p.reestimate(60, (64, 64)).peak * MARGIN) + 1
    with pytest.raises(UserError, match=r"needs about .* GiB but .* GiB are free on cpu; use --chunk-size 60, or "
                                        r"--force"):
        fit(p, available=room)
    forced = fit(p, available=room, force=True)
    assert forced.chunk_size == 100 and "running anyway (--force)" in forced.notes[0]
    # Not even chunks of 2 fit: a smaller size (at chunk 2) is named instead.
    big = plan(tiny_model_dir, frames=8, chunk_size=2, size=(512, 512))
    small = big.reestimate(2, (256, 256)).peak * MARGIN
    with pytest.raises(UserError, match=r"use --size \d+x\d+ with --chunk-size 2") as refused:
        fit(big, available=int(small))
    w, h = (int(v) for v in str(refused.value).split("--size ")[1].split(" ")[0].split("x"))
    assert big.reestimate(2, (w, h)).peak * MARGIN <= small and w < 512


def test_frames_far_above_the_native_size_warn_with_a_rough_time(tiny_model_dir):
    p = plan(tiny_model_dir, frames=8, size=(512, 512), steps=50)
    notes = fit(p, available=None, threads=2).notes
    assert len(notes) == 1 and "512x512 is 64x the model's native 64x64 area; on this CPU expect roughly" in notes[0]
    assert fit(plan(tiny_model_dir, size=(128, 128)), available=None).notes == []  # 4x: not far above
    long = fit(plan(tiny_model_dir, frames=100000, steps=50), available=None, threads=2).notes
    assert len(long) == 1 and long[0].startswith("warning: 100000 frames at 64x64: on this CPU expect roughly")
    assert p.estimate.cpu_seconds(2) == pytest.approx(p.estimate.cpu_seconds(1) / 2)
    assert p.estimate.flops > 50 * plan(tiny_model_dir, frames=8, steps=50).estimate.flops  # 64x the area


def test_an_unknown_architecture_warns_and_runs(tmp_path):
    p = plan_run("someone/some-model", None, frames=8, chunk_size=None, **KW)
    decision = fit(p, available=1)
    assert decision.chunk_size is None and "cannot estimate" in decision.notes[0] and "running anyway" in \
        decision.notes[0]


def test_available_memory_reads_the_kernel():
    free = available_memory("cpu")
    assert free is not None and 2**20 < free < 2**50


@pytest.fixture
def little_memory(monkeypatch):
    import t2vzero.plan

    def set_free(n):
        monkeypatch.setattr(t2vzero.plan, "available_memory", lambda device: n)
    return set_free


def test_the_command_line_refuses_before_loading_and_force_runs(tiny_model_dir, tmp_path, capsys, monkeypatch,
                                                                little_memory):
    import t2vzero.models

    out = tmp_path / "v.gif"
    args = ["generate", "a red circle", "--model", str(tiny_model_dir), "--steps", "2", "--frames", "3",
            "--chunk-size", "3", "-o", str(out)]
    little_memory(2**20)
    real_load = t2vzero.models.load_components
    monkeypatch.setattr(t2vzero.models, "load_components", lambda *a, **k: pytest.fail("weights were loaded"))
    assert run(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: this run needs about") and "--force" in err and err.count("\n") == 1, err
    assert not out.exists()
    monkeypatch.setattr(t2vzero.models, "load_components", real_load)
    assert run([*args, "--force"]) == 0 and out.exists()
    assert "running anyway (--force)" in capsys.readouterr().err


def test_the_command_line_picks_a_chunk_size_and_says_so(tiny_model_dir, tmp_path, capsys, monkeypatch,
                                                         little_memory):
    from t2vzero.pipeline import TextToVideoZero

    p = plan(tiny_model_dir, frames=100, steps=2, guidance=None)
    little_memory(int(p.reestimate(60, (64, 64)).peak * MARGIN) + 1)
    seen = []
    real_call = TextToVideoZero.__call__
    monkeypatch.setattr(TextToVideoZero, "__call__",
                        lambda self, *a, **kw: seen.append(kw["chunk_size"]) or real_call(self, *a, **kw))
    out = tmp_path / "v.gif"
    assert run(["generate", "a red circle", "--model", str(tiny_model_dir), "--steps", "2", "--frames", "100",
                "--size", "64x64", "-o", str(out)]) == 0
    assert seen == [60] and "running in chunks of 60 (--chunk-size 60)" in capsys.readouterr().err
    assert run(["generate", "a red circle", "--model", str(tiny_model_dir), "--frames", "100", "--size", "64x64",
                "--steps", "2", "-o", str(tmp_path / "w.gif"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "estimated peak memory" in printed and "running in chunks of 60" in printed

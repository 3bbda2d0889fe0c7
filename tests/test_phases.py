"""The core's shape: separable phases, frame 1 once per step, per-call attention state (threads)."""

import threading

import numpy as np
import pytest
import torch

from t2vzero import TextToVideoZero
from t2vzero.errors import UserError
from t2vzero.modes.text2video import render_latents

KW = dict(video_length=8, height=64, width=64, num_inference_steps=10, t0=300, t1=700)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def pipe(tiny):
    return TextToVideoZero(**tiny)


@pytest.mark.parametrize("eta", [None, 1.0])  # deterministic, and with step noise per frame
def test_rendering_any_split_of_the_frames_gives_the_same_frames(pipe, eta):
    anchor = pipe.anchor(["a red circle", "a blue square"], generator=seeded(3), eta=eta, **KW)
    whole = render_latents(pipe.components, anchor, range(8))
    assert whole.shape[:2] == (2, 8)
    scale = float(whole.abs().max())
    for chunk in (2, 3, 5):
        chunked = render_latents(pipe.components, anchor, range(8), chunk_size=chunk)
        assert (chunked - whole).abs().max() <= 1e-5 * scale, chunk
    # Separate calls for disjoint subsets, as separate workers would make them, in any order.
    parts = {0: None, 1: None}
    for ids in ([5, 2, 7], [0, 1], [3, 4, 6]):
        got = render_latents(pipe.components, anchor, ids, chunk_size=2)
        for j, k in enumerate(ids):
            parts[k] = got[:, j]
    stitched = torch.stack([parts[k] for k in range(8)], dim=1)
    assert (stitched - whole).abs().max() <= 1e-5 * scale
    # The subsets are not just frame 1 repeated: frames differ (the comparison can fail).
    assert (whole[:, 1:] - whole[:, :1]).abs().max() > 1e-3 * scale


def test_render_equals_the_one_call_generation(pipe, latent_output):
    full = pipe("a red circle", generator=seeded(5), progress=False, **KW).frames
    anchor = pipe.anchor("a red circle", generator=seeded(5), **KW)
    assert np.abs(pipe.render(anchor, chunk_size=3).frames - full).max() <= 1e-5 * np.abs(full).max()
    with pytest.raises(UserError, match="frame ids"):
        pipe.render(anchor, [8])
    with pytest.raises(UserError, match="frame ids"):
        pipe.render(anchor, [1, 1])


def count_unet_frames(unet):
    """Frames (rows per guidance group) through the UNet at each call, recorded by a forward pre-hook."""
    calls = []

    def hook(module, args, kwargs):
        calls.append(int(args[0].shape[0]))

    return calls, unet.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("chunk", [None, 2, 3, 4])
def test_a_chunked_run_passes_each_frame_once_per_step(pipe, chunk):
    calls, handle = count_unet_frames(pipe.unet)
    try:
        anchor = pipe.anchor("a red circle", generator=seeded(1), **KW)
        before = list(calls)
        calls.clear()
        pipe.render(anchor, chunk_size=chunk)
    finally:
        handle.remove()
    groups = 2  # guidance on
    steps = len(anchor.timesteps_after_t1)
    frame1_steps = len(anchor.scheduler_at_t0.timesteps) - len(anchor.timesteps_after_t0)  # x_T to t0
    assert before == [groups] * frame1_steps  # the anchor pass is frame 1 alone
    assert sum(calls) == groups * 8 * steps  # N frames per step after t1, as unchunked
    per_call = chunk or 8
    assert max(calls) <= groups * per_call  # memory bounded by the chunk


def test_two_generations_on_one_model_from_two_threads_equal_each_alone(tiny, latent_output):
    pipe = TextToVideoZero(**tiny)
    jobs = [dict(prompt="a red circle", generator_seed=1, video_length=3, chunk_size=None),
            dict(prompt="a blue square on a white background", generator_seed=2, video_length=5, chunk_size=2)]

    def run(job):
        return pipe(job["prompt"], generator=seeded(job["generator_seed"]), video_length=job["video_length"],
                    chunk_size=job["chunk_size"], height=64, width=64, num_inference_steps=12, progress=False).frames

    alone = [run(job) for job in jobs]
    for _ in range(2):
        results, errors = [None, None], []

        def work(i, results=results, errors=errors):
            try:
                results[i] = run(jobs[i])
            except Exception as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for got, want in zip(results, alone, strict=True):
            assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert all(type(p).__name__ != "CrossFrameAttnProcessor" for p in pipe.unet.attn_processors.values())

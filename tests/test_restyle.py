"""Restyling a video (SDEdit with one shared noise and cross-frame attention), with and without ControlNets."""

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel

from clips import moving_square
from t2vzero import TextToVideoZero
from t2vzero.errors import UserError
from t2vzero.modes.video2video import _start, control_video, restyle_video
from t2vzero.schedule import strength_start

FRAMES = 4
KW = dict(num_inference_steps=10, progress=False)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def clip(frames=FRAMES, size=64):
    return moving_square(frames, size, size, top=20, side=20, left=8, step=6, colour=(220, 40, 40), ground=240)


@pytest.fixture(scope="module")
def controlnet(tiny):
    torch.manual_seed(2)
    net = ControlNetModel.from_unet(tiny["unet"]).eval()
    with torch.no_grad():  # from_unet zero-initialises the output convs; make them matter
        for p in net.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.3)
    return net


def unet_calls(unet):
    calls = []
    handle = unet.register_forward_pre_hook(lambda module, args, kwargs: calls.append(1), with_kwargs=True)
    return calls, handle


@pytest.mark.parametrize("strength,steps", [(1.0, 10), (0.6, 6), (0.35, 3), (0.05, 0)])
def test_strength_is_the_share_of_steps_run(tiny, strength, steps):
    assert strength_start(10, strength) == 10 - steps if steps else True
    if not steps:
        with pytest.raises(UserError, match="runs no step"):
            restyle_video(tiny, "a blue square", clip(), strength=strength, **KW)
        return
    calls, handle = unet_calls(tiny["unet"])
    try:
        restyle_video(tiny, "a blue square", clip(), strength=strength, generator=seeded(0), **KW)
    finally:
        handle.remove()
    assert len(calls) == steps  # one UNet call per step (both guidance groups in one batch)
    assert strength_start(10, strength, order=2) == 2 * (10 - steps)  # second-order samplers: two entries a step


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.01, float("nan"), True])
def test_strength_outside_zero_one_is_refused(tiny, bad):
    with pytest.raises(UserError, match="strength"):
        restyle_video(tiny, "a blue square", clip(), strength=bad, **KW)


@pytest.mark.parametrize("name", [None, "euler"])  # DDIM (variance preserving) and Euler (sigma space)
def test_frames_are_noised_as_the_schedulers_own_forward_process(tiny, name):
    from t2vzero.schedulers import make_scheduler

    sched = make_scheduler(tiny["scheduler"], name)
    sched.set_timesteps(10)
    z = torch.randn(3, 4, 8, 8, generator=seeded(1))
    noise = torch.randn(1, 4, 8, 8, generator=seeded(2)).repeat(3, 1, 1, 1)
    begin = strength_start(10, 0.6)
    resumed, start, timesteps = _start(sched, begin, noise, z)
    assert len(timesteps) == 6 and timesteps[0] == sched.timesteps[begin]
    oracle = resumed.add_noise(z, noise, timesteps[:1])  # diffusers' own forward process at that step
    assert (start - oracle).abs().max() < 1e-5
    assert (start - z).abs().max() > 0.1  # it is noised


def test_frames_share_one_noise(tiny):
    still = np.repeat(clip()[:1], FRAMES, axis=0)
    out = restyle_video(tiny, "a blue square", still, strength=0.6, generator=seeded(3), **KW).frames[0]
    # Equal frames, one noise: equal outputs (a noise per frame would make them differ).
    assert np.abs(out - out[:1]).max() < 1e-5
    moving = restyle_video(tiny, "a blue square", clip(), strength=0.6, generator=seeded(3), **KW).frames[0]
    assert np.abs(moving[1:] - moving[:1]).max() > 1e-4


def test_the_source_matters_below_strength_one_and_not_at_one(tiny, latent_output):
    other = clip()[:, :, ::-1].copy()  # mirrored: the square elsewhere
    kw = dict(generator=seeded(4), **KW)
    for strength, differ in ((0.5, True), (1.0, False)):
        a = restyle_video(tiny, "a blue square", clip(), strength=strength, **kw).frames
        kw["generator"] = seeded(4)
        b = restyle_video(tiny, "a blue square", other, strength=strength, **kw).frames
        kw["generator"] = seeded(4)
        assert (np.abs(a - b).max() > 1e-3) == differ, strength


@pytest.mark.parametrize("scheduler", [None, "euler-a"])  # deterministic, and with step noise per frame
def test_restyle_chunked_equals_unchunked(tiny, scheduler):
    kw = dict(strength=0.7, scheduler=scheduler, **KW)
    full = restyle_video(tiny, "a blue square", clip(5), generator=seeded(5), **kw).frames
    chunked = restyle_video(tiny, "a blue square", clip(5), generator=seeded(5), chunk_size=2, **kw).frames
    assert full.shape == (1, 5, 64, 64, 3)
    assert np.abs(chunked - full).max() < 1e-5


def test_restyle_at_strength_one_with_a_controlnet_is_control(tiny, controlnet, latent_output):
    edges = 255 - clip()
    ours = restyle_video(tiny, "a blue square", clip(), strength=1.0, controlnets=[controlnet], conditions=[edges],
                         guidance_scale=9.0, generator=seeded(6), **KW).frames
    control = control_video(tiny, "a blue square", [edges], [controlnet], guidance_scale=9.0, generator=seeded(6),
                            **KW).frames
    assert np.array_equal(ours, control)
    part = restyle_video(tiny, "a blue square", clip(), strength=0.6, controlnets=[controlnet], conditions=[edges],
                         generator=seeded(6), **KW).frames
    plain = restyle_video(tiny, "a blue square", clip(), strength=0.6, generator=seeded(6), **KW).frames
    assert np.abs(part - plain).max() > 1e-3 * np.abs(plain).max()  # the ControlNet acts below strength 1 too
    chunked = restyle_video(tiny, "a blue square", clip(), strength=0.6, controlnets=[controlnet],
                            conditions=[edges], scales=[1.0], chunk_size=3, generator=seeded(6), **KW).frames
    assert np.abs(chunked - part).max() <= 1e-5 * np.abs(part).max()


def test_restyle_refuses_bad_arguments(tiny, controlnet):
    from t2vzero.tiny import make_tiny_components

    cases = [
        (lambda: restyle_video(tiny, "x", clip(), compat="diffusers", **KW), "diffusers"),
        (lambda: restyle_video(tiny, "x", clip()[:, :60], **KW), "multiples of 8"),
        (lambda: restyle_video(tiny, "x", clip(), controlnets=[controlnet], conditions=[clip(3)], **KW),
         "one condition map per input frame"),
        (lambda: restyle_video(tiny, "x", clip(), controlnets=[controlnet], **KW), "one condition video per"),
        (lambda: restyle_video(make_tiny_components(seed=1, in_channels=8), "x", clip(), **KW), "input channels"),
    ]
    for call, match in cases:
        with pytest.raises(UserError, match=match):
            call()


def test_restyle_on_sdxl(latent_output):
    from t2vzero.tiny import make_tiny_sdxl_components

    pipe = TextToVideoZero(**make_tiny_sdxl_components(seed=0))
    kw = dict(strength=0.7, **KW)
    full = pipe.restyle("a blue square", clip(), generator=seeded(7), **kw).frames
    chunked = pipe.restyle("a blue square", clip(), generator=seeded(7), chunk_size=2, **kw).frames
    assert full.shape == (1, FRAMES, 8, 8, 4)
    assert np.abs(chunked - full).max() <= 1e-5 * np.abs(full).max()
    assert np.abs(full[0, 1:] - full[0, :1]).max() > 1e-4  # the frames follow their sources


def test_an_inverted_start_costs_one_guidance_free_call_per_step_run(tiny):
    calls, handle = unet_calls(tiny["unet"])
    try:
        restyle_video(tiny, "a blue square", clip(), strength=0.6, invert=True, **KW)
    finally:
        handle.remove()
    assert len(calls) == 6 + 6  # 6 inversion steps (one batch of 4 frames), then 6 denoising steps


@pytest.mark.parametrize("scheduler", [None, "euler"])
def test_an_inverted_start_is_deterministic_chunkable_and_splittable(tiny, latent_output, scheduler):
    kw = dict(strength=0.7, invert=True, scheduler=scheduler, **KW)
    full = restyle_video(tiny, "a blue square", clip(5), generator=seeded(5), **kw).frames
    again = restyle_video(tiny, "a blue square", clip(5), generator=seeded(6), **kw).frames
    assert np.array_equal(full, again)  # no noise is drawn: the seed does not matter
    chunked = restyle_video(tiny, "a blue square", clip(5), chunk_size=2, **kw).frames
    part = restyle_video(tiny, "a blue square", clip(5), frame_ids=[3, 4], **kw).frames
    # Equal up to float rounding: the inversion's batches differ (fp32 sums in another order, over 7 steps).
    assert np.abs(chunked - full).max() <= 1e-4 * np.abs(full).max()
    assert np.abs(part - full[:, 3:]).max() <= 1e-4 * np.abs(full).max()
    noise = restyle_video(tiny, "a blue square", clip(5), generator=seeded(5), **{**kw, "invert": False}).frames
    assert np.abs(noise - full).max() > 1e-3 * np.abs(full).max()


def test_an_inverted_start_on_sdxl(latent_output):
    from t2vzero.tiny import make_tiny_sdxl_components

    pipe = TextToVideoZero(**make_tiny_sdxl_components(seed=0))
    out = pipe.restyle("a blue square", clip(), strength=0.7, invert=True, **KW).frames
    assert out.shape == (1, FRAMES, 8, 8, 4) and np.isfinite(out).all()
    assert np.abs(out[0, 1:] - out[0, :1]).max() > 1e-4

"""Any sampler by name (`t2vzero.schedulers`), few steps and guidance off, against diffusers' own pipelines."""

import numpy as np
import pytest
import torch
from diffusers import LatentConsistencyModelPipeline, StableDiffusionPipeline
from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
    CrossFrameAttnProcessor2_0,
)

from t2vzero import TextToVideoZero
from t2vzero.cli import run
from t2vzero.errors import UserError
from t2vzero.generate import stream_seeds
from t2vzero.schedulers import SCHEDULERS, make_scheduler

STOCHASTIC = {"euler-a", "lcm", "tcd"}
KW = dict(height=64, width=64, t0=400, t1=800, progress=False)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def parts():
    from t2vzero.tiny import make_tiny_components

    return make_tiny_components(seed=3)


def sd_pipeline(parts, scheduler):
    sd = StableDiffusionPipeline(**{**parts, "scheduler": scheduler}, safety_checker=None, feature_extractor=None,
                                 requires_safety_checker=False)
    sd.set_progress_bar_config(disable=True)
    return sd


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_one_frame_is_the_schedulers_own_text_to_image(parts, name, latent_output):
    steps, guidance = (6, 1.0) if name in ("lcm", "tcd") else (8, 7.5)
    sd = sd_pipeline(parts, make_scheduler(parts["scheduler"], name))
    # Same x_T; the pipeline's step noise from the generator our frame 1 uses (stream 0).
    g = seeded(4)
    x_T = torch.randn((1, 4, 8, 8), generator=g)
    step_gen = torch.Generator().manual_seed(stream_seeds(g, 1, 2)[0][0])  # seeded after x_T, as the pipeline does
    # The pipeline passes its own eta (0.0) to schedulers that take one; ours leaves each its own default
    # (TCD's gamma 0.3, DDIM's 0.0).
    ref = sd("a red circle", height=64, width=64, num_inference_steps=steps, guidance_scale=guidance, latents=x_T,
             generator=step_gen, eta=0.3 if name == "tcd" else 0.0, output_type="latent").images
    ref = ref.permute(0, 2, 3, 1).numpy()
    pipe = TextToVideoZero(**parts)
    ours = pipe("a red circle", video_length=1, num_inference_steps=steps, guidance_scale=guidance, scheduler=name,
                generator=seeded(4), **KW).frames[0]
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()
    other = pipe("a red circle", video_length=1, num_inference_steps=steps, guidance_scale=guidance, scheduler=name,
                 generator=seeded(5), **KW).frames[0]
    assert np.abs(other - ref).max() > 1e-2 * np.abs(ref).max()  # the comparison can fail


@pytest.mark.parametrize("name,spacing", [(n, None) for n in SCHEDULERS] + [("euler-a", "trailing"),
                                                                             ("ddim", "trailing"),
                                                                             ("dpmpp-2m", "linspace")])
def test_chunked_equals_unchunked_for_every_sampler(parts, name, spacing, latent_output):
    pipe = TextToVideoZero(**parts)
    steps = 4 if spacing == "trailing" or name in ("lcm", "tcd") else 8
    kw = dict(KW, video_length=5, num_inference_steps=steps, scheduler=name, timestep_spacing=spacing,
              guidance_scale=1.0 if steps == 4 else 7.5)
    full = pipe("a green triangle", generator=seeded(2), **kw).frames
    chunked = pipe("a green triangle", generator=seeded(2), chunk_size=2, **kw).frames
    assert np.isfinite(full).all()
    assert np.abs(chunked - full).max() <= 1e-5 * np.abs(full).max()
    assert np.abs(full[0, 1:] - full[0, :1]).max() > 1e-3  # frames 2..N are their own


def symmetric_shift_left(x, k):
    """out[..., x] = in[..., x + k], mirrored about the outer pixel edge (numpy's 'symmetric' padding)."""
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, k)], mode="symmetric")
    return padded[..., k:]


@pytest.fixture(scope="module")
def lcm_parts(parts):
    """An LCM-distilled-style UNet: guidance enters as an embedding of w (`timestep_cond`)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(11)
    unet = UNet2DConditionModel.from_config(parts["unet"].config, time_cond_proj_dim=32).eval()
    return {**parts, "unet": unet}


@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_lcm_with_guidance_off_equals_a_hand_built_reference(lcm_parts, guidance, latent_output):
    """diffusers' LCM pipeline runs frame 1 (its latents read at t1 and t0 by a step callback), the warp
    and the jump are done by hand, and the same pipeline with diffusers' cross-frame processor
    denoises all frames from t1; each frame's step noise comes from its own stream's generator."""
    parts = lcm_parts
    frames, steps, prompt = 4, 6, "a blue square"
    lcm = LatentConsistencyModelPipeline(**{**parts, "scheduler": make_scheduler(parts["scheduler"], "lcm")},
                                         safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    lcm.set_progress_bar_config(disable=True)
    lcm.scheduler.set_timesteps(steps)
    timesteps = lcm.scheduler.timesteps.tolist()
    i1 = int(np.argmin([abs(t - 800) for t in timesteps]))
    i0 = int(np.argmin([abs(t - 400) for t in timesteps]))
    g = seeded(7)
    x_T = torch.randn((1, 4, 8, 8), generator=g)
    seeds = stream_seeds(g, 1, frames + 1)[0]  # read after x_T, without advancing g
    forward = torch.randn((1, frames - 1, 4, 8, 8), generator=g)
    seen = {}

    def grab(pipe, i, t, kw):
        seen[i + 1] = kw["latents"].clone()  # the input of step i + 1
        return kw

    lcm(prompt, num_inference_steps=steps, guidance_scale=guidance, latents=x_T, output_type="latent",
        generator=seeded(seeds[0]), callback_on_step_end=grab, callback_on_step_end_tensor_inputs=["latents"])
    x_t1 = x_T if i1 == 0 else seen[i1]
    x_t0 = seen[i0].numpy()
    bars = lcm.scheduler.alphas_cumprod
    ratio = float(bars[timesteps[i1]] / bars[timesteps[i0]])
    start = [x_t1[0]]
    for k in range(1, frames):  # δ = 64 on a 512 grid: k latent pixels left at 8x8 latents
        warped = torch.from_numpy(symmetric_shift_left(x_t0[0], k).copy())
        start.append(ratio ** 0.5 * warped + (1 - ratio) ** 0.5 * forward[0, k - 1])
    original = lcm.unet.attn_processors
    lcm.unet.set_attn_processor(CrossFrameAttnProcessor2_0(batch_size=1))
    try:
        ref = lcm(prompt, num_images_per_prompt=frames, timesteps=timesteps[i1:], guidance_scale=guidance,
                  latents=torch.stack(start), output_type="latent",
                  generator=[seeded(s) for s in seeds[1:]]).images.permute(0, 2, 3, 1).numpy()
    finally:
        lcm.unet.set_attn_processor(original)
    pipe = TextToVideoZero(**parts)
    kw = dict(KW, video_length=frames, num_inference_steps=steps, guidance_scale=guidance, motion=(64.0, 0.0),
              scheduler="lcm")
    ours = pipe(prompt, generator=seeded(7), **kw).frames[0]
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()
    plain = pipe(prompt, generator=seeded(7), cross_frame_attention=False, **kw).frames[0]
    # It sees cross-frame attention: without, frames miss the reference by 10x the tolerance above or more.
    assert np.abs(plain[1:] - ref[1:]).max() > 1e-3 * np.abs(ref).max()
    chunked = pipe(prompt, generator=seeded(7), chunk_size=2, **kw).frames[0]
    assert np.abs(chunked - ours).max() <= 1e-5 * np.abs(ref).max()
    if guidance > 1:  # w reaches the UNet: another w gives other frames
        other = pipe(prompt, generator=seeded(7), **{**kw, "guidance_scale": 1.0}).frames[0]
        assert np.abs(other - ours).max() > 1e-2 * np.abs(ref).max()


def test_a_few_step_schedule_snaps_t0_t1_and_the_default_steps_of_lcm(parts):
    pipe = TextToVideoZero(**parts)
    anchor = pipe.anchor("a red circle", video_length=3, height=64, width=64, scheduler="lcm", guidance_scale=1.0,
                         generator=seeded(0))
    assert len(anchor.scheduler_at_t0.timesteps) == 4  # LCM's own default, not the model's 50
    assert anchor.jump.t1 > anchor.jump.t0


def test_bad_sampler_arguments_are_user_errors(parts):
    pipe = TextToVideoZero(**parts)
    with pytest.raises(UserError, match="unknown scheduler 'dpm'; use one of ddim, dpmpp-2m"):
        pipe("a", scheduler="dpm", **KW)
    with pytest.raises(UserError, match="no timestep spacing"):
        pipe("a", scheduler="lcm", timestep_spacing="trailing", **KW)
    with pytest.raises(UserError, match="1000 or fewer"):
        pipe("a", num_inference_steps=5000, **KW)


@pytest.mark.parametrize("args,match", [
    (["--scheduler", "dpm"], "unknown scheduler 'dpm'; use one of"),
    (["--scheduler", "lcm", "--timestep-spacing", "trailing"], "no timestep spacing"),
    (["--timestep-spacing", "sideways"], "sideways"),
])
def test_cli_rejects_bad_sampler_options_before_any_work(tmp_path, capsys, args, match):
    out = tmp_path / "v.mp4"
    for command in (["generate", "a red circle"], ["edit", str(tmp_path / "missing.mp4"), "make it blue"]):
        assert run([*command, *args, "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_one_step_turbo_style_moves_frame_ones_initial_noise(parts, latent_output):
    """One step (SD-Turbo style: trailing spacing, guidance off) leaves no room for the jump: frames 2..N start
    from frame 1's initial noise moved by the motion field, and the one step denoises them together."""
    from t2vzero.motion import latent_shifts, translate_latents

    pipe = TextToVideoZero(**parts)
    kw = dict(KW, video_length=3, num_inference_steps=1, scheduler="euler-a", timestep_spacing="trailing",
              guidance_scale=0.0)
    anchor = pipe.anchor("a red circle", motion=(64.0, 0.0), generator=seeded(1), **kw)
    assert anchor.x_t1.equal(anchor.x_t0) and len(anchor.timesteps_after_t1) == 1
    from t2vzero.modes.text2video import latents_at_t1

    start = latents_at_t1(anchor, [0, 1, 2])[0]
    moved = translate_latents(anchor.x_t0.expand(2, -1, -1, -1), latent_shifts([1, 2], (64.0, 0.0), (64, 64), (8, 8)))
    assert torch.equal(start[1:], moved) and not torch.equal(start[1], start[0])
    still = pipe("a red circle", motion=(0.0, 0.0), generator=seeded(1), **kw).frames[0]
    assert np.abs(still - still[:1]).max() <= 1e-5 * np.abs(still).max()  # the same noise, the same frame
    one = pipe("a red circle", **{**kw, "video_length": 1}, generator=seeded(1)).frames[0, 0]
    # frame 1 is the one-step text-to-image whatever the frame count (up to batch-size rounding)
    assert np.abs(one - still[0]).max() <= 1e-5 * np.abs(one).max()
    # and that is diffusers' own one-step text-to-image from the same noise
    g = seeded(1)
    x_T = torch.randn((1, 4, 8, 8), generator=g)
    sd = sd_pipeline(parts, make_scheduler(parts["scheduler"], "euler-a", "trailing"))
    ref = sd("a red circle", height=64, width=64, num_inference_steps=1, guidance_scale=0.0, output_type="latent",
             latents=x_T,
             generator=torch.Generator().manual_seed(stream_seeds(g, 1, 2)[0][0])).images[0].permute(1, 2, 0).numpy()
    assert np.abs(one - ref).max() <= 1e-4 * np.abs(ref).max()
    assert np.abs(still[0] - pipe("a red circle", generator=seeded(2), **kw).frames[0, 0]).max() > 1e-2


def test_the_cli_runs_a_one_step_video(tmp_path, capsys, tiny_model_dir):
    out = tmp_path / "v.gif"
    assert run(["generate", "a red circle", "--model", str(tiny_model_dir), "--steps", "1", "--guidance", "0",
                "--scheduler", "euler-a", "--timestep-spacing", "trailing", "--frames", "3", "-o", str(out)]) == 0, \
        capsys.readouterr().err
    assert out.is_file()


def test_a_model_may_ship_its_sampler_in_its_defaults(parts, tmp_path):
    import json

    from t2vzero.models import read_model_defaults

    pipe = TextToVideoZero(**parts, defaults={"scheduler": "euler", "timestep_spacing": "trailing",
                                              "num_inference_steps": 6})
    anchor = pipe.anchor("a red circle", video_length=2, height=64, width=64, generator=seeded(0))
    assert type(anchor.scheduler_at_t0).__name__ == "EulerDiscreteScheduler"
    assert len(anchor.scheduler_at_t0.timesteps) == 6 and anchor.scheduler_at_t0.config.timestep_spacing == "trailing"
    chosen = pipe.anchor("a red circle", video_length=2, height=64, width=64, generator=seeded(0), scheduler="lcm")
    assert type(chosen.scheduler_at_t0).__name__ == "LCMScheduler" and len(chosen.scheduler_at_t0.timesteps) == 4
    (tmp_path / "t2vzero.json").write_text(json.dumps({"scheduler": "dpm"}))
    with pytest.raises(UserError, match="scheduler must be a sampler name"):
        read_model_defaults(tmp_path)

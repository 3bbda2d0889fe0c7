"""Text-to-video with any diffusers scheduler: restarting at t1, stochastic steps, batching, chunking."""

import copy

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2DiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from t2vzero import TextToVideoZero
from t2vzero.errors import UserError
from t2vzero.schedule import alpha_bar_at, forward_jump, jump_steps, resume_at

SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                   clip_sample=False, set_alpha_to_one=False, steps_offset=1)
DETERMINISTIC = [DDIMScheduler, PNDMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler,
                 UniPCMultistepScheduler, HeunDiscreteScheduler, KDPM2DiscreteScheduler]


def make(cls, **extra):
    kw = dict(SD_SCHEDULE, **extra)
    if cls is PNDMScheduler:
        kw.setdefault("skip_prk_steps", True)  # Stable Diffusion's PNDM config
    return cls.from_config(kw)  # ignores the keys a scheduler does not take


def run(scheduler, timesteps, x, model):
    for t in timesteps:
        x = scheduler.step(model(scheduler.scale_model_input(x, t), t), t, x).prev_sample
    return x


def toy_model(x, t):
    return 0.3 * x + 0.01 * float(t) / 1000


@pytest.mark.parametrize("cls", DETERMINISTIC)
def test_resuming_at_the_first_step_is_the_plain_run(cls):
    scheduler = make(cls)
    scheduler.set_timesteps(10)
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0)) * scheduler.init_noise_sigma
    plain = run(copy.deepcopy(scheduler), scheduler.timesteps, x, toy_model)
    fresh, timesteps = resume_at(scheduler, 0)
    assert torch.equal(timesteps, scheduler.timesteps)
    assert torch.allclose(run(fresh, timesteps, x, toy_model), plain, atol=1e-6)


@pytest.mark.parametrize("cls", [DDIMScheduler, PNDMScheduler])
@pytest.mark.parametrize("index", [1, 2, 3, 7])
def test_a_resumed_run_covers_exactly_the_rest_of_the_schedule(cls, index):
    # With a model that predicts zero noise, each step only rescales by sqrt(ᾱ_prev/ᾱ_t): a run that
    # skips or repeats a timestep would not telescope to sqrt(ᾱ_final/ᾱ_start).
    scheduler = make(cls)
    scheduler.set_timesteps(10)
    fresh, timesteps = resume_at(scheduler, index)
    x = torch.ones(1, 4, 2, 2)
    out = run(fresh, timesteps, x, lambda x, t: torch.zeros_like(x))
    start = scheduler.alphas_cumprod[int(scheduler.timesteps[index])]
    expected = (scheduler.final_alpha_cumprod / start).sqrt()
    assert torch.allclose(out, x * expected, rtol=1e-5)


def test_single_step_schedulers_resume_exactly_where_they_were():
    for cls in (DDIMScheduler, EulerDiscreteScheduler):
        scheduler = make(cls)
        scheduler.set_timesteps(12)
        x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1)) * scheduler.init_noise_sigma
        full = run(copy.deepcopy(scheduler), scheduler.timesteps, x, toy_model)
        head = run(copy.deepcopy(scheduler), scheduler.timesteps[:5], x, toy_model)
        fresh, timesteps = resume_at(scheduler, 5)
        assert torch.allclose(run(fresh, timesteps, head, toy_model), full, atol=1e-6), cls.__name__


def test_second_order_schedulers_snap_t0_t1_to_the_start_of_a_step_pair():
    scheduler = make(HeunDiscreteScheduler)
    scheduler.set_timesteps(10)
    assert scheduler.order == 2
    for t0, t1 in ((881, 941), (300, 400), (10, 990), (500, 510)):
        i1, i0 = jump_steps(scheduler.timesteps, t0, t1, 1000, scheduler.order)
        assert i1 % 2 == 0 and i0 % 2 == 0 and i1 < i0 < len(scheduler.timesteps)


def test_alpha_bar_comes_from_the_schedulers_own_sigmas():
    ddim = make(DDIMScheduler)
    ddim.set_timesteps(10)
    assert alpha_bar_at(ddim, 3) == pytest.approx(float(ddim.alphas_cumprod[int(ddim.timesteps[3])]))
    karras = make(EulerDiscreteScheduler, use_karras_sigmas=True)
    karras.set_timesteps(10)
    sigma = float(karras.sigmas[4])
    assert alpha_bar_at(karras, 4) == pytest.approx(1 / (1 + sigma**2))
    kdpm2 = make(KDPM2DiscreteScheduler, use_karras_sigmas=True)  # keeps interleaved sigmas, aligned at steps
    kdpm2.set_timesteps(10)
    assert alpha_bar_at(kdpm2, 4) == pytest.approx(1 / (1 + float(kdpm2.sigmas[4]) ** 2))
    # The jump in sigma space adds exactly sqrt(σ1² − σ0²) of noise.
    x, noise = torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2)
    a0, a1 = alpha_bar_at(karras, 6), alpha_bar_at(karras, 4)
    jumped = forward_jump(x, noise, karras.alphas_cumprod, 0, 0, sigma_space=True, alpha_bars=(a0, a1))
    expected = (float(karras.sigmas[4]) ** 2 - float(karras.sigmas[6]) ** 2) ** 0.5
    assert torch.allclose(jumped, torch.full_like(x, expected), rtol=1e-5)


@pytest.fixture(scope="module")
def parts():
    from t2vzero.tiny import make_tiny_components

    return make_tiny_components(seed=2)


def with_scheduler(parts, cls, **extra):
    return TextToVideoZero(**{**parts, "scheduler": make(cls, **extra)})


KW = dict(video_length=3, height=64, width=64, num_inference_steps=8, t0=300, t1=700, progress=False)
SCHEDULERS = [(cls, {}) for cls in DETERMINISTIC] + [(DDIMScheduler, {"eta": 1.0}),
                                                     (EulerAncestralDiscreteScheduler, {})]


@pytest.mark.parametrize("cls,call", SCHEDULERS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_each_video_of_a_batch_equals_it_generated_alone(parts, cls, call):
    pipe = with_scheduler(parts, cls)
    prompts = ["a red circle", "a blue square"]
    gens = [torch.Generator().manual_seed(20 + i) for i in range(4)]
    batch = pipe(prompts, num_videos_per_prompt=2, generator=gens, **call, **KW).frames
    assert batch.shape == (4, 3, 64, 64, 3) and np.isfinite(batch).all()
    for v, prompt in ((1, prompts[0]), (2, prompts[1])):
        solo = pipe(prompt, generator=torch.Generator().manual_seed(20 + v), **call, **KW).frames[0]
        assert np.abs(batch[v] - solo).max() < 1e-4


@pytest.mark.parametrize("cls,call", [(DDIMScheduler, {"eta": 1.0}), (EulerAncestralDiscreteScheduler, {}),
                                      (DPMSolverMultistepScheduler, {})], ids=["ddim-eta1", "euler-a", "dpm"])
def test_chunking_does_not_change_stochastic_or_multistep_samplers(parts, cls, call):
    pipe = with_scheduler(parts, cls)
    kw = {**KW, "video_length": 5}
    full = pipe("a green triangle", generator=torch.Generator().manual_seed(4), **call, **kw).frames
    chunked = pipe("a green triangle", generator=torch.Generator().manual_seed(4), chunk_size=3, **call, **kw).frames
    assert np.abs(full - chunked).max() < 1e-4
    again = pipe("a green triangle", generator=torch.Generator().manual_seed(4), **call, **kw).frames
    assert np.array_equal(full, again)


@pytest.mark.parametrize("cls", [HeunDiscreteScheduler, DPMSolverMultistepScheduler])
def test_frames_after_t1_follow_their_own_latents(parts, cls):
    # Frames 2..N start from warped copies; a scheduler that replayed frame 1's stored state would make
    # them ignore the warp.
    pipe = with_scheduler(parts, cls)
    still = pipe("a red circle", motion=(0, 0), generator=torch.Generator().manual_seed(3), **KW).frames[0]
    moved = pipe("a red circle", motion=(256, 0), generator=torch.Generator().manual_seed(3), **KW).frames[0]
    assert np.abs(still[0] - moved[0]).max() < 1e-6  # frame 1 does not move
    assert np.abs(still[1:] - moved[1:]).mean() > 0.05


def test_pndm_with_runge_kutta_warm_up_is_refused(parts):
    pipe = with_scheduler(parts, PNDMScheduler, skip_prk_steps=False)
    for compat in ("t2vzero", "diffusers"):
        with pytest.raises(UserError, match="skip_prk_steps"):
            pipe("a red circle", compat=compat, **KW)


def test_a_generator_list_must_have_one_per_video(parts):
    pipe = TextToVideoZero(**parts)
    with pytest.raises(UserError, match="one per video"):
        pipe(["a", "b"], generator=[torch.Generator().manual_seed(0)] * 3, **KW)


@pytest.mark.parametrize("cls", [DPMSolverMultistepScheduler, UniPCMultistepScheduler, PNDMScheduler])
def test_one_frame_is_the_schedulers_own_text_to_image(parts, cls, latent_output):
    from diffusers import StableDiffusionPipeline

    sd = StableDiffusionPipeline(**{**parts, "scheduler": make(cls)}, safety_checker=None, feature_extractor=None,
                                 requires_safety_checker=False)
    sd.set_progress_bar_config(disable=True)
    ref = sd("a red circle", height=64, width=64, num_inference_steps=8, generator=torch.Generator().manual_seed(4),
             output_type="latent").images.permute(0, 2, 3, 1).numpy()
    ours = with_scheduler(parts, cls)("a red circle", generator=torch.Generator().manual_seed(4),
                                      **{**KW, "video_length": 1}).frames[0]
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()


def test_a_deterministic_run_advances_the_generator_only_by_its_noise(parts):
    generator = torch.Generator().manual_seed(7)
    TextToVideoZero(**parts)("a red circle", generator=generator, **KW)
    expected = torch.Generator().manual_seed(7)
    torch.randn((1, 4, 8, 8), generator=expected)  # x_T
    torch.randn((1, KW["video_length"] - 1, 4, 8, 8), generator=expected)  # the forward noise of frames 2..N
    assert torch.equal(generator.get_state(), expected.get_state())


def test_frame_one_does_not_depend_on_the_number_of_frames_with_step_noise(parts, latent_output):
    pipe = with_scheduler(parts, DDIMScheduler)
    three, five = (pipe("a red circle", generator=torch.Generator().manual_seed(2), eta=1.0,
                        **{**KW, "video_length": n}).frames[0] for n in (3, 5))
    assert np.abs(three[0] - five[0]).max() <= 1e-5 * np.abs(five[0]).max()


def test_compat_mode_takes_one_generator_like_the_reference(parts):
    pipe = TextToVideoZero(**parts)
    with pytest.raises(UserError, match="one generator"):
        pipe(["a", "b"], compat="diffusers", generator=[torch.Generator().manual_seed(i) for i in range(2)], **KW)

"""The t0/t1 schedule and the DDPM forward jump."""

import pytest
import torch
from diffusers import DDIMScheduler

from t2vzero.errors import UserError
from t2vzero.schedule import forward_jump, jump_steps, sigma_space_jump


def sd_scheduler():
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def schedule(steps):
    s = sd_scheduler()
    s.set_timesteps(steps)
    return s.timesteps


def test_paper_defaults_are_steps_44_and_47_of_50():
    ts = schedule(50)
    i1, i0 = jump_steps(ts, 881, 941, 1000)
    assert (int(ts[i1]), int(ts[i0])) == (941, 881)
    # The reference counts them from the end: t1 = 47, t0 = 44.
    assert (len(ts) - 1 - i1, len(ts) - 1 - i0) == (47, 44)


@pytest.mark.parametrize("steps", [2, 3, 5, 10, 20, 25, 49, 50, 100, 1000])
def test_snapped_indices_keep_at_least_one_step_between(steps):
    ts = schedule(steps)
    i1, i0 = jump_steps(ts, 881, 941, 1000)
    assert 0 <= i1 < i0 < len(ts)
    assert ts[i1] > ts[i0]


def test_snapping_picks_the_nearest_scheduled_timesteps():
    ts = schedule(20)  # 951, 901, 851, ...
    i1, i0 = jump_steps(ts, 881, 941, 1000)
    assert (int(ts[i1]), int(ts[i0])) == (951, 901)
    i1, i0 = jump_steps(ts, 100, 500, 1000)
    assert (int(ts[i1]), int(ts[i0])) == (501, 101)


@pytest.mark.parametrize("t0,t1", [(941, 881), (500, 500), (-1, 10), (10, 1000), (0, 5000)])
def test_bad_t0_t1_is_a_user_error(t0, t1):
    with pytest.raises(UserError, match="t0"):
        jump_steps(schedule(50), t0, t1, 1000)


def test_a_one_step_schedule_puts_t1_and_t0_on_its_only_step():
    assert jump_steps(schedule(1), 881, 941, 1000) == (0, 0)
    assert jump_steps(schedule(2), 881, 941, 1000) == (0, 1)


def test_forward_jump_uses_the_exact_cumulative_alpha_ratio():
    s = sd_scheduler()
    x, noise = torch.ones(1, 4, 2, 2), torch.zeros(1, 4, 2, 2)
    ratio = (s.alphas_cumprod[941] / s.alphas_cumprod[881]).double()
    out = forward_jump(x, noise, s.alphas_cumprod, 881, 941)
    assert torch.allclose(out, torch.full_like(x, float(ratio.sqrt())), atol=1e-6)
    noise_only = forward_jump(torch.zeros_like(x), torch.ones_like(x), s.alphas_cumprod, 881, 941)
    assert torch.allclose(noise_only, torch.full_like(x, float((1 - ratio).sqrt())), atol=1e-6)


def test_reference_jump_is_the_deprecated_pipelines_product():
    s = sd_scheduler()
    x = torch.ones(1, 1, 1, 1)
    ref = torch.prod(s.alphas[881:941]).double()
    out = forward_jump(x, torch.zeros_like(x), s.alphas_cumprod, 881, 941, reference=True)
    assert abs(float(out) - float(ref.sqrt())) < 1e-6
    assert abs(float(out) - float(forward_jump(x, 0 * x, s.alphas_cumprod, 881, 941))) > 1e-5


def test_sigma_space_jump_adds_the_missing_variance():
    s = sd_scheduler()
    ac = s.alphas_cumprod.double()
    sigma2 = (1 - ac) / ac
    x = torch.full((1, 1, 2, 2), 3.0)
    out = forward_jump(x, torch.ones_like(x), s.alphas_cumprod, 881, 941, sigma_space=True)
    assert torch.allclose(out, x + float((sigma2[941] - sigma2[881]).sqrt()), atol=1e-5)


def test_the_jump_in_sigma_space_is_the_ddpm_jump_scaled_by_one_over_root_alpha_bar():
    # x_vp = √ᾱ·x_σ: the same q(x_t1 | x_t0) written for samplers that keep x = x0 + σ·ε (ComfyUI's).
    s = sd_scheduler()
    a0, a1 = s.alphas_cumprod[881].double(), s.alphas_cumprod[941].double()
    sigma0, sigma1 = ((1 - a0) / a0).sqrt(), ((1 - a1) / a1).sqrt()
    g = torch.Generator().manual_seed(0)
    x_vp, noise = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64), torch.randn(2, 4, 3, 3, generator=g,
                                                                                           dtype=torch.float64)
    vp = forward_jump(x_vp, noise, s.alphas_cumprod, 881, 941)
    sigma = sigma_space_jump(x_vp / a0.sqrt(), noise, sigma0, sigma1)
    assert torch.allclose(sigma, vp / a1.sqrt(), atol=1e-9)
    assert not torch.allclose(sigma_space_jump(x_vp / a0.sqrt(), noise, sigma0, sigma1 * 1.01), vp / a1.sqrt(),
                              atol=1e-3)

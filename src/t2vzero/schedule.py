"""The t0/t1 schedule and the DDPM forward jump (Text2Video-Zero, paper §3.3.1); DDIM inversion."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from .checks import check_strength
from .defaults import TEXT_TO_VIDEO
from .errors import UserError

DEFAULT_T0 = TEXT_TO_VIDEO["t0"]
DEFAULT_T1 = TEXT_TO_VIDEO["t1"]


class JumpSteps(NamedTuple):
    """Where the jump sits in a denoising schedule: the step positions of t1 and of t0 (t1_index < t0_index, or
    both 0 in a one-step schedule)."""

    t1_index: int
    t0_index: int


def check_t0_t1(t0: int, t1: int, num_train_timesteps: int) -> None:
    """t0 and t1 are diffusion timesteps with 0 <= t0 < t1 < num_train_timesteps (the jump goes up in noise)."""
    if not 0 <= t0 < t1 < num_train_timesteps:
        raise UserError(
            f"t0={t0}, t1={t1} must satisfy 0 <= t0 < t1 < {num_train_timesteps} (they are diffusion timesteps; "
            f"the paper uses {DEFAULT_T0}/{DEFAULT_T1})"
        )


def jump_steps(timesteps: torch.Tensor, t0: int, t1: int, num_train_timesteps: int, order: int = 1) -> JumpSteps:
    """Positions of t1 and t0 in a descending denoising schedule.

    `t0`/`t1` are diffusion timesteps (0 <= t0 < t1 < num_train_timesteps). Each snaps to the
    nearest scheduled timestep; if both land on the same one, they are pushed one step apart.
    The latent "at t" is the input of the denoising step at t. For second-order schedulers (Heun,
    KDPM2: `order` 2) only positions that start a step pair are used: a latent between a predictor
    and its corrector is not a sample at any noise level.

    A one-step schedule (SD-Turbo / SDXL-Turbo used with one step) has no room for the jump: t1 and t0
    both sit at its only step, so frames 2..N start from frame 1's initial noise moved by the motion
    field (a jump from t0 = t1 adds no noise) and the single step denoises all frames together.
    """
    check_t0_t1(t0, t1, num_train_timesteps)
    positions = torch.arange(0, len(timesteps), max(1, int(order)))
    if len(positions) == 0:
        raise UserError("the denoising schedule is empty; use --steps 1 or more")
    if len(positions) == 1:
        return JumpSteps(0, 0)
    ts = timesteps.detach().cpu().double()[positions]
    j1 = int(torch.argmin((ts - t1).abs()))
    j0 = int(torch.argmin((ts - t0).abs()))
    if j0 <= j1:
        j0 = j1 + 1
        if j0 >= len(ts):
            j1, j0 = len(ts) - 2, len(ts) - 1
    return JumpSteps(int(positions[j1]), int(positions[j0]))


def alpha_bar_at(scheduler: Any, index: int) -> float:
    """ᾱ at the input of denoising step `index` of a scheduler whose timesteps are set.

    From the scheduler's own sigmas where it keeps them (σ² = (1 − ᾱ)/ᾱ; exact for Karras sigmas and
    float timesteps), else from ᾱ at the integer timestep.
    """
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and len(sigmas) > len(scheduler.timesteps):  # KDPM2 keeps more, aligned at its steps
        sigma = float(sigmas[index])
        return 1.0 / (1.0 + sigma * sigma)
    return float(scheduler.alphas_cumprod[int(scheduler.timesteps[index])])


def forward_jump(x_t0: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, t0: int, t1: int,
                 *, reference: bool = False, sigma_space: bool = False,
                 alpha_bars: tuple[float, float] | None = None) -> torch.Tensor:
    """DDPM forward process from timestep t0 to t1 in one jump: q(x_t1 | x_t0).

    The exact factor is ᾱ(t1)/ᾱ(t0) = Π alphas[t0+1 .. t1]. The deprecated diffusers pipeline uses
    Π alphas[t0 .. t1-1] (off by one step); `reference=True` reproduces that for compat mode.
    Schedulers that keep latents in sigma space (Euler, LMS, Heun: x = x_vp/√ᾱ) need the same jump in
    that space, `sigma_space=True`: x_t1 = x_t0 + √(σ1² − σ0²)·ε with σ² = (1 − ᾱ)/ᾱ.
    `alpha_bars` = (ᾱ(t0), ᾱ(t1)) overrides the table lookup (see `alpha_bar_at`).
    """
    alphas_cumprod = alphas_cumprod.double()
    a0, a1 = alpha_bars if alpha_bars is not None and not reference else (alphas_cumprod[t0], alphas_cumprod[t1])
    a0, a1 = torch.as_tensor(a0, dtype=torch.float64), torch.as_tensor(a1, dtype=torch.float64)
    if sigma_space and not reference:
        return sigma_space_jump(x_t0, noise, ((1 - a0) / a0).sqrt(), ((1 - a1) / a1).sqrt())
    if reference:
        alphas = torch.ones_like(alphas_cumprod)
        alphas[1:] = alphas_cumprod[1:] / alphas_cumprod[:-1]
        alphas[0] = alphas_cumprod[0]
        ratio = torch.prod(alphas[t0:t1])
    else:
        ratio = a1 / a0
    ratio = ratio.to(device=x_t0.device, dtype=x_t0.dtype)
    return ratio.sqrt() * x_t0 + (1 - ratio).sqrt() * noise


def sigma_space_jump(x_t0: torch.Tensor, noise: torch.Tensor, sigma_t0: float | torch.Tensor,
                     sigma_t1: float | torch.Tensor) -> torch.Tensor:
    """The forward jump for latents kept in sigma space, x = x0 + σ·ε (Euler-type schedulers, k-diffusion and
    ComfyUI samplers): x_t1 = x_t0 + √(σ1² − σ0²)·ε. It is `forward_jump`'s q(x_t1 | x_t0) divided by √ᾱ,
    given the two noise levels a sampler actually steps through."""
    s0 = torch.as_tensor(sigma_t0, dtype=torch.float64)
    s1 = torch.as_tensor(sigma_t1, dtype=torch.float64)
    scale = (s1 * s1 - s0 * s0).clamp(min=0).sqrt().to(device=x_t0.device, dtype=x_t0.dtype)
    return x_t0 + scale * noise


def reject_unresumable(scheduler: Any) -> None:
    """Frames 2..N start at t1, mid-schedule; PNDM's Runge-Kutta warm-up indexes its own step counter
    and keeps frame 1's samples, so it can neither restart there nor carry on with more frames."""
    if getattr(scheduler.config, "skip_prk_steps", True) is False:
        raise UserError("text-to-video cannot use PNDM with Runge-Kutta warm-up steps (skip_prk_steps=False): "
                        "frames 2..N start mid-schedule; use skip_prk_steps=True (Stable Diffusion's PNDM "
                        "config) or DDIM")


def resume_at(scheduler: Any, index: int) -> tuple[Any, torch.Tensor]:
    """A copy of `scheduler` (timesteps set, no step taken yet) that starts at step `index` with no
    history, and the timesteps it must be run over from there to the end."""
    from diffusers import PNDMScheduler

    resumed = copy.deepcopy(scheduler)
    timesteps = scheduler.timesteps[index:]
    if hasattr(resumed, "set_begin_index"):
        resumed.set_begin_index(index)
    if isinstance(resumed, PNDMScheduler):
        # PLMS starts with a predictor step that a second call at the next timestep corrects; its own
        # schedule repeats that timestep once, and a restart needs the same repeat (else it runs one
        # timestep ahead of its samples).
        timesteps = torch.unique_consecutive(timesteps)
        timesteps = torch.cat([timesteps[:2], timesteps[1:]])
    return resumed, timesteps


def in_sigma_space(scheduler: Any) -> bool:
    """Whether `scheduler` keeps latents in sigma space, x = x_vp/√ᾱ (Euler, LMS, Heun...: initial noise scaled > 1)."""
    return float(getattr(scheduler, "init_noise_sigma", 1.0)) > 1.0 + 1e-6


def ddim_invert(x: torch.Tensor, predict_noise: Callable[[torch.Tensor, Any], torch.Tensor],
                timesteps: Sequence[Any], alpha_bars: Sequence[float]) -> list[torch.Tensor]:
    """DDIM inversion: the deterministic DDIM sampler run backwards, from a clean latent up to noise.

    Song et al. (2021), *Denoising Diffusion Implicit Models*, §4.3 (the DDIM ODE can be integrated in
    either direction, eq. 13), in the form of Mokady et al. (2023), *Null-text Inversion*, eq. 3.
    `x` is clean (ᾱ = 1); `timesteps` go up in noise, t_1 < ... < t_n, with ᾱ(t_i) = `alpha_bars[i]`.
    The step from noise level s to the next, t, is the DDIM update solved for the noisier latent:

        x_t = √(ᾱ_t/ᾱ_s)·x_s + (√(1 − ᾱ_t) − √(ᾱ_t/ᾱ_s)·√(1 − ᾱ_s))·ε(x_s, t)

    The sampler's step at t evaluates ε(x_t, t); inversion only knows x_s, so it evaluates the model at
    t on x_s (diffusers' DDIMInverseScheduler does the same). The error of one round trip is the
    change of ε between x_s and x_t, first order in the step size. A level equal to the one before
    (second-order samplers list each twice) is a step of zero length and costs no model call.
    Returns the (variance-preserving) latents at t_1, ..., t_n.
    """
    out = []
    a_s = 1.0
    for t, a_t in zip(timesteps, alpha_bars, strict=True):
        if a_t != a_s:
            eps = predict_noise(x, t)
            ratio = math.sqrt(a_t / a_s)
            x = ratio * x + (math.sqrt(1.0 - a_t) - ratio * math.sqrt(1.0 - a_s)) * eps
            a_s = a_t
        out.append(x)
    return out


def strength_start(num_inference_steps: int, strength: float, order: int = 1) -> int:
    """Where SDEdit (Meng et al. 2022, *SDEdit*, §3) starts in a schedule of `num_inference_steps` steps.

    Strength S noises the input to the level from which ⌊S·N⌋ of the N steps remain (as diffusers'
    img2img counts them); S = 1 runs all N. Returns the position in the scheduler's timesteps (steps
    × `order`: second-order samplers list two entries per step).
    """
    steps = min(int(num_inference_steps * check_strength(strength) + 1e-9), num_inference_steps)
    if steps < 1:
        raise UserError(f"strength {strength} of {num_inference_steps} steps runs no step; raise --strength or --steps")
    return (num_inference_steps - steps) * max(1, int(order))

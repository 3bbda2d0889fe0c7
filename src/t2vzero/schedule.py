"""The t0/t1 schedule and the DDPM forward jump (Text2Video-Zero, paper §3.3.1)."""

from __future__ import annotations

import torch

from .errors import UserError

DEFAULT_T0 = 881
DEFAULT_T1 = 941


def t0_t1_indices(timesteps: torch.Tensor, t0: int, t1: int, num_train_timesteps: int) -> tuple[int, int]:
    """Positions (i1, i0) of t1 and t0 in a descending denoising schedule, with i1 < i0.

    `t0`/`t1` are diffusion timesteps (0 <= t0 < t1 < num_train_timesteps). Each snaps to the
    nearest scheduled timestep; if both land on the same one, they are pushed one step apart.
    The latent "at t" is the input of the denoising step at t.
    """
    if not 0 <= t0 < t1 < num_train_timesteps:
        raise UserError(
            f"t0={t0}, t1={t1} must satisfy 0 <= t0 < t1 < {num_train_timesteps} (they are diffusion timesteps; "
            f"defaults {DEFAULT_T0}/{DEFAULT_T1})"
        )
    ts = timesteps.detach().cpu().double()
    if len(ts) < 2:
        raise UserError(f"t0/t1 need at least 2 denoising steps but the schedule has {len(ts)}; use --steps 2 or more")
    i1 = int(torch.argmin((ts - t1).abs()))
    i0 = int(torch.argmin((ts - t0).abs()))
    if i0 <= i1:
        i0 = i1 + 1
        if i0 >= len(ts):
            i1, i0 = len(ts) - 2, len(ts) - 1
    return i1, i0


def forward_jump(x_t0: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, t0: int, t1: int,
                 *, reference: bool = False, sigma_space: bool = False) -> torch.Tensor:
    """DDPM forward process from timestep t0 to t1 in one jump: q(x_t1 | x_t0).

    The exact factor is ᾱ(t1)/ᾱ(t0) = Π alphas[t0+1 .. t1]. The deprecated diffusers pipeline uses
    Π alphas[t0 .. t1-1] (off by one step); `reference=True` reproduces that for compat mode.
    Schedulers that keep latents in sigma space (Euler, LMS, Heun: x = x_vp/√ᾱ) need the same jump in
    that space, `sigma_space=True`: x_t1 = x_t0 + √(σ1² − σ0²)·ε with σ² = (1 − ᾱ)/ᾱ.
    """
    alphas_cumprod = alphas_cumprod.double()
    if sigma_space and not reference:
        sigma2 = (1 - alphas_cumprod) / alphas_cumprod
        scale = (sigma2[t1] - sigma2[t0]).sqrt().to(device=x_t0.device, dtype=x_t0.dtype)
        return x_t0 + scale * noise
    if reference:
        alphas = torch.ones_like(alphas_cumprod)
        alphas[1:] = alphas_cumprod[1:] / alphas_cumprod[:-1]
        alphas[0] = alphas_cumprod[0]
        ratio = torch.prod(alphas[t0:t1])
    else:
        ratio = alphas_cumprod[t1] / alphas_cumprod[t0]
    ratio = ratio.to(device=x_t0.device, dtype=x_t0.dtype)
    return ratio.sqrt() * x_t0 + (1 - ratio).sqrt() * noise

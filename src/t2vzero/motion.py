"""Motion dynamics in the latents (Text2Video-Zero, paper §3.3.1).

The paper translates frame 1's latent at t0 by a global motion field δ·k for frame k. Like the
reference implementations, δ is given in pixels of a 512×512 grid, i.e. frame k moves by the
fraction δ·k/512 of the frame on each axis, whatever the output size. Positive δ samples content
from the right/below, so content moves left/up, exactly as in the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

REFERENCE_GRID = 512


def motion_field(frame_ids: Sequence[int], strength: tuple[float, float], size: tuple[int, int]) -> torch.Tensor:
    """Per-frame translation (dx, dy) in pixels of a `size` = (width, height) frame: δ·k·size/512.

    Returns a float64 tensor of shape (len(frame_ids), 2).
    """
    k = torch.as_tensor(list(frame_ids), dtype=torch.float64)[:, None]
    scale = torch.tensor([strength[0] * size[0], strength[1] * size[1]], dtype=torch.float64) / REFERENCE_GRID
    return k * scale


def latent_shifts(frame_ids: Sequence[int], strength: tuple[float, float], size: tuple[int, int],
                  latent_size: tuple[int, int]) -> torch.Tensor:
    """`motion_field` in latent pixels of a (width, height) = `latent_size` latent: (len(frame_ids), 2)."""
    per_pixel = torch.tensor(latent_size, dtype=torch.float64) / torch.tensor(size, dtype=torch.float64)
    return motion_field(frame_ids, strength, size) * per_pixel


def _reflect(index: torch.Tensor, n: int) -> torch.Tensor:
    """Mirror indices into [0, n) about the outer pixel edges (grid_sample's 'reflection' padding)."""
    period = 2 * n
    index = index % period
    return torch.where(index < n, index, period - 1 - index)


def translate_latents(latents: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Warp each latent by a whole-pixel translation: out[..., y, x] = in[..., y + sy, x + sx].

    `latents` is (F, C, h, w); `shifts` is (F, 2) in latent pixels and is rounded half-up, since
    nearest-neighbour warping keeps the latent's noise statistics (bilinear would shrink its
    variance) and an exact integer shift avoids the column doubling a half-pixel tie would cause.
    Out-of-frame samples are mirrored back in, as with the reference's reflection padding.
    """
    f, _, h, w = latents.shape
    steps = torch.floor(shifts.to(torch.float64) + 0.5).long()
    out = torch.empty_like(latents)
    cols = torch.arange(w)
    rows = torch.arange(h)
    for i in range(f):
        xs = _reflect(cols + steps[i, 0], w).to(latents.device)
        ys = _reflect(rows + steps[i, 1], h).to(latents.device)
        out[i] = latents[i][:, ys][:, :, xs]
    return out


def reference_warp_latents(latents: torch.Tensor, frame_ids: Sequence[int],
                           strength: tuple[float, float]) -> torch.Tensor:
    """The warp of diffusers' deprecated TextToVideoZeroPipeline, for `compat="diffusers"`.

    It builds the flow on a 512×512 pixel grid, normalises it with the pixel-corner convention,
    bilinearly resizes the sampling grid to the latent size and samples nearest with reflection.
    That places samples about 1/16 latent pixel off the pixel centres; we reproduce it bit-exactly.
    """
    _, _, h, w = latents.shape
    n = REFERENCE_GRID
    ys, xs = torch.meshgrid(torch.arange(n, device=latents.device), torch.arange(n, device=latents.device),
                            indexing="ij")
    base = torch.stack([xs, ys]).to(latents.dtype)[None]
    out = torch.empty_like(latents)
    for i, k in enumerate(frame_ids):
        flow = torch.empty_like(base)
        flow[:, 0] = strength[0] * k
        flow[:, 1] = strength[1] * k
        coords = base + flow
        coords[:, 0] /= n
        coords[:, 1] /= n
        coords = F.interpolate(coords * 2.0 - 1.0, size=(h, w), mode="bilinear", align_corners=False)
        grid = coords.permute(0, 2, 3, 1)
        out[i] = F.grid_sample(latents[i : i + 1], grid, mode="nearest", padding_mode="reflection",
                               align_corners=False)[0]
    return out

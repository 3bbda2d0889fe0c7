"""Background smoothing (Text2Video-Zero, paper §3.3.2, optional).

After a first pass, a foreground mask Mᵏ is found for every frame; a second pass then pulls each
frame's background towards frame 1's latent, warped by the same motion, at every denoising step:

    x̄ᵏ_t = Mᵏ ⊙ xᵏ_t + (1 − Mᵏ) ⊙ (α·Wₖ(x¹_t) + (1 − α)·xᵏ_t)        (the paper uses α = 0.6)

The paper finds masks with a learned salient-object detector; the default here is a classical one
(contrast to the frame's border colours, no weights) and any mask function can be passed instead.
"""

from __future__ import annotations

import numpy as np
import torch

PAPER_ALPHA = 0.6


def blend_backgrounds(latents: torch.Tensor, warped: torch.Tensor, masks: torch.Tensor, alpha: float) -> torch.Tensor:
    """Apply the smoothing to a (F, C, h, w) stack of one video's frames at one step.

    `warped` (F, C, h, w) is frame 1's latent at that step moved to each frame along the camera path
    (`t2vzero.motion.warp_latents`; frame 1 itself unmoved, so it stays as it is), `masks` (F, 1, h, w)
    is 1 on the foreground.
    """
    masks = masks.to(device=latents.device, dtype=latents.dtype)
    return masks * latents + (1 - masks) * (alpha * warped + (1 - alpha) * latents)


def latent_masks(masks: np.ndarray, size: tuple[int, int], grow: int = 1) -> torch.Tensor:
    """(F, H, W) image masks → (F, 1, h, w) latent masks: a latent pixel is foreground if any of its pixels
    is, grown by `grow` latent pixels, since the decoder draws an object's edge from its neighbours too."""
    t = torch.from_numpy(np.asarray(masks, dtype=np.float32))[:, None]
    t = torch.nn.functional.adaptive_max_pool2d(t, size)
    return torch.nn.functional.max_pool2d(t, 2 * grow + 1, stride=1, padding=grow) if grow > 0 else t


def saliency_masks(frames: np.ndarray, work_size: int = 64) -> np.ndarray:
    """Foreground masks (F, H, W) bool of uint8 RGB frames, by contrast to the frame's border.

    The boundary prior of classical salient-object detection: what touches the frame's edge is mostly
    background, so a pixel is salient when its colour (CIELAB) is far from every border colour. Otsu's
    threshold splits the distance map; holes inside an object are filled.
    """
    import cv2

    out = np.zeros(frames.shape[:3], dtype=bool)
    ring = max(1, work_size // 32)
    for i, frame in enumerate(frames):
        h, w = frame.shape[:2]
        small = cv2.resize(np.ascontiguousarray(frame), (work_size, work_size), interpolation=cv2.INTER_AREA)
        lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
        border = np.concatenate([lab[:ring].reshape(-1, 3), lab[-ring:].reshape(-1, 3),
                                 lab[:, :ring].reshape(-1, 3), lab[:, -ring:].reshape(-1, 3)])
        border = np.unique(np.round(border / 4) * 4, axis=0)  # a few hundred distinct colours at most
        pixels = lab.reshape(-1, 1, 3)
        distance = np.sqrt(((pixels - border[None]) ** 2).sum(-1)).min(axis=1).reshape(work_size, work_size)
        if distance.max() < 10:  # nothing stands out from the border: all background
            continue
        scaled = np.clip(distance / distance.max() * 255, 0, 255).astype(np.uint8)
        _, mask = cv2.threshold(cv2.GaussianBlur(scaled, (3, 3), 0), 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(mask, contours, -1, 1, thickness=cv2.FILLED)
        out[i] = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    return out

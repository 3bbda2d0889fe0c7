"""Video metrics as the literature defines them; each function documents its formula.

- CLIP-T (text alignment, Radford et al. 2021 as used by Tune-A-Video / Text2Video-Zero): the mean over
  frames of cos(E_img(frame_t), E_txt(prompt)), reported as a plain cosine in [-1, 1].
- CLIP-F (frame consistency, consecutive variant): the mean over t of cos(E_img(frame_t), E_img(frame_t+1)).
- Warp error (Lai et al., ECCV 2018, "Learning Blind Video Temporal Consistency"): for t = 1..T-1,
  E_t = Σ_x M_t(x)·‖V_t(x) − V_{t+1}(x + f_t(x))‖² / Σ_x M_t(x), with f_t the optical flow t → t+1
  (OpenCV DIS, no learned weights), M_t the non-occlusion mask of a forward-backward check (Sundaram et
  al. 2010: |f_fw + f_bw∘f_fw|² < 0.01(|f_fw|² + |f_bw∘f_fw|²) + 0.5), and colours in [0, 1], averaged
  over the RGB channels. For an edit the flow comes from the source video (what the edit should follow);
  otherwise between consecutive output frames.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MIN_FLOW_SIDE = 16


def optical_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow a → b (H, W, 2) with OpenCV's DIS: a(x) ≈ b(x + flow(x))."""
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in (a, b)]
    h, w = gray[0].shape
    k = math.ceil(MIN_FLOW_SIDE / min(h, w))  # DIS needs frames of 12 px or more
    if k == 1:
        return dis.calc(gray[0], gray[1], None)
    big = [cv2.resize(g, (w * k, h * k), interpolation=cv2.INTER_LINEAR) for g in gray]
    flow = dis.calc(big[0], big[1], None)
    return cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA) / k


def _sample(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    import cv2

    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def non_occlusion_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """1 where the forward-backward flow check passes and the target lies inside the frame."""
    h, w = forward.shape[:2]
    back = _sample(backward, forward)
    diff = ((forward + back) ** 2).sum(-1)
    bound = 0.01 * ((forward**2).sum(-1) + (back**2).sum(-1)) + 0.5
    xs, ys = np.meshgrid(np.arange(w), np.arange(h))
    inside = (xs + forward[..., 0] >= 0) & (xs + forward[..., 0] <= w - 1)
    inside &= (ys + forward[..., 1] >= 0) & (ys + forward[..., 1] <= h - 1)
    return ((diff < bound) & inside).astype(np.float32)


def warp_errors(frames: np.ndarray, flow_source: np.ndarray | None = None) -> np.ndarray:
    """Per-pair warp error E_t (length T-1) of uint8 `frames`; flows from `flow_source` if given."""
    source = frames if flow_source is None else flow_source
    if len(source) != len(frames):
        raise ValueError(f"the source has {len(source)} frames but the video has {len(frames)}")
    if source.shape[1:3] != frames.shape[1:3]:
        import cv2

        h, w = frames.shape[1:3]
        source = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in source])
    video = frames.astype(np.float32) / 255.0
    errors = []
    for t in range(len(frames) - 1):
        fw = optical_flow(source[t], source[t + 1])
        bw = optical_flow(source[t + 1], source[t])
        mask = non_occlusion_mask(fw, bw)
        warped = _sample(video[t + 1], fw)
        err = ((video[t] - warped) ** 2).mean(-1)
        errors.append(float((mask * err).sum() / max(mask.sum(), 1.0)))
    return np.asarray(errors)


class ClipScorer:
    """CLIP image/text embeddings from a local folder or hub id (transformers' CLIPModel)."""

    def __init__(self, name_or_path: str) -> None:
        from transformers import CLIPModel, CLIPProcessor

        self.model = CLIPModel.from_pretrained(name_or_path).eval()
        self.processor = CLIPProcessor.from_pretrained(name_or_path)

    def images(self, frames: np.ndarray) -> Any:
        import torch

        with torch.no_grad():
            inputs = self.processor(images=list(frames), return_tensors="pt")
            emb = self.model.get_image_features(pixel_values=inputs["pixel_values"])
        emb = getattr(emb, "pooler_output", emb)
        return torch.nn.functional.normalize(emb, dim=-1)

    def text(self, prompt: str) -> Any:
        import torch

        with torch.no_grad():
            inputs = self.processor(text=[prompt], return_tensors="pt", padding=True, truncation=True)
            emb = self.model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        emb = getattr(emb, "pooler_output", emb)
        return torch.nn.functional.normalize(emb, dim=-1)


def clip_scores(scorer: ClipScorer, frames: np.ndarray, prompt: str | None) -> dict[str, list[float]]:
    """Per-frame CLIP-T (if a prompt is given) and per-pair CLIP-F cosines."""
    emb = scorer.images(frames)
    out = {"clip_f": (emb[:-1] * emb[1:]).sum(-1).tolist()}
    if prompt is not None:
        out["clip_t"] = (emb @ scorer.text(prompt)[0]).tolist()
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images: 10·log10(255² / mean((a − b)²)) dB (inf if equal)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)

"""Background smoothing (paper §3.3.2): the blend, the default foreground masks, the second pass."""

import numpy as np
import pytest
import torch

from t2vzero import TextToVideoZero
from t2vzero.errors import UserError
from t2vzero.motion import translate_latents
from t2vzero.smoothing import blend_backgrounds, latent_masks, saliency_masks

KW = dict(video_length=4, height=64, width=64, num_inference_steps=8, t0=300, t1=700, progress=False)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def test_the_blend_keeps_the_foreground_and_pulls_the_background_to_warped_frame_one():
    torch.manual_seed(0)
    latents = torch.randn(3, 4, 8, 8)
    shifts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    warped = translate_latents(latents[0][None].expand(3, -1, -1, -1), shifts)
    fore = torch.ones(3, 1, 8, 8)
    assert torch.equal(blend_backgrounds(latents, warped, fore, 0.6), latents)
    back = torch.zeros(3, 1, 8, 8)
    pulled = blend_backgrounds(latents, warped, back, 1.0)
    assert torch.equal(pulled[0], latents[0])  # frame 1 blends with itself
    assert torch.equal(pulled[2, :, :, :6], latents[0, :, :, 2:])  # content moved left by 2 latent pixels
    half = blend_backgrounds(latents, warped, back, 0.6)
    assert torch.allclose(half[1], 0.6 * pulled[1] + 0.4 * latents[1])


def test_latent_masks_mark_a_latent_pixel_foreground_if_any_of_its_pixels_is():
    masks = np.zeros((1, 64, 64), bool)
    masks[0, 9, 17] = True
    lat = latent_masks(masks, (8, 8), grow=0)
    assert lat.shape == (1, 1, 8, 8) and lat.sum() == 1 and lat[0, 0, 1, 2] == 1
    grown = latent_masks(masks, (8, 8))  # one latent pixel around it too
    assert grown.sum() == 9 and grown[0, 0, 0:3, 1:4].all()


def test_default_masks_find_the_object_on_a_plain_background():
    from t2vzero.default_model.data import make_batch

    images, _ = make_batch(np.random.default_rng(3), 24)
    masks = saliency_masks(images)
    objects = np.abs(images.astype(int) - images[:, :1, :1].astype(int)).sum(-1) > 60
    recall = (masks & objects).sum((1, 2)) / objects.sum((1, 2))
    false = (masks & ~objects).sum((1, 2)) / (~objects).sum((1, 2))
    assert np.median(recall) > 0.85 and false.max() < 0.1
    assert not saliency_masks(np.full((2, 32, 32, 3), 90, np.uint8)).any()  # a flat frame has no object


@pytest.fixture(scope="module")
def pipe():
    from t2vzero.tiny import make_tiny_components

    return TextToVideoZero(**make_tiny_components(seed=3))


def test_all_background_at_alpha_one_makes_every_frame_warped_frame_one(pipe, latent_output):
    def background(frames):
        return np.zeros(frames.shape[:3], bool)

    for motion, shift in (((0.0, 0.0), 0), ((64.0, 0.0), 1)):  # 64 on a 512 grid: one latent pixel per frame
        out = pipe("a red circle", motion=motion, generator=seeded(1), background_smoothing=1.0,
                   foreground_masks=background, **KW).frames[0]
        for k in range(1, 4):
            s = shift * k
            assert np.abs(out[k][:, : 8 - s] - out[0][:, s:]).max() < 1e-5, (motion, k)


def test_smoothing_changes_only_what_the_masks_call_background(pipe, latent_output):
    plain = pipe("a red circle", generator=seeded(2), **KW).frames[0]

    def everything(frames):
        return np.ones(frames.shape[:3], bool)

    kept = pipe("a red circle", generator=seeded(2), background_smoothing=0.6, foreground_masks=everything,
                **KW).frames[0]
    assert np.abs(kept - plain).max() < 1e-5  # all foreground: the second pass replays the first
    smoothed = pipe("a red circle", generator=seeded(2), background_smoothing=0.6, **KW).frames[0]
    scale = np.abs(plain).max()
    assert np.abs(smoothed[0] - plain[0]).max() < 1e-5 * scale  # frame 1 is never blended (float noise only)
    assert np.abs(smoothed[1:] - plain[1:]).max() > 1e-2 * scale


def test_smoothing_arguments_are_checked(pipe):
    for kwargs in (dict(background_smoothing=1.5), dict(background_smoothing=0.6, compat="diffusers")):
        with pytest.raises(UserError, match="background smoothing"):
            pipe("a red circle", **{**KW, **kwargs})
    with pytest.raises(UserError, match="mask function"):
        pipe("a red circle", background_smoothing=0.6, foreground_masks=lambda f: np.ones((2, 2), bool), **KW)

"""Motion field and latent warping (paper §3.3.1), tested without any model."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from t2vzero.motion import motion_field, reference_warp_latents, translate_latents


def test_motion_field_is_linear_in_frame_index_and_scales_with_size():
    field = motion_field([0, 1, 2, 5], (12.0, -6.0), (512, 512))
    assert torch.equal(field[0], torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(field[1], torch.tensor([12.0, -6.0], dtype=torch.float64))
    assert torch.allclose(field[3], 5 * field[1])
    # Non-square: the same fraction of the frame on each axis as at 512².
    wide = motion_field([3], (12.0, 12.0), (768, 256))
    assert torch.allclose(wide[0] / torch.tensor([768.0, 256.0], dtype=torch.float64),
                          torch.full((2,), 36 / 512, dtype=torch.float64))


def test_translate_moves_content_left_and_up_for_positive_shift():
    latents = torch.zeros(1, 4, 16, 16)
    latents[0, :, 8, 8] = 1.0  # a single bright latent pixel
    out = translate_latents(latents, torch.tensor([[3.0, 2.0]]))
    ys, xs = torch.nonzero(out[0, 0], as_tuple=True)
    assert (ys.tolist(), xs.tolist()) == ([6], [5])


def test_translate_rounds_half_up_and_mirrors_at_the_border():
    row = torch.arange(6.0).view(1, 1, 1, 6)
    out = translate_latents(row, torch.tensor([[1.5, 0.0]]))  # rounds to 2 whole pixels
    assert out.flatten().tolist() == [2.0, 3.0, 4.0, 5.0, 5.0, 4.0]
    back = translate_latents(row, torch.tensor([[-2.0, 0.0]]))
    assert back.flatten().tolist() == [1.0, 0.0, 0.0, 1.0, 2.0, 3.0]


@settings(max_examples=30, deadline=None)
@given(dx=st.integers(-5, 5), dy=st.integers(-5, 5))
def test_translate_is_an_exact_shift_inside_the_frame(dx, dy):
    latents = torch.randn(1, 2, 12, 12, generator=torch.Generator().manual_seed(dx * 11 + dy))
    out = translate_latents(latents, torch.tensor([[float(dx), float(dy)]]))
    ys, xs = slice(max(0, -dy), 12 - max(0, dy)), slice(max(0, -dx), 12 - max(0, dx))
    src_ys, src_xs = slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)
    assert torch.equal(out[..., ys, xs], latents[..., src_ys, src_xs])
    # A whole-pixel warp keeps the latent's values: nothing is blended.
    assert set(out.flatten().tolist()) <= set(latents.flatten().tolist())


def test_default_warp_matches_the_reference_warp_on_whole_pixel_shifts():
    # At 512 px (64 latent px), δ = 8 moves one latent pixel per frame: both warps must agree.
    latents = torch.randn(3, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    frame_ids = [1, 2, 3]
    ours = translate_latents(latents, motion_field(frame_ids, (8.0, 16.0), (64, 64)))
    ref = reference_warp_latents(latents, frame_ids, (8.0, 16.0))
    assert torch.equal(ours, ref)

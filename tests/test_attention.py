"""Cross-frame attention (paper §3.3.2): every frame attends to frame 1 of its own video and group."""

import pytest
import torch
from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
    CrossFrameAttnProcessor2_0 as ReferenceProcessor,
)

from t2vzero.attention import CrossFrameAttnProcessor, cross_frame_attention


def unet_out(unet, x, emb, processor=None, frames=1):
    if processor is not None:
        processor.num_frames = frames
    with torch.no_grad():
        return unet(x, 500, encoder_hidden_states=emb).sample


def inputs(tiny, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 8, 8, generator=g)
    emb = torch.randn(batch, 77, 32, generator=g)
    return x, emb


def test_matches_the_reference_processor_for_one_video_with_guidance(tiny):
    unet, frames = tiny["unet"], 4
    x, emb = inputs(tiny, 2 * frames)
    original = unet.attn_processors
    unet.set_attn_processor(ReferenceProcessor(batch_size=2))
    try:
        ref = unet_out(unet, x, emb)
    finally:
        unet.set_attn_processor(original)
    with cross_frame_attention(unet) as proc:
        ours = unet_out(unet, x, emb, proc, frames)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_each_frame_attends_to_frame_one_of_its_own_video_and_group(tiny):
    unet = tiny["unet"]
    groups, videos, frames = 2, 2, 3
    x, emb = inputs(tiny, groups * videos * frames, seed=1)
    bumped = x.clone()
    target = (0 * videos + 1) * frames  # group 0, video 1, frame 1 (index 0 in the video)
    bumped[target] += 1.0

    def changed(processor_on):
        with cross_frame_attention(unet, enabled=processor_on) as proc:
            a = unet_out(unet, x, emb, proc, frames)
            b = unet_out(unet, bumped, emb, proc, frames)
        diff = (a - b).flatten(1).abs().amax(1)
        return [i for i, d in enumerate(diff.tolist()) if d > 1e-6]

    assert changed(True) == [target, target + 1, target + 2]  # the whole video follows its frame 1
    assert changed(False) == [target]  # plain self-attention: frames are independent


def test_frames_other_than_the_first_do_not_change_frame_one(tiny):
    unet, frames = tiny["unet"], 3
    x, emb = inputs(tiny, frames, seed=2)
    bumped = x.clone()
    bumped[2] += 1.0
    with cross_frame_attention(unet) as proc:
        a, b = unet_out(unet, x, emb, proc, frames), unet_out(unet, bumped, emb, proc, frames)
    assert torch.equal(a[:2], b[:2]) or torch.allclose(a[:2], b[:2], atol=1e-6)
    assert not torch.allclose(a[2], b[2])


def test_identical_frames_stay_identical_and_single_frame_is_plain_attention(tiny):
    unet = tiny["unet"]
    x, emb = inputs(tiny, 1, seed=3)
    plain = unet_out(unet, x, emb)
    with cross_frame_attention(unet) as proc:
        same = unet_out(unet, x.repeat(4, 1, 1, 1), emb.repeat(4, 1, 1), proc, 4)
        single = unet_out(unet, x, emb, proc, 1)
    assert torch.allclose(same, plain.repeat(4, 1, 1, 1), atol=1e-5)
    assert torch.allclose(single, plain, atol=1e-5)


def test_only_self_attention_is_replaced_and_originals_come_back_after_an_error(tiny):
    unet = tiny["unet"]
    before = {n: type(p) for n, p in unet.attn_processors.items()}
    with pytest.raises(RuntimeError, match="boom"), cross_frame_attention(unet):
        during = unet.attn_processors
        assert all(isinstance(p, CrossFrameAttnProcessor) == n.endswith("attn1.processor") for n, p in during.items())
        assert any(n.endswith("attn2.processor") for n in during)
        raise RuntimeError("boom")
    assert {n: type(p) for n, p in unet.attn_processors.items()} == before


def test_batch_not_divisible_by_frames_is_reported(tiny):
    unet = tiny["unet"]
    x, emb = inputs(tiny, 5)
    with cross_frame_attention(unet) as proc, pytest.raises(ValueError, match="5 for 2 frames"):
        unet_out(unet, x, emb, proc, 2)


def test_a_model_given_twice_is_restored(tiny):
    # e.g. one ControlNet object used for two conditions
    unet = tiny["unet"]
    before = dict(unet.attn_processors)
    with cross_frame_attention(unet, unet, None):
        assert any(isinstance(p, CrossFrameAttnProcessor) for p in unet.attn_processors.values())
    assert unet.attn_processors == before

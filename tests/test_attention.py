"""Cross-frame attention (paper §3.3.2): every frame attends to frame 1 of its own video and group."""

import pytest
import torch
from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
    CrossFrameAttnProcessor2_0 as ReferenceProcessor,
)

from t2vzero.attention import CrossFrameAttnProcessor, cross_frame_attention, first_frames, frame_kwargs


def unet_out(unet, x, emb, frames=None, has_anchor=True, cache=None):
    kwargs = {} if frames is None else {"cross_attention_kwargs": frame_kwargs(frames, has_anchor, cache)}
    with torch.no_grad():
        return unet(x, 500, encoder_hidden_states=emb, **kwargs).sample


def inputs(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 8, 8, generator=g)
    emb = torch.randn(batch, 77, 32, generator=g)
    return x, emb


def test_matches_the_reference_processor_for_one_video_with_guidance(tiny):
    unet, frames = tiny["unet"], 4
    x, emb = inputs(2 * frames)
    original = unet.attn_processors
    unet.set_attn_processor(ReferenceProcessor(batch_size=2))
    try:
        ref = unet_out(unet, x, emb)
    finally:
        unet.set_attn_processor(original)
    with cross_frame_attention(unet):
        ours = unet_out(unet, x, emb, frames)
        plain = unet_out(unet, x, emb)  # installed, but a call without a FrameCall is plain attention
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.allclose(plain, unet_out(unet, x, emb), atol=1e-6)
    assert (plain - ours).abs().max() > 1e-3  # the comparison sees cross-frame attention


def test_each_frame_attends_to_frame_one_of_its_own_video_and_group(tiny):
    unet = tiny["unet"]
    groups, videos, frames = 2, 2, 3
    x, emb = inputs(groups * videos * frames, seed=1)
    bumped = x.clone()
    target = (0 * videos + 1) * frames  # group 0, video 1, frame 1 (index 0 in the video)
    bumped[target] += 1.0

    def changed(cross_frame):
        with cross_frame_attention(unet):
            a = unet_out(unet, x, emb, frames if cross_frame else None)
            b = unet_out(unet, bumped, emb, frames if cross_frame else None)
        diff = (a - b).flatten(1).abs().amax(1)
        return [i for i, d in enumerate(diff.tolist()) if d > 1e-6]

    assert changed(True) == [target, target + 1, target + 2]  # the whole video follows its frame 1
    assert changed(False) == [target]  # plain self-attention: frames are independent


def test_frames_other_than_the_first_do_not_change_frame_one(tiny):
    unet, frames = tiny["unet"], 3
    x, emb = inputs(frames, seed=2)
    bumped = x.clone()
    bumped[2] += 1.0
    with cross_frame_attention(unet):
        a, b = unet_out(unet, x, emb, frames), unet_out(unet, bumped, emb, frames)
    assert torch.allclose(a[:2], b[:2], atol=1e-6)
    assert not torch.allclose(a[2], b[2])


def test_identical_frames_stay_identical_and_single_frame_is_plain_attention(tiny):
    unet = tiny["unet"]
    x, emb = inputs(1, seed=3)
    plain = unet_out(unet, x, emb)
    with cross_frame_attention(unet):
        same = unet_out(unet, x.repeat(4, 1, 1, 1), emb.repeat(4, 1, 1), 4)
        single = unet_out(unet, x, emb, 1)
    assert torch.allclose(same, plain.repeat(4, 1, 1, 1), atol=1e-5)
    assert torch.allclose(single, plain, atol=1e-5)


def rows(x, groups, frames, ids):
    """Rows `ids` of each group's frame block of a [group][frame] batch."""
    return torch.cat([x[g * frames + torch.tensor(ids)] for g in range(groups)])


def test_a_chunk_without_frame_one_reads_its_keys_from_the_cache_of_the_same_step(tiny):
    unet, groups, frames = tiny["unet"], 2, 5
    x, emb = inputs(groups * frames, seed=4)
    with cross_frame_attention(unet):
        whole = unet_out(unet, x, emb, frames)
        cache = {}
        first = unet_out(unet, rows(x, groups, frames, [0, 1]), rows(emb, groups, frames, [0, 1]), 2, True, cache)
        assert len(cache) == sum(n.endswith("attn1.processor") for n in unet.attn_processors)
        rest = unet_out(unet, rows(x, groups, frames, [2, 3, 4]), rows(emb, groups, frames, [2, 3, 4]), 3, False,
                        cache)
        with pytest.raises(ValueError, match="needs frame 1"):
            unet_out(unet, rows(x, groups, frames, [2, 3]), rows(emb, groups, frames, [2, 3]), 2, False, {})
        # A cache of other frame-1 keys gives other frames: the chunk really reads it.
        other = {}
        unet_out(unet, rows(x, groups, frames, [1, 0]), rows(emb, groups, frames, [1, 0]), 2, True, other)
        wrong = unet_out(unet, rows(x, groups, frames, [2, 3, 4]), rows(emb, groups, frames, [2, 3, 4]), 3, False,
                         other)
    assert torch.allclose(first, rows(whole, groups, frames, [0, 1]), atol=1e-5)
    assert torch.allclose(rest, rows(whole, groups, frames, [2, 3, 4]), atol=1e-5)
    assert (wrong - rest).abs().max() > 1e-3


def test_only_self_attention_runs_cross_frame_and_originals_come_back_after_an_error(tiny):
    unet = tiny["unet"]
    before = dict(unet.attn_processors)
    with pytest.raises(RuntimeError, match="boom"), cross_frame_attention(unet):
        during = unet.attn_processors
        assert all(isinstance(p, CrossFrameAttnProcessor) == n.endswith("attn1.processor") for n, p in during.items())
        assert all(during[n].original is before[n] for n in during)  # each wraps the layer's own processor
        raise RuntimeError("boom")
    assert unet.attn_processors == before


def test_installation_is_shared_and_counted(tiny):
    # Two generations on one model overlap: the first to finish must not take the processors away.
    unet = tiny["unet"]
    before = dict(unet.attn_processors)
    with cross_frame_attention(unet):
        installed = dict(unet.attn_processors)
        with cross_frame_attention(unet, unet, None):  # a model given twice counts once
            assert unet.attn_processors == installed
        assert unet.attn_processors == installed
    assert unet.attn_processors == before


def test_batch_not_divisible_by_frames_is_reported(tiny):
    unet = tiny["unet"]
    x, emb = inputs(5)
    with cross_frame_attention(unet), pytest.raises(ValueError, match="5 for 2 frames"):
        unet_out(unet, x, emb, 2)


def test_long_attention_runs_in_query_blocks_with_the_same_result(monkeypatch):
    import torch.nn.functional as F

    import t2vzero.attention as attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 50, 8, generator=g) for _ in range(3))
    mask = torch.randn(2, 1, 1, 50, generator=g)
    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention",
                        lambda *a, **kw: calls.append(a[0].shape[2]) or real(*a, **kw))
    whole = attention.blocked_attention(q, k, v, attn_mask=mask, scale=0.3)
    assert calls == [50]
    monkeypatch.setattr(attention, "MAX_SCORES", 2 * 4 * 50 * 7)  # 7 queries per call
    calls.clear()
    blocked = attention.blocked_attention(q, k, v, attn_mask=mask, scale=0.3)
    assert calls == [7] * 7 + [1] and torch.allclose(blocked, whole, atol=1e-6)
    full_mask = torch.randn(2, 1, 50, 50, generator=g)  # a mask per query is sliced with its block
    assert torch.allclose(attention.blocked_attention(q, k, v, attn_mask=full_mask),
                          real(q, k, v, attn_mask=full_mask), atol=1e-6)


def test_unet_and_vae_attention_over_long_sequences_is_blocked_and_unchanged(tiny, monkeypatch):
    import t2vzero.attention as attention
    from t2vzero.generate import decode_latents

    unet, vae = tiny["unet"], tiny["vae"]
    x, emb = inputs(2 * 3)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with cross_frame_attention(unet):
        cross, plain = unet_out(unet, x, emb, 3), unet_out(unet, x, emb)
    images = decode_latents(vae, latents)
    lengths = []
    real = attention.blocked_attention
    monkeypatch.setattr(attention, "blocked_attention", lambda q, *a, **kw: lengths.append(q.shape[2]) or
                        real(q, *a, **kw))
    monkeypatch.setattr(attention, "MAX_SCORES", 64)  # every self-attention layer is "too long" now
    with cross_frame_attention(unet):
        assert torch.allclose(unet_out(unet, x, emb, 3), cross, atol=1e-5)
        assert lengths and torch.allclose(unet_out(unet, x, emb), plain, atol=1e-5)  # plain attention, blocked
    lengths.clear()
    assert abs(decode_latents(vae, latents) - images).max() <= 1e-5 and lengths  # the VAE's mid-block attention
    assert all(type(p).__name__ == "AttnProcessor2_0" for p in vae.attn_processors.values())  # restored


def test_first_frames_picks_frame_one_of_each_block():
    x = torch.arange(2 * 3 * 2, dtype=torch.float32).view(6, 2)  # 2 blocks of 3 frames
    assert first_frames(x, 3).tolist() == [[0.0, 1.0], [6.0, 7.0]]
    assert torch.equal(first_frames(x, 1), x)
    with pytest.raises(ValueError, match="6 for 4 frames"):
        first_frames(x, 4)

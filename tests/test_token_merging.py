"""Token merging of frame 1's keys/values (ToMe, approximate): exact on duplicated tokens, consistent across chunks."""

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention

from t2vzero import TextToVideoZero
from t2vzero.attention import CrossFrameAttnProcessor, FrameCall, merge_tokens
from t2vzero.cli import run
from t2vzero.errors import UserError


def test_merging_keeps_the_count_of_tokens_each_stands_for():
    x = torch.randn(3, 10, 8, generator=torch.Generator().manual_seed(0))
    for ratio, kept in ((0.3, 7), (0.5, 5), (0.9, 5)):  # at most all of set A (every other token) merges
        merged, sizes = merge_tokens(x, ratio)
        assert merged.shape == (3, kept, 8) and torch.equal(sizes.sum(1), torch.full((3,), 10.0))
    # The mean is kept: merging averages, weighted by how many tokens each result stands for.
    merged, sizes = merge_tokens(x, 0.5)
    assert torch.allclose((merged * sizes[..., None]).sum(1), x.sum(1), atol=1e-5)


def attention_layer():
    torch.manual_seed(1)
    return Attention(query_dim=32, heads=4, dim_head=8).eval()


def run_layer(layer, hidden, call):
    with torch.no_grad():
        return CrossFrameAttnProcessor()(layer, hidden, frame_attention=call)


def test_merging_duplicated_tokens_with_proportional_attention_is_exact():
    layer = attention_layer()
    g = torch.Generator().manual_seed(2)
    frames, seq = 3, 16
    hidden = torch.randn(frames, seq, 32, generator=g)
    hidden[0, 1::2] = hidden[0, ::2]  # frame 1's tokens come in equal pairs: merging them loses nothing
    exact = run_layer(layer, hidden, FrameCall(frames))
    merged = run_layer(layer, hidden, FrameCall(frames, merge_ratio=0.5))
    assert torch.allclose(merged, exact, atol=1e-5)
    distinct = torch.randn(frames, seq, 32, generator=g)  # without duplicates merging approximates
    assert (run_layer(layer, distinct, FrameCall(frames, merge_ratio=0.5))
            - run_layer(layer, distinct, FrameCall(frames))).abs().max() > 1e-3
    # Layers below the size limit are left alone.
    assert torch.equal(run_layer(layer, distinct, FrameCall(frames, merge_ratio=0.5, merge_min_tokens=seq + 1)),
                       run_layer(layer, distinct, FrameCall(frames)))


def test_token_merging_in_a_video_is_the_same_across_chunks_and_changes_the_frames(tiny, latent_output):
    pipe = TextToVideoZero(**tiny)
    kw = dict(video_length=5, height=64, width=64, num_inference_steps=6, t0=300, t1=700, progress=False)
    plain = pipe("a red circle", generator=torch.Generator().manual_seed(1), **kw).frames
    merged = pipe("a red circle", generator=torch.Generator().manual_seed(1), token_merging=0.5, **kw).frames
    chunked = pipe("a red circle", generator=torch.Generator().manual_seed(1), token_merging=0.5, chunk_size=2,
                   **kw).frames
    assert np.abs(chunked - merged).max() <= 1e-5 * np.abs(merged).max()
    assert np.abs(merged - plain).max() > 1e-3 * np.abs(plain).max()
    for bad in (1.0, -0.2, 2, float("nan")):
        with pytest.raises(UserError, match="between 0 and 1"):
            pipe("a red circle", token_merging=bad, **kw)


@pytest.mark.parametrize("value", ["0", "1", "1.5", "x"])
def test_cli_rejects_a_tome_ratio_outside_zero_one(tmp_path, capsys, value):
    assert run(["generate", "a red circle", "--tome", value, "-o", str(tmp_path / "v.mp4")]) == 2
    assert "--tome" in capsys.readouterr().err and not any(tmp_path.iterdir())

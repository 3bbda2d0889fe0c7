"""Feature reuse across steps (DeepCache, approximate): the skipped blocks are exactly replaced, per chunk."""

import numpy as np
import pytest
import torch

from t2vzero import TextToVideoZero
from t2vzero.cli import run
from t2vzero.deepcache import FeatureSlot, deep_blocks_skippable, step
from t2vzero.errors import UserError


def test_reusing_the_feature_of_the_same_input_gives_the_full_output(tiny):
    unet = tiny["unet"]
    g = torch.Generator().manual_seed(0)
    x, emb = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 77, 32, generator=g)
    with torch.no_grad():
        plain = unet(x, 500, encoder_hidden_states=emb).sample
        with deep_blocks_skippable(unet):
            untouched = unet(x, 500, encoder_hidden_states=emb).sample  # no state: the plain UNet
            slot = FeatureSlot()
            with step(slot, reuse=False):
                full = unet(x, 500, encoder_hidden_states=emb).sample
            with step(slot, reuse=True):  # deep blocks skipped, their feature reused: same input, same output
                reused = unet(x, 500, encoder_hidden_states=emb).sample
            with step(slot, reuse=True):  # a later step: the shallow branch sees new input, the deep feature is old
                later = unet(x, 300, encoder_hidden_states=emb).sample
            exact_later = unet(x, 300, encoder_hidden_states=emb).sample
    assert torch.equal(untouched, plain) and torch.allclose(full, plain, atol=1e-6)
    assert torch.allclose(reused, full, atol=1e-5)
    assert (later - exact_later).abs().max() > 1e-4  # approximate when the deep feature is stale
    assert all(not hasattr(b.forward, "keeps_feature") for b in unet.up_blocks)  # unwrapped again


def test_cache_interval_in_a_video_is_the_same_across_chunks(tiny, latent_output):
    pipe = TextToVideoZero(**tiny)
    kw = dict(video_length=5, height=64, width=64, num_inference_steps=9, t0=300, t1=700, progress=False)
    plain = pipe("a red circle", generator=torch.Generator().manual_seed(2), **kw).frames
    one = pipe("a red circle", generator=torch.Generator().manual_seed(2), cache_interval=1, **kw).frames
    cached = pipe("a red circle", generator=torch.Generator().manual_seed(2), cache_interval=3, **kw).frames
    chunked = pipe("a red circle", generator=torch.Generator().manual_seed(2), cache_interval=3, chunk_size=2,
                   **kw).frames
    assert np.array_equal(one, plain)
    assert np.abs(chunked - cached).max() <= 1e-5 * np.abs(cached).max()
    assert np.abs(cached - plain).max() > 1e-3 * np.abs(plain).max()
    with pytest.raises(UserError, match="cache interval"):
        pipe("a red circle", cache_interval=0, **kw)


def test_cli_rejects_a_cache_interval_below_one(tmp_path, capsys):
    assert run(["generate", "a red circle", "--cache-interval", "0", "-o", str(tmp_path / "v.mp4")]) == 2
    assert "--cache-interval" in capsys.readouterr().err and not any(tmp_path.iterdir())

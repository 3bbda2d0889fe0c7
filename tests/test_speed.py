"""Frame-preserving speed and memory options: compiled, channels-last, tiled and fp16-safe decoding."""

import copy

import numpy as np
import pytest
import torch

from t2vzero import TextToVideoZero
from t2vzero.errors import UserError
from t2vzero.generate import decode_latents
from t2vzero.speed import check_speed_args

KW = dict(video_length=4, height=64, width=64, num_inference_steps=6, t0=300, t1=700, progress=False)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def fresh(tiny):
    return {k: copy.deepcopy(v) for k, v in tiny.items()}


def test_channels_last_and_vae_tiling_keep_the_frames(tiny, latent_output):
    plain = TextToVideoZero(**tiny)("a red circle", generator=seeded(1), **KW).frames
    pipe = TextToVideoZero(**fresh(tiny))
    assert pipe.optimize(channels_last=True, vae_tiling=True) == []
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    out = pipe("a red circle", generator=seeded(1), **KW).frames
    assert np.abs(out - plain).max() <= 1e-4 * np.abs(plain).max()


def test_compiled_models_give_the_same_frames(tiny):
    parts = fresh(tiny)
    plain = TextToVideoZero(**tiny)("a red circle", generator=seeded(2), chunk_size=2, **KW).frames
    pipe = TextToVideoZero(**parts)
    notes = pipe.optimize(compile=True)
    out = pipe("a red circle", generator=seeded(2), chunk_size=2, **KW).frames
    assert np.abs(out - plain).max() <= 2 / 255
    if not notes:  # the compiler works here: the blocks really were compiled
        compiled = [m for m in pipe.unet.modules() if getattr(m, "_compiled_call_impl", None) is not None]
        assert compiled


def test_a_compiler_that_fails_is_a_note_and_the_models_run_uncompiled(tiny, monkeypatch):
    import t2vzero.speed as speed

    monkeypatch.setattr(speed, "compiler_problem", lambda: "no C++ compiler")
    pipe = TextToVideoZero(**fresh(tiny))
    with pytest.warns(RuntimeWarning, match="no C.. compiler"):
        notes = pipe.optimize(compile=True)
    assert notes == ["torch.compile does not work here (no C++ compiler); running uncompiled"]
    assert not [m for m in pipe.unet.modules() if getattr(m, "_compiled_call_impl", None) is not None]


def overflowing_vae(seed=0):
    """A tiny VAE whose decoder overflows half precision (its first conv's outputs pass 65504) but not float32."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 16, 32, 32),
                        norm_num_groups=16, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4).eval()
    with torch.no_grad():
        vae.decoder.conv_in.weight.mul_(80000.0)
        vae.decoder.conv_in.bias.mul_(80000.0)
    return vae


def test_a_half_precision_decode_that_overflows_is_redone_in_float32():
    vae = overflowing_vae()
    latents = torch.randn(3, 4, 8, 8, generator=seeded(3)) * vae.config.scaling_factor
    reference = decode_latents(vae, latents)
    half = copy.deepcopy(vae).half()
    with torch.no_grad():
        raw = half.decode((latents / vae.config.scaling_factor).half()).sample
    assert not torch.isfinite(raw).all()  # the fp16 decoder alone gives NaN frames
    frames = decode_latents(half, latents)
    assert np.isfinite(frames).all() and np.abs(frames - reference).max() <= 2 / 255
    assert half.dtype == torch.float16  # the model the caller holds is unchanged


def test_offload_on_the_cpu_is_refused_with_the_fix():
    with pytest.raises(UserError, match="drop --offload"):
        check_speed_args(offload="model", device="cpu")
    with pytest.raises(UserError, match="unknown offload mode"):
        check_speed_args(offload="disk", device="cuda")
    check_speed_args(offload="sequential", device="cuda")


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_offload_hooks_keep_the_frames(tiny, mode, latent_output):
    # On this CPU-only machine the execution device is the CPU too, so this checks the hooks' plumbing (inputs
    # follow the weights, the loop asks the hooks where to compute), not the transfers.
    from t2vzero.speed import _offload

    plain = TextToVideoZero(**tiny)("a red circle", generator=seeded(4), chunk_size=2, **KW).frames
    parts = fresh(tiny)
    _offload(parts, (), mode, torch.device("cpu"))
    assert any(hasattr(m, "_hf_hook") for m in parts["unet"].modules())
    out = TextToVideoZero(**parts)("a red circle", generator=seeded(4), chunk_size=2, **KW).frames
    assert np.abs(out - plain).max() <= 1e-5 * np.abs(plain).max()


def test_the_estimate_counts_the_checkpoints_weights_and_is_bounded_by_the_chunk(tiny, tiny_model_dir):
    from t2vzero.estimate import checkpoint_elements, estimate_run, read_configs

    params = sum(p.numel() for name in ("unet", "vae", "text_encoder") for p in tiny[name].parameters())
    assert checkpoint_elements(tiny_model_dir) == params  # from the headers alone
    unet_config, vae_config = read_configs(tiny_model_dir)
    common = dict(height=512, width=512, groups=2, videos=1, steps=10, dtype="float16")
    short = estimate_run(unet_config, vae_config, params, frames=8, chunk_size=None, **common)
    long = estimate_run(unet_config, vae_config, params, frames=64, chunk_size=8, **common)
    whole = estimate_run(unet_config, vae_config, params, frames=64, chunk_size=None, **common)
    assert short.weights == long.weights == 2 * params
    assert long.unet_activations == short.unet_activations < whole.unet_activations  # bounded by the chunk
    assert whole.unet_activations == 8 * short.unet_activations and long.unet_passes == 8 * short.unet_passes


def test_dry_run_prints_the_estimate_and_loads_and_writes_nothing(tmp_path, tiny_model_dir, monkeypatch, capsys):
    import t2vzero.models
    from t2vzero.cli import run

    monkeypatch.setattr(t2vzero.models, "load_components", lambda *a, **k: pytest.fail("weights were loaded"))
    monkeypatch.chdir(tmp_path)
    assert run(["generate", "a red circle", "--model", str(tiny_model_dir), "--dry-run", "--frames", "16",
                "--chunk-size", "4", "--size", "128x128", "-o", "out.mp4", "--sheet"]) == 0
    out = capsys.readouterr().out
    assert "128x128, 16 frames, chunk 4" in out and "estimated peak memory" in out and "UNet calls of 8 rows" in out
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_offload_hooks_cover_both_sdxl_text_encoders_and_keep_the_frames(tiny_sdxl, mode, latent_output):
    from t2vzero.speed import _offload

    kw = dict(video_length=3, num_inference_steps=4, progress=False)
    plain = TextToVideoZero(**tiny_sdxl)("a red circle", generator=seeded(2), **kw).frames
    parts = fresh(tiny_sdxl)
    _offload(parts, (), mode, torch.device("cpu"))
    for name in ("text_encoder", "text_encoder_2", "unet", "vae"):
        assert any(hasattr(m, "_hf_hook") for m in parts[name].modules()), name
    out = TextToVideoZero(**parts)("a red circle", generator=seeded(2), **kw).frames
    assert np.abs(out - plain).max() <= 1e-5 * np.abs(plain).max()

"""Shared fixtures: tiny random Stable Diffusion components, built in code, fully offline."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tiny models gain nothing from threads, and OpenMP spin-waiting makes two busy threads on a shared
# 2-core machine up to 100x slower; subprocesses inherit this too.
os.environ["OMP_NUM_THREADS"] = "1"


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny():
    """Tiny SD-shaped components (unet, vae, text_encoder, tokenizer, scheduler)."""
    from t2vzero.tiny import make_tiny_components

    return make_tiny_components(seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny):
    """The tiny components saved in the diffusers layout (safetensors), as a user's checkpoint folder."""
    from diffusers import StableDiffusionPipeline

    path = tmp_path_factory.mktemp("models") / "tiny-sd"
    pipe = StableDiffusionPipeline(**tiny, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture
def latent_output(monkeypatch):
    """Make every mode return its final latents (frames × h × w × C) instead of decoded pixels.

    A tiny random VAE decodes almost any latent to nearly the same flat image, so pixel comparisons
    against an oracle would pass whatever the denoising did; the latents show every difference.
    """
    import t2vzero.generate as generate

    monkeypatch.setattr(generate, "decode_latents",
                        lambda vae, latents, batch_size=8, **_: latents.permute(0, 2, 3, 1).float().cpu().numpy())


@pytest.fixture(scope="session")
def tiny_sdxl():
    """Tiny SDXL-shaped components: two text encoders (the second with a projection), `text_time` UNet."""
    from t2vzero.tiny import make_tiny_sdxl_components

    return make_tiny_sdxl_components(seed=0)


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory, tiny_sdxl):
    """The tiny SDXL components saved as a diffusers SDXL folder."""
    from diffusers import StableDiffusionXLPipeline

    path = tmp_path_factory.mktemp("models") / "tiny-sdxl"
    parts = {k: v for k, v in tiny_sdxl.items() if k != "force_zeros_for_empty_prompt"}
    StableDiffusionXLPipeline(**parts, force_zeros_for_empty_prompt=True).save_pretrained(path, safe_serialization=True)
    return path

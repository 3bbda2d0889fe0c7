"""Shared fixtures: tiny random Stable Diffusion components, built in code, fully offline."""

from __future__ import annotations

import os
import signal

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tiny models gain nothing from threads, and OpenMP spin-waiting makes two busy threads on a shared
# 2-core machine up to 100x slower; subprocesses inherit this too.
os.environ["OMP_NUM_THREADS"] = "1"
# A suite started in the background (`make test &`, nohup) inherits SIGINT ignored, and so would every
# subprocess it starts: the Ctrl-C tests would then test nothing. A handled signal is reset to its default
# across exec, so handling it here gives the subprocesses Python's usual KeyboardInterrupt.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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


@pytest.fixture(scope="session")
def tiny_controlnet_dir(tmp_path_factory, tiny):
    """A ControlNet made from the tiny UNet, saved as a diffusers folder; its zero-initialised output
    convolutions get small random weights, so that each frame's condition shows in its output."""
    import torch
    from diffusers import ControlNetModel

    net = ControlNetModel.from_unet(tiny["unet"])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for conv in [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
    path = tmp_path_factory.mktemp("cn") / "controlnet"
    net.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def tiny_pix2pix_dir(tmp_path_factory):
    """A tiny Instruct-Pix2Pix checkpoint (8-channel UNet) as a diffusers folder."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    from t2vzero.tiny import make_tiny_components

    path = tmp_path_factory.mktemp("p2p") / "pix2pix"
    StableDiffusionInstructPix2PixPipeline(**make_tiny_components(seed=3, in_channels=8), safety_checker=None,
                                           feature_extractor=None, requires_safety_checker=False).save_pretrained(
        path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def square_clip_dir(tmp_path_factory):
    """A 6-frame 64x48 clip of a sliding square, as a lossless folder of PNG frames."""
    from clips import moving_square
    from t2vzero.video import write_video

    video = moving_square(6, 48, 64, top=12, side=20, left=4, step=5, colour=(230, 60, 40), ground=30)
    return write_video(video, tmp_path_factory.mktemp("in") / "clip/", fps=8)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs) shared by every Ray test, shut down at the end of the session.

    Its workers inherit OMP_NUM_THREADS=1, and t2vzero's workers set one torch thread per CPU they hold."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 't2vzero[ray]')")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             object_store_memory=256 * 2**20)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def image_path(tmp_path_factory):
    """A 64x48 PNG: an orange square on a dark ground (animate's input in the CLI and batch tests)."""
    import numpy as np
    from PIL import Image

    image = np.full((48, 64, 3), 40, np.uint8)
    image[12:36, 16:40] = (220, 60, 30)
    path = tmp_path_factory.mktemp("img") / "square.png"
    Image.fromarray(image).save(path)
    return path

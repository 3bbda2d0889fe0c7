"""Image-to-video: DDIM inversion, frame 1 kept on its inverted trajectory, chunking, SD and SDXL."""

import dataclasses

import numpy as np
import pytest
import torch

from t2vzero import TextToVideoZero
from t2vzero.errors import UserError
from t2vzero.modes.image2video import encode_image
from t2vzero.modes.text2video import anchor_pass, render_latents
from t2vzero.schedule import ddim_invert

KW = dict(video_length=4, num_inference_steps=10, t0=300, t1=700)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def square_image(size=64, colour=(220, 60, 30), ground=40):
    image = np.full((size, size, 3), ground, np.uint8)
    image[20:44, 16:40] = colour
    return image


@pytest.fixture(scope="module")
def sdxl():
    from t2vzero.tiny import make_tiny_sdxl_components

    return make_tiny_sdxl_components(seed=0)


@pytest.fixture(scope="module")
def built_in():
    return TextToVideoZero.from_pretrained(None)


def round_trip(pipe, latents, steps, up_to, denoise_guidance=1.0, prompt="a red square on a blue background"):
    """Invert clean `latents` to timestep `up_to` with ddim_invert, then denoise them back with diffusers'
    DDIMScheduler (ᾱ = 1 at the end, so the two share their end points); the relative error."""
    from diffusers import DDIMScheduler

    from t2vzero.prompts import encode_prompt

    unet = pipe.unet
    sched = DDIMScheduler.from_config(pipe.scheduler.config, set_alpha_to_one=True)
    sched.set_timesteps(steps)
    cond = encode_prompt(pipe.components, [prompt], [""], guidance_scale=denoise_guidance)
    text = cond.embeds[-1, 0][None]
    ts = [t for t in sched.timesteps if t <= up_to]

    def eps(x, t):
        return unet(x, t, encoder_hidden_states=text).sample

    noisy = ddim_invert(latents, eps, ts[::-1], [float(sched.alphas_cumprod[t]) for t in ts[::-1]])[-1]
    x = noisy
    with torch.no_grad():
        for t in ts:
            out = unet(x.repeat(cond.groups, 1, 1, 1), t, encoder_hidden_states=cond.embeds[:, 0]).sample
            guided = out[0] + denoise_guidance * (out[1] - out[0]) if cond.groups == 2 else out[0]
            x = sched.step(guided[None], t, x).prev_sample
    return float((x - latents).norm() / latents.norm()), noisy


@torch.no_grad()
def test_ddim_inversion_round_trip_on_the_built_in_model(built_in):
    image = built_in("a red square on a blue background", video_length=1, generator=seeded(0),
                     progress=False).uint8()[0, 0]
    z = encode_image(built_in.components, image)
    error, noisy = round_trip(built_in, z, 50, 501)
    # The sampler's step at t evaluates ε(x_t, t), the inversion ε(x_s, t): a first-order error per step.
    # Measured: 3.2 % of the latent's norm after 50 steps up to t = 501 and back (the bound leaves 2x).
    assert error < 0.06, error
    assert (noisy - z).norm() / z.norm() > 0.5  # it did go somewhere: half-way noised
    coarse, _ = round_trip(built_in, z, 10, 501)
    assert coarse > 1.5 * error, (coarse, error)  # fewer, larger steps: a larger error (first order)
    # Denoising back with guidance 7.5 drifts far more (why the inversion uses the conditional prediction
    # and frame 1 is kept on its path): measured 41 %.
    guided, _ = round_trip(built_in, z, 50, 501, denoise_guidance=7.5)
    assert guided > 4 * error, (guided, error)


def test_ddim_invert_is_the_ddim_step_solved_for_the_noisier_latent():
    # With a prediction that does not depend on x, one DDIM step exactly undoes one inversion step.
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, set_alpha_to_one=True,
                          clip_sample=False)
    sched.set_timesteps(5)
    noise = torch.randn(1, 4, 8, 8, generator=seeded(1))
    x0 = torch.randn(1, 4, 8, 8, generator=seeded(2))
    ts = list(sched.timesteps)[::-1]
    path = ddim_invert(x0, lambda x, t: noise * (1 + t / 1000), ts, [float(sched.alphas_cumprod[t]) for t in ts])
    x = path[-1]
    for t in sched.timesteps:
        x = sched.step(noise * (1 + t / 1000), t, x).prev_sample
    assert (x - x0).abs().max() < 1e-5
    # Repeated levels (second-order samplers) cost no model call and leave the latent as it is.
    calls = []
    twice = ddim_invert(x0, lambda x, t: calls.append(t) or noise, [ts[0], ts[0], ts[1]],
                        [float(sched.alphas_cumprod[t]) for t in (ts[0], ts[0], ts[1])])
    assert len(calls) == 2 and torch.equal(twice[0], twice[1])


def test_frame_one_is_the_images_own_latent_and_the_others_move(tiny, latent_output):
    pipe = TextToVideoZero(**tiny)
    image = square_image()
    z = encode_image(pipe.components, image)[0].permute(1, 2, 0).numpy()
    video = pipe.animate(image, "a red square", generator=seeded(1), motion=(64.0, 0.0), progress=False,
                         **KW).frames[0]
    assert video.shape == (4, 8, 8, 4)
    # Frame 1 is kept on its inverted trajectory and ends exactly on the image's latent (the VAE's
    # reconstruction once decoded)...
    assert np.abs(video[0] - z).max() < 1e-6
    # ...where denoising it again from the inverted x_t1 would not (the comparison can fail).
    args = pipe.generation_args(height=64, width=64, generator=seeded(1), motion=(64.0, 0.0), **KW)
    anchor = anchor_pass(pipe.components, "a red square", first_frame_latents=encode_image(pipe.components, image),
                         **args)
    again = render_latents(pipe.components, dataclasses.replace(anchor, first_frame_path=None), [0])
    assert np.abs(again[0, 0].permute(1, 2, 0).numpy() - z).max() > 1e-2
    # Frames 2..N come from the moved t0 latent: another motion changes them, not frame 1.
    still = pipe.animate(image, "a red square", generator=seeded(1), motion=(0.0, 0.0), progress=False,
                         **KW).frames[0]
    assert np.array_equal(still[0], video[0]) and np.abs(still[1:] - video[1:]).max() > 1e-3


def test_animated_frames_look_like_the_image_after_decoding(tiny):
    pipe = TextToVideoZero(**tiny)
    image = square_image()
    from t2vzero.generate import decode_latents

    reconstruction = decode_latents(pipe.vae, encode_image(pipe.components, image))[0]
    frames = pipe.animate(image, generator=seeded(2), progress=False, **KW).frames[0]
    assert np.abs(frames[0] - reconstruction).max() <= 1 / 255
    one = pipe.animate(image, generator=seeded(2), progress=False, **{**KW, "video_length": 1}).frames[0]
    assert one.shape == (1, 64, 64, 3) and np.abs(one[0] - reconstruction).max() <= 1 / 255


@pytest.mark.parametrize("eta", [None, 1.0])  # deterministic, and with step noise per frame
def test_animate_chunked_and_split_equal_unchunked(tiny, eta):
    pipe = TextToVideoZero(**tiny)
    z = encode_image(pipe.components, square_image())
    args = pipe.generation_args(height=64, width=64, generator=seeded(3), eta=eta, **{**KW, "video_length": 6})
    anchor = anchor_pass(pipe.components, ["a red square", "a blue square"], first_frame_latents=z, **args)
    whole = render_latents(pipe.components, anchor, range(6))
    scale = float(whole.abs().max())
    for chunk in (2, 4):
        chunked = render_latents(pipe.components, anchor, range(6), chunk_size=chunk)
        assert (chunked - whole).abs().max() <= 1e-5 * scale, chunk
    parts = render_latents(pipe.components, anchor, [4, 1], chunk_size=2)  # frame 1 computed, not returned
    assert (parts - whole[:, [4, 1]]).abs().max() <= 1e-5 * scale
    assert (whole[:, 1:] - whole[:, :1]).abs().max() > 1e-3 * scale  # the frames do differ
    assert torch.equal(whole[0, 0], z[0]) and torch.equal(whole[1, 0], z[0])  # one image for both prompts


def test_animate_on_sdxl_keeps_frame_one_in_sigma_space(sdxl, latent_output):
    # SDXL's Euler scheduler keeps latents in sigma space (x / √ᾱ): the inverted path must be too.
    pipe = TextToVideoZero(**sdxl)
    image = square_image()
    z = encode_image(pipe.components, image)
    video = pipe.animate(image, "a red square", generator=seeded(4), progress=False, **KW).frames[0]
    assert np.abs(video[0] - z[0].permute(1, 2, 0).numpy()).max() < 1e-6
    chunked = pipe.animate(image, "a red square", generator=seeded(4), chunk_size=2, progress=False, **KW).frames[0]
    assert np.abs(chunked - video).max() <= 1e-5 * np.abs(video).max()
    args = pipe.generation_args(height=64, width=64, generator=seeded(4), **KW)
    anchor = anchor_pass(pipe.components, "a red square", first_frame_latents=z, **args)
    # x_t1 in sigma space is the VP latent / √ᾱ(t1): far larger than the clean latent at t1 = 700.
    assert anchor.x_t1.std() > 2 * z.std()


def test_animate_refuses_bad_images_and_modes(tiny):
    pipe = TextToVideoZero(**tiny)
    image = square_image()
    cases = [
        (lambda: pipe.animate(image.astype(np.float32) / 255, progress=False), "uint8"),
        (lambda: pipe.animate(image[..., :2], progress=False), "RGB"),
        (lambda: pipe.animate(image[:60], progress=False), "multiples of 8"),
        (lambda: pipe.animate(image[:4, :4], progress=False), "multiples of 8"),
        (lambda: pipe.animate(image, compat="diffusers", progress=False, **KW), "diffusers"),
        (lambda: pipe.animate(image, background_smoothing=0.6, progress=False, **KW), "background smoothing"),
        (lambda: pipe.animate(image, height=128, progress=False, **KW), "differs from the image"),
    ]
    for call, match in cases:
        with pytest.raises(UserError, match=match):
            call()
    from t2vzero.tiny import make_tiny_components

    pix2pix = TextToVideoZero(**make_tiny_components(seed=1, in_channels=8))
    with pytest.raises(UserError, match="input channels"):
        pix2pix.animate(image, progress=False, **KW)


def test_animate_takes_a_pil_image(tiny, latent_output):
    from PIL import Image

    pipe = TextToVideoZero(**tiny)
    image = square_image()
    a = pipe.animate(Image.fromarray(image), generator=seeded(5), progress=False, **KW).frames
    b = pipe.animate(image, generator=seeded(5), progress=False, **KW).frames
    assert np.array_equal(a, b)


def test_the_two_phases_of_animate_run_apart(tiny, latent_output):
    pipe = TextToVideoZero(**tiny)
    image = square_image()
    whole = pipe.animate(image, "a red square", generator=seeded(6), progress=False, **KW).frames
    anchor = pipe.anchor("a red square", image=image, generator=seeded(6), **KW)
    assert anchor.size == (64, 64) and anchor.first_frame_path is not None
    first, rest = pipe.render(anchor, [0, 1]).frames, pipe.render(anchor, [2, 3]).frames
    assert np.abs(np.concatenate([first, rest], axis=1) - whole).max() <= 1e-5 * np.abs(whole).max()


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_model_outputs_of_every_prediction_type_give_the_noise(kind):
    from t2vzero.modes.image2video import model_noise

    x0, eps = torch.randn(2, 4, 8, 8, generator=seeded(1)), torch.randn(2, 4, 8, 8, generator=seeded(2))
    a = 0.3
    x = a**0.5 * x0 + (1 - a) ** 0.5 * eps
    output = {"epsilon": eps, "v_prediction": a**0.5 * eps - (1 - a) ** 0.5 * x0, "sample": x0}[kind]
    assert (model_noise(output, x, a, kind) - eps).abs().max() < 1e-5
    with pytest.raises(UserError, match="prediction type"):
        model_noise(output, x, a, "flow")


def test_a_size_of_none_is_the_images_as_when_omitted(tiny, latent_output):
    """None means "the default" throughout the API; for animate (and its anchor) the default size is the image's."""
    pipe = TextToVideoZero(**tiny)
    image = square_image()[:48]  # not the model's native 64x64
    omitted = pipe.animate(image, generator=seeded(7), progress=False, **KW).frames
    none = pipe.animate(image, generator=seeded(7), progress=False, height=None, width=None, **KW).frames
    assert omitted.shape[2] == 48 // 8 and np.array_equal(omitted, none)
    anchor = pipe.anchor("", image=image, height=None, width=None, generator=seeded(7), **KW)
    assert anchor.size == (64, 48)  # (width, height)

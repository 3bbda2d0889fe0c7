"""SDXL through the same loop: tiny random SDXL components, against diffusers' TextToVideoZeroSDXLPipeline."""

import numpy as np
import pytest
import torch
from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero_sdxl import (
    TextToVideoZeroSDXLPipeline,
)

from t2vzero import TextToVideoZero
from t2vzero.errors import UserError


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl):
    return tiny_sdxl


def models(parts):
    return {k: v for k, v in parts.items() if k != "force_zeros_for_empty_prompt"}


class Reference:
    """diffusers' SDXL pipeline; it leaves its processors installed after output_type="latent" (one of its
    defects), so each call restores the UNet's own."""

    def __init__(self, parts):
        self.pipe = TextToVideoZeroSDXLPipeline(**models(parts), force_zeros_for_empty_prompt=True)
        self.pipe.set_progress_bar_config(disable=True)

    def __call__(self, *args, **kwargs):
        original = dict(self.pipe.unet.attn_processors)
        try:
            return self.pipe(*args, **kwargs)
        finally:
            self.pipe.unet.set_attn_processor(original)


@pytest.fixture(scope="module")
def reference(sdxl):
    return Reference(sdxl)


@pytest.mark.parametrize("motion,frames", [((12.0, 12.0), 4), ((-30.0, 8.0), 3)])
def test_compat_mode_reproduces_diffusers_sdxl_pipeline(sdxl, reference, latent_output, motion, frames):
    kw = dict(video_length=frames, height=64, width=64, num_inference_steps=50)
    ref = reference("a red circle", generator=seeded(3), motion_field_strength_x=motion[0],
                    motion_field_strength_y=motion[1], output_type="latent", **kw).images
    ref = ref.permute(0, 2, 3, 1).numpy()
    pipe = TextToVideoZero(**sdxl)
    ours = pipe("a red circle", generator=seeded(3), motion=motion, compat="diffusers", progress=False, **kw).frames[0]
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()
    other = pipe("a red circle", generator=seeded(3), motion=motion, compat="diffusers", progress=False,
                 cross_frame_attention=False, **kw).frames[0]
    assert np.abs(other[1:] - ref[1:]).max() > 1e-3 * np.abs(ref).max()  # the comparison sees cross-frame attention


def test_sdxl_text_to_video_in_pixels_equals_the_reference(sdxl, reference):
    kw = dict(video_length=3, height=64, width=64, num_inference_steps=50)
    ref = reference("a blue square", generator=seeded(1), output_type="np", **kw).images
    ours = TextToVideoZero(**sdxl)("a blue square", generator=seeded(1), compat="diffusers", progress=False,
                                   **kw).frames[0]
    assert np.abs(ours - ref).max() <= 2 / 255


def test_sdxl_conditions_reach_the_unet(sdxl, latent_output):
    pipe = TextToVideoZero(**sdxl)
    kw = dict(video_length=3, height=64, width=64, num_inference_steps=8, t0=300, t1=700, progress=False)

    def run(**extra):
        return pipe("a red circle", generator=seeded(2), **kw, **extra).frames[0]

    base = run()
    for extra in (dict(prompt_2="a blue square"), dict(negative_prompt="a green circle"),
                  dict(original_size=(32, 32)), dict(crops_coords_top_left=(8, 0)), dict(guidance_rescale=0.7)):
        assert np.abs(run(**extra) - base).max() > 1e-4 * np.abs(base).max(), extra
    # An empty negative prompt is zeros (force_zeros_for_empty_prompt): the same as no negative prompt.
    assert np.array_equal(run(negative_prompt=""), base)
    chunked = pipe("a red circle", generator=seeded(2), chunk_size=2, **kw).frames[0]
    assert np.abs(chunked - base).max() <= 1e-5 * np.abs(base).max()


def test_guidance_off_on_sdxl_attends_to_each_videos_own_frame_one(sdxl, latent_output):
    pipe = TextToVideoZero(**sdxl)
    kw = dict(video_length=3, height=64, width=64, num_inference_steps=4, guidance_scale=0.0, t0=300, t1=700,
              scheduler="euler", timestep_spacing="trailing", progress=False)
    gens = [seeded(5), seeded(6)]
    both = pipe(["a red circle", "a blue square"], generator=gens, **kw).frames
    for v, prompt in enumerate(["a red circle", "a blue square"]):
        alone = pipe(prompt, generator=seeded(5 + v), **kw).frames[0]
        assert np.abs(both[v] - alone).max() <= 1e-5 * np.abs(alone).max()


def test_second_prompts_are_refused_on_sd(tiny):
    with pytest.raises(UserError, match="SDXL's second text encoder"):
        TextToVideoZero(**tiny)("a red circle", prompt_2="a cat", video_length=2, height=64, width=64,
                                num_inference_steps=2, progress=False)


def test_the_default_mode_fixes_the_references_defects(sdxl, reference, latent_output):
    kw = dict(video_length=3, height=64, width=64, num_inference_steps=50)
    pipe = TextToVideoZero(**sdxl)
    before = dict(sdxl["unet"].attn_processors)
    ref = reference("a red circle", generator=seeded(4), output_type="latent", **kw).images.permute(0, 2, 3, 1).numpy()
    default = pipe("a red circle", generator=seeded(4), progress=False, **kw).frames[0]
    # The exact forward jump (the reference's is one step off): frame 1 is the same, the others are not.
    assert np.abs(default[0] - ref[0]).max() <= 1e-4 * np.abs(ref).max()
    assert np.abs(default[1:] - ref[1:]).max() > 1e-3 * np.abs(ref).max()
    # Latent output or not, the UNet's own processors are back after every call.
    assert dict(sdxl["unet"].attn_processors) == before
    # Several videos per prompt (the reference asserts one), each its own.
    out = pipe("a red circle", num_videos_per_prompt=2, generator=[seeded(4), seeded(9)], progress=False,
               **{**kw, "num_inference_steps": 8}).frames
    alone = pipe("a red circle", generator=seeded(9), progress=False, **{**kw, "num_inference_steps": 8}).frames[0]
    assert out.shape[0] == 2 and np.abs(out[1] - alone).max() <= 1e-5 * np.abs(alone).max()
    assert np.abs(out[0] - out[1]).max() > 1e-3 * np.abs(alone).max()


@pytest.fixture(scope="module")
def sdxl_dir(tiny_sdxl_dir):
    return tiny_sdxl_dir


def test_an_sdxl_folder_loads_as_sdxl_and_generates_from_the_command_line(sdxl_dir, tmp_path, capsys):
    from t2vzero.cli import run
    from t2vzero.video import read_video

    pipe = TextToVideoZero.from_pretrained(str(sdxl_dir))
    assert pipe.components["text_encoder_2"] is not None and pipe.native_size() == (64, 64)
    out = tmp_path / "xl.mp4"
    code = run(["generate", "a red circle", "--model", str(sdxl_dir), "--frames", "3", "--steps", "4",
                "--prompt-2", "a blue square", "--guidance-rescale", "0.5", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    frames, _ = read_video(out)
    assert frames.shape == (3, 64, 64, 3)


def test_cli_refuses_sdxl_options_on_an_sd_model(tiny_model_dir, tmp_path, capsys):
    from t2vzero.cli import run

    out = tmp_path / "v.mp4"
    assert run(["generate", "a red circle", "--model", str(tiny_model_dir), "--prompt-2", "x", "--steps", "2",
                "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "SDXL's second text encoder" in err and len(err.strip().splitlines()) == 1 and not out.exists()


def moving_square(frames=4, size=64):
    from clips import moving_square as clip

    return clip(frames, size, size, top=20, side=20, left=8, step=6, colour=(230, 200, 30), ground=40)


def with_cross_frame(models_, batch, call):
    """Run `call` with diffusers' cross-frame processor on `models_`, restoring their own afterwards."""
    from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
        CrossFrameAttnProcessor,
    )

    saved = [(m, dict(m.attn_processors)) for m in models_]
    for m, _ in saved:
        m.set_attn_processor(CrossFrameAttnProcessor(batch_size=batch))
    try:
        return call()
    finally:
        for m, processors in saved:
            m.set_attn_processor(processors)


@pytest.fixture(scope="module")
def sdxl_controlnet(sdxl):
    from diffusers import ControlNetModel

    torch.manual_seed(3)
    net = ControlNetModel.from_unet(sdxl["unet"]).eval()
    with torch.no_grad():  # from_unet zero-initialises the output convs; make them matter
        for p in net.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.3)
    return net


def test_sdxl_controlnet_compat_equals_diffusers_with_cross_frame_processors(sdxl, sdxl_controlnet, latent_output):
    from diffusers import StableDiffusionXLControlNetPipeline
    from PIL import Image

    from t2vzero.modes.video2video import control_video

    # Conditions far apart frame to frame, so that attending to frame 1 or to oneself differs clearly.
    cond = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    ref_pipe = StableDiffusionXLControlNetPipeline(**models(sdxl), controlnet=sdxl_controlnet,
                                                   force_zeros_for_empty_prompt=True)
    ref_pipe.set_progress_bar_config(disable=True)
    latents = torch.randn((1, 4, 8, 8), generator=seeded(5)).repeat(len(cond), 1, 1, 1)
    ref = with_cross_frame([ref_pipe.unet, sdxl_controlnet], 2, lambda: ref_pipe(
        prompt=["a yellow square"] * len(cond), image=[Image.fromarray(c) for c in cond], latents=latents,
        num_inference_steps=6, guidance_scale=9.0, output_type="latent").images)
    ref = ref.permute(0, 2, 3, 1).numpy()
    ours = control_video(sdxl, "a yellow square", [cond], [sdxl_controlnet], generator=seeded(5), compat="diffusers",
                         num_inference_steps=6, progress=False).frames[0]
    # In this tiny SDXL UNet only the 4x4 level attends, so cross-frame attention moves the latents little
    # (about 5e-5 of their range); the equality is held to a tolerance below that (we measure 2e-6).
    assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()
    plain = ref_pipe(prompt=["a yellow square"] * len(cond), image=[Image.fromarray(c) for c in cond],
                     latents=latents, num_inference_steps=6, guidance_scale=9.0, output_type="latent").images
    plain = plain.permute(0, 2, 3, 1).numpy()
    assert np.abs(plain[1:] - ref[1:]).max() > 2e-5 * np.abs(ref).max()  # the comparison sees cross-frame attention
    chunked = control_video(sdxl, "a yellow square", [cond], [sdxl_controlnet], generator=seeded(5), chunk_size=2,
                            num_inference_steps=6, progress=False).frames[0]
    full = control_video(sdxl, "a yellow square", [cond], [sdxl_controlnet], generator=seeded(5),
                         num_inference_steps=6, progress=False).frames[0]
    assert np.abs(chunked - full).max() <= 1e-5 * np.abs(full).max()


def test_sd_controlnet_on_an_sdxl_base_is_named(sdxl, tiny):
    from diffusers import ControlNetModel

    from t2vzero.modes.video2video import control_video

    sd_net = ControlNetModel.from_unet(tiny["unet"])
    with pytest.raises(UserError, match=r"this ControlNet is for SD 1.x \(cross-attention dim 32\); the base is SDXL"):
        control_video(sdxl, "x", [moving_square()], [sd_net], num_inference_steps=2, progress=False)


def unet_lora(unet, path, strength=20.0):
    from diffusers import StableDiffusionXLPipeline

    from loras import random_lora

    return random_lora(unet, path, StableDiffusionXLPipeline, strength)


def test_sdxl_lora_loads_and_an_sd_lora_on_sdxl_is_named(sdxl, tiny, sdxl_dir, tmp_path, latent_output):
    xl_lora = unet_lora(sdxl["unet"], tmp_path / "xl")
    sd_lora = unet_lora(tiny["unet"], tmp_path / "sd")
    kw = dict(video_length=2, num_inference_steps=3, generator=None, progress=False)
    base = TextToVideoZero.from_pretrained(str(sdxl_dir))("a red circle", **{**kw, "generator": seeded(0)}).frames
    styled = TextToVideoZero.from_pretrained(str(sdxl_dir), lora=[str(xl_lora)])(
        "a red circle", **{**kw, "generator": seeded(0)}).frames
    assert np.abs(styled - base).max() > 1e-3 * np.abs(base).max()
    with pytest.raises(UserError, match=r"is for SD 1.x|cross-attention dim 32\); the base is"):
        TextToVideoZero.from_pretrained(str(sdxl_dir), lora=[str(sd_lora)])


def test_sdxl_edit_compat_equals_diffusers_sdxl_instruct_pix2pix(latent_output):
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionXLInstructPix2PixPipeline
    from PIL import Image

    from t2vzero.modes.video2video import edit_video
    from t2vzero.tiny import make_tiny_sdxl_components

    parts = make_tiny_sdxl_components(seed=4, in_channels=8)
    parts["scheduler"] = EulerAncestralDiscreteScheduler.from_config(parts["scheduler"].config)
    video = moving_square()
    pipe = StableDiffusionXLInstructPix2PixPipeline(**models(parts), force_zeros_for_empty_prompt=True,
                                                    add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)

    def reference():
        return pipe(prompt=["make it red"] * len(video), image=[Image.fromarray(f) for f in video],
                    generator=seeded(9), num_inference_steps=8, guidance_scale=7.5, image_guidance_scale=1.5,
                    output_type="latent").images.permute(0, 2, 3, 1).numpy()

    ref = with_cross_frame([pipe.unet], 3, reference)
    ours = edit_video(parts, "make it red", video, generator=seeded(9), num_inference_steps=8, compat="diffusers",
                      progress=False).frames[0]
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()
    plain = reference()
    assert np.abs(plain[1:] - ref[1:]).max() > 2e-5 * np.abs(ref).max()  # the comparison sees cross-frame attention
    chunked = edit_video(parts, "make it red", video, generator=seeded(9), num_inference_steps=8, chunk_size=2,
                         progress=False).frames[0]
    full = edit_video(parts, "make it red", video, generator=seeded(9), num_inference_steps=8, progress=False).frames[0]
    assert np.abs(chunked - full).max() <= 1e-5 * np.abs(full).max()


def test_an_sdxl_vae_that_asks_for_it_decodes_in_float32(sdxl):
    import copy

    from t2vzero.generate import _FLOAT32_VAES, decode_latents

    parts = {**sdxl, "vae": copy.deepcopy(sdxl["vae"]).half()}
    assert parts["vae"].config.force_upcast
    frames = TextToVideoZero(**parts)("a red circle", video_length=2, height=64, width=64, num_inference_steps=3,
                                      generator=seeded(0), progress=False).frames
    assert parts["vae"] in _FLOAT32_VAES and np.isfinite(frames).all()  # the float32 copy decoded
    latents = torch.randn(2, 4, 8, 8, generator=seeded(1))
    upcast = decode_latents(parts["vae"], latents, force_upcast=True)
    assert np.array_equal(upcast, decode_latents(copy.deepcopy(parts["vae"]).float(), latents))
    assert np.abs(upcast - decode_latents(sdxl["vae"], latents)).max() <= 2 / 255  # fp16-rounded weights only


def test_a_single_file_whose_architecture_cannot_be_told_says_so(tmp_path):
    from safetensors.torch import save_file

    from t2vzero.models import load_components

    path = tmp_path / "mystery.safetensors"
    save_file({"some.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(UserError, match=r"cannot tell the architecture.*--config"):
        load_components(str(path))


def test_two_sdxl_controlnets_and_lcm_lora_style_few_step_sampling(sdxl, sdxl_controlnet, tmp_path, latent_output):
    import copy

    from t2vzero.modes.video2video import control_video

    cond = moving_square()
    second = copy.deepcopy(sdxl_controlnet)
    kw = dict(generator=seeded(2), num_inference_steps=4, scheduler="lcm", guidance_scale=1.0, progress=False)
    two = control_video(sdxl, "a square", [cond, 255 - cond], [sdxl_controlnet, second], scales=[1.0, 0.5],
                        **kw).frames
    kw["generator"] = seeded(2)
    chunked = control_video(sdxl, "a square", [cond, 255 - cond], [sdxl_controlnet, second], scales=[1.0, 0.5],
                            chunk_size=2, **kw).frames
    assert np.isfinite(two).all() and np.abs(chunked - two).max() <= 1e-5 * np.abs(two).max()
    # An LCM-LoRA is a LoRA; the sampler is LCM. (A strong random LoRA on this tiny model magnifies float
    # rounding between batch sizes through LCM's steps, so this one is of ordinary strength.)
    xl_lora = unet_lora(sdxl["unet"], tmp_path / "lcm-like", strength=1.0)
    parts = {**sdxl, "unet": copy.deepcopy(sdxl["unet"])}
    pipe = TextToVideoZero(**parts)
    from diffusers import StableDiffusionXLPipeline

    holder = StableDiffusionXLPipeline(**models(parts))
    holder.load_lora_weights(str(xl_lora), adapter_name="lcm")
    video = pipe("a red circle", video_length=3, height=64, width=64, scheduler="lcm", guidance_scale=1.0,
                 generator=seeded(0), progress=False).frames
    chunked = pipe("a red circle", video_length=3, height=64, width=64, scheduler="lcm", guidance_scale=1.0,
                   generator=seeded(0), chunk_size=2, progress=False).frames
    assert np.isfinite(video).all() and np.abs(chunked - video).max() <= 1e-5 * np.abs(video).max()


def test_single_files_are_told_apart_by_their_tensor_names(tmp_path):
    from safetensors.torch import save_file

    from t2vzero.models import _pipeline_class

    names = {"sdxl": "conditioner.embedders.1.model.ln_final.weight", "sd": "cond_stage_model.transformer.x.weight"}
    for kind, key in names.items():
        path = tmp_path / f"{kind}.safetensors"
        save_file({key: torch.zeros(1), "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(path))
        expected = "StableDiffusionXLPipeline" if kind == "sdxl" else "StableDiffusionPipeline"
        assert _pipeline_class(str(path), path).__name__ == expected


def test_an_original_layout_sdxl_single_file_loads_with_a_config_folder(sdxl, sdxl_dir, tmp_path, capsys):
    """SDXL as its checkpoints are shared: one .safetensors file in the original (SGM) layout, the second text
    encoder in OpenCLIP's layout; offline it needs the diffusers folder of its architecture for the configs."""
    from ldm_format import save_ldm_checkpoint
    from t2vzero.cli import run
    from t2vzero.models import load_components

    path = tmp_path / "tiny-sdxl.safetensors"
    save_ldm_checkpoint(sdxl, path)
    components, _ = load_components(str(path), config=str(sdxl_dir))
    assert components["text_encoder_2"] is not None
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        ours, theirs = sdxl[name].state_dict(), components[name].state_dict()
        shared = [k for k in ours if "position_ids" not in k]
        assert set(shared) <= set(theirs), (name, sorted(set(shared) - set(theirs))[:3])
        assert all(torch.equal(ours[k].float(), theirs[k].float().reshape(ours[k].shape)) for k in shared), name
    # The loaded file generates the same frames as the folder it was written from.
    kw = dict(video_length=2, num_inference_steps=3, generator=seeded(1), progress=False)
    from_file = TextToVideoZero(**components)("a red circle", **kw).frames
    kw["generator"] = seeded(1)
    from_folder = TextToVideoZero.from_pretrained(str(sdxl_dir))("a red circle", **kw).frames
    assert np.abs(from_file - from_folder).max() <= 1e-5
    out = tmp_path / "xl.gif"
    code = run(["generate", "a red circle", "--model", str(path), "--config", str(sdxl_dir), "--steps", "3",
                "--frames", "2", "-o", str(out)])
    assert code == 0 and out.is_file(), capsys.readouterr().err


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_sdxl_turbo_style_few_step_video(sdxl, steps, latent_output):
    """SDXL-Turbo's use: guidance off, trailing spacing, 1 to 4 steps; chunked equals unchunked."""
    pipe = TextToVideoZero(**sdxl)
    kw = dict(video_length=3, num_inference_steps=steps, guidance_scale=0.0, scheduler="euler-a",
              timestep_spacing="trailing", motion=(64.0, 0.0), progress=False)  # one latent pixel per frame
    full = pipe("a red circle", generator=seeded(3), **kw).frames
    chunked = pipe("a red circle", generator=seeded(3), chunk_size=2, **kw).frames
    assert np.isfinite(full).all() and np.abs(chunked - full).max() <= 1e-5 * np.abs(full).max()
    assert np.abs(full[0, 1:] - full[0, :1]).max() > 1e-3 * np.abs(full).max()  # the motion moved frames 2..N

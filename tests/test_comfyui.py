"""The ComfyUI nodes, run through real ComfyUI code (v0.3.64) on tiny random models.

Skipped, with the reason, when ComfyUI is not found (COMFYUI_PATH, or ../shared/comfyui/ComfyUI beside
the repository); CI sets COMFYUI_PATH.
"""

from __future__ import annotations

import asyncio
import json
import logging
from types import MappingProxyType

import pytest
import torch

import comfyui_env
from t2vzero.comfy.install import PACK, api_workflows, install, ui_workflows
from t2vzero.errors import UserError
from t2vzero.motion import Combined, Pan, Rotate, Zoom

FRAMES = 4
NODE_IDS = ["T2VZeroCrossFrameAttention", "T2VZeroMotion", "T2VZeroSampler", "T2VZeroKSampler", "T2VZeroSharedNoise"]


# ---------------------------------------------------------------- fixtures: one ComfyUI import per session


@pytest.fixture(scope="session")
def comfyui():
    path = comfyui_env.comfyui_dir()
    if path is None:
        pytest.skip("ComfyUI not found: set COMFYUI_PATH, or put ComfyUI at ../shared/comfyui/ComfyUI")
    comfyui_env.import_comfyui(path)
    import nodes

    return nodes


@pytest.fixture(scope="session")
def pack(comfyui, tmp_path_factory):
    """The node pack as a user installs it, loaded by ComfyUI's own custom-node loader: {node id: class}."""
    root = tmp_path_factory.mktemp("ComfyUI")
    (root / "custom_nodes").mkdir()
    folder = install(root)
    assert asyncio.run(comfyui.load_custom_node(str(folder))) is True
    return {node_id: comfyui.NODE_CLASS_MAPPINGS[node_id] for node_id in NODE_IDS}


@pytest.fixture(scope="session")
def sd15(comfyui):
    """(diffusers UNet, ComfyUI SD 1.5 ModelPatcher) with the same tiny random weights."""
    return comfyui_env.tiny_sd15(seed=0)


@pytest.fixture(scope="session")
def sdxl(comfyui):
    return comfyui_env.tiny_sdxl(seed=0)


@pytest.fixture(params=["sd15", "sdxl"])
def family(request):
    """(ModelPatcher, is SDXL) for each model family the cross-frame patch supports."""
    if request.param == "sd15":
        return request.getfixturevalue("sd15")[1], False
    return request.getfixturevalue("sdxl"), True


def conds(sdxl=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(1, 77, comfyui_env.CONTEXT_DIM, generator=g)
    pooled = torch.randn(1, comfyui_env.POOLED_DIM, generator=g)
    return comfyui_env.conditioning(text, sdxl, pooled), comfyui_env.conditioning(torch.zeros_like(text), sdxl)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def plain_sample(model, noise, sdxl=False, steps=6, sampler="euler"):
    """ComfyUI's own KSampler path (comfy.sample.sample) over an empty latent batch."""
    import comfy.sample

    positive, negative = conds(sdxl)
    return comfy.sample.sample(model, noise, steps, 7.0, sampler, "normal", positive, negative, torch.zeros_like(noise),
                               disable_pbar=True, seed=0)


def custom_sample(model, noise, sampler, sigmas, sdxl=False, cfg=7.0, positive=None, negative=None, latent=None,
                  callback=None):
    """ComfyUI's SamplerCustom path (comfy.sample.sample_custom) with a SAMPLER object."""
    import comfy.sample

    if positive is None:
        positive, negative = conds(sdxl)
    latent = torch.zeros_like(noise) if latent is None else latent
    return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent, callback=callback,
                                      disable_pbar=True, seed=0)


def advanced_sample(comfyui, model, noise_source, sampler, steps=8, scheduler="normal", positive=None, negative=None):
    """ComfyUI's own nodes, as the example workflows wire them: CFGGuider, BasicScheduler, SamplerCustomAdvanced."""
    nodes = comfyui.NODE_CLASS_MAPPINGS
    if positive is None:
        positive, negative = conds()
    guider = nodes["CFGGuider"]().get_guider(model, positive, negative, 7.0)[0]
    schedule = nodes["BasicScheduler"]().get_sigmas(model, scheduler, steps, 1.0)[0]
    latent = {"samples": torch.zeros(FRAMES, 4, 8, 8)}
    return nodes["SamplerCustomAdvanced"]().sample(noise_source, guider, sampler, schedule, latent)[0]["samples"]


def sigmas(model, steps=8, scheduler="normal"):
    import comfy.samplers

    return comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)


def changed_frames(a, b, tol=1e-6):
    """Frames of b that differ from a by more than `tol` of a's largest value (float noise stays below)."""
    limit = tol * float(a.abs().max())
    return [i for i, d in enumerate((a - b).flatten(1).abs().amax(1).tolist()) if d > limit]


# ---------------------------------------------------------------- loading


def test_install_writes_a_shim_and_the_ui_workflows(tmp_path):
    from t2vzero.comfy.__main__ import main

    (tmp_path / "custom_nodes").mkdir()
    assert main(["install", str(tmp_path)]) == 0
    folder = tmp_path / "custom_nodes" / PACK
    assert "from t2vzero.comfy import comfy_entrypoint" in (folder / "__init__.py").read_text()
    copied = sorted(p.name for p in (folder / "example_workflows").iterdir())
    assert copied == [p.name for p in ui_workflows()] and len(copied) == 3
    assert main(["install", str(tmp_path / "nowhere")]) == 2
    with pytest.raises(UserError, match="no custom_nodes folder"):
        install(tmp_path / "nowhere")


def test_the_pack_loads_through_comfyuis_loader_and_every_schema_validates(comfyui, pack):
    for node_id, cls in pack.items():
        schema = cls.GET_SCHEMA()  # ComfyUI's own check: finalises and validates the schema
        assert schema.node_id == node_id and schema.category == "Text2Video-Zero"
        assert cls.RELATIVE_PYTHON_MODULE == f"custom_nodes.{PACK}"  # registered from the installed folder
        assert comfyui.NODE_DISPLAY_NAME_MAPPINGS[node_id].startswith("Text2Video-Zero")
        info = cls.GET_NODE_INFO_V1()  # what the server sends the frontend
        json.dumps(info)
        assert info["output"] and (info["input"]["required"] or info["input"].get("optional"))
    assert pack["T2VZeroKSampler"].RETURN_TYPES == ["LATENT"]
    assert pack["T2VZeroSampler"].RETURN_TYPES == ["SAMPLER"]


# ---------------------------------------------------------------- cross-frame attention


def test_frame_one_reaches_the_other_frames_only_with_cross_frame_attention(pack, family):
    model, sdxl = family
    crossed = pack["T2VZeroCrossFrameAttention"].execute(model).result[0]
    noise = randn(FRAMES, 4, 8, 8, seed=1)
    bumped = noise.clone()
    bumped[0] += randn(4, 8, 8, seed=2)
    plain = [plain_sample(model, x, sdxl) for x in (noise, bumped)]
    crossed_out = [plain_sample(crossed, x, sdxl) for x in (noise, bumped)]
    assert changed_frames(*plain) == [0]
    assert changed_frames(*crossed_out) == [0, 1, 2, 3]
    assert torch.equal(plain_sample(model, noise, sdxl), plain[0])  # the input MODEL itself stays unpatched


def test_a_change_in_frame_three_changes_only_frame_three(pack, family):
    model, sdxl = family
    crossed = pack["T2VZeroCrossFrameAttention"].execute(model).result[0]
    noise = randn(FRAMES, 4, 8, 8, seed=3)
    bumped = noise.clone()
    bumped[2] += randn(4, 8, 8, seed=4)
    assert changed_frames(plain_sample(crossed, noise, sdxl), plain_sample(crossed, bumped, sdxl)) == [2]


def test_conditioning_groups_never_attend_to_each_other(pack, family):
    # One model call holding [cond frames][uncond frames]: changing the uncond group's frame 1 reaches its own
    # frames only.
    model, sdxl = family
    crossed = pack["T2VZeroCrossFrameAttention"].execute(model).result[0]
    positive, negative = conds(sdxl)
    x = randn(2 * FRAMES, 4, 8, 8, seed=5)
    bumped = x.clone()
    bumped[FRAMES] += 1.0
    context = torch.cat([positive[0][0].expand(FRAMES, -1, -1), negative[0][0].expand(FRAMES, -1, -1)])
    options = {**crossed.model_options["transformer_options"], "cond_or_uncond": [0, 1]}
    extra = {"y": randn(2 * FRAMES, comfyui_env.SDXL_UNET["adm_in_channels"])} if sdxl else {}
    unet = crossed.model.diffusion_model
    t = torch.full((2 * FRAMES,), 500.0)
    with torch.no_grad():
        a = unet(x, t, context=context, transformer_options=options, **extra)
        b = unet(bumped, t, context=context, transformer_options=options, **extra)
    assert changed_frames(a, b) == [4, 5, 6, 7]


def test_cond_and_uncond_batched_together_or_apart_give_the_same_frames(pack, family, monkeypatch):
    import comfy.samplers

    model, sdxl = family
    crossed = pack["T2VZeroCrossFrameAttention"].execute(model).result[0]
    batches = []
    crossed = crossed.clone()

    def record(n, context, value, extra):
        batches.append(len(extra["cond_or_uncond"]))
        return n, context, value

    crossed.set_model_attn1_patch(record)
    noise = randn(FRAMES, 4, 8, 8, seed=6)
    together = plain_sample(crossed, noise, sdxl)
    assert set(batches) == {2}
    batches.clear()
    # Conditions ComfyUI cannot concatenate run in separate model calls.
    monkeypatch.setattr(comfy.samplers, "can_concat_cond", lambda c1, c2: c1 is c2)
    apart = plain_sample(crossed, noise, sdxl)
    assert set(batches) == {1}
    assert (together - apart).abs().max() < 1e-5 * together.abs().max()


def tiny_sd3():
    """A tiny ComfyUI SD3 (MMDiT, flow-matching) model: a model type Text2Video-Zero cannot patch."""
    import comfy.supported_models

    embedder = {"target": "torch.nn.Linear", "params": {"in_features": 32, "out_features": 64}}
    config = dict(in_channels=16, pos_embed_scaling_factor=None, depth=1, patch_size=2, pos_embed_max_size=8,
                  num_patches=64, adm_in_channels=32, dtype=torch.float32, context_embedder_config=embedder)
    return comfyui_env.patcher(comfy.supported_models.SD3(config).get_model({}))


def test_an_unknown_model_type_is_refused_in_one_sentence(pack, comfyui):
    sd3 = tiny_sd3()
    for run in (lambda: pack["T2VZeroCrossFrameAttention"].execute(sd3),
                lambda: ksampler(pack, sd3, torch.zeros(1, 16, 8, 8))):
        with pytest.raises(UserError, match=r"^Text2Video-Zero works on Stable Diffusion 1\.x, 2\.x and SDXL models, "
                                            r"but this MODEL is SD3, whose attention its cross-frame patch cannot "
                                            r"reach\.$"):
            run()
    # Through SamplerCustom the sampler meets the model first: its noise schedule is refused.
    noise = randn(FRAMES, 16, 8, 8)
    pooled = {"pooled_output": torch.zeros(1, 32)}
    with pytest.raises(UserError, match=r"needs a Stable Diffusion noise schedule.*ModelSamplingDiscreteFlow"):
        custom_sample(sd3, noise, video_sampler(pack), sigmas(sd3), positive=[[torch.zeros(1, 77, 32), pooled]],
                      negative=[[torch.zeros(1, 77, 32), pooled]])


# ---------------------------------------------------------------- the Text2Video-Zero sampler


def video_sampler(pack, name="euler", t0=500, t1=700, motion=None):
    import comfy.samplers

    return pack["T2VZeroSampler"].execute(comfy.samplers.sampler_object(name), t0, t1, motion).result[0]


def ksampler(pack, model, samples, frames=FRAMES, seed=7, steps=8, t0=500, t1=700, motion=None, sampler="euler",
             sdxl=False, positive=None, negative=None, **latent):
    if positive is None:
        positive, negative = conds(sdxl)
    out = pack["T2VZeroKSampler"].execute(model, seed, steps, 7.0, sampler, "normal", positive, negative,
                                          {"samples": samples, **latent}, frames, t0, t1, 1.0, motion).result[0]
    return out["samples"]


def shared_noise(pack, seed, frames=FRAMES):
    source = pack["T2VZeroSharedNoise"].execute(seed).result[0]
    return source.generate_noise({"samples": torch.zeros(frames, 4, 8, 8)})


def test_zero_motion_and_one_shared_noise_give_identical_frames(pack, sd15, comfyui, caplog):
    # Through SamplerCustomAdvanced, as a workflow runs it: Shared Noise, the Text2Video-Zero Sampler.
    model = pack["T2VZeroCrossFrameAttention"].execute(sd15[1]).result[0]
    still = video_sampler(pack, motion=(0.0, 0.0))
    assert torch.equal(shared_noise(pack, seed=8)[3], shared_noise(pack, seed=8)[0])
    with caplog.at_level(logging.WARNING, logger="t2vzero.comfy.sampling"):
        out = advanced_sample(comfyui, model, pack["T2VZeroSharedNoise"].execute(8).result[0], still)
    assert "no cross-frame attention" not in caplog.text
    scale = out.abs().max()
    for k in (2, 3):
        assert (out[k] - out[1]).abs().max() < 1e-6 * scale
    # Frame 1 keeps its own trajectory from t1 (the paper's), the others start from its jumped copy.
    assert (out[0] - out[1]).abs().max() > 1e-3 * scale
    # Frames drawn with their own noise re-noise differently: the comparison above can fail.
    apart = advanced_sample(comfyui, model, comfyui.NODE_CLASS_MAPPINGS["RandomNoise"]().get_noise(8)[0], still)
    assert (apart[2] - apart[1]).abs().max() > 1e-3 * scale
    # Without the Cross-Frame Attention node the sampler runs (the paper's ablation) and says so.
    with caplog.at_level(logging.WARNING, logger="t2vzero.comfy.sampling"):
        advanced_sample(comfyui, sd15[1], pack["T2VZeroSharedNoise"].execute(8).result[0], still)
    assert "the MODEL has no cross-frame attention" in caplog.text


def test_through_the_sampler_frame_one_reaches_every_frame_and_frame_three_only_itself(pack, sd15):
    model = pack["T2VZeroCrossFrameAttention"].execute(sd15[1]).result[0]
    noise = randn(FRAMES, 4, 8, 8, seed=18)
    out = custom_sample(model, noise, video_sampler(pack), sigmas(model))
    for frame, reached in ((0, [0, 1, 2, 3]), (2, [2])):
        bumped = noise.clone()
        bumped[frame] += randn(4, 8, 8, seed=19)
        assert changed_frames(out, custom_sample(model, bumped, video_sampler(pack), sigmas(model))) == reached


def test_a_pan_moves_frame_ones_latent_at_t0_by_whole_latent_pixels(pack, sd15):
    import comfy.samplers

    from t2vzero.comfy.sampling import schedule_positions

    model = pack["T2VZeroCrossFrameAttention"].execute(sd15[1]).result[0]
    steps = sigmas(model, 10)
    i1, i0 = schedule_positions(model.get_model_object("model_sampling"), steps, 500, 700)
    assert 0 < i1 < i0
    noise = shared_noise(pack, seed=9)
    at_t1 = []

    def callback(step, x0, x, total):
        if x.shape[0] == FRAMES and not at_t1:  # the first step that samples all frames together: t1
            at_t1.append((step, x.clone()))

    # 64 px per frame on a 512 grid: one latent pixel per frame; content moves left.
    custom_sample(model, noise, video_sampler(pack, motion=(64.0, 0.0)), steps, callback=callback)
    step, x_t1 = at_t1[0]
    assert step == i1
    # Frame 1 alone, sampled by ComfyUI's own Euler to t0 (in the model's latent scale).
    scale = model.model.latent_format.scale_factor
    x_t0 = custom_sample(model, noise[:1], comfy.samplers.sampler_object("euler"), steps[: i0 + 1])[0] * scale
    renoise = (steps[i1] ** 2 - steps[i0] ** 2).sqrt() * noise[0]
    width = x_t0.shape[-1]
    for k in range(1, FRAMES):
        moved = x_t1[k] - renoise
        assert (moved[..., : width - k] - x_t0[..., k:]).abs().max() < 1e-5 * x_t0.abs().max()
        assert (moved - x_t0).abs().max() > 1e-2 * x_t0.abs().max()  # it did move


def test_frame_one_of_the_ksampler_node_is_comfyuis_own_image_for_the_seed(pack, sd15, comfyui):
    positive, negative = conds()
    one = {"samples": torch.zeros(1, 4, 8, 8)}
    image = comfyui.common_ksampler(sd15[1], 7, 8, 7.0, "euler", "normal", positive, negative, one)[0]["samples"]
    video = ksampler(pack, sd15[1], torch.zeros(1, 4, 8, 8))
    assert video.shape == (FRAMES, 4, 8, 8)
    assert (video[0] - image[0]).abs().max() < 1e-5 * image.abs().max()
    assert (video[1] - image[0]).abs().max() > 1e-2 * image.abs().max()


@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_2m", "ddim", "uni_pc"])
def test_the_sampler_runs_any_comfyui_sampler_on_sd15_and_sdxl(pack, sd15, sdxl, name):
    for model, is_sdxl in ((sd15[1], False), (sdxl, True)):
        out = ksampler(pack, model, torch.zeros(1, 4, 8, 8), sampler=name, sdxl=is_sdxl)
        assert out.shape == (FRAMES, 4, 8, 8) and torch.isfinite(out).all()
        assert (out[1] - out[0]).abs().max() > 1e-3


def test_a_controlnet_image_per_frame_steers_its_own_frame_through_the_sampler(pack, sd15, comfyui):
    # The sampler runs frame 1 alone first; ComfyUI's ControlNet would keep the control images fitted to that
    # batch (frame 1's image for every frame) unless they are fitted again for all frames.
    control = comfyui_env.tiny_controlnet(seed=1)
    images = torch.rand(FRAMES, 64, 64, 3, generator=torch.Generator().manual_seed(12))
    other = images.clone()
    other[2] = torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(13))

    def video(control_images):
        positive, negative = comfyui.ControlNetApplyAdvanced().apply_controlnet(*conds(), control, control_images, 1.0,
                                                                                0.0, 1.0)
        return ksampler(pack, sd15[1], torch.zeros(1, 4, 8, 8), positive=positive, negative=negative)

    assert changed_frames(video(images), video(other), tol=1e-5) == [2]


def test_controlnet_video_the_papers_way_shared_noise_and_cross_frame_attention(pack, sd15, comfyui):
    # ComfyUI's own SamplerCustomAdvanced path of the ControlNet example workflow: every frame starts from one
    # noise; one control image for all frames gives one image, another image for frame 3 changes frame 3 only.
    model = pack["T2VZeroCrossFrameAttention"].execute(sd15[1]).result[0]
    control = comfyui_env.tiny_controlnet(seed=1)
    same = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(14)).expand(FRAMES, -1, -1, -1)
    other = same.clone()
    other[2] = torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(15))
    noise = pack["T2VZeroSharedNoise"].execute(16).result[0]
    ddim = comfyui.NODE_CLASS_MAPPINGS["KSamplerSelect"]().get_sampler("ddim")[0]

    def video(control_images):
        positive, negative = comfyui.ControlNetApplyAdvanced().apply_controlnet(*conds(), control, control_images, 1.0,
                                                                                0.0, 1.0)
        return advanced_sample(comfyui, model, noise, ddim, scheduler="ddim_uniform", positive=positive,
                               negative=negative)

    still, changed = video(same), video(other)
    scale = still.abs().max()
    assert all((still[k] - still[0]).abs().max() < 1e-5 * scale for k in range(1, FRAMES))
    assert changed_frames(still, changed, tol=1e-5) == [2]


def test_image_to_video_starts_frame_one_from_the_image(pack, sd15, comfyui):
    # An encoded image (one latent) with denoise < 1: frame 1 is ComfyUI's own img2img of it for the seed.
    positive, negative = conds()
    image = {"samples": randn(1, 4, 8, 8, seed=17) * 5}
    still = comfyui.common_ksampler(sd15[1], 7, 8, 7.0, "euler", "normal", positive, negative, image,
                                    denoise=0.75)[0]["samples"]
    out = pack["T2VZeroKSampler"].execute(sd15[1], 7, 8, 7.0, "euler", "normal", positive, negative, image, FRAMES,
                                          500, 600, 0.75, (64.0, 0.0)).result[0]["samples"]
    scale = still.abs().max()
    assert out.shape == (FRAMES, 4, 8, 8) and (out[0] - still[0]).abs().max() < 1e-5 * scale
    assert (out[1] - still[0]).abs().max() > 1e-3 * scale  # the other frames moved


# ---------------------------------------------------------------- bad input


def test_one_frame_is_sampled_as_a_still_image_and_says_so(pack, sd15, comfyui, caplog):
    positive, negative = conds()
    one = {"samples": torch.zeros(1, 4, 8, 8)}
    image = comfyui.common_ksampler(sd15[1], 7, 8, 7.0, "euler", "normal", positive, negative, one)[0]["samples"]
    with caplog.at_level(logging.INFO, logger="t2vzero.comfy.sampling"):
        out = ksampler(pack, sd15[1], torch.zeros(1, 4, 8, 8), frames=1)
    assert "sampled as a still image (text-to-image)" in caplog.text
    assert out.shape == (1, 4, 8, 8) and (out - image).abs().max() < 1e-5 * image.abs().max()


def test_bad_settings_are_one_sentence_errors(pack, sd15):
    model = sd15[1]
    zeros = torch.zeros(1, 4, 8, 8)
    with pytest.raises(UserError, match=r"^t0=700, t1=700 must satisfy 0 <= t0 < t1 < 1000"):
        video_sampler(pack, t0=700, t1=700)
    with pytest.raises(UserError, match=r"^t0=900, t1=700"):
        ksampler(pack, model, zeros, t0=900, t1=700)
    with pytest.raises(UserError, match=r"^motion part 'left' is not of the form .*; the grammar: DX,DY \| pan:DX,DY"):
        pack["T2VZeroMotion"].execute("left")
    assert pack["T2VZeroMotion"].execute(" pan:4,-2 ").result[0] == Pan(4.0, -2.0)
    assert pack["T2VZeroMotion"].execute("zoom:1.02+rotate:3").result[0] == Combined((Zoom(1.02), Rotate(3.0)))
    with pytest.raises(UserError, match="beyond x10000 either way"):  # as the command line refuses it
        ksampler(pack, model, zeros, frames=40, motion=pack["T2VZeroMotion"].execute("zoom:3").result[0])
    with pytest.raises(UserError, match="The latent batch holds 3 images but frames is 4"):
        ksampler(pack, model, torch.zeros(3, 4, 8, 8))
    one_step = ksampler(pack, model, zeros, steps=1)  # as in the library: frames 2..N from frame 1's moved noise
    assert one_step.shape == (FRAMES, 4, 8, 8) and torch.isfinite(one_step).all()
    with pytest.raises(UserError, match="cannot take a latent noise mask"):
        ksampler(pack, model, zeros, noise_mask=torch.ones(1, 1, 8, 8))
    with pytest.raises(UserError, match="the noise is off"):
        custom_sample(model, torch.zeros(FRAMES, 4, 8, 8), video_sampler(pack), sigmas(model))
    with pytest.raises(UserError, match="wraps ComfyUI's k-diffusion samplers"):
        pack["T2VZeroSampler"].execute(object(), 500, 700)


# ---------------------------------------------------------------- oracle: the library and ComfyUI agree


def library_and_comfyui(pack, sd15, motion=(64.0, -64.0), t0=500, t1=700, steps=10, seed=11, comfy_motion=None,
                        unscaled_start=False):
    """Final latents (F, C, h, w) of one video from t2vzero's own loop (diffusers Euler) and from the ComfyUI
    sampler (ComfyUI's Euler) on the same weights, text embeddings and noise."""
    import comfy.samplers

    from t2vzero.modes.text2video import text_to_video
    from t2vzero.prompts import encode_prompt
    from t2vzero.tiny import make_tiny_components

    unet, model = sd15
    components = {**make_tiny_components(seed=0), "unet": unet}
    video = text_to_video(components, "a red circle", video_length=FRAMES, height=64, width=64,
                          num_inference_steps=steps, guidance_scale=7.5, generator=torch.Generator().manual_seed(seed),
                          motion=motion, t0=t0, t1=t1, scheduler="euler", progress=False).frames[0]
    library = torch.from_numpy(video).permute(0, 3, 1, 2)  # latents (the latent_output fixture)

    # The library draws frame 1's x_T, then frames 2..N's jump noise, from the generator.
    g = torch.Generator().manual_seed(seed)
    x_T, jump_noise = torch.randn(1, 4, 8, 8, generator=g), torch.randn(FRAMES - 1, 4, 8, 8, generator=g)
    # Leading-spaced Euler in diffusers: steps at t = 901, 801, ..., 1; ComfyUI's ddim_uniform: the same sigmas.
    schedule = sigmas(model, steps, "ddim_uniform")
    ms = model.get_model_object("model_sampling")
    assert ms.timestep(schedule[:-1]).tolist() == list(range(901, 0, -100))
    # diffusers starts that schedule at x_T·√(σ0² + 1); ComfyUI at σ0·noise below its maximum sigma.
    start = 1.0 if unscaled_start else float((schedule[0] ** 2 + 1).sqrt() / schedule[0])
    noise = torch.cat([x_T * start, jump_noise])
    cond = encode_prompt(components, ["a red circle"], [""], guidance_scale=7.5).embeds  # [negative, text]
    crossed = pack["T2VZeroCrossFrameAttention"].execute(model).result[0]
    sampler = pack["T2VZeroSampler"].execute(comfy.samplers.sampler_object("euler"), t0, t1,
                                             comfy_motion or motion).result[0]
    out = custom_sample(crossed, noise, sampler, schedule, cfg=7.5, positive=[[cond[1], {}]],
                        negative=[[cond[0], {}]])
    return library, out * model.model.latent_format.scale_factor  # ComfyUI returns VAE-scale latents


def test_oracle_the_library_and_the_comfyui_sampler_give_the_same_frames(pack, sd15, latent_output):
    library, comfy_out = library_and_comfyui(pack, sd15)
    scale = library.abs().max()
    # float32 on both sides; the only differences are the order of float operations (attention kernels, ComfyUI's
    # sigma table in float64 vs diffusers' betas in float32): 1e-5 of the latents' range is far above them and
    # far below any change of the method (next assertions).
    assert (library - comfy_out).abs().max() < 1e-5 * scale
    # The comparison can fail: a 0.2 % different start noise, or another motion, shows far beyond the tolerance.
    _, unscaled = library_and_comfyui(pack, sd15, unscaled_start=True)
    assert (library - unscaled).abs().max() > 1e-4 * scale
    _, other_motion = library_and_comfyui(pack, sd15, comfy_motion=(64.0, 0.0))
    assert (library[1:] - other_motion[1:]).abs().max() > 1e-2 * scale


# ---------------------------------------------------------------- example workflows


@pytest.fixture
def model_files(comfyui, tmp_path, monkeypatch):
    """Empty stand-ins for the files the example workflows name (validation only checks that they are listed)."""
    import folder_paths

    for folder, name in (("checkpoints", "v1-5-pruned-emaonly.safetensors"),
                         ("controlnet", "control_v11p_sd15_canny.pth"), ("input", "example.png"),
                         ("input", "input.mp4")):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / name).write_bytes(b"")
        if folder != "input":
            monkeypatch.setitem(folder_paths.folder_names_and_paths, folder,
                                ([str(tmp_path / folder)], folder_paths.supported_pt_extensions))
    monkeypatch.setattr(folder_paths, "input_directory", str(tmp_path / "input"))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})


def validate(prompt):
    import execution

    valid, error, _, node_errors = asyncio.run(execution.validate_prompt("test", prompt, None))
    return valid, error, node_errors


@pytest.mark.parametrize("api", api_workflows(), ids=lambda p: p.name)
def test_each_api_workflow_passes_comfyuis_own_prompt_validation(pack, model_files, api):
    prompt = json.loads(api.read_text())
    assert validate(prompt) == (True, None, {})
    used = {node["class_type"] for node in prompt.values()}
    assert used & set(NODE_IDS)
    # The check can fail: a t1 beyond the schedule, a missing file.
    broken = json.loads(api.read_text())
    sampler = next(n for n in broken.values() if n["class_type"] in ("T2VZeroKSampler", "BasicScheduler"))
    sampler["inputs"]["steps"] = 0
    assert validate(broken)[0] is False
    broken = json.loads(api.read_text())
    broken["1"]["inputs"]["ckpt_name"] = "missing.safetensors"
    assert validate(broken)[0] is False


@pytest.mark.parametrize("ui", ui_workflows(), ids=lambda p: p.name)
def test_each_ui_workflow_is_its_api_workflow_as_the_frontend_converts_it(pack, comfyui, ui):
    from comfyui_workflows import ui_to_api

    graph = json.loads(ui.read_text())
    api = json.loads(ui.with_name(ui.name.replace(".json", ".api.json")).read_text())
    assert ui_to_api(graph, comfyui.NODE_CLASS_MAPPINGS) == api
    for link_id, origin, slot, target, target_slot, kind in graph["links"]:
        source = next(n for n in graph["nodes"] if n["id"] == origin)
        sink = next(n for n in graph["nodes"] if n["id"] == target)
        assert source["outputs"][slot]["type"] == kind and link_id in source["outputs"][slot]["links"]
        assert sink["inputs"][target_slot]["link"] == link_id and sink["inputs"][target_slot]["type"] == kind
    # The conversion can fail: one widget value too many or too few.
    graph["nodes"][0]["widgets_values"].append(1)
    with pytest.raises(ValueError, match="too many"):
        ui_to_api(graph, comfyui.NODE_CLASS_MAPPINGS)


def test_each_stretch_seeds_its_own_step_noise(sd15):
    """Ancestral samplers seed their step noise from extra_args["seed"] at every call: frame 1's stretches to t1,
    to t0 and the final one must not draw the same noise again."""
    from t2vzero.comfy.sampling import sample_video

    model_sampling = sd15[1].get_model_object("model_sampling")
    calls = []

    class Recording:
        extra_options = MappingProxyType({})

        @staticmethod
        def sampler_function(model, x, sigmas, extra_args, callback, disable):
            calls.append((extra_args["seed"], x.shape[0]))
            return x

    schedule = sigmas(sd15[1], 8)
    sample_video(None, torch.zeros(FRAMES, 4, 8, 8), schedule, {"seed": 40}, inner=Recording(), motion=(0.0, 0.0),
                 t0=500, t1=700, noise=torch.zeros(FRAMES, 4, 8, 8), model_sampling=model_sampling)
    assert calls == [(40, 1), (41, 1), (42, FRAMES)]
    calls.clear()  # the seed widget's top values wrap within 64 bits (k-diffusion seeds a torch.Generator with them)
    sample_video(None, torch.zeros(FRAMES, 4, 8, 8), schedule, {"seed": 2**64 - 1}, inner=Recording(),
                 motion=(0.0, 0.0), t0=500, t1=700, noise=torch.zeros(FRAMES, 4, 8, 8), model_sampling=model_sampling)
    assert calls == [(2**64 - 1, 1), (0, 1), (1, FRAMES)]


def test_oracle_holds_for_a_camera_path(pack, sd15, latent_output):
    """A zoom and turn, not just the paper's pan: the ComfyUI sampler moves frame 1's t0 latent as the library."""
    path = Combined((Zoom(1.3), Rotate(20.0)))
    library, comfy_out = library_and_comfyui(pack, sd15, motion=path)
    scale = library.abs().max()
    assert (library - comfy_out).abs().max() < 1e-5 * scale
    _, panned = library_and_comfyui(pack, sd15, comfy_motion=(64.0, -64.0), motion=path)
    assert (library[1:] - panned[1:]).abs().max() > 1e-2 * scale  # the path matters

"""ControlNet video and Instruct-Pix2Pix editing on tiny random weights, against diffusers' recipes."""

import numpy as np
import pytest
import torch
from diffusers import (
    ControlNetModel,
    EulerAncestralDiscreteScheduler,
    StableDiffusionControlNetPipeline,
    StableDiffusionInstructPix2PixPipeline,
)
from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import CrossFrameAttnProcessor
from PIL import Image

from clips import moving_square
from t2vzero.errors import UserError
from t2vzero.modes.video2video import control_video, edit_video

FRAMES = 4


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def moving_square_video(frames=FRAMES, size=64):
    return moving_square(frames, size, size, top=20, side=20, left=8, step=6, colour=(230, 200, 30), ground=40)


@pytest.fixture(scope="module")
def controlnets(tiny):
    torch.manual_seed(2)
    nets = [ControlNetModel.from_unet(tiny["unet"]).eval() for _ in range(2)]
    with torch.no_grad():  # from_unet zero-initialises the output convs; make them matter
        for net in nets:
            for p in net.parameters():
                if p.abs().sum() == 0:
                    p.normal_(0, 0.3)
    return nets


@pytest.fixture(scope="module")
def pix2pix(tiny):
    from t2vzero.tiny import make_tiny_components

    parts = make_tiny_components(seed=4, in_channels=8)
    parts["scheduler"] = EulerAncestralDiscreteScheduler.from_config(parts["scheduler"].config)
    return parts


def test_controlnet_compat_equals_diffusers_documented_recipe(tiny, controlnets):
    cond = moving_square_video()
    pipe = StableDiffusionControlNetPipeline(**tiny, controlnet=controlnets[0], safety_checker=None,
                                             feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.unet.set_attn_processor(CrossFrameAttnProcessor(batch_size=2))
    pipe.controlnet.set_attn_processor(CrossFrameAttnProcessor(batch_size=2))
    try:
        latents = torch.randn((1, 4, 8, 8), generator=seeded(5)).repeat(FRAMES, 1, 1, 1)
        ref = pipe(prompt=["a yellow square"] * FRAMES, image=[Image.fromarray(c) for c in cond], latents=latents,
                   num_inference_steps=20, guidance_scale=9.0, output_type="np").images
    finally:
        from diffusers.models.attention_processor import AttnProcessor2_0
        pipe.unet.set_attn_processor(AttnProcessor2_0())
        pipe.controlnet.set_attn_processor(AttnProcessor2_0())
    ours = control_video(tiny, "a yellow square", [cond], controlnets[:1], generator=seeded(5), compat="diffusers",
                         progress=False).frames[0]
    assert ours.shape == ref.shape == (FRAMES, 64, 64, 3)
    assert np.abs(ours - ref).max() <= 2 / 255


def test_controlnet_frames_share_one_noise_and_conditions_drive_them(tiny, controlnets):
    cond = moving_square_video()
    same = np.repeat(cond[:1], FRAMES, axis=0)
    still = control_video(tiny, "a square", [same], controlnets[:1], generator=seeded(1), num_inference_steps=6,
                          progress=False).frames[0]
    moving = control_video(tiny, "a square", [cond], controlnets[:1], generator=seeded(1), num_inference_steps=6,
                           progress=False).frames[0]
    # Shared noise + equal conditions → equal frames; different conditions → different frames.
    assert np.abs(still - still[:1]).max() < 1e-5
    assert np.abs(moving[1:] - moving[:1]).max() > 1e-4


def test_multi_controlnet_and_chunking(tiny, controlnets):
    cond = moving_square_video(frames=5)
    edges = 255 - cond
    kw = dict(generator=seeded(3), num_inference_steps=5, progress=False)
    one = control_video(tiny, "a square", [cond], controlnets[:1], **kw).frames
    kw["generator"] = seeded(3)
    two = control_video(tiny, "a square", [cond, edges], controlnets, scales=[1.0, 0.5], **kw).frames
    assert np.abs(one - two).max() > 1e-4
    kw["generator"] = seeded(3)
    chunked = control_video(tiny, "a square", [cond, edges], controlnets, scales=[1.0, 0.5], chunk_size=2,
                            **kw).frames
    assert np.abs(chunked - two).max() < 1e-4


def test_controlnet_errors(tiny, controlnets):
    cond = moving_square_video()
    with pytest.raises(UserError, match="one condition video per ControlNet"):
        control_video(tiny, "x", [cond], controlnets, progress=False)
    with pytest.raises(UserError, match="differ"):
        control_video(tiny, "x", [cond, cond[:2]], controlnets, progress=False)
    other = ControlNetModel(block_out_channels=(32, 64), cross_attention_dim=16, norm_num_groups=16,
                            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), attention_head_dim=8)
    with pytest.raises(UserError, match="does not match the base model"):
        control_video(tiny, "x", [cond], [other], progress=False)


def test_pix2pix_compat_equals_diffusers_with_cross_frame_attention(pix2pix, latent_output):
    # In latents: a tiny random VAE decodes nearly any latent to the same flat image.
    video = moving_square_video()
    pipe = StableDiffusionInstructPix2PixPipeline(**pix2pix, safety_checker=None, feature_extractor=None,
                                                  requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    original = pipe.unet.attn_processors

    def reference(cross_frame):
        if cross_frame:
            pipe.unet.set_attn_processor(CrossFrameAttnProcessor(batch_size=3))
        try:
            return pipe(prompt=["make it red"] * FRAMES, image=[Image.fromarray(f) for f in video],
                        generator=seeded(9), num_inference_steps=12, output_type="latent").images
        finally:
            pipe.unet.set_attn_processor(dict(original))  # diffusers empties the dict it is given

    ref = reference(True).permute(0, 2, 3, 1).numpy()
    ours = edit_video(pix2pix, "make it red", video, generator=seeded(9), num_inference_steps=12,
                      compat="diffusers", progress=False).frames[0]
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()
    plain = reference(False).permute(0, 2, 3, 1).numpy()
    assert np.abs(plain[1:] - ref[1:]).max() > 1e-2 * np.abs(ref).max()  # the comparison sees cross-frame attention


def test_pix2pix_chunked_equals_unchunked_even_with_an_ancestral_sampler(pix2pix):
    video = moving_square_video(frames=5)
    kw = dict(num_inference_steps=6, progress=False)
    full = edit_video(pix2pix, "make it red", video, generator=seeded(2), **kw).frames
    chunked = edit_video(pix2pix, "make it red", video, generator=seeded(2), chunk_size=3, **kw).frames
    assert full.shape == (1, 5, 64, 64, 3)
    assert np.abs(chunked - full).max() < 1e-4


def test_edit_needs_an_eight_channel_unet(tiny):
    with pytest.raises(UserError, match="8"):
        edit_video(tiny, "make it red", moving_square_video(), progress=False)


def _diffusers_controlnet_latents(tiny, net, cond, prompt, seed, steps, guidance, cross_frame_net=True):
    pipe = StableDiffusionControlNetPipeline(**tiny, controlnet=net, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    saved = [(m, m.attn_processors) for m in (pipe.unet, net)[:2 if cross_frame_net else 1]]
    for m, _ in saved:
        m.set_attn_processor(CrossFrameAttnProcessor(batch_size=2))
    try:
        latents = torch.randn((1, 4, 8, 8), generator=seeded(seed)).repeat(len(cond), 1, 1, 1)
        out = pipe(prompt=[prompt] * len(cond), image=[Image.fromarray(c) for c in cond], latents=latents,
                   num_inference_steps=steps, guidance_scale=guidance, output_type="latent").images
    finally:
        for m, processors in saved:
            m.set_attn_processor(processors)
    return out.permute(0, 2, 3, 1).numpy()


def test_controlnet_compat_matches_diffusers_in_latent_space(tiny, controlnets, latent_output):
    cond = moving_square_video()
    ref = _diffusers_controlnet_latents(tiny, controlnets[0], cond, "a yellow square", 5, 6, 9.0)
    ours = control_video(tiny, "a yellow square", [cond], controlnets[:1], generator=seeded(5), compat="diffusers",
                         num_inference_steps=6, progress=False).frames[0]
    assert np.abs(ours - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def test_a_globally_pooled_controlnet_acts_in_guess_mode_like_diffusers(tiny, controlnets, latent_output):
    # e.g. the shuffle ControlNet: diffusers runs it on the text branch only; run on both branches its
    # residuals would cancel under classifier-free guidance.
    config = {k: v for k, v in controlnets[0].config.items() if not k.startswith("_")}
    pooled = ControlNetModel.from_config({**config, "global_pool_conditions": True}).eval()
    pooled.load_state_dict(controlnets[0].state_dict())
    assert pooled.config.global_pool_conditions
    # One frame: cross-frame attention is plain attention, and diffusers' recipe cannot split the
    # ControlNet's text-only batch into its two guidance groups.
    cond = moving_square_video(frames=1)
    ref = _diffusers_controlnet_latents(tiny, pooled, cond, "a yellow square", 3, 4, 9.0, cross_frame_net=False)
    kw = dict(generator=seeded(3), num_inference_steps=4, progress=False)
    ours = control_video(tiny, "a yellow square", [cond], [pooled], **kw).frames[0]
    assert np.abs(ours - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    off = control_video(tiny, "a yellow square", [cond], [pooled], scales=[0.0], **kw).frames[0]
    assert np.abs(ours - off).max() > 0.05 * np.abs(off).max()


def test_video_to_video_input_is_checked(tiny, controlnets, pix2pix):
    cond = moving_square_video()
    bad = {
        "float frames": (cond.astype(np.float32) / 255, {}, "uint8"),
        "grey frames": (cond[..., 0], {}, "RGB"),
        "no frames": (cond[:0], {}, "at least one frame"),
        "odd size": (cond[:, :60, :60], {}, "multiples of 8"),
        "chunk": (cond, {"chunk_size": 1}, "chunk size"),
        "steps": (cond, {"num_inference_steps": 0}, "steps"),
        "guidance": (cond, {"guidance_scale": float("nan")}, "finite"),
        "scales": (cond, {"scales": [1.0, 2.0]}, "one finite scale per ControlNet"),
    }
    for frames, kw, match in bad.values():
        with pytest.raises(UserError, match=match):
            control_video(tiny, "x", [frames], controlnets[:1], progress=False, **kw)
        if "scales" not in kw:
            with pytest.raises(UserError, match=match):
                edit_video(pix2pix, "x", frames, progress=False, **kw)
    with pytest.raises(UserError, match="one text"):
        edit_video(pix2pix, ["x", "y"], cond, progress=False)
    # One ControlNet, one condition video and one scale need no lists; a None negative prompt is empty.
    one = control_video(tiny, "x", cond, controlnets[0], scales=0.5, negative_prompt=None, num_inference_steps=2,
                        progress=False).frames
    assert one.shape == (1, FRAMES, 64, 64, 3)


def test_controlnets_that_cannot_fit_the_base_model_are_named(tiny, controlnets):
    cond = moving_square_video()
    config = {k: v for k, v in controlnets[0].config.items() if not k.startswith("_")}
    for change, match in (({"layers_per_block": 2}, "layers_per_block"),
                          ({"conditioning_channels": 1}, "1-channel conditions"),
                          ({"conditioning_embedding_out_channels": (16, 32)}, "downsamples its condition by 2")):
        net = ControlNetModel.from_config({**config, **change}).eval()
        with pytest.raises(UserError, match=match):
            control_video(tiny, "x", [cond], [net], num_inference_steps=2, progress=False)
    with pytest.raises(UserError, match="same dtype"):
        control_video(tiny, "x", [cond], [controlnets[0].to(torch.bfloat16)], num_inference_steps=2, progress=False)
    controlnets[0].to(torch.float32)


def test_chunked_control_runs_frame_one_once_per_step_in_unet_and_controlnet(tiny, controlnets):
    cond = moving_square_video(frames=6)
    seen = {"unet": [], "controlnet": []}
    hooks = [model.register_forward_pre_hook(lambda m, args, kw, key=key: seen[key].append(int(args[0].shape[0])),
                                             with_kwargs=True)
             for key, model in (("unet", tiny["unet"]), ("controlnet", controlnets[0]))]
    try:
        kw = dict(generator=seeded(3), num_inference_steps=4, progress=False)
        full = control_video(tiny, "a square", [cond], controlnets[:1], **kw).frames
        counts = {k: sum(v) for k, v in seen.items()}
        for v in seen.values():
            v.clear()
        kw["generator"] = seeded(3)
        chunked = control_video(tiny, "a square", [cond], controlnets[:1], chunk_size=2, **kw).frames
    finally:
        for h in hooks:
            h.remove()
    assert counts == {"unet": 2 * 6 * 4, "controlnet": 2 * 6 * 4}  # 2 guidance groups x 6 frames x 4 steps
    assert {k: sum(v) for k, v in seen.items()} == counts and max(seen["unet"]) == 2 * 2
    assert np.abs(chunked - full).max() < 1e-4


def test_api_inputs_of_every_usual_kind_are_taken_or_refused_in_one_sentence(tiny, controlnets, latent_output):
    from t2vzero.modes.video2video import restyle_video

    cond = moving_square_video(frames=3)
    kw = dict(num_inference_steps=2, progress=False)
    base = control_video(tiny, "x", [cond], controlnets[:1], scales=0.5, generator=seeded(1), **kw).frames
    # Numbers of any kind are a scale; PIL frames of mixed modes are RGB frames.
    for scale in (np.float32(0.5), torch.tensor(0.5)):
        again = control_video(tiny, "x", [cond], controlnets[:1], scales=scale, generator=seeded(1), **kw).frames
        assert np.array_equal(base, again)
    pil = [Image.fromarray(f) for f in cond]
    mixed = [pil[0].convert("L").convert("RGB"), pil[1], pil[2]]
    as_pil = restyle_video(tiny, "x", [pil[0].convert("L"), pil[1], pil[2]], strength=0.9, generator=seeded(2), **kw)
    as_array = restyle_video(tiny, "x", np.stack([np.asarray(m) for m in mixed]), strength=0.9, generator=seeded(2),
                             **kw)
    assert np.array_equal(as_pil.frames, as_array.frames)
    for call, match in (
            (lambda: restyle_video(tiny, "x", [pil[0], pil[1].resize((32, 32))], strength=0.9, **kw),
             r"frames differ in size or channels \(\(32, 32, 3\), \(64, 64, 3\)\)"),
            (lambda: restyle_video(tiny, "x", [], strength=0.9, **kw), "an empty list; give at least one frame"),
            (lambda: restyle_video(tiny, "x", cond.astype(np.int64), strength=0.9, **kw),
             r"x.astype\(np.uint8\) for values 0-255"),
            (lambda: control_video(tiny, "x", [cond], controlnets[:1], frame_ids=2, **kw), "a list of frame numbers"),
            (lambda: control_video(tiny, "x", [cond], controlnets[:1], frame_ids=[1.5], **kw), "whole frame numbers"),
            (lambda: control_video(tiny, "x", [cond], controlnets[:1], frame_ids=["a"], **kw), "whole frame numbers"),
            (lambda: control_video(tiny, "x", [cond], None, **kw), r"\(0 ControlNets, 1 conditions\)"),
            (lambda: control_video(tiny, "x", [cond], controlnets[:1], scales="big", **kw), "scales must be a number")):
        with pytest.raises(UserError, match=match) as err:
            call()
        assert "\n" not in str(err.value)

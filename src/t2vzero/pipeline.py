"""`TextToVideoZero`: the Python API, in diffusers' conventions (components in, dataclass out)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .generate import VideoOutput


class TextToVideoZero:
    """Zero-shot text-to-video on any Stable Diffusion 1.x/2.x or SDXL components.

    >>> pipe = TextToVideoZero.from_pretrained("path/to/sd15")        # doctest: +SKIP
    >>> video = pipe("a horse galloping", generator=torch.Generator().manual_seed(0)).frames[0]  # doctest: +SKIP
    """

    def __init__(self, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler: Any,
                 defaults: dict[str, Any] | None = None, *, text_encoder_2: Any = None, tokenizer_2: Any = None,
                 force_zeros_for_empty_prompt: bool = True) -> None:
        self.components = {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
                           "scheduler": scheduler}
        if text_encoder_2 is not None or tokenizer_2 is not None:  # SDXL
            self.components.update(text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
                                   force_zeros_for_empty_prompt=force_zeros_for_empty_prompt)
        self.defaults = dict(defaults or {})

    def __getattr__(self, name: str) -> Any:
        components = self.__dict__.get("components", {})
        if name in components:
            return components[name]
        raise AttributeError(name)

    @classmethod
    def from_pretrained(cls, model: str | None = None, *, device: str | None = None, dtype: str | None = None,
                        lora: Sequence[str | tuple[str, float]] = (), allow_pickle: bool = False,
                        config: str | None = None, **speed: Any) -> TextToVideoZero:
        """Load a diffusers folder, a `.safetensors` file or a hub id; None loads the built-in model.

        `speed` options (`compile`, `channels_last`, `vae_tiling`, `offload`) are `optimize`'s.
        """
        from .models import load_components

        components, defaults = load_components(model, device=device, dtype=dtype, lora=lora,
                                               allow_pickle=allow_pickle, config=config)
        pipe = cls(**components, defaults=defaults)
        if speed:
            pipe.optimize(**speed)
        return pipe

    def optimize(self, controlnets: Sequence[Any] = (), *, compile: bool = False, channels_last: bool = False,
                 vae_tiling: bool = False, offload: str | None = None) -> list[str]:
        """Frame-preserving speed and memory options, applied to the loaded models in place (see
        `t2vzero.speed.optimize`); returns notes on what could not be applied (also given as warnings)."""
        from .speed import optimize, warn

        notes = optimize(self.components, controlnets, compile=compile, channels_last=channels_last,
                         vae_tiling=vae_tiling, offload=offload)
        warn(notes)
        return notes

    def native_size(self) -> tuple[int, int]:
        """(height, width): the model's own default size, else the UNet's sample size × the VAE factor."""
        from .models import native_size

        return native_size(self.components["unet"].config, self.components["vae"].config, self.defaults)

    def generation_args(self, **given: Any) -> dict[str, Any]:
        """`anchor_pass` arguments: the given ones, then the model's defaults, then the paper's.

        A few-step sampler (LCM, TCD) with no step count given takes its own (4).
        """
        from .defaults import pick
        from .motion import as_motion
        from .schedulers import default_steps

        if given.get("scheduler") is None and self.defaults.get("scheduler"):  # the model's sampler, with its spacing
            given["scheduler"] = self.defaults["scheduler"]
            if given.get("timestep_spacing") is None:
                given["timestep_spacing"] = self.defaults.get("timestep_spacing")
        elif given.get("num_inference_steps") is None and default_steps(given.get("scheduler")) is not None:
            given["num_inference_steps"] = default_steps(given.get("scheduler"))  # a sampler the caller chose
        if given.get("height") is None or given.get("width") is None:
            native_h, native_w = self.native_size()
            given["height"] = native_h if given.get("height") is None else given["height"]
            given["width"] = native_w if given.get("width") is None else given["width"]
        for name in ("video_length", "num_inference_steps", "guidance_scale", "motion", "t0", "t1", "eta"):
            given[name] = pick("generate", name, given.get(name), self.defaults)
        given["motion"] = as_motion(given["motion"])  # the model's [dx, dy] becomes a Pan
        return given

    def __call__(self, prompt: str | list[str], *, video_length: int | None = None, height: int | None = None,
                 width: int | None = None, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, negative_prompt: str | list[str] | None = None,
                 num_videos_per_prompt: int = 1, eta: float | None = None, generator: Any = None,
                 motion: Any = None, t0: int | None = None, t1: int | None = None,
                 chunk_size: int | None = None, cross_frame_attention: bool = True, compat: str = "t2vzero",
                 scheduler: str | None = None, timestep_spacing: str | None = None,
                 token_merging: float | None = None, cache_interval: int | None = None,
                 background_smoothing: float | None = None, foreground_masks: Any = None,
                 prompt_2: str | list[str] | None = None, negative_prompt_2: str | list[str] | None = None,
                 guidance_rescale: float = 0.0, original_size: tuple[int, int] | None = None,
                 crops_coords_top_left: tuple[int, int] = (0, 0), target_size: tuple[int, int] | None = None,
                 progress: bool = True) -> VideoOutput:
        """Generate videos; None arguments take the model's defaults, then the paper's.

        `scheduler` names a sampler of `t2vzero.schedulers.SCHEDULERS` (default: the model's own).
        `motion` is the camera path (`t2vzero.motion.as_motion`): the paper's (dx, dy) δ, a spec such as
        "zoom:1.03+pan:4,0", a `Motion` (e.g. `load_motion_file(path)`) or a function frame -> 2x3 sampling map.
        """
        from .modes.text2video import text_to_video

        args = self.generation_args(
            video_length=video_length, height=height, width=width, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, negative_prompt=negative_prompt,
            num_videos_per_prompt=num_videos_per_prompt, eta=eta, generator=generator, motion=motion, t0=t0, t1=t1,
            cross_frame=cross_frame_attention, compat=compat, scheduler=scheduler, timestep_spacing=timestep_spacing,
            token_merging=token_merging, cache_interval=cache_interval, prompt_2=prompt_2,
            negative_prompt_2=negative_prompt_2, guidance_rescale=guidance_rescale, original_size=original_size,
            crops_coords_top_left=crops_coords_top_left, target_size=target_size)
        return text_to_video(self.components, prompt, chunk_size=chunk_size, background_smoothing=background_smoothing,
                             foreground_masks=foreground_masks, progress=progress, **args)

    def anchor(self, prompt: str | list[str], *, image: Any = None, **kwargs: Any) -> Any:
        """Phase 1 alone (frame 1 to t1 and t0, every frame's noise): an `Anchor` for `render`.

        Takes `__call__`'s generation arguments (not chunking, smoothing or progress); with `image`,
        `animate`'s first phase (frame 1 is the image, inverted; the size is the image's)."""
        from .modes.text2video import anchor_pass

        if "cross_frame_attention" in kwargs:
            kwargs["cross_frame"] = kwargs.pop("cross_frame_attention")
        if image is not None:
            from .generate import vae_factor
            from .modes.image2video import encode_image

            kwargs["first_frame_latents"] = latents = encode_image(self.components, image)
            factor = vae_factor(self.components["vae"])
            for key, side in (("height", latents.shape[-2] * factor), ("width", latents.shape[-1] * factor)):
                kwargs[key] = side if kwargs.get(key) is None else kwargs[key]  # None means "the default": the image's
        return anchor_pass(self.components, prompt, **self.generation_args(**kwargs))

    def render(self, anchor: Any, frame_ids: Any = None, *, chunk_size: int | None = None) -> VideoOutput:
        """Phase 2: frames `frame_ids` (default all) of the anchor's videos; any split gives the same frames."""
        from .modes.text2video import render

        return VideoOutput(frames=render(self.components, anchor, frame_ids, chunk_size=chunk_size))

    def control(self, prompt: str, conditions: Sequence[Any], controlnets: Sequence[Any], **kwargs: Any) -> VideoOutput:
        """ControlNet video (paper §4.2); see `t2vzero.modes.video2video.control_video`."""
        from .modes.video2video import control_video

        return control_video(self.components, prompt, conditions, controlnets, **kwargs)

    def edit(self, instruction: str, frames: Any, **kwargs: Any) -> VideoOutput:
        """Video Instruct-Pix2Pix (paper §4.3); see `t2vzero.modes.video2video.edit_video`."""
        from .modes.video2video import edit_video

        return edit_video(self.components, instruction, frames, **kwargs)

    def animate(self, image: Any, prompt: str | list[str] = "", *, chunk_size: int | None = None,
                progress: bool = True, **kwargs: Any) -> VideoOutput:
        """Image-to-video: frame 1 is `image` ((H, W, 3) uint8 or PIL, sides multiples of the VAE factor),
        frames 2..N move by `motion`; see `t2vzero.modes.image2video`. Takes `__call__`'s generation
        arguments (None: the model's defaults, then the paper's); the size is the image's."""
        from .generate import vae_factor
        from .modes.image2video import check_image, image_to_video

        arr = check_image(image, vae_factor(self.components["vae"]))
        if "cross_frame_attention" in kwargs:
            kwargs["cross_frame"] = kwargs.pop("cross_frame_attention")
        for key, side in (("height", arr.shape[0]), ("width", arr.shape[1])):
            kwargs[key] = side if kwargs.get(key) is None else kwargs[key]  # None means "the default": the image's
        return image_to_video(self.components, arr, prompt, chunk_size=chunk_size, progress=progress,
                              **self.generation_args(**kwargs))

    def restyle(self, prompt: str, frames: Any, **kwargs: Any) -> VideoOutput:
        """Restyle (F, H, W, 3) uint8 frames by `prompt` (SDEdit at `strength`, one shared noise, cross-frame
        attention; `invert=True` starts from each frame's DDIM inversion instead, keeping the layout; optional
        `controlnets` with `conditions`); see `t2vzero.modes.video2video.restyle_video`."""
        from .modes.video2video import restyle_video

        return restyle_video(self.components, prompt, frames, **kwargs)

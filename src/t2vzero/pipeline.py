"""`TextToVideoZero`: the Python API, in diffusers' conventions (components in, dataclass out)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .generate import VideoOutput, vae_factor

PAPER_DEFAULTS: dict[str, Any] = {
    "num_inference_steps": 50, "guidance_scale": 7.5, "video_length": 8, "motion": (12.0, 12.0),
    "t0": 881, "t1": 941, "eta": 0.0,
}


class TextToVideoZero:
    """Zero-shot text-to-video on any Stable Diffusion 1.x/2.x components.

    >>> pipe = TextToVideoZero.from_pretrained("path/to/sd15")        # doctest: +SKIP
    >>> video = pipe("a horse galloping", generator=torch.Generator().manual_seed(0)).frames[0]  # doctest: +SKIP
    """

    def __init__(self, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler: Any,
                 defaults: dict[str, Any] | None = None) -> None:
        self.components = {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
                           "scheduler": scheduler}
        self.defaults = dict(defaults or {})

    def __getattr__(self, name: str) -> Any:
        components = self.__dict__.get("components", {})
        if name in components:
            return components[name]
        raise AttributeError(name)

    @classmethod
    def from_pretrained(cls, model: str | None = None, *, device: str | None = None, dtype: str | None = None,
                        lora: Sequence[str | tuple[str, float]] = (), allow_pickle: bool = False,
                        config: str | None = None) -> TextToVideoZero:
        """Load a diffusers folder, a `.safetensors` file or a hub id; None loads the built-in model."""
        from .models import load_components

        components, defaults = load_components(model, device=device, dtype=dtype, lora=lora,
                                               allow_pickle=allow_pickle, config=config)
        return cls(**components, defaults=defaults)

    def native_size(self) -> tuple[int, int]:
        """(height, width): the model's own default size, else the UNet's sample size × the VAE factor."""
        unet, vae = self.components["unet"], self.components["vae"]
        factor = vae_factor(vae)
        size = unet.config.sample_size  # an int, or (height, width)
        h, w = (size, size) if isinstance(size, int) else size
        return int(self.defaults.get("height", h * factor)), int(self.defaults.get("width", w * factor))

    def __call__(self, prompt: str | list[str], *, video_length: int | None = None, height: int | None = None,
                 width: int | None = None, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, negative_prompt: str | list[str] | None = None,
                 num_videos_per_prompt: int = 1, eta: float | None = None, generator: Any = None,
                 motion: tuple[float, float] | None = None, t0: int | None = None, t1: int | None = None,
                 chunk_size: int | None = None, cross_frame_attention: bool = True, compat: str = "t2vzero",
                 background_smoothing: float | None = None, foreground_masks: Any = None,
                 progress: bool = True) -> VideoOutput:
        """Generate videos; None arguments take the model's defaults, then the paper's."""
        from .modes.text2video import text_to_video

        def pick(name: str, value: Any) -> Any:
            return value if value is not None else self.defaults.get(name, PAPER_DEFAULTS.get(name))

        if height is None or width is None:
            native_h, native_w = self.native_size()
            height, width = native_h if height is None else height, native_w if width is None else width
        return text_to_video(
            self.components, prompt, video_length=pick("video_length", video_length), height=height, width=width,
            num_inference_steps=pick("num_inference_steps", num_inference_steps),
            guidance_scale=pick("guidance_scale", guidance_scale), negative_prompt=negative_prompt,
            num_videos_per_prompt=num_videos_per_prompt, eta=pick("eta", eta), generator=generator,
            motion=tuple(pick("motion", motion)), t0=pick("t0", t0), t1=pick("t1", t1), chunk_size=chunk_size,
            cross_frame=cross_frame_attention, compat=compat, background_smoothing=background_smoothing,
            foreground_masks=foreground_masks, progress=progress,
        )

    def control(self, prompt: str, conditions: Sequence[Any], controlnets: Sequence[Any], **kwargs: Any) -> VideoOutput:
        """ControlNet video (paper §4.2); see `t2vzero.modes.video2video.control_video`."""
        from .modes.video2video import control_video

        return control_video(self.components, prompt, conditions, controlnets, **kwargs)

    def edit(self, instruction: str, frames: Any, **kwargs: Any) -> VideoOutput:
        """Video Instruct-Pix2Pix (paper §4.3); see `t2vzero.modes.video2video.edit_video`."""
        from .modes.video2video import edit_video

        return edit_video(self.components, instruction, frames, **kwargs)

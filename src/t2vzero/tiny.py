"""Small Stable-Diffusion-architecture components built in code, fully offline.

Used by the test-suite, the benchmarks and the default-model trainer: a CLIP BPE tokenizer
made from a word list (no download), and randomly initialised SD 1.x-shaped components.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The caption grammar of the built-in model plus a few common words, so that test prompts
# tokenise to whole words; anything else falls back to single characters (still valid).
DEFAULT_WORDS = (
    "a an the on of in and with background circle square triangle red green blue yellow "
    "purple orange white black cat dog astronaut horse riding running video photo"
).split()


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins for bytes that CLIP's byte-level BPE uses."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    extra, chars = 0, []
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def clip_vocab_and_merges(words: list[str] | tuple[str, ...] = DEFAULT_WORDS) -> tuple[dict[str, int], list[str]]:
    """A CLIP vocabulary holding every word of `words` as a token, with the merges that build it.

    Merges are added word by word, left to right; BPE applies them by rank over the whole word, so a
    word whose prefix merges lose to an earlier word's may still be split into a few tokens (all valid).
    """
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges: list[str] = []
    for word in dict.fromkeys(w.lower() for w in words):
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        left = parts[0]
        for right in parts[1:]:
            merge = f"{left} {right}"
            if merge not in merges:
                merges.append(merge)
            left = left + right
            if left not in tokens:
                tokens.append(left)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    return vocab, merges


def write_clip_tokenizer_files(directory: str | Path, words: list[str] | tuple[str, ...] = DEFAULT_WORDS,
                               model_max_length: int = 77) -> Path:
    """Write vocab.json, merges.txt and a tokenizer config that `CLIPTokenizer.from_pretrained` reads."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges(words)
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {"model_max_length": model_max_length, "tokenizer_class": "CLIPTokenizer",
              "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
              "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return directory


def make_clip_tokenizer(words: list[str] | tuple[str, ...] = DEFAULT_WORDS, model_max_length: int = 77) -> Any:
    """An offline `CLIPTokenizer` whose vocabulary covers `words`."""
    import tempfile

    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer_files(tmp, words, model_max_length)
        return CLIPTokenizer.from_pretrained(tmp)


def make_tiny_components(seed: int = 0, *, sample_size: int = 8, cross_attention_dim: int = 32,
                         in_channels: int = 4, block_out_channels: tuple[int, ...] = (32, 64),
                         model_max_length: int = 77) -> dict[str, Any]:
    """Random SD-shaped components: unet, vae (×8), text_encoder, tokenizer, scheduler.

    Small enough for a CPU test to run many denoising steps in seconds.
    """
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    n = len(block_out_channels)
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=4, layers_per_block=1,
        block_out_channels=block_out_channels, norm_num_groups=16,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=cross_attention_dim, attention_head_dim=8,
    )
    # Four blocks: ×8 downsampling like Stable Diffusion's VAE, so a 64×64 frame has 8×8 latents.
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 16, 32, 32), norm_num_groups=16,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=sample_size * 8,
    )
    tokenizer = make_clip_tokenizer(model_max_length=model_max_length)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=cross_attention_dim, intermediate_size=64,
        num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=model_max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading",
    )
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(),
            "tokenizer": tokenizer, "scheduler": scheduler}


def make_mid_components(seed: int = 0) -> dict[str, Any]:
    """Random components in Stable Diffusion 1.5's layout at a fifth of its widths (≈ 35 M UNet
    parameters): large enough that the UNet dominates the time as in SD, small enough for a CPU
    benchmark. The benchmarks' "mid-size model"."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(64, 128, 256, 256),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=256, attention_head_dim=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64, 128, 128), layers_per_block=2, latent_channels=4, sample_size=256,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215,
    )
    tokenizer = make_clip_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=1024, num_attention_heads=4, num_hidden_layers=4,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(), "tokenizer": tokenizer,
            "scheduler": scheduler}


def make_tiny_sdxl_components(seed: int = 0, *, in_channels: int = 4, sample_size: int = 8) -> dict[str, Any]:
    """Random SDXL-shaped components: a UNet with the `text_time` added embedding, two CLIP text encoders
    (the second with a projection, whose pooled output the UNet reads), their tokenizers, a VAE (×8) and
    SDXL's Euler scheduler; `force_zeros_for_empty_prompt` as SDXL base's model index sets it. The two encoders
    differ in width, as SDXL's do (768 and 1280): single-file loaders tell them apart by it."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    hidden, hidden_2, projection, time_dim = 32, 48, 32, 8
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=16, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=time_dim, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * time_dim + projection, cross_attention_dim=hidden + hidden_2,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 16, 32, 32), norm_num_groups=16,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=sample_size * 8, scaling_factor=0.13025, force_upcast=True,
    )
    tokenizer = make_clip_tokenizer()
    tokenizer_2 = make_clip_tokenizer()
    config = dict(vocab_size=len(tokenizer), intermediate_size=64, num_attention_heads=4,
                  num_hidden_layers=3, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, hidden_act="gelu")
    text_encoder = CLIPTextModel(CLIPTextConfig(**config, hidden_size=hidden))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**config, hidden_size=hidden_2,
                                                                projection_dim=projection))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(), "tokenizer": tokenizer,
            "text_encoder_2": text_encoder_2.eval(), "tokenizer_2": tokenizer_2, "scheduler": scheduler,
            "force_zeros_for_empty_prompt": True}

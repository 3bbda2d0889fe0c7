"""A random LoRA on a UNet's attention projections, saved the way diffusers saves LoRAs (tests' helper)."""

import copy

import torch


def random_lora(unet, path, pipeline_cls, strength=20.0):
    """Save a random LoRA for `unet` under `path` with `pipeline_cls.save_lora_weights`; returns the file.

    `strength` scales the up-projections so that a tiny random model's output changes visibly."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = copy.deepcopy(unet)
    torch.manual_seed(1)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                init_lora_weights=False))
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.mul_(strength)
    pipeline_cls.save_lora_weights(path, unet_lora_layers=get_peft_model_state_dict(unet), safe_serialization=True)
    return path / "pytorch_lora_weights.safetensors"

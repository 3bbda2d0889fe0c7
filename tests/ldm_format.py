"""Write diffusers components as one original-layout (LDM/CompVis) Stable Diffusion checkpoint.

Test helper only: lets the suite exercise single-file loading offline on tiny random weights.
The key layout is the public one of SD 1.x `.safetensors` files.
"""

from __future__ import annotations

import torch

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
          "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(key: str, table: dict[str, str]) -> str:
    for ours, theirs in table.items():
        key = key.replace(f".{ours}.", f".{theirs}.")
    return key


def unet_to_ldm(unet) -> dict[str, torch.Tensor]:
    cfg, sd = unet.config, unet.state_dict()
    per = cfg.layers_per_block
    prefix, out = {}, {}
    prefix["time_embedding.linear_1."] = "time_embed.0."
    prefix["time_embedding.linear_2."] = "time_embed.2."
    prefix["conv_in."] = "input_blocks.0.0."
    prefix["conv_norm_out."] = "out.0."
    prefix["conv_out."] = "out.2."
    prefix["add_embedding.linear_1."] = "label_emb.0.0."  # SDXL's pooled-text and time-id embedding
    prefix["add_embedding.linear_2."] = "label_emb.0.2."
    for i in range(len(cfg.block_out_channels)):
        for j in range(per):
            prefix[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{(per + 1) * i + j + 1}.0."
            prefix[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{(per + 1) * i + j + 1}.1."
        prefix[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(per + 1) * (i + 1)}.0.op."
        for j in range(per + 1):
            prefix[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{(per + 1) * i + j}.0."
            prefix[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{(per + 1) * i + j}.1."
        has_attn = any(k.startswith(f"up_blocks.{i}.attentions.") for k in sd)
        prefix[f"up_blocks.{i}.upsamplers.0."] = f"output_blocks.{(per + 1) * i + per}.{2 if has_attn else 1}."
    prefix["mid_block.resnets.0."] = "middle_block.0."
    prefix["mid_block.attentions.0."] = "middle_block.1."
    prefix["mid_block.resnets.1."] = "middle_block.2."
    for key, value in sd.items():
        match = max((p for p in prefix if key.startswith(p)), key=len)
        rest = key[len(match):]
        if ".resnets." in match:
            rest = _rename("." + rest, RESNET)[1:]
        out["model.diffusion_model." + prefix[match] + rest] = value
    return out


def vae_to_ldm(vae) -> dict[str, torch.Tensor]:
    sd, n = vae.state_dict(), len(vae.config.block_out_channels)
    out = {}
    for key, value in sd.items():
        new = key
        for part in ("encoder", "decoder"):
            for i in range(n):
                level = i if part == "encoder" else n - 1 - i
                kind = "down" if part == "encoder" else "up"
                new = new.replace(f"{part}.{kind}_blocks.{i}.resnets.", f"{part}.{kind}.{level}.block.")
                new = new.replace(f"{part}.{kind}_blocks.{i}.downsamplers.0.", f"{part}.{kind}.{level}.downsample.")
                new = new.replace(f"{part}.{kind}_blocks.{i}.upsamplers.0.", f"{part}.{kind}.{level}.upsample.")
            new = new.replace(f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.")
            new = new.replace(f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.")
            new = new.replace(f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.")
            new = new.replace(f"{part}.conv_norm_out.", f"{part}.norm_out.")
        new = _rename(new, VAE_RESNET)
        if ".mid.attn_1." in new:
            new = _rename(new, VAE_ATTN)
            if value.ndim == 2:  # linear in diffusers, 1x1 conv in the original
                value = value[:, :, None, None]
        out["first_stage_model." + new] = value
    return out


OPEN_CLIP = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}


def clip_to_ldm(text_encoder, prefix: str) -> dict[str, torch.Tensor]:
    """An OpenAI-CLIP text encoder in the original layout: the transformers model under `prefix`."""
    out = {}
    for key, value in text_encoder.state_dict().items():
        # Original checkpoints nest CLIP under text_model. (newer transformers flatten it away).
        key = key if key.startswith("text_model.") else "text_model." + key
        out[prefix + key] = value
    return out


def open_clip_to_ldm(text_encoder, prefix: str) -> dict[str, torch.Tensor]:
    """A CLIP text encoder with projection in OpenCLIP's layout (SDXL's second encoder): fused q/k/v
    projections, `resblocks`, and the projection as a (hidden, projection) matrix applied as x @ P."""
    sd = {k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()}
    out = {prefix + "token_embedding.weight": sd.pop("embeddings.token_embedding.weight"),
           prefix + "positional_embedding": sd.pop("embeddings.position_embedding.weight"),
           prefix + "ln_final.weight": sd.pop("final_layer_norm.weight"),
           prefix + "ln_final.bias": sd.pop("final_layer_norm.bias"),
           prefix + "text_projection": sd.pop("text_projection.weight").T}
    sd.pop("embeddings.position_ids", None)
    for i in range(text_encoder.config.num_hidden_layers):
        layer = f"encoder.layers.{i}."
        block = f"{prefix}transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            out[f"{block}attn.in_proj_{part}"] = torch.cat(
                [sd.pop(f"{layer}self_attn.{q}_proj.{part}") for q in ("q", "k", "v")])
        for ours, theirs in OPEN_CLIP.items():
            for part in ("weight", "bias"):
                out[f"{block}{theirs}.{part}"] = sd.pop(f"{layer}{ours}.{part}")
    assert not sd, f"unmapped text encoder tensors: {sorted(sd)}"
    return out


def save_ldm_checkpoint(components: dict, path) -> None:
    """SD 1.x layout, or SDXL's (two text encoders under conditioner.embedders) when the components have two."""
    from safetensors.torch import save_file

    state = {**unet_to_ldm(components["unet"]), **vae_to_ldm(components["vae"])}
    if components.get("text_encoder_2") is not None:
        state.update(clip_to_ldm(components["text_encoder"], "conditioner.embedders.0.transformer."))
        state.update(open_clip_to_ldm(components["text_encoder_2"], "conditioner.embedders.1.model."))
    else:
        state.update(clip_to_ldm(components["text_encoder"], "cond_stage_model.transformer."))
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))

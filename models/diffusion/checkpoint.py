"""Diffusers components → one state dict in the original Stable Diffusion (LDM) single-file key layout.

The inverse of diffusers' own single-file conversion (``diffusers.loaders.single_file_utils``), for any UNet/VAE
shape of the SD 1.x family (levels and ``layers_per_block`` read from the configs, not assumed to be SD 1.5's 4 × 2).
It lets the tests save a tiny random-weight checkpoint exactly as Realistic Vision ships, so the real
``from_single_file`` path runs on it; ``python -m app`` never needs it to serve.

Prefixes: UNet ``model.diffusion_model.``, VAE ``first_stage_model.``, CLIP text encoder
``cond_stage_model.transformer.text_model.``.
"""

from __future__ import annotations

from typing import Any

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

_UNET_FIXED = (
    ("time_embed.0.", "time_embedding.linear_1."),
    ("time_embed.2.", "time_embedding.linear_2."),
    ("input_blocks.0.0.", "conv_in."),
    ("out.0.", "conv_norm_out."),
    ("out.2.", "conv_out."),
)
_UNET_RESNET = (
    ("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("out_layers.0", "norm2"), ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"), ("skip_connection", "conv_shortcut"),
)
_VAE_RESNET = (("nin_shortcut", "conv_shortcut"),)
_VAE_ATTN = (("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."), ("proj_out.", "to_out.0."))


def _unet_prefixes(config: Any) -> list[tuple[str, str]]:
    """(ldm prefix, diffusers prefix) pairs for the blocks of a UNet2DConditionModel config."""
    levels = len(config.block_out_channels)
    per = int(config.layers_per_block)
    down_attn = ["CrossAttn" in t for t in config.down_block_types]
    up_attn = ["CrossAttn" in t for t in config.up_block_types]
    out: list[tuple[str, str]] = []
    for i in range(levels):
        for j in range(per):
            out.append((f"input_blocks.{(per + 1) * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
            if down_attn[i]:
                out.append((f"input_blocks.{(per + 1) * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}."))
        for j in range(per + 1):
            out.append((f"output_blocks.{(per + 1) * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
            if up_attn[i]:
                out.append((f"output_blocks.{(per + 1) * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < levels - 1:
            out.append((f"input_blocks.{(per + 1) * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
            up = f"output_blocks.{(per + 1) * i + per}.{2 if up_attn[i] else 1}."
            out.append((up, f"up_blocks.{i}.upsamplers.0."))
    out.append(("middle_block.1.", "mid_block.attentions.0."))
    for j in range(2):
        out.append((f"middle_block.{2 * j}.", f"mid_block.resnets.{j}."))
    return out


def unet_to_ldm(state: dict[str, Any], config: Any) -> dict[str, Any]:
    """A diffusers UNet state dict in the LDM layout (without the ``model.diffusion_model.`` prefix)."""
    mapping = {k: k for k in state}
    for sd, hf in _UNET_FIXED:
        for k in mapping:
            if k.startswith(hf):
                mapping[k] = sd + k[len(hf):]
    for k, v in mapping.items():
        if "resnets" in k:
            for sd, hf in _UNET_RESNET:
                v = v.replace(hf, sd)
            mapping[k] = v
    prefixes = _unet_prefixes(config)
    for k, v in mapping.items():
        for sd, hf in prefixes:
            if v.startswith(hf):
                v = sd + v[len(hf):]
                break
        mapping[k] = v
    return {v: state[k] for k, v in mapping.items()}


def vae_to_ldm(state: dict[str, Any], config: Any) -> dict[str, Any]:
    """A diffusers AutoencoderKL state dict in the LDM layout (without the ``first_stage_model.`` prefix)."""
    levels = len(config.block_out_channels)
    per = int(config.layers_per_block)
    prefixes = [("norm_out.", "conv_norm_out."), ("mid.attn_1.", "mid_block.attentions.0.")]
    for i in range(levels):
        prefixes += [(f"down.{i}.block.{j}.", f"down_blocks.{i}.resnets.{j}.") for j in range(per)]
        prefixes += [(f"up.{levels - 1 - i}.block.{j}.", f"up_blocks.{i}.resnets.{j}.") for j in range(per + 1)]
        if i < levels - 1:
            prefixes.append((f"down.{i}.downsample.", f"down_blocks.{i}.downsamplers.0."))
            prefixes.append((f"up.{levels - 1 - i}.upsample.", f"up_blocks.{i}.upsamplers.0."))
    prefixes += [(f"mid.block_{j + 1}.", f"mid_block.resnets.{j}.") for j in range(2)]
    out: dict[str, Any] = {}
    for k, t in state.items():
        part, _, rest = k.partition(".")  # encoder | decoder | quant_conv | post_quant_conv
        v = rest
        for sd, hf in prefixes:
            if v.startswith(hf):
                v = sd + v[len(hf):]
                break
        if ".block." in v:
            for sd, hf in _VAE_RESNET:
                v = v.replace(hf, sd)
        if v.startswith("mid.attn_1."):
            inner = v[len("mid.attn_1."):]
            for sd, hf in _VAE_ATTN:
                if inner.startswith(hf):
                    inner = sd + inner[len(hf):]
                    break
            v = "mid.attn_1." + inner
            if inner.endswith("weight") and not inner.startswith("norm.") and t.ndim == 2:
                t = t.reshape(*t.shape, 1, 1)  # the LDM VAE attention is 1×1 convolutions
        out[f"{part}.{v}"] = t
    return out


def clip_to_ldm(state: dict[str, Any]) -> dict[str, Any]:
    """A transformers CLIPTextModel state dict in the LDM layout (without ``cond_stage_model.transformer.``)."""
    return {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in state.items()}


def to_single_file(unet: Any, vae: Any, text_encoder: Any) -> dict[str, Any]:
    """One SD 1.x checkpoint state dict (what ``realisticVisionV60B1_v20Novae.safetensors`` holds) from diffusers
    and transformers modules; tensors are made contiguous so safetensors can save them."""
    out: dict[str, Any] = {}
    for prefix, part in ((UNET_PREFIX, unet_to_ldm(unet.state_dict(), unet.config)),
                         (VAE_PREFIX, vae_to_ldm(vae.state_dict(), vae.config)),
                         (CLIP_PREFIX, clip_to_ldm(text_encoder.state_dict()))):
        out.update({prefix + k: v.detach().contiguous() for k, v in part.items()})
    return out

"""Key layouts of the Wan 2.1 VAE: Wan-native (ComfyUI `wan_2.1_vae.safetensors`, our module names)
and diffusers `AutoencoderKLWan` (MOVA's `video_vae/` folder). Detection and conversion both ways.

The table is derived from the architecture: modules are renamed as a whole, and inside residual
blocks the few leaf names below change. Everything else keeps its name.
"""
from __future__ import annotations

from typing import Mapping

import torch

from ..config import VideoVAEConfig
from ...common.errors import CheckpointError

NATIVE = "wan-native"
DIFFUSERS = "diffusers"

# leaf renames inside a residual block (native -> diffusers)
_RESNET_LEAVES = {
    "residual.0.gamma": "norm1.gamma",
    "residual.2.weight": "conv1.weight", "residual.2.bias": "conv1.bias",
    "residual.3.gamma": "norm2.gamma",
    "residual.6.weight": "conv2.weight", "residual.6.bias": "conv2.bias",
    "shortcut.weight": "conv_shortcut.weight", "shortcut.bias": "conv_shortcut.bias",
}

# prefixes some tools put in front of every key (diffsynth "model.", LDM-style "first_stage_model.")
_WRAPPER_PREFIXES = ("first_stage_model.", "model.", "vae.")


def _module_table(cfg: VideoVAEConfig) -> dict[str, tuple[str, bool]]:
    """native module path -> (diffusers module path, is a residual block)."""
    table = {"conv1": ("quant_conv", False), "conv2": ("post_quant_conv", False)}
    for side in ("encoder", "decoder"):
        table[f"{side}.conv1"] = (f"{side}.conv_in", False)
        table[f"{side}.head.0"] = (f"{side}.norm_out", False)
        table[f"{side}.head.2"] = (f"{side}.conv_out", False)
        table[f"{side}.middle.0"] = (f"{side}.mid_block.resnets.0", True)
        table[f"{side}.middle.1"] = (f"{side}.mid_block.attentions.0", False)
        table[f"{side}.middle.2"] = (f"{side}.mid_block.resnets.1", True)
    levels = len(cfg.dim_mult)
    i = 0  # encoder: one flat list in both layouts; only the residual leaves change
    for level in range(levels):
        for _ in range(cfg.num_res_blocks):
            table[f"encoder.downsamples.{i}"] = (f"encoder.down_blocks.{i}", True)
            i += 1
        if level < levels - 1:
            table[f"encoder.downsamples.{i}"] = (f"encoder.down_blocks.{i}", False)
            i += 1
    i = 0  # decoder: flat native list -> up_blocks[level].resnets[j] / .upsamplers[0]
    for level in range(levels):
        for j in range(cfg.num_res_blocks + 1):
            table[f"decoder.upsamples.{i}"] = (f"decoder.up_blocks.{level}.resnets.{j}", True)
            i += 1
        if level < levels - 1:
            table[f"decoder.upsamples.{i}"] = (f"decoder.up_blocks.{level}.upsamplers.0", False)
            i += 1
    return table


def native_to_diffusers_keys(native_keys, cfg: VideoVAEConfig) -> dict[str, str]:
    """Map every native key to its diffusers name (raises on a key the table does not cover)."""
    table = _module_table(cfg)
    out = {}
    for key in native_keys:
        parts = key.split(".")
        for cut in range(len(parts) - 1, 0, -1):  # longest module prefix first
            module = ".".join(parts[:cut])
            if module in table:
                target, is_resnet = table[module]
                leaf = ".".join(parts[cut:])
                out[key] = f"{target}.{_RESNET_LEAVES.get(leaf, leaf) if is_resnet else leaf}"
                break
        else:
            raise CheckpointError(f"video VAE key {key!r} has no diffusers name (unexpected module).")
    return out


def _strip_wrapper(sd: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    for prefix in _WRAPPER_PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def detect_layout(keys) -> str:
    keys = set(keys)
    wan22 = any(".downsamples.0.downsamples." in k or "avg_shortcut" in k for k in keys)
    if "encoder.conv1.weight" in keys and "conv2.weight" in keys and not wan22:
        return NATIVE
    if "encoder.conv_in.weight" in keys and "post_quant_conv.weight" in keys and not wan22:
        return DIFFUSERS
    sample = ", ".join(sorted(keys)[:6])
    if wan22:
        raise CheckpointError(
            "this is a Wan 2.2 VAE (48 latent channels); MOVA uses the Wan 2.1 VAE (16 channels). "
            "Load wan_2.1_vae.safetensors or the video_vae folder of a MOVA release.")
    raise CheckpointError(
        "not a Wan 2.1 video VAE: expected Wan-native keys (encoder.conv1.weight, decoder.upsamples.*) "
        f"or diffusers AutoencoderKLWan keys (encoder.conv_in.weight, decoder.up_blocks.*); found {sample}... "
        "Pick wan_2.1_vae.safetensors (ComfyUI models/vae) or MOVA's video_vae/ file.")


def _check_video_shapes(sd: Mapping[str, torch.Tensor], layout: str) -> None:
    """A 2-D image VAE (SD, SDXL, Flux) shares diffusers' key names but has 4-D convolutions and 4 or
    16 latent channels: refuse it by shape before anything is built from it."""
    conv_in, post = (("encoder.conv1.weight", "conv2.weight") if layout == NATIVE
                     else ("encoder.conv_in.weight", "post_quant_conv.weight"))
    dims = getattr(sd[conv_in], "ndim", None)
    if dims != 5:
        raise CheckpointError(
            f"this is a 2-D image VAE ({conv_in} is {dims}-D; a video VAE's convolutions are 5-D), e.g. SD/"
            "SDXL/Flux; MOVA needs the Wan 2.1 video VAE. Load wan_2.1_vae.safetensors or MOVA's video_vae/.")
    z_dim = sd[post].shape[0]
    if z_dim != 16:
        raise CheckpointError(
            f"video VAE has {z_dim} latent channels; MOVA needs the Wan 2.1 VAE with 16. "
            "Use wan_2.1_vae.safetensors or MOVA's video_vae/ folder.")


def infer_config(native_sd: Mapping[str, torch.Tensor]) -> VideoVAEConfig:
    """Widths from the weights (stock Wan 2.1 files carry no config): base_dim and z_dim."""
    base_dim = native_sd["encoder.conv1.weight"].shape[0]
    z_dim = native_sd["conv2.weight"].shape[0]
    if z_dim != 16:
        raise CheckpointError(
            f"video VAE has {z_dim} latent channels; MOVA needs the Wan 2.1 VAE with 16. "
            "Use wan_2.1_vae.safetensors or MOVA's video_vae/ folder.")
    return VideoVAEConfig(base_dim=int(base_dim), z_dim=int(z_dim))


def to_native(sd: Mapping[str, torch.Tensor], cfg: VideoVAEConfig | None = None
              ) -> tuple[dict[str, torch.Tensor], str]:
    """Any supported layout -> (native state dict, detected layout name)."""
    sd = _strip_wrapper(sd)
    layout = detect_layout(sd.keys())
    _check_video_shapes(sd, layout)
    if layout == NATIVE:
        return dict(sd), layout
    from .video_vae import WanVideoVAE  # local: video_vae imports nothing from here at module level
    if cfg is None:
        cfg = VideoVAEConfig(base_dim=int(sd["encoder.conv_in.weight"].shape[0]),
                             z_dim=int(sd["post_quant_conv.weight"].shape[0]))
    with torch.device("meta"):
        native_keys = list(WanVideoVAE(cfg).state_dict().keys())
    back = {d: n for n, d in native_to_diffusers_keys(native_keys, cfg).items()}
    unknown = [k for k in sd if k not in back]
    if unknown:
        raise CheckpointError(
            f"diffusers video VAE has {len(unknown)} key(s) outside the Wan 2.1 layout, e.g. {unknown[:3]}; "
            "is this a different AutoencoderKLWan variant (Wan 2.2)? MOVA needs the Wan 2.1 VAE.")
    return {back[k]: v for k, v in sd.items()}, layout


def to_diffusers(native_sd: Mapping[str, torch.Tensor], cfg: VideoVAEConfig) -> dict[str, torch.Tensor]:
    names = native_to_diffusers_keys(native_sd.keys(), cfg)
    return {names[k]: v for k, v in native_sd.items()}

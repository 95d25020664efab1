"""The umT5 text encoder as a ComfyUI-managed model: MOVA Text Encode loads it onto the compute device
through `load_models_gpu` (so ComfyUI can free other models for it, and unload it under pressure,
on "free model and node cache" or POST /free), and sampling releases it first: the planner counts
text encode and denoise as separate stages, so the encoder must not sit in VRAM while sampling."""
from __future__ import annotations

import logging

import comfy.model_management as mm

from .memory import MovaPatcher

log = logging.getLogger("mova")


class MovaTextPatcher(MovaPatcher):
    """Moves umT5 whole (its fp8 linears dequantize per layer in the forward)."""


def text_patcher(text_encoder) -> MovaTextPatcher:
    """The encoder's patcher, made once and kept on the module (clones share it)."""
    patcher = text_encoder.__dict__.get("_mova_patcher")
    if patcher is None:
        load = mm.get_torch_device()
        on = next(text_encoder.parameters()).device
        patcher = MovaTextPatcher(text_encoder, load, mm.text_encoder_offload_device(),
                                  loaded=on.type == load.type)
        text_encoder.__dict__["_mova_patcher"] = patcher
    return patcher


def load_for_encoding(text_encoder) -> MovaTextPatcher:
    patcher = text_patcher(text_encoder)
    mm.load_models_gpu([patcher])
    if not patcher.is_loaded:   # defensive: ComfyUI decided not to load it
        patcher.partially_load(patcher.load_device)
    return patcher


def release_text_encoders() -> int:
    """Unload every MOVA text encoder that sits on a compute device other than its offload device;
    returns how many were moved off."""
    released = 0
    for i in range(len(mm.current_loaded_models) - 1, -1, -1):
        loaded = mm.current_loaded_models[i]
        patcher = loaded.model
        if (isinstance(patcher, MovaTextPatcher) and patcher.is_loaded
                and patcher.load_device != patcher.offload_device):
            loaded.model_unload()
            mm.current_loaded_models.pop(i)
            released += 1
    if released:
        mm.soft_empty_cache()
        log.info("mova: text encoder moved off %s before sampling", mm.get_torch_device())
    return released

"""The sampler never hands on NaN or infinite latents: a non-finite value after a step would decode to a
black, silent clip that only fails (or worse, saves) at the very end."""
from __future__ import annotations

import math

import torch

from ...common.errors import InputError

_SETTINGS = ("shift", "boundary_ratio", "video_cfg", "audio_cfg", "video_fps", "audio_shift")


def check_settings(settings) -> None:
    """Every float setting finite (NaN passes every min/max comparison)."""
    for name in _SETTINGS:
        value = getattr(settings, name, None)
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"sampler setting {name} = {value} is not a finite number; set a real value "
                             "(MOVA released: shift 5, boundary 0.9, cfg 5).")


def check_step(index: int, total: int, video: torch.Tensor, audio: torch.Tensor, expert: str = "") -> None:
    """Raise after step `index` (0-based) when either latent holds NaN or infinity."""
    bad = [name for name, t in (("video", video), ("audio", audio)) if not bool(torch.isfinite(t).all())]
    if bad:
        where = f" ({expert} expert)" if expert else ""
        raise InputError(
            f"the {' and '.join(bad)} latent became NaN/infinite at step {index + 1} of {total}{where}; nothing "
            "was passed on to decoding. Lower the guidance scales (cfg, bridge scales, LoRA strengths), use "
            "bf16/fp32 instead of fp16, or check the model files (a corrupt weight gives NaN on its first use).")

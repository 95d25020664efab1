"""Speed settings applied to a loaded generator right before sampling (like a LoRA stack: every run
applies its own, so a graph without them gets the defaults back).

- attention: the kernels/attention.py backend (auto rule | timed | sdpa | sage | flash), process-wide;
- compile_elementwise: models/net/fused.py on every DiT block (norms, modulation, RoPE, gates through
  torch.compile; attention and matmuls eager); off by default until measured faster on a GPU;
- fp8_fast_matmul: fp8 layers multiply through torch._scaled_mm with a fused activation quantization
  (kernels/fp8_act.py) where the GPU allows (sm_89+), else the usual dequantize.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..kernels.attention import (BACKENDS, AttentionSettings, AttentionSite, get_attention_settings,
                                 select_backend, set_attention_settings)
from ..kernels.quant import FP8Linear
from ..models.net.fused import set_compiled_elementwise


@dataclass(frozen=True)
class SpeedSettings:
    attention: str = "auto"
    compile_elementwise: bool = False
    fp8_fast_matmul: bool | None = None   # None: as loaded

    def __post_init__(self):
        AttentionSettings(self.attention)   # the same refusal as the attention module's


def _towers(generator):
    return [t for t in (generator.video_high, generator.video_low, generator.audio, generator.bridge)
            if t is not None]


def apply_speed(generator, settings: SpeedSettings | None) -> SpeedSettings:
    """Set attention backend, compiled elementwise blocks and fp8 fast matmul; None = the defaults.
    Unchanged settings are left alone (compiled functions and timed choices are kept)."""
    settings = settings or SpeedSettings()
    if get_attention_settings().backend != settings.attention:
        set_attention_settings(AttentionSettings(settings.attention))
    for tower in _towers(generator):
        marked = any("_fused" in m.__dict__ for m in tower.modules())
        if marked != settings.compile_elementwise:
            set_compiled_elementwise(tower, settings.compile_elementwise)
        if settings.fp8_fast_matmul is not None:
            for m in tower.modules():
                if isinstance(m, FP8Linear):
                    m.fast_matmul = settings.fp8_fast_matmul
    return settings


def expected_attention(capability, dtype, head_dim: int, sage: bool, flash: bool, fa3: bool,
                       requested: str) -> tuple[str, str]:
    """What `requested` will pick on this device (for the node's text before anything runs)."""
    site = AttentionSite(capability, dtype, head_dim, sage_installed=sage, flash_installed=flash or fa3,
                         device_type="cuda" if capability is not None else "cpu", fa3_installed=fa3)
    if requested == "timed":
        return "measured at first use", "timed: every usable backend once per length bucket"
    return select_backend(site, requested)


__all__ = ["SpeedSettings", "apply_speed", "expected_attention", "BACKENDS"]

"""The custom socket types MOVA nodes pass between each other, and the small payloads they carry."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional

from comfy_api.latest import io

MovaModel = io.Custom("MOVA_MODEL")             # MovaGenerator (+ load options), from a loader
MovaVideoVAE = io.Custom("MOVA_VIDEO_VAE")      # Wan 2.1 video VAE
MovaAudioVAE = io.Custom("MOVA_AUDIO_VAE")      # DAC audio VAE
MovaTextEncoder = io.Custom("MOVA_TEXT_ENCODER")  # umT5 encoder + tokenizer
MovaConditioning = io.Custom("MOVA_CONDITIONING")  # umT5 context for one prompt
MovaLatent = io.Custom("MOVA_LATENT")           # video + audio latents with their geometry
MovaGuidance = io.Custom("MOVA_GUIDANCE")       # bridge / dual CFG settings (guidance node)

CATEGORY = "MOVA"


@dataclass(frozen=True)
class Conditioning:
    """One encoded prompt: context [B, 512, text_dim] (zero-padded like the released pipeline)."""
    context: Any
    prompt: str = ""


@dataclass(frozen=True)
class AVLatent:
    """What flows on MOVA_LATENT: the clip's geometry, the first-frame condition `y`, and — after the
    sampler — the video latent [B, 16, T, H/8, W/8] and the audio latent [B, 128, L]."""
    width: int
    height: int
    frames: int
    fps: float
    y: Any = None
    video: Optional[Any] = None
    audio: Optional[Any] = None
    has_image: bool = False
    extra: dict = field(default_factory=dict)

    def with_samples(self, video, audio) -> "AVLatent":
        return replace(self, video=video, audio=audio)

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def check_inputs(node_cls, values: dict, hints: dict | None = None):
    """Validation ComfyUI 0.3.75 skips for V3 nodes with `validate_inputs`: dropdown values must be
    among the current choices (a file that is not there), numbers within min/max. Linked inputs arrive
    as None and are checked when they run. Returns True or a message for the user."""
    hints = hints or {}
    for inp in node_cls.define_schema().inputs:
        value = values.get(inp.id)
        if value is None:
            continue
        if isinstance(inp, io.Combo.Input) and inp.options is not None and value not in inp.options:
            shown = ", ".join(map(repr, inp.options[:8])) + (" …" if len(inp.options) > 8 else "")
            return (f"{inp.id}: {value!r} is not available (choices: {shown or 'none found'}). "
                    + hints.get(inp.id, "Pick one of the listed values."))
        low, high = getattr(inp, "min", None), getattr(inp, "max", None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if low is not None and value < low:
                return f"{inp.id}: {value} is below the minimum {low}."
            if high is not None and value > high:
                return f"{inp.id}: {value} is above the maximum {high}."
    return True

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


# The one input check (kept importable from here for node modules that already use it).
from .validation import check_inputs  # noqa: E402,F401

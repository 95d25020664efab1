"""One generation, from conditioning to latents: the text widths checked, the LoRA stack applied (once,
right before sampling), seeded noise drawn for the request's geometry, the sampler run (with a given
video or audio when asked). The sampler node, the video->audio / audio->video / extend tasks and the
scripts all call `generate`; what is ComfyUI-specific (memory management) stays in nodes/."""
from __future__ import annotations

import logging
from typing import Callable, Optional

import torch

from ...common.errors import InputError
from ..lora.stack import LoraStack, apply_lora_stack
from . import conditioning as cond
from . import sampler as sampler_mod

log = logging.getLogger("mova")


def check_contexts(generator, **contexts) -> None:
    """Every text context must be as wide as the generator's text input (a text encoder of the same model)."""
    text_dim = generator.config.video_dit.text_dim
    for name, context in contexts.items():
        if context is not None and context.shape[-1] != text_dim:
            raise InputError(f"the {name.replace('_', ' ')} prompt was encoded {context.shape[-1]} wide but this MOVA "
                             f"model expects {text_dim}: text encoder and model do not belong together. Use the "
                             "text encoder of the same MOVA folder (umT5-xxl, 4096, for the released models).")


def generate(generator, positive: torch.Tensor, negative: Optional[torch.Tensor], y: Optional[torch.Tensor],
             width: int, height: int, frames: int, fps: float, settings: "sampler_mod.SamplerSettings",
             guidance=None, lora: Optional[LoraStack] = None, lora_unmerged: bool = False, given=None,
             on_step: Callable = None, should_stop: Callable = None):
    """(video latent, audio latent) for one request; `lora` None = base weights (restores an earlier stack)."""
    check_contexts(generator, positive=positive, negative=negative,
                   audio_negative=getattr(guidance, "audio_negative", None))
    report = apply_lora_stack(generator, lora or LoraStack(), unmerged=lora_unmerged)
    if lora is not None and lora.entries:
        log.info("MOVA LoRA: %s", report)
    video_shape, audio_shape = cond.latent_shapes(generator.config, width, height, frames, fps)
    video_noise, audio_noise = sampler_mod.make_noise(settings.seed, video_shape, audio_shape)
    extra = {} if given is None else {"given": given}
    return sampler_mod.sample(generator, video_noise, audio_noise, positive, negative, y, settings,
                              guidance=guidance, on_step=on_step, should_stop=should_stop, **extra)

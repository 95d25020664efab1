"""The MOVA sampler node: joint flow-matching sampling of the video and audio latents."""
from __future__ import annotations

import logging

import comfy.utils
from comfy_api.latest import io

from ..models.sampling import preview
from ..models.sampling.step_cache import THRESHOLD_MAX as STEP_CACHE_MAX, StepCache, StepCacheSettings
from . import backend
from .options import SCHEDULES
from .types import CATEGORY, MovaConditioning, MovaGuidance, MovaLatent, MovaModel, check_inputs

log = logging.getLogger("mova")


def _progress_text(text: str, node_id) -> None:
    from server import PromptServer
    if PromptServer.instance is not None and node_id is not None:
        PromptServer.instance.send_progress_text(text, node_id)


class MovaSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MOVASampler", display_name="MOVA Sampler", category=f"{CATEGORY}/sampling",
            description="Denoises video and audio together (Euler flow matching, shift schedule). Starts on "
                        "the high-noise video expert and switches to the low-noise one below the boundary. "
                        "Without a guidance input: MOVA's released text CFG (2 passes per step).",
            inputs=[
                MovaModel.Input("model", tooltip="From MOVA Model Loader."),
                MovaConditioning.Input("positive", tooltip="The prompt (MOVA Text Encode)."),
                MovaConditioning.Input("negative", tooltip="The negative prompt (MOVA Text Encode)."),
                MovaLatent.Input("latent", tooltip="Size, length, fps and first frame (MOVA Empty Latent / First Frame)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the starting noise (video noise drawn first, then audio, as released)."),
                io.Int.Input("steps", default=25, min=1, max=200,
                             tooltip="Denoising steps. Released default 50; 25 is a common faster choice."),
                io.Float.Input("shift", default=5.0, min=0.0, max=20.0, step=0.1,
                               tooltip="Sigma shift of the schedule (MOVA: 5.0). Higher spends more steps at high noise."),
                io.Float.Input("boundary", default=0.9, min=0.0, max=1.0, step=0.01,
                               tooltip="Expert boundary: the high-noise video expert runs while t ≥ boundary·1000, "
                                       "then the low-noise expert (MOVA: 0.9). 0 = high-noise only, 1 = low-noise only."),
                io.Float.Input("video_cfg", default=5.0, min=0.0, max=30.0, step=0.1,
                               tooltip="Text guidance scale for the video (MOVA: 5.0). 1 = no negative pass."),
                io.Float.Input("audio_cfg", default=5.0, min=0.0, max=30.0, step=0.1,
                               tooltip="Text guidance scale for the audio (MOVA: 5.0, same as video)."),
                # Inputs below were appended after the first release: optional, so saved graphs load.
                io.Combo.Input("schedule", options=SCHEDULES, default="mova", optional=True,
                               tooltip="Timestep schedule: mova = the released FlowMatchPairScheduler "
                                       "(default); diffsynth = DiffSynth's variant (sigma_min 0)."),
                MovaGuidance.Input("guidance", optional=True,
                                   tooltip="Optional bridge / dual guidance from the MOVA Bridge Guidance node; "
                                           "replaces the two cfg values above."),
                io.Float.Input("audio_shift", default=0.0, min=0.0, max=500.0, step=0.5, optional=True,
                               tooltip="The audio's own sigma shift (MOVA's paired scheduler steps each "
                                       "modality on its own schedule). 0 = same as shift (released). Higher "
                                       "keeps the audio noisier than the video, so it follows the picture's "
                                       "timing through the Bridge (embedded toy model: 50)."),
                io.Float.Input("step_cache", default=0.0, min=0.0, max=STEP_CACHE_MAX, step=0.01, optional=True,
                               tooltip="Step cache: skip a whole step (both towers and the Bridge, every guidance "
                                       "pass) when the predicted change of the velocity is below this; the skipped "
                                       "step's velocity is forecast from the last two computed ones. 0 = off "
                                       "(default). The first two, the last step and the expert switch always run. "
                                       "Embedded toy, 12 steps, 48 clips: 0.6 = 1.50x fewer forwards for +1 ms of "
                                       "AV offset, 0.7 = 1.50x for +4 ms (docs/toy-model.md)."),
            ],
            outputs=[MovaLatent.Output(display_name="latent", tooltip="The sampled video and audio latents, for MOVA Decode Video and MOVA Decode Audio (or MOVA Extend).")],
            hidden=[io.Hidden.unique_id])

    @classmethod
    def validate_inputs(cls, seed=None, steps=None, shift=None, boundary=None, video_cfg=None, audio_cfg=None,
                        schedule=None, audio_shift=None, step_cache=None):
        return check_inputs(cls, dict(seed=seed, steps=steps, shift=shift, boundary=boundary, video_cfg=video_cfg,
                                      audio_cfg=audio_cfg, schedule=schedule, audio_shift=audio_shift,
                                      step_cache=step_cache))

    @classmethod
    def execute(cls, model, positive, negative, latent, seed, steps, shift, boundary, video_cfg, audio_cfg,
                schedule="mova", guidance=None, audio_shift=0.0, step_cache=0.0) -> io.NodeOutput:
        node_id = cls.hidden.unique_id
        bar = comfy.utils.ProgressBar(steps, node_id=node_id)
        cache = None
        if step_cache:   # wraps the guidance (or the released CFG): the sampler sees one guidance object
            cache = guidance = StepCache(StepCacheSettings(threshold=step_cache), guidance, video_cfg, audio_cfg)

        def on_step(info):
            # A small picture per step (latent frames over the audio latent), shown on the node.
            # 2x2 frames at >= 128 px over a thin audio band: the frames are what the artist reads.
            image = preview.sampling_preview(info.video_latent, info.audio_latent, max_frames=4, columns=2,
                                             frame_height=128, audio_height=24)
            bar.update_absolute(info.index + 1, info.total, preview=("JPEG", image, 512))
            _progress_text(backend.step_text(info) + (f" · {cache.progress()}" if cache else ""), node_id)

        settings = backend.sampler_settings(steps=steps, shift=shift, boundary=boundary, seed=seed,
                                            video_cfg=video_cfg, audio_cfg=audio_cfg, schedule=schedule,
                                            fps=latent.fps, audio_shift=audio_shift)
        out = backend.sample(model, positive, negative, latent, settings, guidance=guidance, on_step=on_step,
                             should_stop=backend.interrupt_check)
        if cache:
            log.info("MOVA Sampler: %s", cache.report())
        return io.NodeOutput(out)


NODES = [MovaSampler]

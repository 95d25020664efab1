"""MOVA Extend (continue a sampled clip by one window; chainable) and MOVA Long Clip (N windows)."""
from __future__ import annotations

from dataclasses import replace

from comfy_api.latest import io

from . import backend, given_backend
from .given import progress, sampler_inputs, settings
from .types import CATEGORY, MovaAudioVAE, MovaConditioning, MovaGuidance, MovaLatent, MovaModel, MovaVideoVAE
from .validation import check_inputs


def _extend_inputs(latent_tooltip: str) -> list:
    return [
        MovaModel.Input("model", tooltip="From MOVA Model Loader."),
        MovaConditioning.Input("positive", tooltip="The prompt of the new window(s) (MOVA Text Encode)."),
        MovaConditioning.Input("negative", tooltip="The negative prompt (MOVA Text Encode)."),
        MovaVideoVAE.Input("video_vae", tooltip="Decodes the windows (Wan 2.1 video VAE)."),
        MovaAudioVAE.Input("audio_vae", tooltip="Decodes the windows' audio (DAC audio VAE)."),
        MovaLatent.Input("latent", tooltip=latent_tooltip),
    ]


def _tail_inputs() -> list:
    return [
        io.Int.Input("overlap", default=3, min=1, max=64,
                     tooltip="Latent frames (4 video frames each) of the previous window the next one starts "
                             "with, held given with the audio under them; the audio is crossfaded over the "
                             "overlap. 3 at 49 frames, 24 fps: 13 frames, 0.54 s."),
        io.Boolean.Input("last_frame_image", default=False,
                         tooltip="Also condition each new window on the frame it starts with through the "
                                 "first-frame (image-to-video) path. Off: only the given latents carry the "
                                 "clip on (the embedded toy model was never trained on images)."),
        MovaGuidance.Input("guidance", optional=True, tooltip="Optional MOVA Bridge Guidance; replaces cfg."),
    ]


OUTPUTS = [MovaLatent.Output(display_name="latent", tooltip="The whole clip so far as a latent: feed another "
                                                        "MOVA Extend to add a window."),
           io.Image.Output(display_name="images", tooltip="Every frame of the whole clip, decoded (CreateVideo's images)."),
           io.Audio.Output(display_name="audio", tooltip="The whole soundtrack, windows crossfaded at the seams "
                                                         "(CreateVideo's audio)."),
           io.Float.Output(display_name="fps", tooltip="The clip's frame rate: link it to CreateVideo's fps.")]


class MovaExtend(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MOVAExtend", display_name="MOVA Extend", category=f"{CATEGORY}/sampling",
            description="Continues a sampled clip by one window of the same size: the new window starts "
                        "with the last latent frames and audio of the previous one (held given), the audio "
                        "is crossfaded at the seam. Chain several; images/audio are the whole clip so far.",
            inputs=[*_extend_inputs("The clip so far: MOVA Sampler's latent or another MOVA Extend's."),
                    *sampler_inputs("Text guidance scale, video and audio (MOVA: 5.0)."), *_tail_inputs()],
            outputs=OUTPUTS, hidden=[io.Hidden.unique_id])

    @classmethod
    def validate_inputs(cls, shift=None, boundary=None, cfg=None, audio_shift=None):
        return check_inputs(cls, dict(shift=shift, boundary=boundary, cfg=cfg, audio_shift=audio_shift))

    @classmethod
    def execute(cls, model, positive, negative, video_vae, audio_vae, latent, seed, steps, shift, boundary, cfg,
                audio_shift, overlap, last_frame_image, guidance=None) -> io.NodeOutput:
        s = settings(seed, steps, shift, boundary, cfg, audio_shift, latent.fps)
        out = given_backend.extend(model, positive, negative, video_vae, audio_vae, latent, s, overlap,
                                   last_frame_image, guidance, progress(cls.hidden.unique_id, steps),
                                   backend.interrupt_check)
        frames, audio = given_backend.clip_outputs(audio_vae, out)
        return io.NodeOutput(out, frames, audio, float(latent.fps))


class MovaLongClip(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MOVALongClip", display_name="MOVA Long Clip", category=f"{CATEGORY}/sampling",
            description="Text (or first frame) to a clip longer than one window: samples the first window "
                        "like MOVA Sampler, then extends it window by window like MOVA Extend (seed + k for "
                        "window k). Outputs the whole clip.",
            inputs=[*_extend_inputs("Size, window length, fps and first frame (MOVA Empty Latent / First Frame)."),
                    io.Int.Input("windows", default=3, min=1, max=32,
                                 tooltip="Windows in all (1 = one plain window)."),
                    *sampler_inputs("Text guidance scale, video and audio (MOVA: 5.0)."), *_tail_inputs()],
            outputs=OUTPUTS, hidden=[io.Hidden.unique_id])

    @classmethod
    def validate_inputs(cls, shift=None, boundary=None, cfg=None, audio_shift=None):
        return check_inputs(cls, dict(shift=shift, boundary=boundary, cfg=cfg, audio_shift=audio_shift))

    @classmethod
    def execute(cls, model, positive, negative, video_vae, audio_vae, latent, windows, seed, steps, shift, boundary,
                cfg, audio_shift, overlap, last_frame_image, guidance=None) -> io.NodeOutput:
        if windows > 1:   # refuse a bad overlap before the first window is sampled
            given_backend.tasks.extend_plan(latent.frames, latent.fps, audio_vae.sample_rate,
                                            audio_vae.hop_length, overlap)
        on_step = progress(cls.hidden.unique_id, steps * windows)
        s = settings(seed, steps, shift, boundary, cfg, audio_shift, latent.fps)
        out = backend.sample(model, positive, negative, latent, s, guidance=guidance, on_step=on_step,
                             should_stop=backend.interrupt_check)
        for k in range(1, windows):
            out = given_backend.extend(model, positive, negative, video_vae, audio_vae, out,
                                       replace(s, seed=(seed + k) % 2**64), overlap, last_frame_image, guidance, on_step,
                                       backend.interrupt_check)
        frames, audio = given_backend.clip_outputs(audio_vae, out, video_vae)
        return io.NodeOutput(out, frames, audio, float(latent.fps))


NODES = [MovaExtend, MovaLongClip]

"""MOVA Video to Audio (a soundtrack for a given clip) and MOVA Audio to Video (a clip for a given sound):
one modality held given in the sampler while the other is denoised (models/sampling/given.py)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import comfy.utils
from comfy_api.latest import io

from ..models.sampling import preview
from . import backend, given_backend
from .types import CATEGORY, MovaAudioVAE, MovaConditioning, MovaGuidance, MovaModel, MovaVideoVAE
from .validation import check_inputs

log = logging.getLogger("mova")
MEDIA = Path(__file__).resolve().parents[1] / "workflows" / "media"
MODES = ["clean", "noised"]
IMAGES_TIP = "The clip's frames (the given ones unchanged, or the generated ones): CreateVideo's images."
AUDIO_TIP = "The clip's sound (the given one, or the generated one trimmed to the frames): CreateVideo's audio."
FPS_TIP = "The clip's frame rate: link it to CreateVideo's fps."


def install_example_media() -> None:
    """The templates' input clip and sound (rendered by the toy world) into ComfyUI's input folder, once."""
    try:
        import folder_paths
        target = Path(folder_paths.get_input_directory())
        for src in sorted(MEDIA.glob("*")):
            if src.is_file() and not (target / src.name).exists():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, target / src.name)
    except OSError as err:   # a read-only input folder: the templates then need the files copied by hand
        log.warning("MOVA: could not copy the example media into ComfyUI's input folder: %s", err)


def sampler_inputs(cfg_tooltip: str) -> list:
    """The sampler widgets these nodes share with MOVA Sampler (same names, defaults and ranges)."""
    return [
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="Seed of the starting noise."),
        io.Int.Input("steps", default=25, min=1, max=200, tooltip="Denoising steps (released default 50)."),
        io.Float.Input("shift", default=5.0, min=0.0, max=20.0, step=0.1, tooltip="Sigma shift (MOVA: 5.0)."),
        io.Float.Input("boundary", default=0.9, min=0.0, max=1.0, step=0.01,
                       tooltip="Expert boundary (MOVA: 0.9): high-noise video expert while t ≥ boundary·1000."),
        io.Float.Input("cfg", default=5.0, min=0.0, max=30.0, step=0.1, tooltip=cfg_tooltip),
        io.Float.Input("audio_shift", default=0.0, min=0.0, max=500.0, step=0.5,
                       tooltip="The audio's own sigma shift, as on MOVA Sampler. 0 = same as shift (released); "
                               "embedded toy model: 50."),
    ]


def progress(node_id, total: int):
    bar = comfy.utils.ProgressBar(total, node_id=node_id)
    done = [0]

    def on_step(info):
        done[0] += 1
        image = preview.sampling_preview(info.video_latent, info.audio_latent, max_frames=4)
        bar.update_absolute(min(done[0], total), total, preview=("JPEG", image, 512))
    return on_step


def settings(seed, steps, shift, boundary, cfg, audio_shift, fps):
    return backend.sampler_settings(steps=steps, shift=shift, boundary=boundary, seed=seed, video_cfg=cfg,
                                    audio_cfg=cfg, schedule="mova", fps=fps, audio_shift=audio_shift)


class MovaVideoToAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MOVAVideoToAudio", display_name="MOVA Video to Audio", category=f"{CATEGORY}/sampling",
            description="A soundtrack for a given video (Foley): the frames are fitted to the model's grid "
                        "(multiples of 16, 24 fps, 1+4k frames, padded with the last frame), encoded and held "
                        "given while only the audio is denoised. The frames pass through unchanged; the audio "
                        "is trimmed to their duration, ready for CreateVideo → SaveVideo.",
            inputs=[
                MovaModel.Input("model", tooltip="From MOVA Model Loader."),
                MovaConditioning.Input("positive", tooltip="What should be heard (MOVA Text Encode)."),
                MovaConditioning.Input("negative", tooltip="The negative prompt (MOVA Text Encode)."),
                MovaVideoVAE.Input("video_vae", tooltip="Encodes the frames (Wan 2.1 video VAE)."),
                MovaAudioVAE.Input("audio_vae", tooltip="Decodes the audio (DAC audio VAE)."),
                io.Image.Input("images", tooltip="The video's frames (Load Video → Get Video Components, or "
                                                 "VideoHelperSuite's loader). At most 8 s."),
                io.Float.Input("fps", default=24.0, min=1.0, max=240.0, step=0.01,
                               tooltip="The frames' rate (Get Video Components' fps). Other rates are "
                                       "resampled to 24 fps for the model; the output keeps the input's."),
                *sampler_inputs("Text guidance scale (MOVA: 5.0)."),
                io.Combo.Input("given_video", options=MODES, default="clean",
                               tooltip="clean: the video tower sees the clean frames at t = 0 (low-noise "
                                       "expert; better on the embedded toy: 5.7 vs 9.3 ms from the impacts, 4 clips); noised: the frames "
                                       "noised to each step's sigma, as the sampler's own video would be."),
                io.Int.Input("width", default=0, min=0, max=4096, step=16,
                             tooltip="Width the frames are fitted to (multiple of 16); 0 = the frames' width "
                                     "rounded down to a multiple of 16."),
                io.Int.Input("height", default=0, min=0, max=4096, step=16,
                             tooltip="Height the frames are fitted to; 0 = from the frames."),
                MovaGuidance.Input("guidance", optional=True,
                                   tooltip="Optional MOVA Bridge Guidance; replaces cfg."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip=IMAGES_TIP), io.Audio.Output(display_name="audio", tooltip=AUDIO_TIP),
                     io.Float.Output(display_name="fps", tooltip=FPS_TIP)],
            hidden=[io.Hidden.unique_id])

    @classmethod
    def validate_inputs(cls, fps=None, shift=None, boundary=None, cfg=None, audio_shift=None, given_video=None):
        return check_inputs(cls, dict(fps=fps, shift=shift, boundary=boundary, cfg=cfg, audio_shift=audio_shift,
                                      given_video=given_video))

    @classmethod
    def execute(cls, model, positive, negative, video_vae, audio_vae, images, fps, seed, steps, shift, boundary,
                cfg, audio_shift, given_video, width, height, guidance=None) -> io.NodeOutput:
        audio = given_backend.video_to_audio(
            model, positive, negative, video_vae, audio_vae, images, fps,
            settings(seed, steps, shift, boundary, cfg, audio_shift, 24.0), given_video, width, height,
            guidance, progress(cls.hidden.unique_id, steps), backend.interrupt_check)
        return io.NodeOutput(images, audio, float(fps))


class MovaAudioToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MOVAAudioToVideo", display_name="MOVA Audio to Video", category=f"{CATEGORY}/sampling",
            description="A video for a given sound: the audio (any rate and channel count) is mixed to mono, "
                        "resampled to the audio VAE's rate, encoded and held given while the video is "
                        "denoised; the clip lasts as long as the sound (at most 8 s). Outputs the frames and "
                        "the given audio for CreateVideo → SaveVideo.",
            inputs=[
                MovaModel.Input("model", tooltip="From MOVA Model Loader."),
                MovaConditioning.Input("positive", tooltip="What should be seen (MOVA Text Encode)."),
                MovaConditioning.Input("negative", tooltip="The negative prompt (MOVA Text Encode)."),
                MovaVideoVAE.Input("video_vae", tooltip="Decodes the video (and encodes the first frame)."),
                MovaAudioVAE.Input("audio_vae", tooltip="Encodes the given sound (DAC audio VAE encoder)."),
                io.Audio.Input("audio", tooltip="The sound (core Load Audio). Stereo is mixed to mono, other "
                                                "rates resampled; at most 8 s."),
                io.Int.Input("width", default=640, min=16, max=4096, step=16,
                             tooltip="Width, a multiple of 16 (MOVA-360p: 640)."),
                io.Int.Input("height", default=352, min=16, max=4096, step=16,
                             tooltip="Height, a multiple of 16 (MOVA-360p: 352)."),
                io.Float.Input("fps", default=24.0, min=1.0, max=120.0, step=0.5,
                               tooltip="Frame rate (MOVA was trained at 24 fps)."),
                *sampler_inputs("Text guidance scale (MOVA: 5.0)."),
                io.Combo.Input("given_audio", options=MODES, default="clean",
                               tooltip="clean: the audio tower sees the clean sound at t = 0 (better on the "
                                       "embedded toy: 24.5 vs 72.0 ms, 4 clips); noised: the sound noised to each step's audio sigma."),
                io.Image.Input("image", optional=True, tooltip="Optional first frame (image+audio to video)."),
                MovaGuidance.Input("guidance", optional=True,
                                   tooltip="Optional MOVA Bridge Guidance; replaces cfg."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip=IMAGES_TIP), io.Audio.Output(display_name="audio", tooltip=AUDIO_TIP),
                     io.Float.Output(display_name="fps", tooltip=FPS_TIP)],
            hidden=[io.Hidden.unique_id])

    @classmethod
    def validate_inputs(cls, fps=None, shift=None, boundary=None, cfg=None, audio_shift=None, given_audio=None):
        return check_inputs(cls, dict(fps=fps, shift=shift, boundary=boundary, cfg=cfg, audio_shift=audio_shift,
                                      given_audio=given_audio))

    @classmethod
    def execute(cls, model, positive, negative, video_vae, audio_vae, audio, width, height, fps, seed, steps, shift,
                boundary, cfg, audio_shift, given_audio, image=None, guidance=None) -> io.NodeOutput:
        frames = given_backend.audio_to_video(
            model, positive, negative, video_vae, audio_vae, audio, width, height, fps,
            settings(seed, steps, shift, boundary, cfg, audio_shift, fps), given_audio, image, guidance,
            progress(cls.hidden.unique_id, steps), backend.interrupt_check)
        return io.NodeOutput(frames, audio, float(fps))


install_example_media()
NODES = [MovaVideoToAudio, MovaAudioToVideo]

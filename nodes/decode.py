"""Decode nodes: video latent -> IMAGE frames, audio latent -> AUDIO, ready for CreateVideo / SaveVideo."""
from __future__ import annotations

from comfy_api.latest import io

from . import backend
from ..models.codecs.video_vae_tiles import TILING_OPTIONS
from .types import CATEGORY, MovaAudioVAE, MovaLatent, MovaVideoVAE, check_inputs


class MovaDecodeVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MOVADecodeVideo", display_name="MOVA Decode Video", category=f"{CATEGORY}/decode",
            description="Video latent -> frames (IMAGE, frames × height × width × 3, 0..1) for CreateVideo, "
                        "SaveAnimatedWEBP or VideoHelperSuite.",
            inputs=[MovaVideoVAE.Input("video_vae", tooltip="The Wan 2.1 video VAE."),
                    MovaLatent.Input("latent", tooltip="Sampled latent from MOVA Sampler."),
                    io.Combo.Input("tiling", options=list(TILING_OPTIONS), default="auto", optional=True,
                                   tooltip="Spatial tiles for the VAE decode, to fit GPU memory. auto: the "
                                           "whole frame if it fits the free VRAM, else the largest tile that "
                                           "does; off: whole frame; 256/384/512: tile side in pixels. Tiles "
                                           "overlap and cross-fade (max difference ~1e-2 of the 0..1 range). "
                                           "An untiled decode that runs out of memory is retried tiled.")],
            outputs=[io.Image.Output(display_name="images", tooltip="The decoded frames (IMAGE batch, one per frame, 0..1): CreateVideo's images."),
                     # appended: the clip's own frame rate, so CreateVideo cannot disagree with the latent
                     io.Float.Output(display_name="fps", tooltip="Frames per second the clip was sampled at "
                                     "(MOVA Empty Latent's fps): link it to CreateVideo's fps.")],
            hidden=[io.Hidden.unique_id])

    @classmethod
    def validate_inputs(cls, tiling=None):
        return check_inputs(cls, {"tiling": tiling})

    @classmethod
    def execute(cls, video_vae, latent, tiling="auto") -> io.NodeOutput:
        return io.NodeOutput(backend.decode_video(video_vae, latent, tiling=tiling), float(latent.fps))


class MovaDecodeAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MOVADecodeAudio", display_name="MOVA Decode Audio", category=f"{CATEGORY}/decode",
            description="Audio latent -> AUDIO (mono, the VAE's sample rate: 48 kHz for MOVA), trimmed to "
                        "frames / fps seconds so it lines up with the video.",
            inputs=[MovaAudioVAE.Input("audio_vae", tooltip="The DAC audio VAE (decodes in fp32)."),
                    MovaLatent.Input("latent", tooltip="Sampled latent from MOVA Sampler.")],
            outputs=[io.Audio.Output(display_name="audio", tooltip="The soundtrack (AUDIO, 48 kHz for the released model), as long as the clip: CreateVideo's audio.")])

    @classmethod
    def execute(cls, audio_vae, latent) -> io.NodeOutput:
        return io.NodeOutput(backend.decode_audio(audio_vae, latent))


NODES = [MovaDecodeVideo, MovaDecodeAudio]

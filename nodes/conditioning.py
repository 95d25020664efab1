"""Text encode, ComfyUI CONDITIONING bridge, and the empty-latent / first-frame node."""
from __future__ import annotations

from comfy_api.latest import io

from ..common.errors import MovaError
from . import backend
from .types import CATEGORY, MovaConditioning, MovaLatent, MovaTextEncoder, MovaVideoVAE, check_inputs
from .validation import fail


class MovaTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MOVATextEncode", display_name="MOVA Text Encode", category=f"{CATEGORY}/conditioning",
            description="Encodes a prompt with umT5 the way MOVA does (ftfy + html clean-up, 512 tokens, "
                        "zero-padded). Use one for the positive and one for the negative prompt.",
            inputs=[MovaTextEncoder.Input("text_encoder", tooltip="From MOVA Text Encoder Loader."),
                    io.String.Input("text", multiline=True, default="",
                                    tooltip="What should be seen and heard. Describe sounds explicitly "
                                            "(speech in quotes, music, impacts). Empty = unconditional.")],
            outputs=[MovaConditioning.Output(display_name="conditioning", tooltip="The prompt encoded by umT5 (512 tokens), for MOVA Sampler's positive or negative input.")])

    @classmethod
    def execute(cls, text_encoder, text) -> io.NodeOutput:
        return io.NodeOutput(backend.encode_text(text_encoder, text))


class MovaConditioningFromClip(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MOVAConditioningFromCLIP", display_name="MOVA Conditioning (from CLIP Text Encode)",
            category=f"{CATEGORY}/conditioning",
            description="Uses ComfyUI's own CONDITIONING (CLIPLoader type 'wan' + CLIPTextEncode with the "
                        "umT5-xxl file) as MOVA text conditioning: padded or trimmed to 512 tokens.",
            inputs=[io.Conditioning.Input("conditioning",
                                          tooltip="From CLIPTextEncode with a umT5-xxl text encoder "
                                                  "(CLIPLoader, type wan). Other encoders have the wrong width.")],
            outputs=[MovaConditioning.Output(display_name="conditioning", tooltip="The prompt encoded by umT5 (512 tokens), for MOVA Sampler's positive or negative input.")])

    @classmethod
    def execute(cls, conditioning) -> io.NodeOutput:
        return io.NodeOutput(backend.conditioning_from_comfy(conditioning))


class MovaLatentNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MOVALatent", display_name="MOVA Empty Latent / First Frame", category=f"{CATEGORY}/latent",
            description="Sets the clip's size, length and frame rate, and the first frame: the optional "
                        "image (image-to-video+audio) or, without one, MOVA's text-to-video+audio default.",
            inputs=[
                MovaVideoVAE.Input("video_vae", tooltip="Encodes the first frame (Wan 2.1 video VAE)."),
                io.Int.Input("width", default=640, min=16, max=4096, step=16,
                             tooltip="Width in pixels, a multiple of 16. MOVA-360p: 640 (or 352); 720p: 1280."),
                io.Int.Input("height", default=352, min=16, max=4096, step=16,
                             tooltip="Height in pixels, a multiple of 16. MOVA-360p: 352 (or 640); 720p: 720."),
                io.Int.Input("frames", default=97, min=1, max=1025, step=4,
                             tooltip="Number of video frames, 1 + 4k (e.g. 49, 97, 193 = 8 s at 24 fps). "
                                     "The audio lasts frames / fps seconds."),
                io.Float.Input("fps", default=24.0, min=1.0, max=120.0, step=0.5,
                               tooltip="Frame rate. MOVA was trained at 24 fps; it also sets how video "
                                       "frames line up with audio in the Bridge."),
                io.Image.Input("image", optional=True,
                               tooltip="Optional first frame (resized and centre-cropped to width×height). "
                                       "Leave empty for text-to-video+audio."),
            ],
            outputs=[MovaLatent.Output(display_name="latent", tooltip="An empty clip: size, frame count, fps and the optional first frame, for MOVA Sampler's latent input.")])

    @classmethod
    def validate_inputs(cls, width=None, height=None, frames=None, fps=None):
        # Declaring these makes ComfyUI skip its own min/max check for them: check_inputs does it.
        checked = check_inputs(cls, {"width": width, "height": height, "frames": frames, "fps": fps})
        if checked is not True:
            return checked
        if None in (width, height, frames, fps):  # linked from another node: checked when it runs
            return True
        try:
            backend.check_geometry(width, height, frames, fps)
        except MovaError as err:
            return fail(cls, str(err))
        return True

    @classmethod
    def execute(cls, video_vae, width, height, frames, fps, image=None) -> io.NodeOutput:
        return io.NodeOutput(backend.make_latent(video_vae, width, height, frames, fps, image))


NODES = [MovaTextEncode, MovaConditioningFromClip, MovaLatentNode]

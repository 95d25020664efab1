"""Loader nodes: the joint model (MOVA folder or single files), video VAE, audio VAE, text encoder.

Names in the dropdowns come from ComfyUI's model folders: MOVA folders from `models/mova/` (and the
pack's embedded model, listed first), single files from `diffusion_models/`, `vae/`, `text_encoders/`.
Component entries of a MOVA folder are shown as `<folder>/<component>` (e.g. `MOVA-360p/video_vae`).
"""
from __future__ import annotations

from comfy_api.latest import io

from . import backend as loading
from . import model_files as mf
from .options import DTYPES, OFFLOAD, PRESETS, QUANTIZATION, TEXT_QUANTIZATION
from .types import CATEGORY, MovaAudioVAE, MovaModel, MovaTextEncoder, MovaVideoVAE, check_inputs

DTYPE_TIP = ("Compute/storage dtype. auto = bf16 on a GPU, fp32 on the CPU. Released weights are bf16; "
             "fp16 can overflow in the audio tower.")
QUANT_TIP = ("Weight quantization of the large Linear layers (norms, biases, modulation, embeddings and "
             "heads stay in high precision). none = keep the dtype above; fp8_e4m3fn ≈ half the memory; "
             "nf4 ≈ 0.3× (needs bitsandbytes); int8 ≈ half (needs bitsandbytes).")
OFFLOAD_TIP = ("Where the transformer layers live between uses. none = all on the compute device; cpu = "
               "stream layer by layer from (pinned) CPU memory; disk = stream straight from the mmap'd "
               "safetensors so host RAM does not hold the whole model.")
FOLDER_HINT = ("Put a MOVA folder (as downloaded from OpenMOSS-Team/MOVA-360p) into ComfyUI/models/mova/, "
               "then refresh the node list (R).")
FILE_HINT = ("Put the file into the ComfyUI/models/{folder}/ folder (or pick a `<MOVA folder>/…` entry), "
             "then refresh (R).")
RESIDENT_TIP = "With offload: how many interaction layers stay on the compute device (more = faster, more VRAM)."


def _component_choices(component: str, folder: str) -> list[str]:
    # Only folders that hold the component: a generator-only download offers no `<folder>/audio_vae`.
    return [f"{name}/{component}" for name in mf.mova_folders()
            if mf.has_component(name, component)] + mf.files(folder)


def _resolve(choice: str, component: str, folder: str):
    """`<mova folder>/<component>` -> that component folder; anything else -> a file in `folder`."""
    head, _, tail = choice.rpartition("/")
    if tail == component and head:
        return mf.mova_folder_path(head) / component
    return mf.file_path(folder, choice)


def _options(dtype, quantization, offload, resident_layers):
    return loading.LoadOptions(dtype=dtype, quantization=quantization, offload=offload,
                               resident_layers=resident_layers)


def _memory_inputs():
    return [
        io.Combo.Input("dtype", options=DTYPES, default="auto", tooltip=DTYPE_TIP),
        io.Combo.Input("quantization", options=QUANTIZATION, default="none", tooltip=QUANT_TIP),
        io.Combo.Input("offload", options=OFFLOAD, default="none", tooltip=OFFLOAD_TIP),
        io.Int.Input("resident_layers", default=40, min=0, max=64, tooltip=RESIDENT_TIP),
    ]


class MovaModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MOVAModelLoader", display_name="MOVA Model Loader", category=f"{CATEGORY}/loaders",
            description="Loads the MOVA generator (high-noise + low-noise video experts, audio tower, Bridge) "
                        "from a MOVA folder in models/mova/. The first entry is the small embedded model.",
            inputs=[io.Combo.Input("model", options=mf.mova_folders(),
                                   tooltip="A MOVA folder (MOVA-360p / MOVA-720p as downloaded, with "
                                           "video_dit/, video_dit_2/, audio_dit/, dual_tower_bridge/).")]
                   + _memory_inputs(),
            outputs=[MovaModel.Output(display_name="model")])

    @classmethod
    def validate_inputs(cls, model=None, dtype=None, quantization=None, offload=None, resident_layers=None):
        return check_inputs(cls, dict(model=model, dtype=dtype, quantization=quantization, offload=offload,
                                      resident_layers=resident_layers), {"model": FOLDER_HINT})

    @classmethod
    def execute(cls, model, dtype, quantization, offload, resident_layers) -> io.NodeOutput:
        generator = loading.load_generator_folder(
            mf.mova_folder_path(model), _options(dtype, quantization, offload, resident_layers))
        return io.NodeOutput(generator)


class MovaModelLoaderFiles(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        def file_input(name, tip):
            return io.Combo.Input(name, options=mf.files("diffusion_models"), tooltip=tip)
        return io.Schema(
            node_id="MOVAModelLoaderFiles", display_name="MOVA Model Loader (single files)",
            category=f"{CATEGORY}/loaders",
            description="Loads the MOVA generator from single safetensors files in models/diffusion_models/ "
                        "(e.g. merged or pre-quantized shards). Architecture from the chosen preset.",
            inputs=[
                file_input("video_high_noise", "video_dit (high-noise expert, used while t ≥ boundary)."),
                file_input("video_low_noise", "video_dit_2 (low-noise expert, used after the switch)."),
                file_input("audio", "audio_dit (the 1.4B audio tower)."),
                file_input("bridge", "dual_tower_bridge (the 2.6B cross-modal Bridge)."),
                io.Combo.Input("preset", options=PRESETS, default="mova-360p",
                               tooltip="Architecture of the files (360p and 720p share one architecture)."),
            ] + _memory_inputs(),
            outputs=[MovaModel.Output(display_name="model")])

    @classmethod
    def validate_inputs(cls, video_high_noise=None, video_low_noise=None, audio=None, bridge=None, preset=None,
                        dtype=None, quantization=None, offload=None, resident_layers=None):
        names = {"video_high_noise": video_high_noise, "video_low_noise": video_low_noise, "audio": audio,
                 "bridge": bridge}
        values = dict(names, preset=preset, dtype=dtype, quantization=quantization, offload=offload,
                      resident_layers=resident_layers)
        return check_inputs(cls, values, dict.fromkeys(names, FILE_HINT.format(folder="diffusion_models")))

    @classmethod
    def execute(cls, video_high_noise, video_low_noise, audio, bridge, preset, dtype, quantization,
                offload, resident_layers) -> io.NodeOutput:
        paths = {"video_dit": mf.file_path("diffusion_models", video_high_noise),
                 "video_dit_2": mf.file_path("diffusion_models", video_low_noise),
                 "audio_dit": mf.file_path("diffusion_models", audio),
                 "dual_tower_bridge": mf.file_path("diffusion_models", bridge)}
        generator = loading.load_generator_files(
            paths, preset, _options(dtype, quantization, offload, resident_layers))
        return io.NodeOutput(generator)


class MovaVideoVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MOVAVideoVAELoader", display_name="MOVA Video VAE Loader", category=f"{CATEGORY}/loaders",
            description="Wan 2.1 video VAE: the video_vae/ of a MOVA folder (diffusers layout) or ComfyUI's "
                        "wan_2.1_vae.safetensors from models/vae/.",
            inputs=[io.Combo.Input("vae", options=_component_choices("video_vae", "vae"),
                                   tooltip="`<MOVA folder>/video_vae`, or a Wan 2.1 VAE file in models/vae/."),
                    io.Combo.Input("dtype", options=DTYPES, default="auto", tooltip=DTYPE_TIP)],
            outputs=[MovaVideoVAE.Output(display_name="video_vae")])

    @classmethod
    def validate_inputs(cls, vae=None, dtype=None):
        return check_inputs(cls, {"vae": vae, "dtype": dtype}, {"vae": FILE_HINT.format(folder="vae")})

    @classmethod
    def execute(cls, vae, dtype) -> io.NodeOutput:
        return io.NodeOutput(loading.load_video_vae(_resolve(vae, "video_vae", "vae"), dtype))


class MovaAudioVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MOVAAudioVAELoader", display_name="MOVA Audio VAE Loader", category=f"{CATEGORY}/loaders",
            description="DAC-style audio VAE (48 kHz, 128 channels): the audio_vae/ of a MOVA folder or a "
                        "single file in models/vae/. Always decodes in fp32.",
            inputs=[io.Combo.Input("vae", options=_component_choices("audio_vae", "vae"),
                                   tooltip="`<MOVA folder>/audio_vae`, or a MOVA audio VAE file in models/vae/.")],
            outputs=[MovaAudioVAE.Output(display_name="audio_vae")])

    @classmethod
    def validate_inputs(cls, vae):
        return check_inputs(cls, {"vae": vae}, {"vae": FILE_HINT.format(folder="vae")})

    @classmethod
    def execute(cls, vae) -> io.NodeOutput:
        return io.NodeOutput(loading.load_audio_vae(_resolve(vae, "audio_vae", "vae")))


class MovaTextEncoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MOVATextEncoderLoader", display_name="MOVA Text Encoder Loader",
            category=f"{CATEGORY}/loaders",
            description="umT5-xxl encoder: the text_encoder/ + tokenizer/ of a MOVA folder, or ComfyUI's "
                        "umt5_xxl_*.safetensors from models/text_encoders/.",
            inputs=[io.Combo.Input("text_encoder", options=_component_choices("text_encoder", "text_encoders"),
                                   tooltip="`<MOVA folder>/text_encoder`, or a umT5-xxl file in "
                                           "models/text_encoders/ (e.g. umt5_xxl_fp8_e4m3fn_scaled.safetensors)."),
                    io.Combo.Input("dtype", options=DTYPES, default="auto", tooltip=DTYPE_TIP),
                    io.Combo.Input("quantization", options=TEXT_QUANTIZATION, default="none", optional=True,
                                   tooltip="fp8_e4m3fn = umT5's linears quantized while reading (about 6.7 GB "
                                           "instead of 11.4 GB for umT5-xxl), as ComfyUI's "
                                           "umt5_xxl_fp8_e4m3fn_scaled file already is. none = keep the dtype.")],
            outputs=[MovaTextEncoder.Output(display_name="text_encoder")])

    @classmethod
    def validate_inputs(cls, text_encoder=None, dtype=None, quantization="none"):
        hint = FILE_HINT.format(folder="text_encoders")
        return check_inputs(cls, {"text_encoder": text_encoder, "dtype": dtype, "quantization": quantization},
                            {"text_encoder": hint})

    @classmethod
    def execute(cls, text_encoder, dtype, quantization="none") -> io.NodeOutput:
        path = _resolve(text_encoder, "text_encoder", "text_encoders")
        return io.NodeOutput(loading.load_text_encoder(path, dtype, quantization))


NODES = [MovaModelLoader, MovaModelLoaderFiles, MovaVideoVAELoader, MovaAudioVAELoader, MovaTextEncoderLoader]

"""Loader nodes: the joint model (MOVA folder or single files), video VAE, audio VAE, text encoder.

Names in the dropdowns come from ComfyUI's model folders: MOVA folders from `models/mova/` (and the
pack's embedded model, listed first), single files from `diffusion_models/`, `vae/`, `text_encoders/`.
Component entries of a MOVA folder are shown as `<folder>/<component>` (e.g. `MOVA-360p/video_vae`).
"""
from __future__ import annotations

from contextlib import contextmanager

from comfy_api.latest import io

from ..common.errors import ConfigError, CheckpointError
from ..runtime import hub

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
# Hints are plain text: the frontend's error dialog shows Markdown marks (backticks) literally.
FILE_HINT = ("Put the file into the ComfyUI/models/{folder}/ folder (or pick a '<MOVA folder>/{component}' "
             "entry), then press R in ComfyUI to refresh the lists.")
RESIDENT_TIP = "With offload: how many interaction layers stay on the compute device (more = faster, more VRAM)."


def _component_hint(value, component: str, folder: str) -> str:
    """For an entry not in the list: a '<MOVA folder>/<component>' entry names its folder (and the
    download); anything else is a single file in `folder`."""
    head, _, tail = str(value).rpartition("/")
    if tail == component and head:
        return mf.missing_folder_hint(head, component)
    return FILE_HINT.format(folder=folder, component=component)


def _accepted(value, component: str | None = None):
    """None (= not checked against the list) for the test-only embedded folder a saved graph may still
    select, which the dropdowns no longer offer; the value itself otherwise."""
    if not isinstance(value, str):
        return value
    head, _, tail = value.rpartition("/")
    name = head if component and tail == component else (None if component else value)
    if name and mf.is_test_only_folder(name) and (not component or mf.has_component(name, component)):
        return None
    return value


@contextmanager
def _release_download_hint(name: str):
    """A released MOVA folder that fails to load is usually an incomplete download: say how to finish it."""
    try:
        yield
    except (CheckpointError, ConfigError) as err:
        if name not in hub.REPOS or "MOVA Download Models" in str(err):
            raise
        raise type(err)(f"{err} To complete ComfyUI/models/mova/{name}/, run the MOVA Download Models node "
                        f"(variant {name}, confirm on; files already there are kept and verified) or compare "
                        f"it with https://huggingface.co/{hub.REPOS[name]}.") from None


def _component_choices(component: str, folder: str) -> list[str]:
    # Only folders that hold the component: a generator-only download offers no `<folder>/audio_vae`.
    return [f"{name}/{component}" for name in mf.mova_folders()
            if mf.has_component(name, component)] + mf.files(folder)


def _resolve(choice: str, component: str, folder: str):
    """`<mova folder>/<component>` -> that component folder; anything else -> a file in `folder`."""
    head, _, tail = choice.rpartition("/")
    if tail == component and head:
        path = mf.mova_folder_path(head) / component
        if not path.is_dir():
            raise CheckpointError(mf.missing_folder_hint(head, component))
        return path
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
            outputs=[MovaModel.Output(display_name="model", tooltip="The MOVA generator (both video experts, audio tower, Bridge) with its load options, for MOVA Sampler or MOVA LoRA.")])

    @classmethod
    def validate_inputs(cls, model=None, dtype=None, quantization=None, offload=None, resident_layers=None):
        return check_inputs(cls, dict(model=_accepted(model), dtype=dtype, quantization=quantization,
                                      offload=offload, resident_layers=resident_layers),
                            {"model": mf.missing_folder_hint(model)})

    @classmethod
    def execute(cls, model, dtype, quantization, offload, resident_layers) -> io.NodeOutput:
        with _release_download_hint(model):
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
            outputs=[MovaModel.Output(display_name="model", tooltip="The MOVA generator (both video experts, audio tower, Bridge) with its load options, for MOVA Sampler or MOVA LoRA.")])

    @classmethod
    def validate_inputs(cls, video_high_noise=None, video_low_noise=None, audio=None, bridge=None, preset=None,
                        dtype=None, quantization=None, offload=None, resident_layers=None):
        names = {"video_high_noise": video_high_noise, "video_low_noise": video_low_noise, "audio": audio,
                 "bridge": bridge}
        values = dict(names, preset=preset, dtype=dtype, quantization=quantization, offload=offload,
                      resident_layers=resident_layers)
        hint = ("Put the file into the ComfyUI/models/diffusion_models/ folder, then press R in ComfyUI to "
                "refresh the lists (for a downloaded MOVA folder, use MOVA Model Loader instead).")
        return check_inputs(cls, values, dict.fromkeys(names, hint))

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
                                   tooltip="'<MOVA folder>/video_vae', or a Wan 2.1 VAE file in models/vae/."),
                    io.Combo.Input("dtype", options=DTYPES, default="auto", tooltip=DTYPE_TIP)],
            outputs=[MovaVideoVAE.Output(display_name="video_vae", tooltip="The Wan 2.1 video VAE, for MOVA Empty Latent / First Frame and MOVA Decode Video.")])

    @classmethod
    def validate_inputs(cls, vae=None, dtype=None):
        return check_inputs(cls, {"vae": _accepted(vae, "video_vae"), "dtype": dtype},
                            {"vae": _component_hint(vae, "video_vae", "vae")})

    @classmethod
    def execute(cls, vae, dtype) -> io.NodeOutput:
        with _release_download_hint(vae.rpartition("/")[0]):
            return io.NodeOutput(loading.load_video_vae(_resolve(vae, "video_vae", "vae"), dtype))


class MovaAudioVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MOVAAudioVAELoader", display_name="MOVA Audio VAE Loader", category=f"{CATEGORY}/loaders",
            description="DAC-style audio VAE (48 kHz, 128 channels): the audio_vae/ of a MOVA folder or a "
                        "single file in models/vae/. Always decodes in fp32.",
            inputs=[io.Combo.Input("vae", options=_component_choices("audio_vae", "vae"),
                                   tooltip="'<MOVA folder>/audio_vae', or a MOVA audio VAE file in models/vae/.")],
            outputs=[MovaAudioVAE.Output(display_name="audio_vae", tooltip="The audio VAE, for MOVA Decode Audio.")])

    @classmethod
    def validate_inputs(cls, vae):
        return check_inputs(cls, {"vae": _accepted(vae, "audio_vae")}, {"vae": _component_hint(vae, "audio_vae", "vae")})

    @classmethod
    def execute(cls, vae) -> io.NodeOutput:
        with _release_download_hint(vae.rpartition("/")[0]):
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
                                   tooltip="'<MOVA folder>/text_encoder', or a umT5-xxl file in "
                                           "models/text_encoders/ (e.g. umt5_xxl_fp8_e4m3fn_scaled.safetensors)."),
                    io.Combo.Input("dtype", options=DTYPES, default="auto", tooltip=DTYPE_TIP),
                    io.Combo.Input("quantization", options=TEXT_QUANTIZATION, default="none", optional=True,
                                   tooltip="fp8_e4m3fn = umT5's linears quantized while reading (about 6.7 GB "
                                           "instead of 11.4 GB for umT5-xxl), as ComfyUI's "
                                           "umt5_xxl_fp8_e4m3fn_scaled file already is. none = keep the dtype.")],
            outputs=[MovaTextEncoder.Output(display_name="text_encoder", tooltip="The umT5-xxl encoder and its tokenizer, for MOVA Text Encode.")])

    @classmethod
    def validate_inputs(cls, text_encoder=None, dtype=None, quantization="none"):
        hint = _component_hint(text_encoder, "text_encoder", "text_encoders")
        return check_inputs(cls, {"text_encoder": _accepted(text_encoder, "text_encoder"), "dtype": dtype,
                                  "quantization": quantization}, {"text_encoder": hint})

    @classmethod
    def execute(cls, text_encoder, dtype, quantization="none") -> io.NodeOutput:
        with _release_download_hint(text_encoder.rpartition("/")[0]):
            path = _resolve(text_encoder, "text_encoder", "text_encoders")
            return io.NodeOutput(loading.load_text_encoder(path, dtype, quantization))


NODES = [MovaModelLoader, MovaModelLoaderFiles, MovaVideoVAELoader, MovaAudioVAELoader, MovaTextEncoderLoader]

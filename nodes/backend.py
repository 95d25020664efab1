"""The one place where nodes call into models/ and kernels/: loading with options, encoding, sampling,
decoding. Plain calls and ComfyUI type conversions (layouts, dicts) only — the math lives in models/."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

import comfy.model_management

from ..models.codecs import audio_vae as audio_vae_mod
from ..models.sampling import conditioning as cond_mod
from ..runtime import loading
from ..models.sampling import sampler as sampler_mod
from ..models.codecs import text_encoder as text_mod
from ..models.codecs import video_vae as video_vae_mod
from ..common.errors import InputError
from .memory import load_for_sampling, make_patcher
from .types import AVLatent, Conditioning

log = logging.getLogger("mova")


@dataclass(frozen=True)
class LoadOptions:
    dtype: str = "auto"
    quantization: str = "none"
    offload: str = "none"
    resident_layers: int = 40


@dataclass(frozen=True)
class ModelHandle:
    """What travels on MOVA_MODEL: the generator, how it was loaded, its streaming engine (if any) and
    the LoRA stack to apply before sampling (nodes downstream of the loader return a copy with a new
    stack, the weights are shared)."""
    generator: object
    options: LoadOptions
    device: torch.device
    engine: object = None
    lora: object = None
    lora_unmerged: bool = False     # MOVA LoRA node "apply: alongside": never merge into the weights
    patcher: object = None          # memory.MovaPatcher: ComfyUI loads/unloads the generator through it
    speed: object = None            # runtime.speed.SpeedSettings from MOVA Speed (None = defaults)
    source: dict = None             # what was loaded (folder / files / preset): worker ranks load the same
    parallel: object = None         # runtime.multigpu.MultiGPUSettings from MOVA Multi-GPU (None = one device)


def device() -> torch.device:
    return comfy.model_management.get_torch_device()


def torch_dtype(name: str) -> torch.dtype:
    return loading.resolve_dtype(name, device().type)


# ------------------------------------------------------------------------------------------ loading
def _quant_cache_dir() -> Path:
    """Quantized copies for streaming live in ComfyUI's temp folder (ComfyUI empties it at start-up)."""
    import folder_paths
    return Path(folder_paths.get_temp_directory()) / "mova_quant"


def _load(options: LoadOptions, folder=None, paths=None, preset=None) -> ModelHandle:
    """The loader widgets as LoadSettings, then runtime/loading.py's one load path."""
    settings = loading.settings_from_options(options.dtype, options.quantization, options.offload,
                                             options.resident_layers, device(), _quant_cache_dir())
    loaded = loading.load(folder=folder, files=paths, config=preset, settings=settings)
    generator, engine = loaded.generator, loaded.engine
    if engine is not None:
        log.info("MOVA offload: %s, %d resident layers%s", engine.settings.storage, options.resident_layers,
                 f", {options.quantization}" if options.quantization != "none" else "")
    patcher = make_patcher(generator, engine, device())
    log.info("MOVA weights on %s while sampling: %.2f GB (%s, quantization %s, offload %s); activations "
             "depend on the request: GET /mova/estimate", device(), patcher.size / 1e9,
             str(generator.dtype).replace("torch.", ""), options.quantization, options.offload)
    source = {"folder": None if folder is None else str(folder), "config": preset,
              "files": None if paths is None else {k: None if v is None else str(v) for k, v in paths.items()}}
    return ModelHandle(generator=generator, options=options, device=device(), engine=engine, patcher=patcher,
                       source=source)


def load_generator_folder(folder: Path, options: LoadOptions) -> ModelHandle:
    return _load(options, folder=folder)


def load_generator_files(paths: dict, preset: str, options: LoadOptions) -> ModelHandle:
    return _load(options, paths=paths, preset=preset)


def load_video_vae(path: Path, dtype: str):
    return video_vae_mod.load_video_vae(path, dtype=torch_dtype(dtype), device=device())


def load_audio_vae(path: Path):
    return audio_vae_mod.load_audio_vae(path, device=device())


def load_text_encoder(path: Path, dtype: str, quantization: str = "none"):
    return text_mod.load_text_encoder(path, dtype=torch_dtype(dtype), device=device(), quantization=quantization)


# --------------------------------------------------------------------------------------- conditioning
def encode_text(text_encoder, text: str) -> Conditioning:
    from .text_memory import load_for_encoding
    load_for_encoding(text_encoder)     # registered with ComfyUI, which can move it off again
    return Conditioning(context=text_encoder.encode([text]), prompt=text)


def conditioning_from_comfy(conditioning) -> Conditioning:
    if not conditioning or not torch.is_tensor(conditioning[0][0]):
        raise InputError("expected ComfyUI CONDITIONING from CLIPTextEncode; got an empty or unknown value.")
    return Conditioning(context=text_mod.pad_context(conditioning[0][0]))


def check_geometry(width: int, height: int, frames: int, fps: float) -> None:
    cond_mod.check_geometry(width, height, frames, fps)


def make_latent(video_vae, width, height, frames, fps, image=None) -> AVLatent:
    check_geometry(width, height, frames, fps)
    pixels = None
    if image is not None:  # ComfyUI IMAGE [B, H, W, 3] 0..1 -> [B, 3, H, W]; models/ resizes and normalises
        if image.shape[0] != 1:
            raise InputError(f"the first frame must be one image; got a batch of {image.shape[0]}. Pick one "
                             "with core 'ImageFromBatch' (batch_index, length 1), or use the last frame of a "
                             "clip through MOVA Extend.")
        pixels = image.movedim(-1, 1)
    y = cond_mod.first_frame_y(video_vae, width, height, frames, image=pixels)
    return AVLatent(width=width, height=height, frames=frames, fps=fps, y=y, has_image=image is not None)


# ------------------------------------------------------------------------------------------ sampling
def sampler_settings(steps, shift, boundary, seed, video_cfg, audio_cfg, schedule, fps, audio_shift=0.0):
    """The node's widgets as SamplerSettings; audio_shift 0 (or missing in older graphs) = same as shift."""
    return sampler_mod.SamplerSettings(steps=steps, shift=shift, boundary_ratio=boundary, seed=seed,
                                       video_cfg=video_cfg, audio_cfg=audio_cfg, schedule=schedule,
                                       video_fps=fps, audio_shift=float(audio_shift) if audio_shift else None)


def interrupt_check() -> bool:
    """`should_stop` for the sampler: ComfyUI's cancel raises its own exception here, between steps."""
    comfy.model_management.throw_exception_if_processing_interrupted()
    return False


def step_text(info) -> str:
    expert = getattr(info, "expert", "")
    forwards = getattr(info, "forwards", None)
    text = f"step {info.index + 1}/{info.total}"
    if expert:
        text += f" · {expert} expert"
    if forwards:
        text += f" · {forwards} forward{'s' if forwards != 1 else ''}/step"
    return text


def prepare(handle: ModelHandle) -> None:
    """Before every sampling run through ComfyUI: text encoders leave the compute device (the planner's
    stages), the generator is loaded (ComfyUI may free other models; reloads after a /free), and this
    graph's speed settings apply (None = the defaults)."""
    from ..runtime.speed import apply_speed
    if handle.patcher is not None:
        from .text_memory import release_text_encoders
        release_text_encoders()
        load_for_sampling(handle.patcher)
    apply_speed(handle.generator, handle.speed)


def sample(handle: ModelHandle, positive: Conditioning, negative: Conditioning, latent: AVLatent,
           settings, guidance=None, on_step=None, should_stop=None, given=None) -> AVLatent:
    from ..kernels.attention import attention_report
    from ..models.sampling.generate import check_contexts, generate
    check_contexts(handle.generator, positive=positive.context, negative=negative.context,
                   audio_negative=getattr(guidance, "audio_negative", None))   # before any loading
    prepare(handle)
    if handle.parallel is not None:
        video, audio = _sample_on_ranks(handle, positive, negative, latent, settings, guidance, on_step,
                                        should_stop, given)
    else:
        video, audio = generate(handle.generator, positive.context, negative.context, latent.y, latent.width,
                                latent.height, latent.frames, latent.fps, settings, guidance=guidance,
                                lora=handle.lora, lora_unmerged=handle.lora_unmerged, given=given, on_step=on_step,
                                should_stop=should_stop)
    for line in attention_report():
        log.info("MOVA attention: %s", line)
    return latent.with_samples(video, audio)


def _sample_on_ranks(handle: ModelHandle, positive, negative, latent, settings, guidance, on_step, should_stop,
                     given):
    """MOVA Multi-GPU: the same generate() on every rank (runtime/multigpu.py); workers start at the first
    run of this model + settings and stop when ComfyUI unloads the model (memory.MovaPatcher)."""
    from ..runtime import multigpu
    if handle.source is None:
        raise InputError("MOVA Multi-GPU needs a model from a MOVA loader node (the worker ranks load the same "
                         "files); connect the loader's output.")
    load_request = dict(handle.source, options=vars(handle.options).copy(), cache_dir=str(_quant_cache_dir()))
    handle.generator.__dict__["_on_unload"] = multigpu.stop_session   # read by memory.MovaPatcher._unload
    request = dict(positive=positive.context, negative=negative.context, y=latent.y, width=latent.width,
                   height=latent.height, frames=latent.frames, fps=latent.fps, settings=settings,
                   guidance=guidance, lora=handle.lora, lora_unmerged=handle.lora_unmerged, given=given,
                   speed=handle.speed)
    return multigpu.sample_on_ranks((id(handle.generator), handle.parallel), handle.parallel, load_request,
                                    handle.generator, request, on_step=on_step, should_stop=should_stop)


# ------------------------------------------------------------------------------------------- decoding
def _require_samples(latent: AVLatent, what: str):
    if getattr(latent, what) is None:
        raise InputError(f"this MOVA_LATENT has no {what} samples yet: connect the output of MOVA Sampler, "
                         "not the empty latent.")


def decode_video(video_vae, latent: AVLatent, tiling="auto"):
    _require_samples(latent, "video")
    # a CPU latent: the decoded frames are assembled in host RAM, not on the GPU
    pixels = video_vae.decode(latent.video.cpu(), tiling=tiling)   # [B, 3, F, H, W] in [-1, 1]
    frames = pixels[0].movedim(0, -1)                   # -> [F, H, W, 3]
    return ((frames + 1.0) / 2.0).clamp(0.0, 1.0).float().cpu()


def decode_audio(audio_vae, latent: AVLatent) -> dict:
    _require_samples(latent, "audio")
    waveform = audio_vae.decode(latent.audio)           # [B, 1, T] in [-1, 1]
    sample_rate = int(audio_vae.sample_rate)
    keep = cond_mod.audio_num_samples(latent.frames, latent.fps, sample_rate)
    return {"waveform": waveform[..., :keep].float().cpu(), "sample_rate": sample_rate}

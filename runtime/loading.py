"""The one load path of the joint generator: every loader combination goes through `load`.

    loaded = load(folder="MOVA-360p", settings=LoadSettings(dtype=torch.bfloat16,
                  quant=QuantSettings(mode="fp8_e4m3fn"), offload=OffloadSettings(storage="disk"),
                  device="cuda", cache_dir=tmp))
    loaded.generator, loaded.engine      # engine is None without offload

Sources: a MOVA folder, single files, shards with an index, pre-quantized files (scripts/quantize.py),
or any mix, per component. The towers are built on the meta device, every file's keys and shapes are
checked from its header before a byte is read, the planner's host-RAM figure is compared with the RAM
available, and only then are tensors read one by one — cast, quantized while reading and placed
(runtime/placement.py). Host RAM never holds more than the steady state plus about one tensor.
Where the idle video expert waits: offload none = on the device with the other; cpu = pinned host RAM;
disk = its file (page cache, reclaimed by the OS when needed).
"""
from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch

from ..common.checkpoint import resolve_files
from ..common.errors import CheckpointError, InputError
from ..kernels.quant import QuantSettings
from ..models.config import MovaConfig
from ..models.net.generator import COMPONENTS, MovaGenerator, build_component, resolve_config
from .offload import OffloadEngine, OffloadSettings
from .placement import place_towers, validate_files
from .planner import GB, plan_load

log = logging.getLogger("mova")


@dataclass(frozen=True)
class LoadSettings:
    dtype: torch.dtype = torch.bfloat16
    quant: QuantSettings = field(default_factory=QuantSettings)
    offload: Optional[OffloadSettings] = None
    device: Union[str, torch.device] = "cpu"
    cache_dir: Optional[Path] = None          # quantized copies for disk streaming of bf16 files
    available_ram: Optional[int] = None       # bytes; None = read from the OS; 0 = do not check


@dataclass
class LoadedGenerator:
    generator: MovaGenerator
    engine: Optional[OffloadEngine] = None
    quant_mode: str = "bf16"     # as stored: the requested mode, or a pre-quantized file's


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
QUANTIZATION = ("none", "fp8_e4m3fn", "nf4", "int8")     # the loader's names ("none" = keep the dtype)
OFFLOAD = ("none", "cpu", "disk")


def resolve_dtype(name: str, device_type: str) -> torch.dtype:
    """The loader's dtype widget: "auto" = bf16 on a GPU, fp32 on the CPU (CPU half kernels are slow)."""
    if name == "auto":
        return torch.bfloat16 if device_type == "cuda" else torch.float32
    if name not in DTYPES:
        raise InputError(f"dtype {name!r} is not one of {['auto', *DTYPES]}; pick one of those.")
    return DTYPES[name]


def dtype_name(name: str, device_type: str) -> str:
    """The loader's dtype widget as the planner's name ("auto" resolved as resolve_dtype does)."""
    dtype = resolve_dtype(name, device_type)
    return next(k for k, v in DTYPES.items() if v == dtype)


def settings_from_options(dtype: str, quantization: str, offload: str, resident_layers: int, device,
                          cache_dir=None) -> LoadSettings:
    """The loader node's widgets (names as shown on the canvas) as LoadSettings."""
    if quantization not in QUANTIZATION:
        raise InputError(f"quantization {quantization!r} is not one of {list(QUANTIZATION)}; pick one of those.")
    if offload not in OFFLOAD:
        raise InputError(f"offload {offload!r} is not one of {list(OFFLOAD)}; pick one of those.")
    device = torch.device(device)
    storage = {"none": None, "cpu": "cpu_pinned", "disk": "disk"}[offload]
    return LoadSettings(dtype=resolve_dtype(dtype, device.type),
                        quant=QuantSettings(mode="bf16" if quantization == "none" else quantization),
                        offload=None if storage is None else OffloadSettings(resident_units=resident_layers,
                                                                            storage=storage),
                        device=device, cache_dir=cache_dir)


def gather_sources(folder=None, files: dict = None) -> dict:
    """{component: [safetensors paths]} from a MOVA folder and/or per-component sources."""
    sources = {}
    if folder is not None:
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"MOVA folder not found: {folder}.")
        sources = {n: folder / n for n in COMPONENTS if (folder / n).is_dir()}
    sources.update({k: v for k, v in (files or {}).items() if v is not None})
    unknown = set(sources) - set(COMPONENTS)
    if unknown:
        raise CheckpointError(f"unknown component(s) {sorted(unknown)}; expected some of {list(COMPONENTS)}.")
    for need in ("audio_dit", "dual_tower_bridge"):
        if need not in sources:
            raise CheckpointError(f"no {need} weights given" + (f" ({folder} has no {need}/ folder)" if folder else "")
                                  + ". MOVA needs video_dit and/or video_dit_2, audio_dit and dual_tower_bridge.")
    if "video_dit" not in sources and "video_dit_2" not in sources:
        raise CheckpointError("no video expert given: pass video_dit (high-noise) and/or video_dit_2 (low-noise).")
    return sources


def available_ram() -> int:
    """MemAvailable from /proc/meminfo (0 = unknown: no check)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _check_ram(cfg: MovaConfig, settings: LoadSettings, experts: int, quant_mode: str) -> None:
    """Refuse before reading when the planner's load figure does not fit the RAM available."""
    have = available_ram() if settings.available_ram is None else settings.available_ram
    if not have:
        return
    dev = torch.device(settings.device).type
    dtype = _DTYPE_NAMES.get(settings.dtype, "bf16")
    need = plan_load(cfg, dtype, quant_mode, settings.offload, dev, experts)["peak_host_bytes"]
    if need <= have:
        return
    fits = []
    for q, off in (("fp8_e4m3fn", OffloadSettings(storage="cpu_pinned")), ("nf4", OffloadSettings(storage="cpu_pinned")),
                   ("fp8_e4m3fn", OffloadSettings(storage="disk")), ("nf4", OffloadSettings(storage="disk"))):
        peak = plan_load(cfg, dtype, q, off, dev, experts)["peak_host_bytes"]
        if peak <= have:
            fits.append(f"quantization {q} + offload {'cpu' if off.storage != 'disk' else 'disk'} "
                        f"(~{peak / GB:.1f} GB)")
    offload = "none" if settings.offload is None else ("disk" if settings.offload.storage == "disk" else "cpu")
    raise InputError(f"loading this MOVA model with quantization {quant_mode}, offload {offload} needs about "
                     f"{need / GB:.1f} GB of RAM but {have / GB:.1f} GB is available. "
                     + (f"Pick {fits[0]}." if fits else "Close other programs or use a machine with more RAM."))


_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def _release(towers: dict, engine) -> None:
    """After a failed load: nothing half-loaded stays in host or device memory."""
    if engine is not None:
        engine.close()
    for m in towers.values():
        if m is not None:
            m.to_empty(device="meta")
    towers.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load(folder=None, files: dict = None, config: Union[MovaConfig, str, None] = None,
         settings: LoadSettings = LoadSettings()) -> LoadedGenerator:
    """Build, validate, check RAM, then read and place the towers (module docstring). device "meta":
    build and validate only (nothing is read)."""
    raw = gather_sources(folder, files)
    cfg = resolve_config(Path(folder) if folder is not None else None, raw, config)
    sources = {n: resolve_files(src, n) for n, src in raw.items()}
    towers = {}
    for name in COMPONENTS:
        if name in sources:
            with torch.device("meta"):
                towers[name] = build_component(name, cfg).to(dtype=settings.dtype).requires_grad_(False).eval()
        else:
            towers[name] = None
    modes = {n: validate_files(towers[n], sources[n], n, settings.quant.fp8_fast_matmul) for n in sources}
    if str(settings.device) == "meta":
        return LoadedGenerator(MovaGenerator(cfg, *(towers[n] for n in COMPONENTS)))
    file_modes = {m for m in modes.values() if m is not None}
    plan_mode = settings.quant.mode if settings.quant.quantized else (file_modes.pop() if file_modes else "bf16")
    experts = sum(towers[n] is not None for n in ("video_dit", "video_dit_2"))
    _check_ram(cfg, settings, experts, plan_mode)
    engine = None
    try:
        engine = place_towers(towers, sources, settings.dtype, settings.quant, settings.offload,
                              settings.device, settings.cache_dir, modes)
        generator = MovaGenerator(cfg, *(towers[n] for n in COMPONENTS))
    except BaseException:
        _release(towers, engine)
        raise
    return LoadedGenerator(generator, engine, plan_mode)


def load_generator(folder=None, files: dict = None, config: Union[MovaConfig, str, None] = None,
                   dtype: torch.dtype = torch.bfloat16, device="cpu") -> MovaGenerator:
    """The generator with plain weights on `device` (tests, scripts, the toy trainer); `load` for the rest."""
    return load(folder, files, config, LoadSettings(dtype=dtype, device=device)).generator

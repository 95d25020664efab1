"""Loading towers with a quantization mode and an offload mode (the loader node's one call).

    engine = place_towers({"video_dit": v, "video_dit_2": v2, "audio_dit": a, "dual_tower_bridge": b},
                          files, dtype, quant, offload, device, cache_dir)

`towers` are modules built on the meta device; `files` maps the same names to safetensors paths.
- pre-quantized file (mova_quant metadata): layers become quantized shells, filled from the file;
- bf16 file + a quantized mode: weights are quantized tensor by tensor while reading (peak = one
  bf16 tensor); with storage "disk" a quantized copy is written once under `cache_dir` (keyed by the
  source files and settings, see stream_files) and streamed from there;
- offload None: everything is moved to `device`.
Returns the OffloadEngine (or None without offload); modules are ready for joint_forward.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from ..common.checkpoint import out_of_mmap
from ..common.errors import CheckpointError
from .offload import OffloadEngine, OffloadSettings
from ..kernels.quant import QuantSettings
from ..kernels.quant_io import load_quantized_into, quantize_file, quantize_items, read_metadata

log = logging.getLogger("mova")
_HIGH = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # fp8 is "floating" too: keep it


def file_quant_mode(files) -> str | None:
    modes = {read_metadata(f).get("mova_quant") for f in files}
    if len(modes) > 1:
        raise CheckpointError(f"the shards {[str(f) for f in files]} mix quantization formats {sorted(map(str, modes))}.")
    return modes.pop()


def _read(files, settings: QuantSettings | None, dtype: torch.dtype) -> dict:
    """All tensors, floats cast to `dtype`, Linear weights quantized when `settings` asks (never left
    in the file's mmap, see out_of_mmap)."""
    def items():
        for f in files:
            with safe_open(str(f), framework="pt") as h:
                for k in h.keys():
                    t = h.get_tensor(k)
                    cast = t.dtype in _HIGH and t.dtype != dtype and not k.endswith(".weight_scale")
                    yield k, out_of_mmap(t.to(dtype) if cast else t, t)
    src = quantize_items(items(), settings) if settings is not None and settings.quantized else items()
    return dict(src)


def load_component(module: nn.Module, files, name: str, dtype: torch.dtype, quant: QuantSettings) -> nn.Module:
    """Fill a meta-built tower from its files on the CPU, quantized as asked (see module docstring)."""
    files = [Path(f) for f in files]
    mode = file_quant_mode(files)
    if mode is not None:
        if quant.quantized and quant.mode != mode:
            log.warning("mova: %s file is %s; using it as is (asked for %s)", name, mode, quant.mode)
        meta = read_metadata(files[0])
        load_quantized_into(module, _read(files, None, dtype), meta, str(files[0]), name, quant.fp8_fast_matmul)
    else:
        state = _read(files, quant, dtype)
        if quant.quantized:
            load_quantized_into(module, state, {"mova_quant": quant.mode, "mova_quant_version": "1"},
                                str(files[0]), name, quant.fp8_fast_matmul)
        else:
            result = module.load_state_dict(state, strict=False, assign=True)
            if result.missing_keys or result.unexpected_keys:
                raise CheckpointError(f"{name}: keys do not match ({len(result.missing_keys)} missing, e.g. "
                                      f"{result.missing_keys[:3]}; {len(result.unexpected_keys)} unexpected, "
                                      f"e.g. {result.unexpected_keys[:3]}). Load the MOVA {name} weights here.")
    for sub in module.modules():
        if hasattr(sub, "rebuild_buffers"):
            sub.rebuild_buffers()
    return module.requires_grad_(False).eval()


def _shells_from(module: nn.Module, files, name: str, dtype: torch.dtype, quant: QuantSettings) -> None:
    """Meta module -> meta module whose quantized layers match the (pre-quantized) files."""
    from ..kernels.quant import layers_in_state, make_quantized_shells
    keys = []
    for f in files:
        with safe_open(str(f), framework="pt") as h:
            keys += list(h.keys())
    layers = layers_in_state(keys)
    module.to(dtype=dtype)  # before the shells: .to(dtype) would also cast fp8 weights and fp32 scales
    if layers:
        make_quantized_shells(module, {p: file_quant_mode(files) for p in layers}, quant.fp8_fast_matmul)


def cache_key(files, name: str, dtype: torch.dtype, quant: QuantSettings) -> str:
    """Names the quantized copy of `files`: changes when a source file is replaced (path, size, mtime)
    or when the copy would come out differently (mode, fp8 scale, dtype, file format)."""
    from ..kernels.quant_io import FORMAT_VERSION
    sources = []
    for f in files:
        st = Path(f).stat()
        sources.append([str(Path(f).resolve()), st.st_size, st.st_mtime_ns])
    spec = {"sources": sources, "component": name, "mode": quant.mode, "fp8_scale": quant.fp8_scale,
            "dtype": str(dtype), "format": FORMAT_VERSION}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def _complete_cache(path: Path, key: str) -> bool:
    """A finished copy: safetensors checks the header against the file size (a truncated file fails to
    open) and the metadata carries the key it was written for."""
    if not path.is_file():
        return False
    try:
        return read_metadata(path).get("mova_cache_key") == key
    except Exception as exc:  # noqa: BLE001 - any unreadable file is rewritten
        log.warning("mova: ignoring the unreadable quantized cache %s (%s); writing it again", path, exc)
        return False


def stream_files(files, name: str, dtype: torch.dtype, quant: QuantSettings, cache_dir) -> list[Path]:
    """Files that hold exactly what the streamed module needs. For a bf16 source and a quantized mode
    that is a quantized copy in `cache_dir/<key>/<name>.safetensors`, written once (to a temporary name,
    renamed when complete, so an interrupted write is never used) and reused while the sources stay."""
    files = [Path(f) for f in files]
    if file_quant_mode(files) is not None or not quant.quantized:
        return files
    key = cache_key(files, name, dtype, quant)
    cache = Path(cache_dir) / key / f"{name}.safetensors"
    if _complete_cache(cache, key):
        log.info("mova: streaming %s from its %s copy %s (cached)", name, quant.mode, cache)
        return [cache]
    log.info("mova: writing the %s copy of %s to %s (once per source file)", quant.mode, name, cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        quantize_file(files, tmp, quant, name, dtype=dtype, extra_meta={"mova_cache_key": key})
        os.replace(tmp, cache)
    finally:
        tmp.unlink(missing_ok=True)
    return [cache]


def place_towers(towers: dict, files: dict, dtype: torch.dtype, quant: QuantSettings,
                 offload: OffloadSettings | None, device="cpu", cache_dir=None) -> OffloadEngine | None:
    experts = {n: m for n, m in towers.items() if n.startswith("video_dit") and m is not None}
    audio, bridge = towers["audio_dit"], towers["dual_tower_bridge"]
    if offload is not None and offload.storage == "disk":
        if cache_dir is None and quant.quantized:
            raise ValueError("streaming a quantized model from disk needs cache_dir (or a pre-quantized file)")
        stream = {}
        for n, m in towers.items():
            if m is None:
                continue
            stream[n] = stream_files(files[n], n, dtype, quant, cache_dir)
            _shells_from(m, stream[n], n, dtype, quant)
        return OffloadEngine(experts, audio, bridge, offload, device, stream)
    for n, m in towers.items():
        if m is not None:
            load_component(m, files[n], n, dtype, quant)
    if offload is None:
        for m in towers.values():
            if m is not None:
                m.to(device)
        return None
    return OffloadEngine(experts, audio, bridge, offload, device)

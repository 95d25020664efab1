"""Reading towers from their files with a quantization mode and an offload mode (runtime/loading.py's
second half; everything here works tensor by tensor).

    engine = place_towers({"video_dit": v, "video_dit_2": v2, "audio_dit": a, "dual_tower_bridge": b},
                          files, dtype, quant, offload, device, cache_dir)

`towers` are modules built on the meta device; `files` maps the same names to safetensors paths.
- every component's keys and shapes are checked from the headers first (validate_files);
- pre-quantized file (mova_quant metadata): layers become quantized shells, filled from the file;
- plain file + a quantized mode: weights are quantized tensor by tensor while reading (peak = one
  source tensor beyond the result); with storage "disk" a quantized copy is written once under
  `cache_dir`, shard by shard (keyed by the source files and settings, see stream_files), and streamed
  from there;
- offload None: each tensor goes to `device` as it is read (host RAM holds one tensor at a time);
  "cpu_pinned": tensors are read into host RAM and the OffloadEngine streams them.
Returns the OffloadEngine (or None without offload); modules are ready for joint_forward.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Optional

import torch
from safetensors import safe_open
from torch import nn

from ..common.checkpoint import expected_shapes, out_of_mmap, read_header, strip_prefix, validate
from ..common.errors import CheckpointError
from ..kernels.quant import QuantSettings, layers_in_state, make_quantized_shells
from ..kernels.quant_io import (FORMAT_VERSION, INDEX_NAME, check_quant_metadata, check_quantized_layout, has_module,
                                load_quantized_into, quantize_file, quantize_items, read_metadata)
from .offload import OffloadEngine, OffloadSettings

log = logging.getLogger("mova")
_HIGH = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # fp8 is "floating" too: keep it
_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4, "I8": 1,
          "U8": 1, "BOOL": 1}


# ---- what the files hold ----------------------------------------------------------------------
def file_quant_mode(files, component: str = "weights") -> Optional[str]:
    """The pre-quantized format of a component's files (None for plain weights), checked up front."""
    metas = {str(f): read_metadata(f) for f in files}
    modes = {m.get("mova_quant") for m in metas.values()}
    if len(modes) > 1:
        raise CheckpointError(f"{component}: the shards {list(metas)} mix quantization formats "
                              f"{sorted(map(str, modes))}; re-create them with scripts/quantize.py.")
    for path, meta in metas.items():
        check_quant_metadata(meta, f"{component}: {path}", component)
    return modes.pop()


def _headers(files) -> tuple[dict, dict]:
    """({key: shape}, {key: dtype name}) of all shards, the common key prefix stripped."""
    shapes, dtypes = {}, {}
    for f in files:
        for key, info in read_header(Path(f)).items():
            shapes[key], dtypes[key] = tuple(info["shape"]), info["dtype"]
    prefix = strip_prefix(shapes)
    return ({k[len(prefix):]: v for k, v in shapes.items()}, {k[len(prefix):]: v for k, v in dtypes.items()})


def validate_files(module: nn.Module, files, component: str, fast_matmul: bool = False) -> Optional[str]:
    """Check keys and shapes of `files` against the meta-built `module` from the headers alone; for a
    pre-quantized file the module's matching Linear layers become quantized shells first. Returns the
    file's quantization mode (None for plain weights)."""
    found, dtypes = _headers(files)        # readable errors for truncated or foreign files first
    mode = file_quant_mode(files, component)
    if mode is not None:
        check_quantized_layout(dtypes, mode, component)
        layers = [p for p in layers_in_state(found) if has_module(module, p)]
        make_quantized_shells(module, dict.fromkeys(layers, mode), fast_matmul)
    expected = expected_shapes(module)
    if mode == "fp8_e4m3fn":  # per-tensor [] or per-channel [out, 1] scales
        for key in [k for k in expected if k.endswith(".weight_scale") and k in found]:
            if found[key] in ((), (expected[key[: -len("_scale")]][0], 1)):
                expected[key] = found[key]
    validate(component, expected, found)
    return mode


def largest_tensor_bytes(files, dtype: torch.dtype) -> int:
    """The largest tensor of `files` once cast to `dtype` (from the headers)."""
    size = torch.tensor([], dtype=dtype).element_size()
    biggest = 0
    for f in files:
        for info in read_header(Path(f)).values():
            n = 1
            for d in info["shape"]:
                n *= d
            biggest = max(biggest, n * (size if _BYTES.get(info["dtype"], 1) > 1 else 1))
    return biggest


def cache_shard_bytes(files, dtype: torch.dtype) -> int:
    """Shard size of a quantized copy: half the largest source tensor (157 MB for the released towers),
    so writing the copy holds no more than about one source tensor."""
    return max(largest_tensor_bytes(files, dtype) // 2, 64 << 10)


# ---- reading ------------------------------------------------------------------------------------
def _read(files, settings: QuantSettings | None, dtype: torch.dtype, device="cpu") -> dict:
    """All tensors (key prefix stripped), floats cast to `dtype`, Linear weights quantized when
    `settings` asks, each moved to `device` as soon as it is ready (never left in the file's mmap, see
    out_of_mmap)."""
    device = torch.device(device)
    prefix = strip_prefix([k for f in files for k in read_header(Path(f))])

    def items():
        for f in files:
            with safe_open(str(f), framework="pt") as h:
                for k in h.keys():
                    t = h.get_tensor(k)
                    cast = t.dtype in _HIGH and t.dtype != dtype and not k.endswith(".weight_scale")
                    yield k[len(prefix):], out_of_mmap(t.to(dtype) if cast else t, t)
    src = quantize_items(items(), settings) if settings is not None and settings.quantized else items()
    return {k: (t if device.type == "cpu" else t.to(device)) for k, t in src}


def load_component(module: nn.Module, files, name: str, dtype: torch.dtype, quant: QuantSettings,
                   mode: Optional[str] = None, device="cpu") -> nn.Module:
    """Fill a meta-built (and validated) tower from its files onto `device`, quantized as asked."""
    files = [Path(f) for f in files]
    if mode is not None:
        if quant.quantized and quant.mode != mode:
            log.warning("mova: %s file is %s; using it as is (asked for %s)", name, mode, quant.mode)
        meta = read_metadata(files[0])
        load_quantized_into(module, _read(files, None, dtype, device), meta, str(files[0]), name,
                            quant.fp8_fast_matmul)
    elif quant.quantized:
        state = _read(files, quant, dtype, device)
        load_quantized_into(module, state, {"mova_quant": quant.mode, "mova_quant_version": FORMAT_VERSION},
                            str(files[0]), name, quant.fp8_fast_matmul)
    else:
        result = module.load_state_dict(_read(files, None, dtype, device), strict=False, assign=True)
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(f"{name}: keys do not match ({len(result.missing_keys)} missing, e.g. "
                                  f"{result.missing_keys[:3]}; {len(result.unexpected_keys)} unexpected, "
                                  f"e.g. {result.unexpected_keys[:3]}). Load the MOVA {name} weights here.")
    for sub in module.modules():
        if hasattr(sub, "rebuild_buffers"):
            sub.rebuild_buffers(torch.device(device))
    return module.requires_grad_(False).eval()


# ---- the quantized copy for streaming ---------------------------------------------------------
def cache_key(files, name: str, dtype: torch.dtype, quant: QuantSettings) -> str:
    """Names the quantized copy of `files`: changes when a source file is replaced (path, size, mtime)
    or when the copy would come out differently (mode, fp8 scale, dtype, file format)."""
    sources = []
    for f in files:
        st = Path(f).stat()
        sources.append([str(Path(f).resolve()), st.st_size, st.st_mtime_ns])
    spec = {"sources": sources, "component": name, "mode": quant.mode, "fp8_scale": quant.fp8_scale,
            "dtype": str(dtype), "format": FORMAT_VERSION, "layout": "shards"}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def _cached_shards(folder: Path, key: str) -> Optional[list[Path]]:
    """The shards of a finished copy, or None. A copy is finished when its index carries the key and
    every shard it lists opens (safetensors checks each header against the file size)."""
    index = folder / INDEX_NAME
    if not index.is_file():
        return None
    try:
        data = json.loads(index.read_text())
        if data.get("metadata", {}).get("mova_cache_key") != key:
            return None
        shards = [folder / n for n in sorted(set(data["weight_map"].values()))]
        for s in shards:
            read_metadata(s)
        return shards
    except Exception as exc:  # noqa: BLE001 - any unreadable copy is written again
        log.warning("mova: ignoring the unreadable quantized cache %s (%s); writing it again", folder, exc)
        return None


def stream_files(files, name: str, dtype: torch.dtype, quant: QuantSettings, cache_dir) -> list[Path]:
    """Files that hold exactly what the streamed module needs. For a plain source and a quantized mode
    that is a quantized copy in `cache_dir/<key>/<name>/` (shards of about half the largest source
    tensor, so writing it never holds more than that; written to a temporary folder renamed when
    complete, so an interrupted write is never used), reused while the sources stay."""
    files = [Path(f) for f in files]
    if file_quant_mode(files, name) is not None or not quant.quantized:
        return files
    key = cache_key(files, name, dtype, quant)
    folder = Path(cache_dir) / key / name
    shards = _cached_shards(folder, key)
    if shards:
        log.info("mova: streaming %s from its %s copy %s (cached)", name, quant.mode, folder)
        return shards
    log.info("mova: writing the %s copy of %s to %s (once per source file)", quant.mode, name, folder)
    tmp = folder.with_name(f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        quantize_file(files, tmp, quant, name, dtype=dtype, extra_meta={"mova_cache_key": key},
                      max_shard_bytes=cache_shard_bytes(files, dtype))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _cached_shards(folder, key)


# ---- placing -----------------------------------------------------------------------------------
def place_towers(towers: dict, files: dict, dtype: torch.dtype, quant: QuantSettings,
                 offload: OffloadSettings | None, device="cpu", cache_dir=None,
                 modes: Optional[dict] = None) -> OffloadEngine | None:
    """Read and place the meta-built towers (module docstring). `modes` {name: file quantization}
    says the towers were already checked with validate_files; otherwise that happens here."""
    present = {n: m for n, m in towers.items() if m is not None}
    if modes is None:   # cast before validate_files makes shells (.to would cast fp8 weights too)
        modes = {n: validate_files(m.to(dtype=dtype), files[n], n, quant.fp8_fast_matmul) for n, m in present.items()}
    experts = {n: m for n, m in present.items() if n.startswith("video_dit")}
    audio, bridge = towers["audio_dit"], towers["dual_tower_bridge"]
    if offload is not None and offload.storage == "disk":
        if cache_dir is None and quant.quantized and any(modes[n] is None for n in present):
            raise ValueError("streaming a quantized model from disk needs cache_dir (or a pre-quantized file)")
        stream = {}
        for n, m in present.items():
            stream[n] = stream_files(files[n], n, dtype, quant, cache_dir)
            if modes[n] is None and quant.quantized:   # the copy is quantized: shells for it
                validate_files(m, stream[n], n, quant.fp8_fast_matmul)
        return OffloadEngine(experts, audio, bridge, offload, device, stream)
    target = device if offload is None else "cpu"
    for n, m in present.items():
        load_component(m, files[n], n, dtype, quant, modes[n], target)
    if offload is None:
        return None
    return OffloadEngine(experts, audio, bridge, offload, device)

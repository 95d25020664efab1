"""Pre-quantized safetensors files: write them from bf16 files, read and validate them, load into modules.

A file is recognised by its safetensors metadata:
  {"mova_quant": "fp8_e4m3fn" | "nf4" | "int8", "mova_quant_version": "1", "mova_component": "<name>"}
Quantized layers store `<name>.weight` + `<name>.weight_scale`; everything else keeps its source dtype.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..common.errors import CheckpointError
from .quant import (DEFAULT_SKIP, NF4_BLOCK, QUANTIZED_MODES, QuantSettings, make_quantized_shells,
                    layers_in_state, quantize_tensor, should_quantize_key)

FORMAT_VERSION = "1"
SHARD_STEM = "diffusion_pytorch_model"      # sharded copies: the layout of sharded releases
INDEX_NAME = SHARD_STEM + ".safetensors.index.json"


def quant_metadata(mode: str, component: str, **extra) -> dict[str, str]:
    meta = {"mova_quant": mode, "mova_quant_version": FORMAT_VERSION, "mova_component": component}
    if mode == "nf4":
        meta["mova_nf4_blocksize"] = str(NF4_BLOCK)
    meta.update({k: str(v) for k, v in extra.items()})
    return meta


def read_metadata(path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def quantize_items(items: Iterable[tuple[str, torch.Tensor]], settings: QuantSettings):
    """Yield (key, tensor) with every quantizable Linear weight replaced by weight + weight_scale."""
    for key, tensor in items:
        if should_quantize_key(key, tensor, settings.skip) and \
                (settings.mode != "nf4" or tensor.numel() % NF4_BLOCK == 0):
            stem = key[: -len("weight")]
            for suffix, t in quantize_tensor(tensor, settings).items():
                yield stem + suffix, t
        else:
            yield key, tensor


def iter_safetensors(paths) -> Iterable[tuple[str, torch.Tensor]]:
    for path in paths:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                yield key, f.get_tensor(key)


def quantize_file(sources, dest, settings: QuantSettings, component: str, dtype: torch.dtype | None = None,
                  extra_meta: dict | None = None, max_shard_bytes: int | None = None) -> dict[str, str]:
    """Write a pre-quantized copy of a plain component file (or its shards) to `dest`. With `dtype`,
    floating tensors are cast to it first (as the loader does), so the copy equals quantizing the loaded
    module. With `max_shard_bytes`, `dest` is a folder of shards of about that size plus their
    index (INDEX_NAME, the layout of sharded releases), written as the tensors are quantized: host RAM holds one shard, not
    the whole component."""
    sources = [sources] if isinstance(sources, (str, Path)) else list(sources)
    for src in sources:
        meta = read_metadata(src)
        if "mova_quant" in meta:
            raise CheckpointError(f"{src} is already quantized ({meta['mova_quant']}); quantize the bf16 "
                                  "release file instead.")
    items = iter_safetensors(sources)
    if dtype is not None:
        items = ((k, t.to(dtype) if t.is_floating_point() and t.element_size() > 1 else t) for k, t in items)
    meta = quant_metadata(settings.mode, component,
                          **({"mova_fp8_scale": settings.fp8_scale} if settings.mode == "fp8_e4m3fn" else {}),
                          **(extra_meta or {}))
    if not max_shard_bytes:
        save_file({k: t.contiguous() for k, t in quantize_items(items, settings)}, str(dest), metadata=meta)
        return meta
    _write_shards(quantize_items(items, settings), Path(dest), meta, max_shard_bytes)
    return meta


def _write_shards(items, folder: Path, meta: dict, max_shard_bytes: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    weight_map, shard, size = {}, {}, 0

    def flush():
        name = f"{SHARD_STEM}-{len(set(weight_map.values())) + 1:05d}.safetensors"
        save_file(shard, str(folder / name), metadata=meta)
        weight_map.update(dict.fromkeys(shard, name))

    for key, t in items:
        nbytes = t.numel() * t.element_size()
        if shard and size + nbytes > max_shard_bytes:
            flush()
            shard, size = {}, 0
        shard[key], size = t.contiguous(), size + nbytes
    if shard:
        flush()
    index = {"metadata": dict(meta), "weight_map": weight_map}
    (folder / INDEX_NAME).write_text(json.dumps(index, indent=1))


def save_quantized(root: nn.Module, dest, mode: str, component: str) -> None:
    """Save a module already quantized with quantize_module (adapters are not saved)."""
    state = {k: v.detach().contiguous().cpu() for k, v in root.state_dict().items()}
    save_file(state, str(dest), metadata=quant_metadata(mode, component))


# The safetensors dtype name each quantized format stores its weights as (headers carry names).
STORED_NAME = {"fp8_e4m3fn": "F8_E4M3", "int8": "I8", "nf4": "U8"}
_NAME_OF = {torch.float8_e4m3fn: "F8_E4M3", torch.int8: "I8", torch.uint8: "U8", torch.bfloat16: "BF16",
            torch.float16: "F16", torch.float32: "F32"}


def check_quant_metadata(meta: dict[str, str], where: str, component: str | None = None) -> str | None:
    """The quantization mode a file's metadata declares (None: plain weights), refused when this pack
    cannot read it or it belongs to another component."""
    mode = meta.get("mova_quant")
    if mode is None:
        return None
    if mode not in QUANTIZED_MODES or meta.get("mova_quant_version") != FORMAT_VERSION:
        raise CheckpointError(f"{where}: quantization {mode!r} version {meta.get('mova_quant_version')!r} "
                              f"is not supported (expected one of {QUANTIZED_MODES}, version "
                              f"{FORMAT_VERSION}). Re-create the file with scripts/quantize.py.")
    if mode == "nf4" and meta.get("mova_nf4_blocksize", str(NF4_BLOCK)) != str(NF4_BLOCK):
        raise CheckpointError(f"{where}: nf4 block size {meta['mova_nf4_blocksize']} (expected {NF4_BLOCK}).")
    if component and meta.get("mova_component") not in (None, component):
        raise CheckpointError(f"{where}: this is a quantized {meta['mova_component']} file, loaded as "
                              f"{component}. Pick the {component} file for this slot.")
    return mode


def check_quantized_layout(dtypes: dict[str, str], mode: str, where: str) -> None:
    """Every scaled layer's weight is stored in the format's dtype and every stored weight has its
    scale. `dtypes`: key -> safetensors dtype name (from a header or a state dict)."""
    stored = STORED_NAME[mode]
    layers = set(layers_in_state(dtypes))
    for layer in sorted(layers):
        found = dtypes.get(layer + ".weight")
        if found != stored:
            raise CheckpointError(f"{where}: {layer}.weight should be {stored} for {mode}, found "
                                  f"{found or 'nothing'}. The file is damaged or mixes formats; re-create it "
                                  "with scripts/quantize.py.")
    unscaled = [k for k, d in dtypes.items() if d == stored and k.endswith(".weight")
                and k[: -len(".weight")] not in layers]
    if unscaled:
        raise CheckpointError(f"{where}: {len(unscaled)} {mode} weight(s) have no '.weight_scale' "
                              f"(first: {unscaled[0]}). The file is incomplete; re-create it with "
                              "scripts/quantize.py.")
    if not layers:
        raise CheckpointError(f"{where}: the metadata says {mode} but no layer has a '.weight_scale'; "
                              "re-create the file with scripts/quantize.py.")


def check_quantized_state(state: dict[str, torch.Tensor], meta: dict[str, str], where: str,
                          component: str | None = None) -> str:
    """Validate a pre-quantized state dict against its metadata; returns the mode."""
    mode = check_quant_metadata(meta, where, component)
    if mode is None:
        hint = ""
        if any(k.endswith(".scale_weight") for k in state) or "scaled_fp8" in state:
            hint = " It looks like a ComfyUI/kijai 'scaled fp8' file, which this pack does not read."
        raise CheckpointError(f"{where}: holds quantized tensors but no 'mova_quant' metadata.{hint} "
                              "Expected a file written by scripts/quantize.py (or the MOVA quantize "
                              "node); re-create it from the bf16 release.")
    check_quantized_layout({k: _NAME_OF.get(t.dtype, str(t.dtype)) for k, t in state.items()}, mode, where)
    return mode


def load_quantized_into(root: nn.Module, state: dict[str, torch.Tensor], meta: dict[str, str],
                        where: str, component: str | None = None, fast_matmul: bool = False) -> str:
    """Turn the matching nn.Linear layers of `root` into quantized shells and load `state` strictly.
    Works for a module built on the meta device (tensors are assigned, not copied)."""
    mode = check_quantized_state(state, meta, where, component)
    layers = layers_in_state(state)
    missing_modules = [p for p in layers if not has_module(root, p)]
    if missing_modules:
        raise CheckpointError(f"{where}: quantized layer {missing_modules[0]} does not exist in the "
                              f"{component or 'model'}; the file is for another model.")
    make_quantized_shells(root, {p: mode for p in layers}, fast_matmul)
    result = root.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{where}: keys do not match the {component or 'model'}: "
                              f"{len(result.missing_keys)} missing (first: {result.missing_keys[:3]}), "
                              f"{len(result.unexpected_keys)} unexpected (first: {result.unexpected_keys[:3]}).")
    return mode


def has_module(root: nn.Module, path: str) -> bool:
    """`path` names a submodule of `root`."""
    try:
        root.get_submodule(path)
        return True
    except AttributeError:
        return False


__all__ = ["quant_metadata", "read_metadata", "quantize_items", "quantize_file", "save_quantized",
           "check_quant_metadata", "check_quantized_layout", "check_quantized_state", "load_quantized_into", "iter_safetensors", "DEFAULT_SKIP"]

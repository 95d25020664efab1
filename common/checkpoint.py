"""Reading safetensors checkpoints (single files or shards + index.json) with strict, readable validation.

Modules are built on the `meta` device and filled with `load_state_dict(assign=True)`, so weights are
never held twice in host RAM (mmap-backed tensors are used as they are when the dtype already matches).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Union

import torch

from .errors import CheckpointError, MovaError

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = WEIGHTS_NAME + ".index.json"
# Prefixes other tools put in front of the released key names (ComfyUI, MOVATrain state dicts).
KNOWN_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "video_dit_2.", "video_dit.", "audio_dit.",
                  "dual_tower_bridge.", "model.")
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "F8_E4M3": getattr(torch, "float8_e4m3fn", None), "F8_E5M2": getattr(torch, "float8_e5m2", None),
           "I64": torch.int64, "I32": torch.int32, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}

PathLike = Union[str, Path]


def resolve_files(source: Union[PathLike, Iterable[PathLike]], component: str = "weights") -> list:
    """A component folder, an index.json, one .safetensors file or a list of shards -> shard paths."""
    if not isinstance(source, (str, Path)):
        files = [Path(p) for p in source]
        for f in files:
            _require_file(f, component)
        return files
    path = Path(source)
    if path.is_dir():
        indexes = sorted(path.glob("*.safetensors.index.json"))
        if indexes:
            return _shards_from_index(indexes[0], component)
        single = sorted(path.glob("*.safetensors"))
        if len(single) == 1:
            return single
        raise CheckpointError(
            f"{component}: {path} holds {len(single)} .safetensors files and no *.safetensors.index.json; "
            f"expected {WEIGHTS_NAME} or shards with their index. Re-download the {component} folder.")
    if path.name.endswith(".index.json"):
        return _shards_from_index(path, component)
    _require_file(path, component)
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        raise CheckpointError(f"{component}: {path.name} is a pickle file; MOVA weights are read from "
                              ".safetensors only. Use the released diffusion_pytorch_model*.safetensors.")
    return [path]


def _require_file(path: Path, component: str):
    if not path.is_file():
        raise CheckpointError(f"{component}: file not found: {path}. Check the path or re-download it.")


def _shards_from_index(index: Path, component: str) -> list:
    from .files import clean, read_json
    try:
        weight_map = read_json(index, component)["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise KeyError("weight_map")
    except (MovaError, KeyError) as exc:
        raise CheckpointError(f"{component}: {index} is not a valid safetensors index ({clean(exc, 200)}); "
                              "re-download it.") from None
    names = sorted(set(weight_map.values()))
    missing = [n for n in names if not (index.parent / n).is_file()]
    if missing:
        raise CheckpointError(f"{component}: {len(missing)} of {len(names)} shards listed in {index.name} are "
                              f"missing: {', '.join(missing)}. The download is incomplete; fetch those files "
                              f"into {index.parent}.")
    return [index.parent / n for n in names]


def read_header(path: Path, component: str = "weights") -> dict:
    """The safetensors header {key: {dtype, shape, data_offsets}}; refuses truncated or foreign files."""
    from .files import safetensors_header
    return safetensors_header(path, component)


def strip_prefix(keys: Iterable[str]):
    """The longest known prefix that every key carries (or '')."""
    keys = list(keys)
    for prefix in KNOWN_PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            return prefix
    return ""


def guess_component(keys) -> str:
    keys = set(keys)
    if any(k.startswith("audio_to_video_conditioners.") for k in keys):
        return "a dual_tower_bridge file"
    if any("decoder.model." in k or k.startswith("encoder.block.") for k in keys):
        return "an audio VAE (DAC) file"
    if any(k.startswith(("decoder.up_blocks", "encoder.down_blocks", "decoder.upsamples")) for k in keys):
        return "a video VAE file"
    if any(k.startswith(("encoder.block.0.layer", "shared.")) for k in keys):
        return "a text encoder file"
    if any(k.startswith("img_emb") for k in keys):
        return "a Wan2.1 I2V/CLIP model (has img_emb), not a MOVA tower"
    return ""


def _shape_hint(component: str, found_shapes: dict) -> str:
    pe = found_shapes.get("patch_embedding.weight")
    if pe is None:
        return ""
    dim, in_dim = pe[0], pe[1]
    if component.startswith("video_dit"):
        if len(pe) != 5:
            return " It looks like an audio tower (audio_dit) file."
        if in_dim != 36:
            return f" It looks like a Wan video model with {in_dim}-channel input (MOVA experts take 36)."
    if component == "audio_dit" and len(pe) != 3:
        return " It looks like a video tower file."
    return f" It looks like a model with width {dim}; check that every component comes from the same release."


def validate(component: str, expected: dict, found: dict, advice: str = None):
    """Raise CheckpointError unless `found` {key: shape} equals `expected` {key: shape} exactly.
    `advice`: what to load instead (default: the released MOVA weights of `component`)."""
    missing = sorted(set(expected) - set(found), key=_natural)
    unexpected = sorted(set(found) - set(expected), key=_natural)
    wrong = [k for k in sorted(set(expected) & set(found), key=_natural) if tuple(expected[k]) != tuple(found[k])]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"missing {len(missing):,} of {len(expected):,} keys: {_few(missing)}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected):,} keys: {_few(unexpected)}")
    if wrong:
        k = wrong[0]
        parts.append(f"shape mismatch in {len(wrong):,} keys, e.g. {k} expected {list(expected[k])} "
                     f"found {list(found[k])}")
    what = guess_component(found)
    if component.lower() in what.lower():   # the right kind of file, only incomplete or another size
        what = ""
    hint = f" This looks like {what}." if what else (_shape_hint(component, found) if wrong else "")
    advice = advice or f"Load the released MOVA {component} weights (and its config.json) for this slot."
    raise CheckpointError(f"{component}: " + "; ".join(parts) + "." + hint + " " + advice)


def _few(keys, n=3):
    return ", ".join(keys[:n]) + (f", … (+{len(keys) - n} more)" if len(keys) > n else "")


def _natural(key: str):
    return [int(p) if p.isdigit() else p for p in key.split(".")]


def expected_shapes(module: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def out_of_mmap(t: torch.Tensor, mapped: torch.Tensor) -> torch.Tensor:
    """`t` (made from the safetensors-mapped `mapped`), copied when it still is the mapped CPU memory.
    Mapped tensors sit at arbitrary file offsets, where AVX-512 kernels round differently; every load
    path (resident, offloaded, streamed from disk) must give the same numbers."""
    return t.clone() if t.device.type == "cpu" and t.data_ptr() == mapped.data_ptr() else t


def read_state_dict(files: list, component: str, expected: dict, dtype: torch.dtype = None,
                    device="cpu") -> dict:
    """Validate headers of all shards against `expected`, then read them and return tensors (cast
    floats to `dtype` when given; never left in the file's mmap, see out_of_mmap)."""
    from safetensors import safe_open

    from safetensors import SafetensorError
    from .files import clean, describe

    prefix = validate_headers(files, component, expected)
    out = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt", device=str(device)) as fh:
                for key in fh.keys():
                    t = fh.get_tensor(key)
                    cast = dtype is not None and t.dtype != dtype and t.is_floating_point()
                    out[key[len(prefix):]] = out_of_mmap(t.to(dtype) if cast else t, t)
        except (SafetensorError, OSError) as exc:   # e.g. an unknown dtype or a file changed while read
            raise CheckpointError(f"{component}: {f} could not be read ({clean(exc, 160)}); it looks like "
                                  f"{describe(f)}. Re-download it.") from None
    return out


def validate_headers(files: list, component: str, expected: dict) -> str:
    """Check the shards' keys and shapes against `expected` from their headers alone (no tensor is
    read); returns the key prefix the files use (e.g. "model." or "")."""
    headers = {f: read_header(Path(f), component) for f in files}
    owner = {}
    for f, header in headers.items():
        for key in header:
            if key in owner:
                raise CheckpointError(f"{component}: key {key} appears in both {owner[key].name} and {f.name}; "
                                      "these shards belong to different downloads.")
            owner[key] = f
    prefix = strip_prefix(owner)
    found = {k[len(prefix):]: tuple(h[k]["shape"]) for f, h in headers.items() for k in h}
    validate(component, expected, found)
    return prefix


def load_into(module: torch.nn.Module, files: list, component: str, dtype: torch.dtype = None, device="cpu"):
    """Fill a module built on `meta` with the file's tensors (no second copy), then rebuild buffers."""
    sd = read_state_dict(files, component, expected_shapes(module), dtype, device)
    module.load_state_dict(sd, strict=True, assign=True)
    for sub in module.modules():
        if hasattr(sub, "rebuild_buffers"):
            sub.rebuild_buffers(torch.device(device))
    return module.requires_grad_(False).eval()


def save_component(module: torch.nn.Module, folder: PathLike, config: dict, max_shard_bytes: int = None):
    """Write config.json + weights in the released layout (sharded with an index when max_shard_bytes)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    sd = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    if not max_shard_bytes:
        save_file(sd, str(folder / WEIGHTS_NAME))
        return
    shards, current, size = [], {}, 0
    for k in sorted(sd, key=_natural):
        nbytes = sd[k].numel() * sd[k].element_size()
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[k], size = sd[k], size + nbytes
    shards.append(current)
    weight_map, stem = {}, WEIGHTS_NAME[: -len(".safetensors")]
    for i, shard in enumerate(shards, 1):
        name = f"{stem}-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name))
        weight_map.update({k: name for k in shard})
    total = sum(v.numel() * v.element_size() for v in sd.values())
    (folder / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                indent=2))

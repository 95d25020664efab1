"""Reading the files a user points the pack at, with errors that name the file, say what it looks like
and what to do. Every weight / config read in models/ and common/checkpoint.py goes through here, so no
raw SafetensorError / JSONDecodeError / UnpicklingError (with its "set weights_only=False" advice, which
must never reach a user) escapes."""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Union

from .errors import CheckpointError, ConfigError

PathLike = Union[str, Path]
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_MAX_HEADER = 100_000_000
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


def clean(text: str, limit: int = 600) -> str:
    """A message without terminal colour codes or control characters, at most `limit` characters."""
    text = _ANSI.sub("", str(text))
    text = "".join(c if c.isprintable() or c in "\n\t" else "?" for c in text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def describe(path: PathLike) -> str:
    """What the file looks like from its first bytes, for a message ("empty", "a pickle", "an HTML page")."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        return f"unreadable ({clean(exc.strerror or exc, 80)})"
    if size == 0:
        return "empty (0 bytes; an interrupted download or copy)"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the file itself (run git lfs pull or download the file)"
    if head[:2] == b"PK":
        return f"a zip archive / torch pickle ({size:,} bytes)"
    if head[:1] == b"\x80":
        return f"a Python pickle ({size:,} bytes)"
    if head.lstrip()[:1] in (b"<",):
        return "an HTML/XML page (a failed download or a login page?)"
    if head.lstrip()[:1] in (b"{", b"["):
        return f"a JSON/text file ({size:,} bytes)"
    if len(head) >= 8 and struct.unpack("<Q", head[:8])[0] < min(size, _MAX_HEADER) and head[8:9] == b"{":
        return f"a safetensors file ({size:,} bytes)"
    return f"{size:,} bytes of unknown content"


def read_json(path: PathLike, what: str = "config.json") -> dict:
    """A JSON object from `path`; ConfigError (file named, what it holds, what to do) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what}: {path} not found. Re-download the folder it belongs to.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what}: {path} is not valid JSON ({clean(exc, 120)}); it looks like "
                          f"{describe(path)}. Re-download this file.") from None
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path} ({clean(exc, 120)}).") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: {path} holds a JSON {type(data).__name__}, expected an object "
                          "({\"key\": value, ...}). Re-download this file.")
    return data


def _bad(path: Path, what: str, why: str) -> CheckpointError:
    return CheckpointError(f"{what}: {path} {why}; it looks like {describe(path)}. Expected a .safetensors "
                           "weight file: re-download it, or pick the right file for this slot.")


def safetensors_header(path: PathLike, what: str = "weights") -> dict:
    """{key: {dtype, shape, data_offsets}} of a safetensors file, checked to be a tensor table that fits
    the file; CheckpointError for empty, truncated, pickled or foreign files."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise _bad(path, what, f"is only {size} bytes, too small to be a safetensors file")
            (n,) = struct.unpack("<Q", raw)
            if n > min(size - 8, _MAX_HEADER):
                raise _bad(path, what, "has no safetensors header")
            text = fh.read(n)
    except OSError as exc:
        raise CheckpointError(f"{what}: cannot read {path} ({clean(exc, 120)}).") from None
    try:
        header = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise _bad(path, what, "has a corrupt safetensors header") from None
    if not isinstance(header, dict):
        raise _bad(path, what, "has a header that is not a tensor table")
    header.pop("__metadata__", None)
    end = 8 + n
    for key, entry in header.items():
        ok = (isinstance(entry, dict) and isinstance(entry.get("dtype"), str)
              and isinstance(entry.get("shape"), list) and all(isinstance(d, int) and d >= 0 for d in entry["shape"])
              and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
              and all(isinstance(o, int) and o >= 0 for o in entry["data_offsets"]))
        if not ok:
            raise _bad(path, what, f"has a header entry {clean(key, 60)!r} that is not a tensor description")
        end = max(end, 8 + n + entry["data_offsets"][1])
    if size < end:
        raise CheckpointError(f"{what}: {path} is truncated: its header needs {end:,} bytes but the file has "
                              f"{size:,}. The download was interrupted; delete it and download again.")
    return header


def load_safetensors(path: PathLike, what: str = "weights", device: str = "cpu") -> dict:
    """All tensors of a safetensors file (header checked first)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    safetensors_header(path, what)
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _bad(path, what, f"could not be read ({clean(exc, 160)})") from None


def torch_load(path: PathLike, what: str = "weights") -> object:
    """A .pt/.pth/.ckpt read tensors-only (weights_only=True): nothing in the file is executed."""
    import pickle

    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError,
            TypeError, ImportError) as exc:
        kind = type(exc).__name__
        why = ("refused to load: it holds Python objects other than tensors, which this pack never runs "
               "(nothing in it was executed)" if kind == "UnpicklingError" else "could not be read as a tensor file")
        raise CheckpointError(f"{what}: {path} {why}; it looks like {describe(path)}. Use a .safetensors "
                              "copy of the weights (convert the file with a trusted tool, or download the "
                              ".safetensors release).") from None


def read_weights(path: PathLike, what: str = "weights", device: str = "cpu") -> dict:
    """A state dict from a .safetensors file or (tensors only) a .pt/.pth/.ckpt file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what}: {path} not found. Check the path or re-download it.")
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        sd = torch_load(path, what)
        sd = sd.get("model_state", sd.get("state_dict", sd)) if isinstance(sd, dict) else sd
        if not isinstance(sd, dict):
            raise CheckpointError(f"{what}: {path} holds a {type(sd).__name__}, expected a dict of tensors. "
                                  "Use the released .safetensors file.")
        return sd
    return load_safetensors(path, what, device)

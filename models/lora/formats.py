"""Reading LoRA files into one neutral form (no model needed).

API
    read_lora(path, name=None) -> LoraFile       a file or folder in any supported format
    is_lora_folder(path) -> bool                 a folder read_lora reads as one LoRA (for file lists)
    parse_lora(tensors, name, metadata=None, component=None, source_format=None) -> LoraFile
                                                 an in-memory state dict
    LoraFile.summary() -> str                    "x: MOVA accelerate, lora, rank 16; 400 video high-noise, ..."
    LoraFile.adapters: {(scope, name): Adapter}  scope = "video_high" | "video_low" | "audio" | "bridge"
                                                 or "tower" (no component prefix: a video-expert LoRA or
                                                 a prefix-less DiffSynth file; resolved in models/lora/stack.py)
    Adapter.delta(shape) -> fp32 tensor          the full weight delta at strength 1 (alpha/rank applied)
    Adapter.low_rank() -> (A [r,in], B [out,r], scale) or None   for computing alongside a weight

Formats: MOVA accelerate (`lora_weights.pt` + `lora_config.pt`; alpha = rank, spec §7.6), MOVA
low-resource (`{'lora_state_dict', 'rank', 'alpha'}`, `.lora_A` without `.weight`), VideoX-Fun
per-component folders (transformer = low-noise!, transformer_2 = high-noise, transformer_audio,
dual_tower_bridge), kohya (`lora_unet_…`, `.lora_down/.lora_up/.alpha`), peft/diffusers
(`base_model.model.`, `transformer.`, `diffusion_model.`, `.default.`, `lora_A/B`), LyCORIS LoKr and
LoHa, full `.diff`/`.diff_b` (+ lightx2v `.diff_m` = modulation diff). Names stay as found (minus
wrappers); models/lora/stack.py maps them to modules.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import torch

from ...common.errors import CheckpointError

COMPONENTS = ("video_high", "video_low", "audio", "bridge")
COMPONENT_LABELS = {"video_high": "video high-noise", "video_low": "video low-noise",
                    "audio": "audio tower", "bridge": "bridge"}
TOWER = "tower"  # scope of names without a component prefix

# MOVA component prefixes (dotted or kohya-underscored) -> component. Longest first.
_MOVA_PREFIXES = (("video_dit_2", "video_low"), ("video_dit", "video_high"),
                  ("audio_dit", "audio"), ("dual_tower_bridge", "bridge"))
# VideoX-Fun names the low-noise expert "transformer" and the high-noise one "transformer_2".
VIDEOX_FOLDERS = {"transformer": "video_low", "transformer_2": "video_high",
                  "transformer_audio": "audio", "dual_tower_bridge": "bridge"}
_WRAPPERS = ("base_model.model.", "model.diffusion_model.", "diffusion_model.", "pipe.dit.",
             "lora_unet__", "lora_unet_", "lycoris_", "lora_transformer_", "unet.")

_ROLES = ("lora_A", "lora_B", "lora_down", "lora_up", "lora.down", "lora.up", "lora_linear_layer.down",
          "lora_linear_layer.up", "lora_mid", "alpha", "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b",
          "lokr_w1", "lokr_w2", "lokr_t2", "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1",
          "hada_t2", "diff_b", "diff_m", "diff", "dora_scale", "lora_magnitude_vector", "w_norm", "b_norm")
_ROLE_RE = re.compile(r"^(?P<base>.+?)[._](?P<role>" + "|".join(re.escape(r) for r in _ROLES) + r")(?:\.weight)?$")
_DOWN, _UP = {"lora_A", "lora_down", "lora.down", "lora_linear_layer.down"}, \
    {"lora_B", "lora_up", "lora.up", "lora_linear_layer.up"}
_UNSUPPORTED_ROLES = {"lora_mid", "lokr_t2", "hada_t1", "hada_t2", "dora_scale", "lora_magnitude_vector",
                      "w_norm", "b_norm"}


@dataclass(frozen=True, eq=False)
class Adapter:
    """One adapted weight. kind: lora | lokr | loha | diff. `alpha` None = scale 1 (alpha = rank)."""
    kind: str
    tensors: Mapping[str, torch.Tensor]
    alpha: Optional[float] = None

    @property
    def rank(self) -> Optional[int]:
        t = self.tensors
        if self.kind == "lora":
            return t["down"].shape[0]
        if self.kind == "loha":
            return t["hada_w1_b"].shape[0]
        if self.kind == "lokr":  # the factorized side gives the rank; both full -> no alpha scaling
            if "lokr_w1_b" in t:
                return t["lokr_w1_b"].shape[0]
            if "lokr_w2_b" in t:
                return t["lokr_w2_b"].shape[0]
        return None

    @property
    def scale(self) -> float:
        rank = self.rank
        return 1.0 if self.alpha is None or not rank else float(self.alpha) / rank

    def low_rank(self):
        """(A [r, in], B [out, r], scale) for a linear LoRA, else None (use delta())."""
        if self.kind != "lora" or self.tensors["down"].dim() != 2:
            return None
        return self.tensors["down"], self.tensors["up"], self.scale

    def delta(self, shape, device=None) -> torch.Tensor:
        """Weight delta [*shape] in fp32 at strength 1 (computed on `device`, default where the factors
        are); CheckpointError if it cannot have that shape."""
        t = {k: v.to(device=device, dtype=torch.float32) for k, v in self.tensors.items() if k != "diff_b"}
        if self.kind == "lora":
            up, down = t["up"].flatten(1), t["down"].flatten(1)
            d = up @ down
        elif self.kind == "loha":
            d = (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"])
        elif self.kind == "lokr":
            w1 = t["lokr_w1"] if "lokr_w1" in t else t["lokr_w1_a"] @ t["lokr_w1_b"]
            w2 = t["lokr_w2"] if "lokr_w2" in t else t["lokr_w2_a"] @ t["lokr_w2_b"].flatten(1)
            if w2.dim() > 2:
                w2 = w2.flatten(1)
            d = torch.kron(w1, w2)
        elif self.kind == "diff":
            d = t["diff"] if "diff" in t else torch.zeros(shape, device=device)
        else:
            raise CheckpointError(f"unknown adapter kind {self.kind!r}")
        if d.numel() != torch.Size(shape).numel():
            raise CheckpointError(f"LoRA delta has {tuple(d.shape)} elements, weight is {tuple(shape)}")
        return d.reshape(shape) * self.scale

    def bias_delta(self) -> Optional[torch.Tensor]:
        b = self.tensors.get("diff_b")
        return None if b is None else b.float()


@dataclass(frozen=True, eq=False)
class LoraFile:
    """A parsed LoRA. `notes` are human-readable facts for the report (alpha source, hints)."""
    name: str
    source_format: str
    adapters: Mapping[tuple, Adapter]
    metadata: Mapping[str, str] = field(default_factory=dict)
    raw_shapes: Mapping[str, tuple] = field(default_factory=dict)  # every key as found -> shape
    unsupported: tuple = ()               # keys we understood but cannot apply (DoRA, Tucker, ...)
    ignored: tuple = ()                   # keys that are not LoRA tensors at all
    notes: tuple = ()

    def scopes(self) -> dict:
        out = {}
        for scope, _ in self.adapters:
            out[scope] = out.get(scope, 0) + 1
        return out

    def summary(self) -> str:
        """One line for the node: format, kinds, ranks, modules per component."""
        kinds = sorted({a.kind for a in self.adapters.values()})
        ranks = sorted({a.rank for a in self.adapters.values() if a.rank})
        where = ", ".join(f"{n} {COMPONENT_LABELS.get(s, 'video (expert chosen on apply)')}"
                          for s, n in self.scopes().items())
        rank = f", rank {ranks[0]}" if len(ranks) == 1 else (f", ranks {ranks[0]}-{ranks[-1]}" if ranks else "")
        return f"{self.name}: {self.source_format}, {'/'.join(kinds) or 'no adapters'}{rank}; {where or 'nothing'}"


# ----------------------------------------------------------------------------------------------- reading

def _torch_load(path: Path):
    """Tensors only (weights_only); refusals and unreadable files get common/files.py's message."""
    from ...common.files import torch_load
    return torch_load(path, f"LoRA {path.name}")


def _read_safetensors(path: Path):
    from safetensors import safe_open

    from ...common.files import clean, safetensors_header
    safetensors_header(path, f"LoRA {path.name}")       # empty, foreign or truncated: named and explained
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"LoRA {path.name}: not a readable .safetensors file ({clean(exc, 160)}); "
                              "it may be truncated — re-download it.") from None


def _flat_tensors(obj, where: str) -> dict:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where}: expected a dict of tensors, found {type(obj).__name__}.")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{where}: expected only tensors, found non-tensor entries {bad[:5]}.")
    return dict(obj)


def read_lora(path, name: str = None) -> LoraFile:
    """Read a LoRA file or folder (see module docstring for the formats)."""
    path = Path(path)
    name = name or (path.stem if path.is_file() else path.name)
    if not path.exists():
        raise CheckpointError(f"LoRA not found: {path}. Put LoRA files into ComfyUI's models/loras folder.")
    if path.is_dir():
        return _read_folder(path, name)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        tensors, meta = _read_safetensors(path)
        folder = path.parent.name
        component = VIDEOX_FOLDERS.get(folder) if _has_no_component_prefix(tensors) else None
        meta.setdefault("_file_name", path.name)
        if component is None:
            meta.setdefault("_folder_name", folder)
        peft_cfg = path.parent / "adapter_config.json"
        alpha = _peft_alpha(peft_cfg) if peft_cfg.exists() else None
        return parse_lora(tensors, name, meta, component=component, default_alpha=alpha,
                          source_format=f"VideoX-Fun {folder}" if component else None)
    if suffix in (".pt", ".pth", ".bin", ".ckpt"):
        obj = _torch_load(path)
        return _from_torch_object(obj, path, name)
    raise CheckpointError(f"{path.name}: unsupported LoRA file type {suffix!r}; expected .safetensors "
                          "(preferred) or .pt/.pth, or a MOVA LoRA folder.")


def _from_torch_object(obj, path: Path, name: str) -> LoraFile:
    meta = {"_file_name": path.name}
    if isinstance(obj, Mapping) and "lora_state_dict" in obj:  # MOVA low-resource trainer
        sd = _flat_tensors(obj["lora_state_dict"], f"{path.name}['lora_state_dict']")
        alpha = obj.get("alpha")
        notes = (f"MOVA low-resource format: rank {obj.get('rank')}, alpha {alpha} from the file",)
        return parse_lora(sd, name, meta, default_alpha=None if alpha is None else float(alpha),
                          source_format="MOVA low-resource", notes=notes)
    sd = _flat_tensors(obj, path.name)
    if any(k.split(".")[0] in dict(_MOVA_PREFIXES) for k in sd):
        notes = ["MOVA accelerate format: alpha taken as rank (the saved lora_config.pt alpha is "
                 "hard-coded by the trainer, spec §7.6)"]
        cfg = path.parent / "lora_config.pt"
        if cfg.exists():
            c = _torch_load(cfg)
            if isinstance(c, Mapping):
                notes.append(f"lora_config.pt says rank {c.get('rank')}, alpha {c.get('alpha')} (not used)")
        return parse_lora(sd, name, meta, source_format="MOVA accelerate", notes=tuple(notes))
    return parse_lora(sd, name, meta)


def is_lora_folder(path) -> bool:
    """True for a folder read_lora() reads as one LoRA (MOVA lora_weights.pt, VideoX-Fun subfolders,
    peft adapter_model.safetensors) — for nodes that list folders next to files."""
    path = Path(path)
    return path.is_dir() and ((path / "lora_weights.pt").is_file()
                              or (path / "adapter_model.safetensors").is_file()
                              or any(any((path / f).glob("*.safetensors")) for f in VIDEOX_FOLDERS
                                     if (path / f).is_dir()))


def _read_folder(path: Path, name: str) -> LoraFile:
    if (path / "lora_weights.pt").exists():
        return _from_torch_object(_torch_load(path / "lora_weights.pt"), path / "lora_weights.pt", name)
    parts = {}
    for folder, component in VIDEOX_FOLDERS.items():
        files = sorted((path / folder).glob("*.safetensors")) if (path / folder).is_dir() else []
        if files:
            parts[component] = files[0]
    if parts:  # VideoX-Fun per-component folders: folder decides the component
        adapters, raw, unsupported, ignored, meta = {}, {}, [], [], {}
        for component, file in parts.items():
            tensors, m = _read_safetensors(file)
            sub = parse_lora(tensors, name, m, component=component)
            adapters.update(sub.adapters)
            raw.update({f"{file.parent.name}/{k}": v for k, v in sub.raw_shapes.items()})
            unsupported += list(sub.unsupported)
            ignored += list(sub.ignored)
            meta.update(m)
        return LoraFile(name, "VideoX-Fun folders", adapters, meta, raw, tuple(unsupported),
                        tuple(ignored), (f"VideoX-Fun folders: {', '.join(p.parent.name for p in parts.values())}",))
    if (path / "adapter_model.safetensors").exists():
        return read_lora(path / "adapter_model.safetensors", name)
    found = sorted(p.name for p in path.iterdir())[:10]
    raise CheckpointError(f"{path}: not a LoRA folder. Expected lora_weights.pt (MOVA), VideoX-Fun "
                          f"subfolders {sorted(VIDEOX_FOLDERS)} or adapter_model.safetensors; found {found}.")


def _peft_alpha(cfg: Path) -> Optional[float]:
    try:
        data = json.loads(cfg.read_text())
        return float(data["lora_alpha"]) if "lora_alpha" in data else None
    except (ValueError, OSError):
        return None


def _has_no_component_prefix(tensors) -> bool:
    return not any(_split_component(_strip_wrappers(k))[0] for k in tensors)


# ----------------------------------------------------------------------------------------------- parsing

def _strip_wrappers(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for w in _WRAPPERS:
            if name.startswith(w):
                name, changed = name[len(w):], True
    return name


# Two-expert single files: diffusers' Wan2.2 pipelines call the high-noise expert "transformer" and the
# low-noise one "transformer_2"; VideoX-Fun's MOVA does the opposite (and adds transformer_audio).
_TWO_EXPERT = {"videox": {"transformer": "video_low", "transformer_2": "video_high", "transformer_audio": "audio"},
               "diffusers": {"transformer": "video_high", "transformer_2": "video_low"},
               None: {"transformer_audio": "audio"}}


def _two_expert_layout(names) -> Optional[str]:
    if any(n.startswith(("transformer_audio.", "dual_tower_bridge.")) for n in names):
        return "videox"
    return "diffusers" if any(n.startswith("transformer_2.") for n in names) else None


def _split_component(name: str, layout: Optional[str] = None):
    """(component or None, rest) for MOVA / two-expert component prefixes (dotted or underscored)."""
    for prefix, component in _MOVA_PREFIXES:
        for sep in (".", "_"):
            if name.startswith(prefix + sep):
                return component, name[len(prefix) + 1:]
    for prefix, component in sorted(_TWO_EXPERT[layout].items(), key=lambda kv: -len(kv[0])):
        if name.startswith(prefix + "."):
            return component, name[len(prefix) + 1:]
    return None, name


def parse_lora(tensors: Mapping[str, torch.Tensor], name: str, metadata: Mapping[str, str] = None,
               component: str = None, default_alpha: float = None, source_format: str = None,
               notes: tuple = ()) -> LoraFile:
    """Group a flat state dict into adapters. `component` forces the scope of prefix-less names
    (used for per-component files); `default_alpha` applies where a module has no `.alpha`."""
    metadata = dict(metadata or {})
    keys = list(tensors)
    normalized = {k: k.replace(".default.weight", ".weight").removesuffix(".default") for k in keys}
    layout = _two_expert_layout(normalized.values())
    if layout:
        notes = tuple(notes) + ({"videox": "VideoX-Fun layout: transformer = low-noise, transformer_2 = high-noise",
                                 "diffusers": "diffusers Wan2.2 layout: transformer = high-noise, "
                                              "transformer_2 = low-noise"}[layout],)
    groups: dict = {}
    ignored, unsupported = [], []
    for key, norm in normalized.items():
        m = _ROLE_RE.match(norm)
        if not m:
            ignored.append(key)
            continue
        base, role = _strip_wrappers(m.group("base")), m.group("role")
        if role == "diff_m":  # lightx2v: the block's modulation table difference
            base, role = base + ".modulation", "diff"
        comp, rest = _split_component(base, layout)
        if comp is None and base.startswith("transformer."):  # diffusers single-model prefix
            rest = base[len("transformer."):]
        rest = _strip_wrappers(rest)
        scope = comp or component or TOWER
        groups.setdefault((scope, rest), {})[role] = (key, tensors[key])
    adapters = {}
    for ident, roles in groups.items():
        adapter, bad = _make_adapter(roles, default_alpha)
        if adapter is None:
            unsupported += bad
        else:
            adapters[ident] = adapter
    if not source_format:
        source_format = _guess_format(keys)
    if default_alpha is None and not any("alpha" in r for r in groups.values()) and adapters:
        notes = tuple(notes) + ("no alpha stored: scale alpha/rank = 1",)
    return LoraFile(name, source_format, adapters, metadata, {k: tuple(tensors[k].shape) for k in keys},
                    tuple(unsupported),
                    tuple(ignored), tuple(notes))


def _make_adapter(roles: dict, default_alpha):
    t = {r: v for r, (_, v) in roles.items()}
    alpha = float(t["alpha"].float().item()) if "alpha" in t else None
    alpha = None if alpha == 0 else alpha  # kohya/sd-scripts: alpha 0 means alpha = rank
    bad = [k for r, (k, _) in roles.items() if r in _UNSUPPORTED_ROLES]
    if bad:  # DoRA / Tucker cores would change the result: refuse the whole module, report it
        return None, [k for k, _ in roles.values()]
    down = next((t[r] for r in _DOWN if r in t), None)
    up = next((t[r] for r in _UP if r in t), None)
    bias = {"diff_b": t["diff_b"]} if "diff_b" in t else {}  # a bias diff may ride along any adapter
    if down is not None and up is not None:
        if alpha is None:
            alpha = default_alpha
        return Adapter("lora", {"down": down, "up": up, **bias}, alpha), []
    if any(r.startswith("lokr_") for r in t):
        w = {r: v for r, v in t.items() if r.startswith("lokr_")}
        if ("lokr_w1" in w or {"lokr_w1_a", "lokr_w1_b"} <= w.keys()) and \
                ("lokr_w2" in w or {"lokr_w2_a", "lokr_w2_b"} <= w.keys()):
            return Adapter("lokr", {**w, **bias}, alpha), []
    if {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"} <= t.keys():
        return Adapter("loha", {**{r: v for r, v in t.items() if r.startswith("hada_")}, **bias}, alpha), []
    if "diff" in t or "diff_b" in t:
        return Adapter("diff", {r: v for r, v in t.items() if r in ("diff", "diff_b")}, None), []
    return None, [k for k, _ in roles.values()]  # incomplete (e.g. up without down)


def _guess_format(keys) -> str:
    s = " ".join(keys[:200])
    if "lokr_" in s:
        return "LyCORIS LoKr"
    if "hada_" in s:
        return "LyCORIS LoHa"
    if "lora_unet_" in s or "lycoris_" in s:
        return "kohya"
    if "base_model.model." in s:
        return "peft"
    if "lora_A" in s or "lora_B" in s:
        return "peft/diffusers"
    if "lora_down" in s:
        return "kohya-style (dotted)"
    return "unknown"

"""A stack of LoRAs applied to the MOVA generator, with exact removal.

API
    LoraStrengths(video_high=1.0, video_low=1.0, audio=1.0, bridge=1.0)           frozen
    LoraEntry(lora: LoraFile, strengths=LoraStrengths(), video_expert="auto")      frozen
        video_expert decides where a LoRA WITHOUT component prefixes (community Wan2.2 files,
        prefix-less DiffSynth files) goes: "auto" (file name / title says high_noise or low_noise,
        else both experts, said in the report), "both", "high", "low", or "audio" (the audio tower).
    LoraStack(entries=()), .add(entry) -> LoraStack                                frozen
    apply_lora_stack(generator, stack, unmerged=False) -> LoraReport
        `generator` = MovaGenerator or {component: nn.Module}. Restores the base weights and applies
        `stack`; components whose part of the stack did not change are left alone (a strength
        change re-applies from the kept originals, nothing is read from disk). An empty stack (or
        strength 0) restores the base bit for bit. Float weights are merged (delta in fp32, added,
        cast back); quantized linears (`add_adapter`, kernels/quant.py) and linears inside blocks that
        carry forward pre-hooks (kernels/offload streams those from its own copies) get the LoRA
        computed alongside; `unmerged=True` computes alongside everywhere (forward hooks on Linears).
        Apply LoRAs AFTER quantizing / attaching offload (the nodes do it right before sampling).
    remove_loras(generator)              == apply_lora_stack(generator, LoraStack())
    LoraReport: .lines, .warnings, str(report) — e.g. "x: applied 480 of 480 keys to video high-noise, 0 unmatched"
    LoraMismatchError (MovaError): no module of the LoRA fits MOVA; says what it looks made for.
"""
from __future__ import annotations

import logging
import re
import weakref
from dataclasses import dataclass, field, replace
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import MovaError
from .lora_detect import expert_hint, group_prefixes, guess_family, guess_wan_size
from .lora_formats import COMPONENT_LABELS, COMPONENTS, TOWER, Adapter, LoraFile

log = logging.getLogger("mova")
VIDEO_EXPERT_CHOICES = ("auto", "both", "high", "low", "audio")
_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class LoraMismatchError(MovaError):
    """A LoRA whose keys fit no MOVA module."""


@dataclass(frozen=True)
class LoraStrengths:
    video_high: float = 1.0
    video_low: float = 1.0
    audio: float = 1.0
    bridge: float = 1.0

    def of(self, component: str) -> float:
        return float(getattr(self, component))


@dataclass(frozen=True)
class LoraEntry:
    lora: LoraFile
    strengths: LoraStrengths = LoraStrengths()
    video_expert: str = "auto"

    def __post_init__(self):
        if self.video_expert not in VIDEO_EXPERT_CHOICES:
            raise MovaError(f"video_expert must be one of {VIDEO_EXPERT_CHOICES}, got {self.video_expert!r}")


@dataclass(frozen=True)
class LoraStack:
    entries: tuple = ()

    def add(self, entry: LoraEntry) -> "LoraStack":
        return replace(self, entries=self.entries + (entry,))


@dataclass(frozen=True)
class LoraReport:
    lines: tuple = ()
    warnings: tuple = ()

    def __str__(self) -> str:
        return "\n".join(list(self.lines) + [f"warning: {w}" for w in self.warnings]) or "no LoRA applied"


# ------------------------------------------------------------------------------------- resolving names

def components_of(generator) -> dict:
    if isinstance(generator, Mapping):
        items = generator.items()
    else:
        items = ((c, getattr(generator, c, None)) for c in COMPONENTS)
    return {c: m for c, m in items if isinstance(m, nn.Module)}


_DIFFUSERS_ATTN = {"q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0"}
_DIFFUSERS_FIXED = {"text_embedding.0": "condition_embedder.text_embedder.linear_1",
                    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
                    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
                    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
                    "time_projection.1": "condition_embedder.time_proj", "head.head": "proj_out"}
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(self_attn|cross_attn|ffn)\.(\w+)$")


def _diffusers_alias(path: str):
    """The diffusers-Wan spelling of one of our module paths (spec §7.2 vs WanTransformer3DModel)."""
    if path in _DIFFUSERS_FIXED:
        return _DIFFUSERS_FIXED[path]
    m = _BLOCK_RE.match(path)
    if not m:
        return None
    n, part, leaf = m.groups()
    if part == "ffn":
        return {"0": f"blocks.{n}.ffn.net.0.proj", "2": f"blocks.{n}.ffn.net.2"}.get(leaf)
    attn = "attn1" if part == "self_attn" else "attn2"
    return f"blocks.{n}.{attn}.{_DIFFUSERS_ATTN[leaf]}" if leaf in _DIFFUSERS_ATTN else None


class _Catalog:
    """Patchable modules of one component tree and every spelling of their names."""

    def __init__(self, root: nn.Module):
        self.modules = {p: m for p, m in root.named_modules()
                        if p and (hasattr(m, "add_adapter") or isinstance(getattr(m, "weight", None), torch.Tensor))}
        # Blocks with forward pre-hooks are managed by someone else (kernels/offload streams them in
        # from its own host copy): merging there would be undone on the next load, so never merge.
        hooked = [p for p, m in root.named_modules() if m._forward_pre_hooks]
        # Bare parameters (modulation tables) can take full `.diff`s (lightx2v's `.diff_m`).
        self.params = {f"{mp}.{attr}" if mp else attr: (m, attr) for mp, m in root.named_modules()
                       for attr, p in m._parameters.items() if p is not None and attr not in ("weight", "bias")}
        self.streamed = {p for p in list(self.modules) + list(self.params)
                         if any(h == "" or p == h or p.startswith(h + ".") for h in hooked)}
        self.alias = {}
        for path in list(self.modules) + list(self.params):
            for name in filter(None, (path, _diffusers_alias(path))):
                self.alias.setdefault(name, path)
                self.alias.setdefault(name.replace(".", "_"), path)

    def find(self, name: str):
        return self.alias.get(name)

    def fits(self, path: str, adapter: Adapter) -> bool:
        if path in self.params:
            param = getattr(*self.params[path])
            d = adapter.tensors.get("diff")
            # a streamed placeholder cannot be checked; apply() skips it with a warning anyway
            return d is not None and (path in self.streamed or d.numel() == param.numel())
        return _fits(adapter, _weight_shape(self.modules[path]))


def _weight_shape(module: nn.Module) -> tuple:
    """Logical weight shape (a streamed weight may be an empty placeholder right now)."""
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return (module.out_features, module.in_features)
    return tuple(module.weight.shape)


def _mergeable(module: nn.Module, shape: tuple) -> bool:
    """A float weight that is really here (kernels/offload leaves empty placeholders in streamed blocks)."""
    w = getattr(module, "weight", None)
    return (isinstance(w, torch.Tensor) and w.dtype in _FLOAT_DTYPES and not w.is_meta
            and tuple(w.shape) == tuple(shape))


def _fits(adapter: Adapter, shape: tuple) -> bool:
    t, n_in = adapter.tensors, 1
    for s in shape[1:]:
        n_in *= s
    if adapter.kind == "lora":
        return t["up"].shape[0] == shape[0] and t["down"].flatten(1).shape[1] == n_in \
            and t["up"].flatten(1).shape[1] == t["down"].shape[0]
    if adapter.kind == "diff":
        d = t.get("diff")
        return d is None or d.numel() == shape[0] * n_in
    if adapter.kind == "loha":
        return t["hada_w1_a"].shape[0] == shape[0] and t["hada_w1_b"].flatten(1).shape[1] == n_in
    rows = lambda a, b: t[a].shape[0] if a in t else t[b].shape[0]  # noqa: E731  (lokr)
    cols = lambda a, b: t[a].flatten(1).shape[1] if a in t else t[b].flatten(1).shape[1]  # noqa: E731
    return (rows("lokr_w1", "lokr_w1_a") * rows("lokr_w2", "lokr_w2_a") == shape[0]
            and cols("lokr_w1", "lokr_w1_b") * cols("lokr_w2", "lokr_w2_b") == n_in)


@dataclass
class _EntryPlan:
    patches: dict = field(default_factory=dict)   # component -> {path: adapter}
    counts: dict = field(default_factory=dict)    # component -> [meant, applied]
    unmatched: list = field(default_factory=list)  # names that fit no module
    misfit: list = field(default_factory=list)     # (name, adapter) with a wrong shape
    notes: list = field(default_factory=list)


def _targets_for_tower(entry: LoraEntry, name: str, catalogs: dict, notes: list) -> list:
    if "bridge" in catalogs and catalogs["bridge"].find(name):
        return ["bridge"]
    choice = entry.video_expert
    if choice == "audio":
        return ["audio"]
    if choice == "auto":
        hint, why = expert_hint(entry.lora.name, entry.lora.metadata)
        choice = hint or "both"
        msg = (f"video LoRA without component prefix -> "
               f"{'both experts' if choice == 'both' else choice + '-noise expert'} ({why}"
               f"{'; choose high or low to restrict it' if choice == 'both' else ''})")
        if msg not in notes:
            notes.append(msg)
    return {"both": ["video_high", "video_low"], "high": ["video_high"], "low": ["video_low"]}[choice]


def plan_entry(entry: LoraEntry, catalogs: dict) -> _EntryPlan:
    """Map every adapter of `entry` to (component, module path); count what fits."""
    plan = _EntryPlan()
    for (scope, name), adapter in entry.lora.adapters.items():
        targets = [scope] if scope != TOWER else _targets_for_tower(entry, name, catalogs, plan.notes)
        for component in targets:
            counts = plan.counts.setdefault(component, [0, 0])
            counts[0] += 1
            catalog = catalogs.get(component)
            if catalog is None:  # e.g. the high-noise expert is not loaded: reported, not an error
                continue
            path = catalog.find(name)
            if path is None:
                plan.unmatched.append(name if scope == TOWER else f"{scope}.{name}")
            elif not catalog.fits(path, adapter):
                plan.misfit.append((name, adapter))
            else:
                plan.patches.setdefault(component, {})[path] = adapter
                counts[1] += 1
    return plan


def _mismatch_message(entry: LoraEntry, plan: _EntryPlan) -> str:
    lora = entry.lora
    n = len(lora.adapters)
    if not n:
        what = f"keys such as {list(lora.ignored[:3])}" if lora.ignored else "no tensors"
        return (f"LoRA '{lora.name}' contains no LoRA weights (found {what}); expected lora_A/lora_B, "
                "lora_down/lora_up or LoKr tensors. Is it a full model checkpoint?")
    head = f"LoRA '{lora.name}': none of its {n} adapted modules fit MOVA."
    if plan.misfit:
        name, adapter = plan.misfit[0]
        width = adapter.tensors["up"].shape[0] if adapter.kind == "lora" else None
        size = guess_wan_size(width) if width else None
        return (f"{head} Names match but shapes do not (e.g. {name}: LoRA out width {width})"
                f"{'; it looks like a LoRA for ' + size if size else ''}. MOVA's video experts are Wan2.2 "
                "I2V-A14B (width 5120), the audio tower width 1536 — use a LoRA made for those.")
    family = guess_family(lora.raw_shapes, lora.raw_shapes)
    looks = f" It looks like a LoRA for {family[0]} (e.g. key '{family[1]}')." if family else ""
    return (f"{head}{looks} MOVA takes Wan2.2 I2V-A14B video LoRAs and MOVA's own LoRAs (video_dit, "
            f"video_dit_2, audio_dit, dual_tower_bridge). Unmatched names: {group_prefixes(plan.unmatched, 4)}")


# ------------------------------------------------------------------------------------- applying

def _merged(original: torch.Tensor, deltas) -> torch.Tensor:
    w = original.to(torch.float32, copy=True)
    for delta in deltas:
        w += delta.to(w.device)
    return w.to(original.dtype)


class _TreeState:
    """What is applied to one component tree, and the untouched originals to go back to."""

    def __init__(self):
        self.key = ()
        self.keep = ()          # the LoraFiles of `key` (keeps their ids valid)
        self.mode = ""          # merged / alongside of what is applied
        self.originals = []     # (module, attr, param, original tensor)
        self.adapters = []      # (module, adapter module) added through add_adapter
        self.hooks = []
        self.skipped = []       # paths that could be neither merged nor computed alongside

    def restore(self):
        for module, attr, param, original in reversed(self.originals):
            if getattr(module, attr) is not param:
                log.warning("MOVA LoRA: %s was replaced since the LoRA was merged; not restored", attr)
                continue
            param.data = original if original.device == param.device else original.to(param.device)
        for module, adapter in self.adapters:
            module.adapters = nn.ModuleList([a for a in module.adapters if a is not adapter])
        for hook in self.hooks:
            hook.remove()
        self.originals, self.adapters, self.hooks, self.skipped = [], [], [], []
        self.key, self.keep, self.mode = (), (), ""

    def apply(self, catalog: "_Catalog", patches: dict, unmerged: bool) -> str:
        """patches: {path: [(adapter, strength)]}. Returns "merged" / "alongside" / "merged+alongside".
        Streamed (offloaded) and quantized weights get the LoRA alongside; float weights are merged."""
        modes, streamed = set(), catalog.streamed
        for path, items in patches.items():
            if path in catalog.params:  # a bare parameter: only a merged full diff is possible
                owner, attr = catalog.params[path]
                if path in streamed or getattr(owner, attr).dtype not in _FLOAT_DTYPES:
                    self.skipped.append(path)
                    continue
                self._merge(owner, attr, [a.delta(getattr(owner, attr).shape) * s for a, s in items])
                modes.add("merged")
                continue
            module = catalog.modules[path]
            if hasattr(module, "add_adapter"):
                for adapter, strength in items:
                    self._add_alongside(module, adapter, strength)
                bias = [a.bias_delta() * s for a, s in items if a.bias_delta() is not None]
                if bias and module.bias is not None:  # quantized layers keep a float bias: merge it
                    self._merge(module, "bias", bias)
                modes.add("alongside")
            elif (not _mergeable(module, _weight_shape(module)) or path in streamed
                  or (unmerged and not _calls_weight_directly(path))):
                if not hasattr(module, "in_features"):  # e.g. a norm `.diff` inside a streamed block
                    self.skipped.append(path)
                    continue
                self.hooks.append(module.register_forward_hook(_alongside_hook(module, items)))
                modes.add("alongside")
            else:
                self._merge(module, "weight", [a.delta(module.weight.shape) * s for a, s in items])
                bias = [(a.bias_delta(), s) for a, s in items if a.bias_delta() is not None]
                if bias and module.bias is not None:
                    self._merge(module, "bias", [b * s for b, s in bias])
                modes.add("merged")
        return "+".join(sorted(modes, reverse=True))

    def _merge(self, module, attr, deltas):
        param = getattr(module, attr)
        original = param.data
        keep = original if original.device.type == "cpu" else original.to("cpu")  # spare GPU memory
        self.originals.append((module, attr, param, keep))
        param.data = _merged(original, deltas)

    def _add_alongside(self, module, adapter: Adapter, strength: float):
        low = adapter.low_rank()
        if low is not None:
            a, b, scale = low
            added = module.add_adapter(a, b, scale * strength)
        else:  # LoKr / LoHa / diff: the dense delta as a rank-min(out, in) product
            d = adapter.delta((module.out_features, module.in_features))
            if d.shape[0] <= d.shape[1]:
                added = module.add_adapter(d, torch.eye(d.shape[0]), strength)
            else:
                added = module.add_adapter(torch.eye(d.shape[1]), d, strength)
        self.adapters.append((module, added))


def _calls_weight_directly(path: str) -> bool:
    """The towers run their time MLPs with F.linear on the weight (fp32), bypassing hooks: merge those."""
    return path.split(".")[0] in ("time_embedding", "time_projection")


def _alongside_hook(module: nn.Module, items):
    device = module.weight.device
    factors, bias = [], None
    for adapter, strength in items:
        low = adapter.low_rank()
        if low is not None:
            factors.append((low[0].to(device), low[1].to(device), low[2] * strength))
        else:
            factors.append((adapter.delta(_weight_shape(module)).to(device), None, strength))
        b = adapter.bias_delta()
        if b is not None:
            bias = (0 if bias is None else bias) + b.to(device) * strength

    def hook(mod, args, out):
        x = args[0]
        for a, b, scale in factors:
            y = F.linear(x, a.to(x.dtype))
            out = out + (F.linear(y, b.to(x.dtype)) if b is not None else y) * scale
        return out if bias is None else out + bias.to(out.dtype)
    return hook


_STATES: "weakref.WeakKeyDictionary[nn.Module, _TreeState]" = weakref.WeakKeyDictionary()


def apply_lora_stack(generator, stack: LoraStack, unmerged: bool = False) -> LoraReport:
    components = components_of(generator)
    catalogs = {c: _Catalog(m) for c, m in components.items()}
    lines, warnings = [], []
    desired = {c: {} for c in components}      # component -> {path: [(adapter, strength)]}
    keys = {c: [] for c in components}
    for entry in stack.entries:
        plan = plan_entry(entry, catalogs)
        lora = entry.lora
        if not lora.adapters or (not plan.patches and (plan.unmatched or plan.misfit)):
            raise LoraMismatchError(_mismatch_message(entry, plan))
        lines.append(f"{lora.name} ({lora.source_format}): " + "; ".join(list(lora.notes) + plan.notes))
        for component in COMPONENTS:
            if component not in plan.counts:
                continue
            meant, applied = plan.counts[component]
            strength = entry.strengths.of(component)
            label = COMPONENT_LABELS[component]
            if component not in components:
                lines.append(f"{lora.name}: {meant} keys for {label}, which is not loaded")
            elif strength == 0:
                lines.append(f"{lora.name}: strength 0 for {label}, {applied} keys not applied")
            else:
                lines.append(f"{lora.name}: applied {applied} of {meant} keys to {label}, "
                             f"{meant - applied} unmatched (strength {strength:g})")
                for path, adapter in plan.patches.get(component, {}).items():
                    desired[component].setdefault(path, []).append((adapter, strength))
                keys[component].append((id(lora), entry.video_expert, strength))
        if plan.unmatched:
            family = guess_family(plan.unmatched)
            warnings.append(f"{lora.name}: {len(plan.unmatched)} keys fit no MOVA module and were skipped: "
                            f"{group_prefixes(plan.unmatched)}"
                            + (f" (looks like {family[0]})" if family else ""))
        if plan.misfit:
            warnings.append(f"{lora.name}: {len(plan.misfit)} keys have shapes that do not fit and were "
                            f"skipped: {group_prefixes(n for n, _ in plan.misfit)}")
        if lora.unsupported:
            warnings.append(f"{lora.name}: {len(lora.unsupported)} keys use features not supported here "
                            f"(DoRA / Tucker) and were skipped: {group_prefixes(lora.unsupported, 4)}")
    loras = tuple(e.lora for e in stack.entries)
    for component, module in components.items():
        state = _STATES.setdefault(module, _TreeState())
        key = (unmerged, tuple(keys[component]))
        if key != state.key:
            state.restore()
            if desired[component]:
                state.mode = state.apply(catalogs[component], desired[component], unmerged)
            state.key, state.keep = key, loras
        if desired[component]:
            lines.append(f"{COMPONENT_LABELS[component]}: {len(desired[component]) - len(state.skipped)} "
                         f"modules patched ({state.mode})")
        if state.skipped:
            warnings.append(f"{COMPONENT_LABELS[component]}: {len(state.skipped)} non-linear weights "
                            f"(norms, modulation) are streamed by offload or not float and were left "
                            f"without their LoRA diff: {group_prefixes(state.skipped)}")
    for line in lines:
        log.info("MOVA LoRA: %s", line)
    for w in warnings:
        log.warning("MOVA LoRA: %s", w)
    return LoraReport(tuple(lines), tuple(warnings))


def remove_loras(generator) -> None:
    apply_lora_stack(generator, LoraStack())

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
        strength 0) restores the base bit for bit. How each weight takes its LoRA (merged /
        alongside / per forward) is in models/lora/apply.py: float weights are merged; quantized
        linears and trees streamed by kernels/offload get it computed alongside, never merged;
        `unmerged=True` computes alongside everywhere. Call it AFTER quantizing / attaching offload
        (the nodes do it right before sampling).
    remove_loras(generator)              == apply_lora_stack(generator, LoraStack())
    LoraReport: .lines, .warnings, str(report) — e.g. "x: applied 480 of 480 keys to video high-noise, 0 unmatched"
    LoraMismatchError (MovaError, from lora_apply): no module of the LoRA fits MOVA; says what it
        looks made for.
"""
from __future__ import annotations

import logging
import re
import weakref
from dataclasses import dataclass, field, replace
from typing import Mapping

import torch
import torch.nn as nn

from ...common.errors import MovaError
from .apply import LoraMismatchError, TreeState, is_managed, weight_shape
from .detect import expert_hint, group_prefixes, guess_family, guess_wan_size
from .formats import COMPONENT_LABELS, COMPONENTS, TOWER, Adapter, LoraFile

log = logging.getLogger("mova")
VIDEO_EXPERT_CHOICES = ("auto", "both", "high", "low", "audio")


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
        # Bare parameters (modulation tables) can take full `.diff`s (lightx2v's `.diff_m`).
        self.params = {f"{mp}.{attr}" if mp else attr: (m, attr) for mp, m in root.named_modules()
                       for attr, p in m._parameters.items() if p is not None and attr not in ("weight", "bias")}
        self.managed = is_managed(root)  # kernels/offload streams this tree: never merge (lora_apply.py)
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
            # a streamed placeholder cannot be checked now; the per-forward patch checks it on load
            return d is not None and (param.numel() == 0 or d.numel() == param.numel())
        return _fits(adapter, weight_shape(self.modules[path]))


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

_STATES: "weakref.WeakKeyDictionary[nn.Module, TreeState]" = weakref.WeakKeyDictionary()


def _plan_stack(generator, stack: LoraStack):
    """What the stack would patch, and the report lines, without touching any weight."""
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
    return components, catalogs, lines, warnings, desired, keys


def lora_report(generator, stack: LoraStack, unmerged: bool = False) -> LoraReport:
    """The report of `stack` on `generator` (matched keys per component, how they will be applied,
    skipped keys, hints) without applying it: the LoRA node shows it, the sampler applies the stack
    once (apply_lora_stack). A LoRA that fits nothing raises LoraMismatchError here, on its node."""
    components, catalogs, lines, warnings, desired, _ = _plan_stack(generator, stack)
    for component in components:
        if desired[component]:
            cat = catalogs[component]
            mode = TreeState.planned_modes(cat.modules, cat.params, desired[component], cat.managed, unmerged)
            lines.append(f"{COMPONENT_LABELS[component]}: {len(desired[component])} modules to patch ({mode})")
    return LoraReport(tuple(lines), tuple(warnings))


def apply_lora_stack(generator, stack: LoraStack, unmerged: bool = False) -> LoraReport:
    """Make the generator's weights those of `stack` (restoring whatever an earlier stack changed)."""
    components, catalogs, lines, warnings, desired, keys = _plan_stack(generator, stack)
    loras = tuple(e.lora for e in stack.entries)
    for component, module in components.items():
        state = _STATES.setdefault(module, TreeState())
        key = (unmerged, tuple(keys[component]))
        if key != state.key:
            state.restore()
            if desired[component]:
                cat = catalogs[component]
                state.mode = state.apply(cat.modules, cat.params, desired[component], cat.managed, unmerged)
            state.key, state.keep = key, loras
        if desired[component]:
            lines.append(f"{COMPONENT_LABELS[component]}: {len(desired[component]) - len(state.skipped)} "
                         f"modules patched ({state.mode})")
        if state.skipped:
            warnings.append(f"{COMPONENT_LABELS[component]}: {len(state.skipped)} weights could not take "
                            f"their LoRA (not float, or time MLPs under offload): {group_prefixes(state.skipped)}")
    for line in lines:
        log.info("MOVA LoRA: %s", line)
    for w in warnings:
        log.warning("MOVA LoRA: %s", w)
    return LoraReport(tuple(lines), tuple(warnings))


def remove_loras(generator) -> None:
    apply_lora_stack(generator, LoraStack())

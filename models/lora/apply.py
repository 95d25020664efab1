"""How a LoRA delta gets into one component tree, and how it comes out again exactly (used by lora.py).

Per target, one of:
  merged      float weight, tree not managed by offload: W = cast(W.float() + Σ s·ΔW); the untouched
              original tensor is kept (on CPU) and put back on restore -> bit-identical base.
  alongside   quantized linear (`add_adapter`, kernels/quant.py) or any linear in a managed tree /
              with unmerged=True: y += s·(x Aᵀ)Bᵀ (dense ΔW for LoKr/LoHa) next to the layer.
  per forward small non-linear weights (norms, modulation tables, biases) in a managed tree: the diff
              is added after the offload engine loaded the block and taken out before it evicts.
  skipped     nothing above applies (e.g. time MLPs, whose weights the towers read directly, in a
              managed tree); reported as a warning.
A tree is "managed" when any of its modules carries a forward pre-hook that is not ours: that is how
kernels/offload streams blocks and keeps its own host copies, which would undo a merge on reload.
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...common.errors import MovaError
from .formats import Adapter

log = logging.getLogger("mova")
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class LoraMismatchError(MovaError):
    """A LoRA whose keys fit no MOVA module (or whose diff does not fit the weight)."""


def weight_shape(module: nn.Module) -> tuple:
    """Logical weight shape (a streamed weight may be an empty placeholder right now)."""
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return (module.out_features, module.in_features)
    if isinstance(getattr(module, "normalized_shape", None), tuple):  # LayerNorm / RMSNorm
        return tuple(module.normalized_shape)
    return tuple(module.weight.shape)


def _float_weight(module: nn.Module) -> bool:
    w = getattr(module, "weight", None)
    return isinstance(w, torch.Tensor) and w.dtype in FLOAT_DTYPES and not w.is_meta


def _reads_weight_directly(path: str) -> bool:
    """The towers run their time MLPs with F.linear on the weights (fp32): no module hook fires there."""
    return path.split(".")[0] in ("time_embedding", "time_projection")


MANAGED_MARK = "mova_streamed"   # set on a tower by runtime/offload.py while it streams the tower's weights


def is_managed(root: nn.Module) -> bool:
    """The offload engine streams this tree (it marks the towers it manages): never merge into it."""
    return bool(getattr(root, MANAGED_MARK, False))


def merged(original: torch.Tensor, deltas) -> torch.Tensor:
    w = original.to(torch.float32, copy=True)
    for delta in deltas:
        w += delta.to(w.device)
    return w.to(original.dtype)


class PatchDuringForward:
    """Adds the diff after the offload engine loaded the module's block (our pre-hook is registered
    after the engine's) and puts the loaded tensor back before the engine evicts (our post-hook first)."""

    def __init__(self, module: nn.Module, attr: str, deltas: list):
        self.module, self.attr, self.deltas = module, attr, deltas
        self.loaded = self.patched = None
        pre = module.register_forward_pre_hook(self._pre)
        self.handles = [pre, module.register_forward_hook(self._post, prepend=True)]

    def _is_patched(self, param) -> bool:
        return self.patched is not None and param.data_ptr() == self.patched.data_ptr()

    def _pre(self, module, args):
        param = getattr(module, self.attr)
        if self._is_patched(param):  # an interrupted forward left it patched: do not add twice
            return
        if any(d.shape != param.shape for d in self.deltas):  # could not be checked while streamed
            raise LoraMismatchError(f"LoRA diff for {self.attr} of {type(module).__name__} has shape "
                                    f"{tuple(self.deltas[0].shape)}, the weight {tuple(param.shape)}; "
                                    "the LoRA was made for another model — remove it.")
        self.loaded = param.data
        self.patched = merged(self.loaded, self.deltas)
        param.data = self.patched

    def _post(self, module, args, out):
        self._unpatch()

    def _unpatch(self):
        param = getattr(self.module, self.attr)
        if self._is_patched(param):
            param.data = self.loaded
        self.loaded = self.patched = None

    def remove(self):
        self._unpatch()
        for h in self.handles:
            h.remove()


def _alongside_hook(module: nn.Module, items):
    device = module.weight.device
    factors, bias = [], None
    for adapter, strength in items:
        low = adapter.low_rank()
        if low is not None:
            factors.append((low[0].to(device), low[1].to(device), low[2] * strength))
        elif adapter.kind != "diff" or "diff" in adapter.tensors:
            factors.append((adapter.delta(weight_shape(module)).to(device), None, strength))
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


def _weight_deltas(items, shape, device=None):
    return [a.delta(shape, device) * s for a, s in items if a.kind != "diff" or "diff" in a.tensors]


def _bias_deltas(items):
    return [a.bias_delta() * s for a, s in items if a.bias_delta() is not None]


class TreeState:
    """What is applied to one component tree, and the untouched originals to go back to."""

    def __init__(self):
        self.key, self.keep, self.mode = (), (), ""   # keep: the LoraFiles of `key` (ids stay valid)
        self.originals = []     # (module, attr, param, original tensor)
        self.adapters = []      # (module, adapter module) added through add_adapter
        self.hooks = []         # removable handles / PatchDuringForward
        self.skipped = []       # paths that could be patched in no way

    def restore(self):
        for module, attr, param, original in reversed(self.originals):
            if getattr(module, attr) is not param:
                log.warning("MOVA LoRA: %s was replaced since the LoRA was merged; not restored", attr)
                continue
            param.data = original if original.device == param.device else original.to(param.device)
        for module, adapter in self.adapters:
            module.adapters = nn.ModuleList([a for a in module.adapters if a is not adapter])
        for hook in reversed(self.hooks):
            hook.remove()
        self.originals, self.adapters, self.hooks, self.skipped = [], [], [], []
        self.key, self.keep, self.mode = (), (), ""

    def apply(self, modules: dict, params: dict, patches: dict, managed: bool, unmerged: bool) -> str:
        """patches {path: [(adapter, strength)]} -> the modes used, e.g. "merged+alongside"."""
        modes = set()
        for path, items in patches.items():
            if path in params:
                owner, attr = params[path]
                modes.add(self._small(path, owner, attr, _weight_deltas(items, _diff_shape(items)), managed))
                continue
            module = modules[path]
            bias = _bias_deltas(items)
            if hasattr(module, "add_adapter"):  # quantized linear
                for adapter, strength in items:
                    self._add_alongside(module, adapter, strength)
                if bias and module.bias is not None:
                    self._small(path, module, "bias", bias, managed)
                modes.add("alongside")
            elif _reads_weight_directly(path):
                modes.add(self._small(path, module, "weight", _weight_deltas(items, weight_shape(module)),
                                      managed, merge_only=True))
                if bias and module.bias is not None:
                    self._small(path, module, "bias", bias, managed, merge_only=True)
            elif hasattr(module, "in_features") and (managed or unmerged or not _float_weight(module)):
                self.hooks.append(module.register_forward_hook(_alongside_hook(module, items)))
                modes.add("alongside")
            else:  # the product on the weight's device (a GPU does 400 of them in no time)
                shape, device = weight_shape(module), module.weight.device
                deltas = _weight_deltas(items, shape, None if device.type == "meta" else device)
                modes.add(self._small(path, module, "weight", deltas, managed))
                if bias and module.bias is not None:
                    self._small(path, module, "bias", bias, managed)
        modes.discard("skipped")
        return "+".join(sorted(modes, reverse=True))

    @staticmethod
    def planned_modes(modules: dict, params: dict, patches: dict, managed: bool, unmerged: bool) -> str:
        """The modes `apply` would use for `patches`, without touching anything (the LoRA node's report)."""
        modes = set()
        for path in patches:
            if path in params:
                modes.add("patched per forward" if managed else "merged")
                continue
            module = modules[path]
            if hasattr(module, "add_adapter"):
                modes.add("alongside")
            elif _reads_weight_directly(path):
                modes.add("skipped" if managed else "merged")
            elif hasattr(module, "in_features") and (managed or unmerged or not _float_weight(module)):
                modes.add("alongside")
            else:
                modes.add("patched per forward" if managed else "merged")
        modes.discard("skipped")
        return "+".join(sorted(modes, reverse=True))

    def _small(self, path, owner, attr, deltas, managed, merge_only=False) -> str:
        """Merge (unmanaged tree) or patch per forward (managed tree) one float tensor."""
        if not deltas:
            return "merged"
        param = getattr(owner, attr)
        if param.dtype not in FLOAT_DTYPES or (managed and merge_only):
            self.skipped.append(path)
            return "skipped"
        if managed:
            self.hooks.append(PatchDuringForward(owner, attr, deltas))
            return "patched per forward"
        original = param.data
        keep = original if original.device.type == "cpu" else original.to("cpu")  # spare GPU memory
        self.originals.append((owner, attr, param, keep))
        param.data = merged(original, deltas)
        return "merged"

    def _add_alongside(self, module, adapter: Adapter, strength: float):
        low = adapter.low_rank()
        if low is not None:
            a, b, scale = low
            added = module.add_adapter(a, b, scale * strength)
        elif adapter.kind == "diff" and "diff" not in adapter.tensors:
            return  # bias-only
        else:  # LoKr / LoHa / diff: the dense delta as a rank-min(out, in) product
            d = adapter.delta((module.out_features, module.in_features))
            if d.shape[0] <= d.shape[1]:
                added = module.add_adapter(d, torch.eye(d.shape[0]), strength)
            else:
                added = module.add_adapter(torch.eye(d.shape[1]), d, strength)
        self.adapters.append((module, added))


def _diff_shape(items) -> tuple:
    return tuple(items[0][0].tensors["diff"].shape)

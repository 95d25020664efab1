"""Weight streaming: keep a few swap units on the compute device, bring the others in when used.

Swap unit i = {video.blocks[i], audio.blocks[i], bridge a2v[i], bridge v2a[i]} for the bridged
layers, then the remaining video blocks alone (spec §11.5). Tower "stems" (embeddings, heads) stay on
the device while their tower set is active. Units live in (pinned) CPU memory, or are read straight
from the mmap'd safetensors file when used (storage "disk": host RAM holds only the unit in flight).

Everything runs from forward pre/post hooks on the unit members, so models/net/joint.py is unchanged.
Tensors keep their Parameter objects: evicted ones point at an empty placeholder on the device.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from safetensors import safe_open
from torch import nn

from ..common.checkpoint import out_of_mmap
from ..common.errors import CheckpointError
from ..kernels.device import module_bytes
from ..models.lora.apply import MANAGED_MARK

log = logging.getLogger("mova")
STORAGES = ("cpu_pinned", "disk")
_DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float8_e4m3fn: "F8_E4M3",
                torch.int8: "I8", torch.uint8: "U8", torch.int64: "I64", torch.float64: "F64"}


@dataclass(frozen=True)
class OffloadSettings:
    resident_units: int = 0       # units kept on the compute device; -1 = all (nothing streamed)
    storage: str = "cpu_pinned"   # cpu_pinned | disk
    prefetch: bool = True         # CUDA only: copy unit i+1 on a side stream while unit i computes

    def __post_init__(self):
        if self.storage not in STORAGES:
            raise ValueError(f"offload storage must be one of {STORAGES}, got {self.storage!r}")
        if self.resident_units < -1:
            raise ValueError(f"resident_units must be >= -1, got {self.resident_units}")


def transfer_mode(device_type: str, settings: OffloadSettings) -> tuple[bool, bool]:
    """(pin the host copies, prefetch on a side CUDA stream). Both only help CUDA copies: pinned pages
    let a copy run asynchronously, and a side stream overlaps unit i+1's copy with unit i's compute.
    From storage "disk" the source is pageable mmap, so pinning does not apply."""
    cuda = device_type == "cuda"
    return cuda and settings.storage == "cpu_pinned", cuda and settings.prefetch


class _Slot:
    """One parameter/buffer: where its bytes live while evicted and how to bring them back."""
    __slots__ = ("module", "name", "is_param", "host", "file", "key", "placeholder", "nbytes")

    def __init__(self, module, name, is_param):
        self.module, self.name, self.is_param = module, name, is_param
        self.host = self.file = self.key = self.placeholder = None
        self.nbytes = 0

    @property
    def tensor(self) -> torch.Tensor:
        return (self.module._parameters if self.is_param else self.module._buffers)[self.name]

    def put(self, t: torch.Tensor) -> None:
        cur = self.tensor
        if cur.device == t.device and not cur.is_meta:
            cur.data = t
        elif self.is_param:
            self.module._parameters[self.name] = nn.Parameter(t, requires_grad=False)
        else:
            self.module._buffers[self.name] = t

    def fetch(self, device, non_blocking=False) -> torch.Tensor:
        if self.host is not None:
            return self.host.to(device, dtype=self.placeholder.dtype, non_blocking=non_blocking)
        src = self.file.get_tensor(self.key)
        return out_of_mmap(src.to(device, dtype=self.placeholder.dtype, non_blocking=non_blocking), src)


class _Group:
    """The tensors of one module (a block, a conditioner, or a tower stem)."""

    def __init__(self, name: str, slots: list):
        self.name, self.slots, self.loaded = name, slots, False
        self.nbytes = sum(s.nbytes for s in slots)


def _slots(module: nn.Module, skip_children=()) -> list[tuple[str, _Slot]]:
    out = []
    for path, sub in module.named_modules():
        if any(path == c or path.startswith(c + ".") for c in skip_children):
            continue
        if path == "adapters" or path.endswith(".adapters") or ".adapters." in f".{path}.":
            continue  # LoRA adapters come and go after set-up; they stay where add_adapter put them
        for name, p in sub._parameters.items():
            if p is not None:
                out.append((f"{path}.{name}" if path else name, _Slot(sub, name, True)))
        for name, b in sub._buffers.items():
            if b is not None:
                out.append((f"{path}.{name}" if path else name, _Slot(sub, name, False)))
    return out


class _Files:
    """The opened (mmap'd) safetensors files of one component: module key -> (handle, file key)."""

    def __init__(self, paths):
        from ..common.checkpoint import strip_prefix
        self.index: dict[str, tuple] = {}
        handles = [safe_open(str(p), framework="pt") for p in paths or ()]
        prefix = strip_prefix([k for h in handles for k in h.keys()])
        for h in handles:
            for k in h.keys():
                self.index[k[len(prefix):]] = (h, k)


class OffloadEngine:
    """Streams the blocks of (video experts, audio tower, bridge). `video` may be one tower or a dict
    {name: expert}; `files` maps component names ("video_dit", "video_dit_2", "audio_dit",
    "dual_tower_bridge", or the dict keys) to their safetensors paths for storage "disk"."""

    def __init__(self, video, audio: nn.Module, bridge: nn.Module, settings: OffloadSettings,
                 device="cpu", files: dict | None = None):
        self.settings, self.device = settings, torch.device(device)
        self.experts = dict(video) if isinstance(video, dict) else {"video_dit": video}
        self.active = next(iter(self.experts))
        self._hooks, self._pending, self._warned = [], {}, set()
        self._pin, side_stream = transfer_mode(self.device.type, settings)
        self._stream = torch.cuda.Stream(self.device) if side_stream else None
        files = files or {}
        if settings.storage == "disk" and not files:
            raise ValueError("storage 'disk' needs the safetensors paths of each component (files=...)")
        towers = {**self.experts, "audio_dit": audio, "dual_tower_bridge": bridge}
        self._files = {n: _Files(files.get(n)) for n in towers}
        self.shared = len(audio.blocks)
        self.stems, self.blocks = {}, {}
        for name, tower in towers.items():
            for m in tower.modules():   # modules built on meta rebuild their non-persistent buffers
                if hasattr(m, "rebuild_buffers") and any(b.is_meta for b in m.buffers(recurse=False)):
                    m.rebuild_buffers()
            if tower is bridge:
                self.stems[name] = self._group(name, "", tower, ("audio_to_video_conditioners",
                                                                  "video_to_audio_conditioners"))
                for d in ("audio_to_video_conditioners", "video_to_audio_conditioners"):
                    for i, m in getattr(bridge, d).items():
                        self.blocks[(name, d, int(i))] = self._group(name, f"{d}.{i}", m)
            else:
                self.stems[name] = self._group(name, "", tower, ("blocks",))
                for i, m in enumerate(tower.blocks):
                    self.blocks[(name, "blocks", i)] = self._group(name, f"blocks.{i}", m)
        self.num_units = max(len(t.blocks) for t in self.experts.values())
        self._towers = towers
        for tower in towers.values():   # LoRA (models/lora/apply.is_managed) patches these during forward
            setattr(tower, MANAGED_MARK, True)
        self._install_hooks()
        self.to()

    # ---- set-up -------------------------------------------------------------------------------
    def _group(self, component: str, prefix: str, module: nn.Module, skip=()) -> _Group:
        files = self._files[component]
        slots, mismatched = [], []
        for rel, slot in _slots(module, skip):
            key = f"{prefix}.{rel}" if prefix else rel
            cur = slot.tensor
            persistent = slot.is_param or slot.name not in slot.module._non_persistent_buffers_set
            entry = files.index.get(key) if self.settings.storage == "disk" and persistent else None
            if entry is not None:
                handle, file_key = entry
                shape = tuple(handle.get_slice(file_key).get_shape())
                if shape != tuple(cur.shape):
                    raise CheckpointError(f"{component}: {key} has shape {shape} in the file but "
                                          f"{tuple(cur.shape)} in the model; the file is for another model "
                                          "or quantization. Use the file the model was loaded from.")
                slot.file, slot.key = handle, file_key
                stored = handle.get_slice(file_key).get_dtype()
                if _DTYPE_NAMES.get(cur.dtype) != stored:
                    mismatched.append(f"{key} ({stored} -> {cur.dtype})")
            elif cur.is_meta:
                raise CheckpointError(f"{component}: {key} is neither loaded nor in the streamed files; "
                                      "pass the component's safetensors files to the offload engine.")
            else:
                host = cur.detach().to("cpu")
                slot.host = host.pin_memory() if self._pin else host
            slot.placeholder = torch.empty(0, dtype=cur.dtype, device=self.device)
            slot.nbytes = cur.numel() * cur.element_size()
            slot.put(slot.placeholder)
            slots.append(slot)
        if mismatched and component not in self._warned:  # legal, but each load then makes a private copy
            self._warned.add(component)
            log.warning("mova offload: %s streams %d tensor(s) of another dtype, cast on each load, e.g. %s; "
                        "build the module in the file's dtype to stream zero-copy", component, len(mismatched),
                        mismatched[0])
        group = _Group(f"{component}.{prefix}" if prefix else component, slots)
        group.loaded = False
        return group

    def _install_hooks(self):
        # Stems get no hooks: the towers read some stem weights directly (fp32 time MLPs), so stems
        # stay on the device from to() until release().
        for key in self.blocks:
            module = self._module(key)
            self._hooks.append(module.register_forward_pre_hook(lambda *_, k=key: self._enter(k)))
            if self._is_last(key):
                self._hooks.append(module.register_forward_hook(lambda *_, k=key: self._exit(k[2])))

    def _module(self, key):
        comp, kind, i = key
        tower = self._towers[comp]
        return tower.blocks[i] if kind == "blocks" else getattr(tower, kind)[str(i)]

    def _is_last(self, key) -> bool:
        comp, kind, i = key
        if comp == "audio_dit":
            return True
        return comp in self.experts and i >= self.shared

    # ---- which groups make a unit ------------------------------------------------------------
    def unit(self, i: int, expert: str | None = None) -> list[_Group]:
        expert = expert or self.active
        keys = [("dual_tower_bridge", "audio_to_video_conditioners", i),
                ("dual_tower_bridge", "video_to_audio_conditioners", i),
                (expert, "blocks", i), ("audio_dit", "blocks", i)]
        return [self.blocks[k] for k in keys if k in self.blocks]

    def is_resident(self, i: int) -> bool:
        """Unit i stays on the compute device between forwards (not streamed)."""
        r = self.settings.resident_units
        return r < 0 or i < r

    # ---- moving bytes -----------------------------------------------------------------------
    def _load(self, g: _Group, non_blocking=False):
        if not g.loaded:
            for s in g.slots:
                s.put(s.fetch(self.device, non_blocking))
            g.loaded = True

    def _evict(self, g: _Group):
        if g.loaded:
            for s in g.slots:
                s.put(s.placeholder)
            g.loaded = False

    def _prefetch(self, i: int):
        """CUDA: start copying unit i on the side stream; elsewhere a no-op (loads happen on use).
        Overlap needs pinned host memory (storage "cpu_pinned"); from "disk" the copy leaves pageable
        mmap'd pages, which CUDA copies synchronously, so disk streaming gains little from it."""
        if self._stream is None or not self.wants_prefetch(i):
            return
        groups = [g for g in self.unit(i) if not g.loaded]
        if not groups:
            return
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._stream):
            staged = [(s, s.fetch(self.device, non_blocking=True)) for g in groups for s in g.slots]
            event = torch.cuda.Event()
            event.record(self._stream)
        self._pending[i] = (groups, staged, event)

    def _take_prefetched(self, i: int):
        groups, staged, event = self._pending.pop(i)
        stream = torch.cuda.current_stream(self.device)
        stream.wait_event(event)
        for s, t in staged:
            t.record_stream(stream)
            s.put(t)
        for g in groups:
            g.loaded = True

    def wants_prefetch(self, i: int) -> bool:
        """Unit i is worth copying ahead: it exists, is streamed, and is not already on its way."""
        return 0 <= i < self.num_units and i not in self._pending and not self.is_resident(i)

    # ---- hooks -------------------------------------------------------------------------------
    def activate(self, expert: str) -> None:
        """A different video expert runs next: the previous one's blocks leave the device."""
        if expert == self.active:
            return
        if expert not in self.experts:
            raise KeyError(f"unknown video expert {expert!r}; this engine has {sorted(self.experts)}")
        self._drop_pending()
        for (comp, _, _), g in self.blocks.items():
            if comp == self.active:
                self._evict(g)
        self.active = expert

    def _enter(self, key):
        comp, _, i = key
        if comp in self.experts and comp != self.active:
            self.activate(comp)
        keep = {id(g) for g in self.unit(i)} | {id(g) for j in (i + 1,) if j in self._pending
                                                for g in self._pending[j][0]}
        for (c, _, j), g in self.blocks.items():  # bound the device footprint even after an interrupt
            if g.loaded and id(g) not in keep and not (self.is_resident(j) and c in (self.active, "audio_dit",
                                                                                   "dual_tower_bridge")):
                self._evict(g)
        if i in self._pending:
            self._take_prefetched(i)
        for g in self.unit(i):
            self._load(g)
        self._prefetch(i + 1)

    def _exit(self, i: int):
        if not self.is_resident(i):
            for g in self.unit(i):
                self._evict(g)

    def _drop_pending(self):
        if self._pending:
            torch.cuda.current_stream(self.device).wait_stream(self._stream)
            self._pending.clear()

    # ---- API for loaders / ComfyUI memory management ------------------------------------------
    def to(self, device=None) -> "OffloadEngine":
        """Load the stems and resident units onto the compute device (ComfyUI 'load'). Call it
        before sampling after a release()."""
        if device is not None and torch.device(device) != self.device:
            raise ValueError(f"this engine streams to {self.device}; build a new one for {device}")
        for g in self.stems.values():
            self._load(g)
        for i in range(self.num_units):
            if self.is_resident(i):
                for g in self.unit(i):
                    self._load(g)
        return self

    def release(self) -> None:
        """Evict everything from the compute device (ComfyUI 'free memory'); next forward reloads."""
        self._drop_pending()
        for g in list(self.stems.values()) + list(self.blocks.values()):
            self._evict(g)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def close(self) -> None:
        """Remove hooks and drop host copies and file handles (the modules keep placeholders)."""
        self.release()
        for tower in self._towers.values():
            setattr(tower, MANAGED_MARK, False)
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        for g in list(self.stems.values()) + list(self.blocks.values()):
            for s in g.slots:
                s.host = s.file = None
        self._files.clear()

    def device_bytes(self) -> int:
        return sum(module_bytes(t, self.device) for t in self._towers.values())

    def unit_bytes(self, i: int) -> int:
        return sum(g.nbytes for g in self.unit(i))

    def resident_bytes(self) -> int:
        """Bytes on the compute device after to(): the stems and the resident units of the active expert."""
        stems = sum(g.nbytes for g in self.stems.values())
        return stems + sum(self.unit_bytes(i) for i in range(self.num_units) if self.is_resident(i))

    def peak_bytes(self) -> int:
        """resident_bytes() plus the streamed units in flight while sampling: one, two when a CUDA side
        stream prefetches the next unit. What ComfyUI should reserve for this model."""
        streamed = [self.unit_bytes(i) for i in range(self.num_units) if not self.is_resident(i)]
        return self.resident_bytes() + (2 if self._stream is not None else 1) * max(streamed, default=0)

    def total_bytes(self) -> int:
        return sum(g.nbytes for g in list(self.stems.values()) + list(self.blocks.values()))

"""The MOVA generator as a ComfyUI-managed model: `load_models_gpu` puts it on the compute device before
sampling, and ComfyUI's own unloading (another model needing the memory, "free model and node cache",
POST /free) takes it off again. With an OffloadEngine, load = engine.to(), unload = engine.release().

ComfyUI's stock ModelPatcher walks every Linear to patch/cast weights; our towers manage their own
weights (quantized layers, streamed blocks, LoRA merged by models/lora/stack.py), so this subclass only
moves whole towers and keeps ComfyUI's bookkeeping (sizes, loaded device) truthful."""
from __future__ import annotations

import logging

import torch

import comfy.model_management
import comfy.model_patcher

from ..kernels.device import module_bytes

log = logging.getLogger("mova")


def _footprint(generator, engine) -> int:
    """Bytes on the compute device while sampling: everything, or (offload) the engine's stems and
    resident units plus the streamed unit(s) in flight."""
    return module_bytes(generator) if engine is None else engine.peak_bytes()


class MovaPatcher(comfy.model_patcher.ModelPatcher):
    """ModelPatcher around the MovaGenerator (the nn.Module that owns towers, bridge and audio)."""

    def __init__(self, generator, load_device, offload_device, engine=None, size=0, loaded=False):
        self.engine = engine
        super().__init__(generator, load_device, offload_device, size=size or _footprint(generator, engine))
        self._loaded = loaded

    def clone(self):   # clones share the generator, its engine and its load state (kept on the module)
        return self.__class__(self.model, self.load_device, self.offload_device, self.engine, self.size,
                              self._loaded)

    @property
    def _loaded(self) -> bool:
        return getattr(self.model, "mova_loaded", False)

    @_loaded.setter
    def _loaded(self, value: bool) -> None:
        self.model.mova_loaded = bool(value)
        self.model.model_loaded_weight_memory = self.size if value else 0

    @property
    def is_loaded(self) -> bool:
        return self._loaded

    def model_dtype(self):
        return self.model.dtype

    def current_loaded_device(self):
        return self.load_device if self._loaded else self.offload_device

    def loaded_size(self):
        return self.size if self._loaded else 0

    def lowvram_patch_counter(self):
        return 0

    def _load(self, device_to) -> int:
        if self._loaded:
            return 0
        if self.engine is not None:
            self.engine.to(device_to)
        else:
            self.model.to(device_to)
        self._loaded = True
        log.debug("mova: generator loaded to %s (%.1f MB)", device_to, self.size / 2**20)
        return self.size

    def _unload(self) -> int:
        on_unload = self.model.__dict__.get("_on_unload")   # on the module: clones share it
        if on_unload is not None:   # MOVA Multi-GPU: freeing the model also stops its worker ranks
            on_unload()
        if not self._loaded:
            return 0
        if self.engine is not None:
            self.engine.release()
        else:
            self.model.to(self.offload_device)
        self._loaded = False
        log.debug("mova: generator unloaded from %s", self.load_device)
        return self.size

    # ---- what comfy.model_management.LoadedModel calls ------------------------------------------
    def partially_load(self, device_to, extra_memory=0, force_patch_weights=False):
        return self._load(device_to)   # towers move whole; the engine is the partial mode

    def partially_unload(self, device_to, memory_to_free=0, force_patch_weights=False):
        return self._unload()

    def patch_model(self, device_to=None, lowvram_model_memory=0, load_weights=True, force_patch_weights=False):
        if load_weights:
            self._load(device_to or self.load_device)
        return self.model

    def unpatch_model(self, device_to=None, unpatch_weights=True):
        if unpatch_weights:
            self._unload()

    def detach(self, unpatch_all=True):
        # unpatch_all=False is ComfyUI re-registering the same model (or a patcher being deleted):
        # the weights stay where they are.
        if unpatch_all:
            self._unload()
        return self.model


def load_for_sampling(patcher: MovaPatcher, memory_required: int = 0) -> None:
    """Register with ComfyUI and bring the generator onto the compute device (frees other models first
    when needed). Always before sampling: after a release the engine must be loaded again."""
    comfy.model_management.load_models_gpu([patcher], memory_required=memory_required)
    if not patcher.is_loaded:   # defensive: ComfyUI decided not to load (should not happen)
        patcher.partially_load(patcher.load_device)


def is_registered(patcher: MovaPatcher) -> bool:
    return any(m.model is patcher for m in comfy.model_management.current_loaded_models)


def make_patcher(generator, engine, load_device: torch.device) -> MovaPatcher:
    """The loader has already placed the weights (on `load_device`, or the engine's resident set), so
    the patcher starts loaded; ComfyUI learns of it at the first sampling."""
    offload = comfy.model_management.unet_offload_device()
    return MovaPatcher(generator, load_device, offload, engine=engine, loaded=True)

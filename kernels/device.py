"""What the compute device can do, and how many bytes a module holds. No GPU needed to import."""
from __future__ import annotations

import importlib
import logging

import torch
from torch import nn

log = logging.getLogger("mova")


def cuda_capability(device: torch.device | str | None) -> tuple[int, int] | None:
    """(major, minor) for a CUDA device, None for anything else (cpu, mps, meta)."""
    if device is None:
        return None
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(device)


def fp8_matmul_capable(capability: tuple | None) -> bool:
    """torch._scaled_mm (fp8 x fp8) needs Ada (sm_89) or newer; `capability` None = not CUDA."""
    return capability is not None and tuple(capability) >= (8, 9) and hasattr(torch, "_scaled_mm")


def supports_fp8_matmul(device: torch.device | str | None) -> bool:
    return fp8_matmul_capable(cuda_capability(device))


def optional_import(name: str):
    """The module, or None when it is missing or fails to import (sageattention without triton)."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # ImportError, but also triton/CUDA errors raised at import time
        log.debug("mova: optional package %s not usable: %s", name, exc)
        return None


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def module_bytes(model: nn.Module, device: torch.device | str | None = None) -> int:
    """Bytes of all parameters and buffers (quantized storage counts as stored), optionally only
    those currently on `device`. Shared tensors are counted once; meta tensors count as 0."""
    seen: set[int] = set()
    total = 0
    want = torch.device(device) if device is not None else None
    for t in list(model.parameters()) + list(model.buffers()):
        if t.device.type == "meta" or id(t) in seen:
            continue
        seen.add(id(t))
        if want is not None and (t.device.type != want.type or
                                 (want.index is not None and t.device.index != want.index)):
            continue
        total += tensor_bytes(t)
    return total


def free_memory_bytes(device: torch.device | str | None) -> int | None:
    """Bytes a new allocation on `device` can still get: the driver's free memory plus what PyTorch's
    caching allocator holds unused. None for devices without such a figure (cpu, mps, meta)."""
    if device is None or torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return None
    device = torch.device(device)
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))

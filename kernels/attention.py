"""One attention entry point for every attention in models/ (towers, text cross-attention, Bridge).

Backends: PyTorch SDPA (everywhere), SageAttention and flash-attention (only when importable AND the
tensors sit on a capable CUDA device with a supported dtype / head size). The choice is made per
(device, dtype, head_dim) and logged once on the "mova" logger with the reason.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .device import cuda_capability, optional_import

log = logging.getLogger("mova")

BACKENDS = ("auto", "sdpa", "sage", "flash")
_HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class AttentionSettings:
    backend: str = "auto"  # auto | sdpa | sage | flash

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"attention backend must be one of {BACKENDS}, got {self.backend!r}")


_settings = AttentionSettings()
_choices: dict[tuple, str] = {}  # (requested, device, dtype, head_dim) -> backend actually used


def set_attention_settings(settings: AttentionSettings) -> None:
    global _settings
    _settings = settings
    _choices.clear()


def get_attention_settings() -> AttentionSettings:
    return _settings


def _fused_kernel_problem(q: torch.Tensor, kernel: str) -> str | None:
    """What both fused kernels need: a CUDA device of sm_80 or newer and fp16/bf16 tensors."""
    cap = cuda_capability(q.device)
    if cap is None:
        return f"tensors are on {q.device.type}, {kernel} needs CUDA"
    if cap < (8, 0):
        return f"GPU sm_{cap[0]}{cap[1]} is older than sm_80"
    if q.dtype not in _HALF:
        return f"dtype {q.dtype} (needs fp16/bf16)"
    return None


def _sage_problem(q: torch.Tensor, head_dim: int) -> str | None:
    """Why SageAttention cannot run these tensors, or None when it can."""
    problem = _fused_kernel_problem(q, "SageAttention")
    if problem:
        return problem
    if head_dim not in (64, 96, 128):
        return f"head_dim {head_dim} (needs 64/96/128)"
    if optional_import("sageattention") is None:
        return "sageattention is not installed (pip install sageattention; needs triton)"
    return None


def _flash_problem(q: torch.Tensor, head_dim: int) -> str | None:
    problem = _fused_kernel_problem(q, "flash-attention")
    if problem:
        return problem
    if head_dim > 256 or head_dim % 8:
        return f"head_dim {head_dim} (needs a multiple of 8, at most 256)"
    if optional_import("flash_attn_interface") is None and optional_import("flash_attn") is None:
        return "flash-attn is not installed (pip install flash-attn)"
    return None


def choose_backend(q: torch.Tensor, head_dim: int, requested: str = "auto") -> tuple[str, str]:
    """(backend, reason) for tensors like `q`. Never raises: unusable requests fall back to SDPA."""
    if requested == "sdpa":
        return "sdpa", "requested"
    if requested in ("sage", "flash"):
        problem = (_sage_problem if requested == "sage" else _flash_problem)(q, head_dim)
        if problem is None:
            return requested, "requested"
        return "sdpa", f"{requested} requested but unusable: {problem}; falling back"
    sage, flash = _sage_problem(q, head_dim), _flash_problem(q, head_dim)
    if sage is None:
        return "sage", "auto: SageAttention available on this GPU"
    if flash is None:
        return "flash", "auto: flash-attention available on this GPU"
    return "sdpa", f"auto: sage not usable ({sage}); flash not usable ({flash})"


def _backend_for(q: torch.Tensor, head_dim: int) -> str:
    key = (_settings.backend, q.device, q.dtype, head_dim)
    backend = _choices.get(key)
    if backend is None:
        backend, reason = choose_backend(q, head_dim, _settings.backend)
        fell_back = _settings.backend not in ("auto", backend)
        (log.warning if fell_back else log.info)(
            "mova attention: %s for %s %s head_dim=%d (%s)",
            backend, q.device, str(q.dtype).replace("torch.", ""), head_dim, reason)
        _choices[key] = backend
    return backend


def _run_sage(q, k, v):  # [B, L, H, D] ("NHD") in and out
    return optional_import("sageattention").sageattn(q, k, v, tensor_layout="NHD", is_causal=False)


def _run_flash(q, k, v):  # [B, L, H, D]; FA3 on Hopper when present, else FA2
    fa3 = optional_import("flash_attn_interface")
    if fa3 is not None and cuda_capability(q.device) >= (9, 0):
        out = fa3.flash_attn_func(q, k, v)
        return out[0] if isinstance(out, tuple) else out
    return optional_import("flash_attn").flash_attn_func(q, k, v)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    """q [B, Lq, H*D], k/v [B, Lk, H*D] -> [B, Lq, H*D]; no mask (MOVA attends text padding)."""
    b, lq, width = q.shape
    d = width // num_heads
    q = q.view(b, lq, num_heads, d)
    k = k.view(b, k.shape[1], num_heads, d)
    v = v.view(b, v.shape[1], num_heads, d)
    backend = _backend_for(q, d)
    if backend == "sage":
        out = _run_sage(q, k, v)
    elif backend == "flash":
        out = _run_flash(q, k, v)
    else:
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out.transpose(1, 2)
    return out.reshape(b, lq, width)

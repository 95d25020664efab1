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


@dataclass(frozen=True)
class AttentionSite:
    """What the choice depends on: the device's CUDA capability (None off CUDA), the tensor dtype,
    the head size and which optional kernels import. Plain values, so the rule is testable anywhere."""
    capability: tuple | None
    dtype: torch.dtype
    head_dim: int
    sage_installed: bool = False
    flash_installed: bool = False
    device_type: str = "cuda"


def _fused_kernel_problem(site: AttentionSite, kernel: str) -> str | None:
    """What both fused kernels need: a CUDA device of sm_80 or newer and fp16/bf16 tensors."""
    cap = site.capability
    if cap is None:
        return f"tensors are on {site.device_type}, {kernel} needs CUDA"
    if tuple(cap) < (8, 0):
        return f"GPU sm_{cap[0]}{cap[1]} is older than sm_80"
    if site.dtype not in _HALF:
        return f"dtype {site.dtype} (needs fp16/bf16)"
    return None


def sage_problem(site: AttentionSite) -> str | None:
    """Why SageAttention cannot run here, or None when it can."""
    problem = _fused_kernel_problem(site, "SageAttention")
    if problem:
        return problem
    if site.head_dim not in (64, 96, 128):
        return f"head_dim {site.head_dim} (needs 64/96/128)"
    if not site.sage_installed:
        return "sageattention is not installed (pip install sageattention; needs triton)"
    return None


def flash_problem(site: AttentionSite) -> str | None:
    problem = _fused_kernel_problem(site, "flash-attention")
    if problem:
        return problem
    if site.head_dim > 256 or site.head_dim % 8:
        return f"head_dim {site.head_dim} (needs a multiple of 8, at most 256)"
    if not site.flash_installed:
        return "flash-attn is not installed (pip install flash-attn)"
    return None


def select_backend(site: AttentionSite, requested: str = "auto") -> tuple[str, str]:
    """(backend, reason). Never raises: unusable requests fall back to SDPA. Auto prefers
    SageAttention (fastest where it runs), then flash-attention, then SDPA."""
    if requested == "sdpa":
        return "sdpa", "requested"
    if requested in ("sage", "flash"):
        problem = (sage_problem if requested == "sage" else flash_problem)(site)
        if problem is None:
            return requested, "requested"
        return "sdpa", f"{requested} requested but unusable: {problem}; falling back"
    sage, flash = sage_problem(site), flash_problem(site)
    if sage is None:
        return "sage", "auto: SageAttention available on this GPU"
    if flash is None:
        return "flash", "auto: flash-attention available on this GPU"
    return "sdpa", f"auto: sage not usable ({sage}); flash not usable ({flash})"


def site_of(q: torch.Tensor, head_dim: int) -> AttentionSite:
    """The AttentionSite of real tensors (imports the optional kernels only on a CUDA device)."""
    cap = cuda_capability(q.device)
    return AttentionSite(cap, q.dtype, head_dim,
                         sage_installed=cap is not None and optional_import("sageattention") is not None,
                         flash_installed=cap is not None and (optional_import("flash_attn_interface") is not None
                                                              or optional_import("flash_attn") is not None),
                         device_type=q.device.type)


def choose_backend(q: torch.Tensor, head_dim: int, requested: str = "auto") -> tuple[str, str]:
    """(backend, reason) for tensors like `q`."""
    return select_backend(site_of(q, head_dim), requested)


def flash_variant(capability: tuple, fa3_installed: bool) -> str:
    """flash-attention 3 on Hopper (sm_90+) when installed, else flash-attention 2."""
    return "fa3" if fa3_installed and tuple(capability) >= (9, 0) else "fa2"


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
    if flash_variant(cuda_capability(q.device), fa3 is not None) == "fa3":
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

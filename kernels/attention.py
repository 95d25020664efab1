"""One attention entry point for every attention in models/ (towers, text cross-attention, Bridge).

Backends: PyTorch SDPA (everywhere), SageAttention and flash-attention (only when importable AND the
tensors sit on a capable CUDA device with a supported dtype / head size). The choice is made per
(device, dtype, head_dim) and logged once on the "mova" logger with the reason.

`auto` is a rule per GPU generation and kernel version (measured on an H200: SDPA's own cuDNN/flash
kernel 66 ms for one 43k-token self-attention, sageattention 1.0.6 18 % slower end to end, flash-attn
2 108 ms): Ampere/Ada (sm_80-89) SageAttention, then SDPA; Hopper and newer: flash-attention 3 when
installed, else SDPA — SageAttention 1.x is never chosen there, 2.x (which has sm_90 kernels) only by
`timed`. `timed` measures every usable backend once per (device, dtype, head_dim, length bucket) at
first use and keeps the fastest (kernels/attention_timing.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .attention_timing import cuda_timer, length_bucket, pick_fastest
from .device import cuda_capability, optional_import
from .parallel import active_shard

log = logging.getLogger("mova")

BACKENDS = ("auto", "timed", "sdpa", "sage", "flash")
_HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class AttentionSettings:
    backend: str = "auto"  # auto (rule) | timed (measured once per shape bucket) | sdpa | sage | flash

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"attention backend must be one of {BACKENDS}, got {self.backend!r}")


_settings = AttentionSettings()
_choices: dict[tuple, str] = {}  # (requested, device, dtype, head_dim) -> backend actually used


def set_attention_settings(settings: AttentionSettings) -> None:
    global _settings
    _settings = settings
    _choices.clear()
    _reports.clear()


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
    sage_version: tuple = ()        # (major, minor, ...) of the installed sageattention; () unknown
    fa3_installed: bool = False     # flash_attn_interface (flash-attention 3, Hopper)


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
    """(backend, reason). Never raises: unusable requests fall back to SDPA. `auto` follows the rule
    in the module docstring; `timed` here gives the rule's answer (the timing itself needs tensors)."""
    if requested == "sdpa":
        return "sdpa", "requested"
    if requested in ("sage", "flash"):
        problem = (sage_problem if requested == "sage" else flash_problem)(site)
        if problem is None:
            return requested, "requested"
        return "sdpa", f"{requested} requested but unusable: {problem}; falling back"
    sage, flash = sage_problem(site), flash_problem(site)
    cap = site.capability
    if cap is not None and tuple(cap) >= (9, 0):
        gen = f"sm_{cap[0]}{cap[1]}"
        if flash is None and site.fa3_installed:
            return "flash", f"auto: flash-attention 3 on {gen}"
        why = []
        if sage is None:
            why.append(f"sageattention {_version_text(site.sage_version)} is not faster than SDPA's cuDNN/flash "
                       f"kernel on {gen} (measured 18 % slower on an H200 with 1.0.6; use 'timed' to measure 2.x)")
        if flash is None:
            why.append(f"flash-attn 2 is slower than SDPA on {gen} (use 'timed' to measure)")
        if sage and flash:
            why.append(f"sage not usable ({sage}); flash not usable ({flash})")
        return "sdpa", "auto: " + "; ".join(why)
    if sage is None:
        return "sage", "auto: SageAttention available on this GPU"
    if flash is None:
        return "flash", "auto: flash-attention available on this GPU"
    return "sdpa", f"auto: sage not usable ({sage}); flash not usable ({flash})"


def _version_text(version: tuple) -> str:
    return ".".join(map(str, version)) if version else "(version unknown)"


def _package_version(name: str) -> tuple:
    from importlib import metadata
    try:
        return tuple(int(p) for p in metadata.version(name).split("+")[0].split(".")[:3] if p.isdigit())
    except Exception:  # not installed as a distribution (e.g. unpacked on PYTHONPATH)
        return ()


def site_of(q: torch.Tensor, head_dim: int) -> AttentionSite:
    """The AttentionSite of real tensors (imports the optional kernels only on a CUDA device)."""
    cap = cuda_capability(q.device)
    sage = cap is not None and optional_import("sageattention") is not None
    fa3 = cap is not None and optional_import("flash_attn_interface") is not None
    return AttentionSite(cap, q.dtype, head_dim, sage_installed=sage,
                         flash_installed=fa3 or (cap is not None and optional_import("flash_attn") is not None),
                         device_type=q.device.type,
                         sage_version=_package_version("sageattention") if sage else (), fa3_installed=fa3)


def choose_backend(q: torch.Tensor, head_dim: int, requested: str = "auto") -> tuple[str, str]:
    """(backend, reason) for tensors like `q`."""
    return select_backend(site_of(q, head_dim), requested)


def flash_variant(capability: tuple, fa3_installed: bool) -> str:
    """flash-attention 3 on Hopper (sm_90+) when installed, else flash-attention 2."""
    return "fa3" if fa3_installed and tuple(capability) >= (9, 0) else "fa2"


_reports: dict[tuple, str] = {}  # what was chosen and why, for the loader / settings node to show
_timer = None  # callable(backend, fn) -> seconds; None = cuda_timer(fn) (tests set fake timings)


def _backend_for(q: torch.Tensor, k: torch.Tensor, head_dim: int) -> str:
    timed = _settings.backend == "timed"
    key = (_settings.backend, q.device, q.dtype, head_dim) + (
        (length_bucket(q.shape[1]), length_bucket(k.shape[1])) if timed else ())
    backend = _choices.get(key)
    if backend is None:
        site = site_of(q, head_dim)
        backend, reason = select_backend(site, "auto" if timed else _settings.backend)
        if timed:
            backend, reason = _timed_choice(site, q, k, backend, reason)
        fell_back = _settings.backend not in ("auto", "timed", backend)
        where = f"{q.device} {str(q.dtype).replace('torch.', '')} head_dim={head_dim}" + (
            f" lengths<={key[-2]}x{key[-1]}" if timed else "")
        (log.warning if fell_back else log.info)("mova attention: %s for %s (%s)", backend, where, reason)
        _choices[key] = backend
        _reports[key] = f"{where}: {backend} ({reason})"
    return backend


def _timed_choice(site: AttentionSite, q, k, rule_backend: str, rule_reason: str) -> tuple[str, str]:
    """Time every usable backend on tensors of this shape (random data; the real q/k untouched)."""
    candidates = ["sdpa"] + [b for b, problem in (("sage", sage_problem(site)), ("flash", flash_problem(site)))
                             if problem is None]
    if len(candidates) == 1:
        return rule_backend, f"timed: only sdpa can run here ({rule_reason})"
    tq, tk, tv = (torch.randn_like(t) for t in (q, k, k))
    timer = _timer or (lambda _backend, fn: cuda_timer(fn))
    winner, reason, _ = pick_fastest(candidates, lambda b: timer(b, lambda: _run(b, tq, tk, tv)))
    return winner, reason


def attention_report() -> list[str]:
    """One line per attention choice made in this process: where, which backend, why."""
    return list(_reports.values())


def _run_sage(q, k, v):  # [B, L, H, D] ("NHD") in and out
    return optional_import("sageattention").sageattn(q, k, v, tensor_layout="NHD", is_causal=False)


def _run_flash(q, k, v):  # [B, L, H, D]; FA3 on Hopper when present, else FA2
    fa3 = optional_import("flash_attn_interface")
    if flash_variant(cuda_capability(q.device), fa3 is not None) == "fa3":
        out = fa3.flash_attn_func(q, k, v)
        return out[0] if isinstance(out, tuple) else out
    return optional_import("flash_attn").flash_attn_func(q, k, v)


SHARDED = ("none", "all", "keys")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int,
              sharded: str = "none") -> torch.Tensor:
    """q [B, Lq, H*D], k/v [B, Lk, H*D] -> [B, Lq, H*D]; no mask (MOVA attends text padding).

    `sharded` says which inputs are slices of the video sequence when a sequence shard is active
    (kernels/parallel.py; ignored otherwise): "all" (video self-attention: Ulysses all-to-all),
    "keys" (audio queries over video keys: keys/values gathered), "none" (queries may be a slice,
    keys/values are whole: nothing to exchange)."""
    shard = active_shard() if sharded != "none" else None
    if shard is not None and sharded == "keys":
        k, v = shard.gather(k), shard.gather(v)
    b, lq, width = q.shape
    d = width // num_heads
    q = q.view(b, lq, num_heads, d)
    k = k.view(b, k.shape[1], num_heads, d)
    v = v.view(b, v.shape[1], num_heads, d)
    if shard is not None and sharded == "all":
        def run(q_, k_, v_):
            return _run(_backend_for(q_, k_, d), q_, k_, v_)
        return shard.self_attention(q, k, v, run).reshape(b, lq, width)
    return _run(_backend_for(q, k, d), q, k, v).reshape(b, lq, width)


def _run(backend: str, q, k, v):  # [B, L, H, D] in and out
    if backend == "sage":
        return _run_sage(q, k, v)
    if backend == "flash":
        return _run_flash(q, k, v)
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)

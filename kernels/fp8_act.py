"""Activation quantization for the fp8 fast matmul (torch._scaled_mm): bf16/fp16 [M, K] -> fp8 e4m3fn.

One math, three implementations (chosen by `act_quant_impl`):
- "reference": plain PyTorch, the definition (runs everywhere; what the others are tested against);
- "compile": the same function through torch.compile (fuses the elementwise passes);
- "triton": one small kernel (CUDA with triton): row-wise = one read + one write of the activation.

Scales ("granularity"):
- "row": one fp32 scale per row (token), scale = max(amax(|x_row|) / 448, 1e-12); _scaled_mm takes
  [M, 1] scales on sm_90+ with bf16 output. Finer than per-tensor, and needs no global reduction.
- "tensor": one fp32 scale for the whole activation (sm_89 / fp16): an inf-norm (one read pass)
  then a fused scale/clamp/cast pass.

Values: q = clamp(x_fp32 * (1 / scale), -448, 448) cast to e4m3fn (round to nearest even), so x ~ q * scale.
Multiplying by a reciprocal computed once (rather than dividing) is what every implementation does, so
they agree bit for bit.
"""
from __future__ import annotations

import functools
import logging

import torch

from .device import optional_import

log = logging.getLogger("mova")

FP8_MAX = 448.0
MIN_SCALE = 1e-12
GRANULARITIES = ("row", "tensor")
IMPLS = ("reference", "compile", "triton")


def _scales_from_amax(amax: torch.Tensor) -> torch.Tensor:
    return (amax.float() / FP8_MAX).clamp(min=MIN_SCALE)


def quantize_reference(x: torch.Tensor, granularity: str = "row") -> tuple[torch.Tensor, torch.Tensor]:
    """(q fp8 [M, K], scale fp32 [M, 1] or []) for a 2-D activation; the definition of the math."""
    if x.dim() != 2:
        raise ValueError(f"activation quantization takes a 2-D [rows, features] tensor, got {tuple(x.shape)}")
    if granularity == "row":
        amax = x.abs().amax(dim=1, keepdim=True)
    elif granularity == "tensor":
        amax = torch.linalg.vector_norm(x, float("inf"))  # one read pass, no |x| temporary
    else:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    scale = _scales_from_amax(amax)
    q = (x.float() * torch.reciprocal(scale)).clamp_(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scale


@functools.lru_cache(maxsize=None)
def _compiled():
    return torch.compile(quantize_reference, dynamic=True, fullgraph=True)


def _triton_kernels():
    """The Triton kernels, built on first use (None when triton is missing)."""
    triton = optional_import("triton")
    if triton is None:
        return None
    return _build_triton(triton)


@functools.lru_cache(maxsize=None)
def _build_triton(triton):
    import triton.language as tl

    @triton.jit
    def row_kernel(x_ptr, q_ptr, s_ptr, K, stride_x, stride_q, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        x_row = x_ptr + row.to(tl.int64) * stride_x
        q_row = q_ptr + row.to(tl.int64) * stride_q
        amax = tl.zeros([BLOCK], dtype=tl.float32)
        for k in range(0, K, BLOCK):  # pass 1: amax (the row is small: the re-read hits cache)
            offs = k + tl.arange(0, BLOCK)
            v = tl.load(x_row + offs, mask=offs < K, other=0.0).to(tl.float32)
            amax = tl.maximum(amax, tl.abs(v))
        scale = tl.maximum(tl.math.div_rn(tl.max(amax, axis=0), 448.0), 1e-12)  # IEEE division, as torch
        inv = tl.math.div_rn(1.0, scale)
        tl.store(s_ptr + row, scale)
        for k in range(0, K, BLOCK):  # pass 2: scale, clamp, cast
            offs = k + tl.arange(0, BLOCK)
            v = tl.load(x_row + offs, mask=offs < K, other=0.0).to(tl.float32)
            q = tl.minimum(tl.maximum(v * inv, -448.0), 448.0)
            tl.store(q_row + offs, q.to(q_ptr.dtype.element_ty), mask=offs < K)

    @triton.jit
    def tensor_kernel(x_ptr, q_ptr, s_ptr, N, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        inv = tl.math.div_rn(1.0, tl.load(s_ptr))
        v = tl.load(x_ptr + offs, mask=offs < N, other=0.0).to(tl.float32)
        q = tl.minimum(tl.maximum(v * inv, -448.0), 448.0)
        tl.store(q_ptr + offs, q.to(q_ptr.dtype.element_ty), mask=offs < N)

    return row_kernel, tensor_kernel


def quantize_triton(x: torch.Tensor, granularity: str = "row",
                    out_dtype: torch.dtype = torch.float8_e4m3fn) -> tuple[torch.Tensor, torch.Tensor]:
    """out_dtype float32 keeps the kernel's values before the final cast (a check on CPU, where
    Triton's interpreter emulates the fp8 cast inexactly)."""
    kernels = _triton_kernels()
    if kernels is None:
        raise RuntimeError("triton is not installed")
    row_kernel, tensor_kernel = kernels
    x = x.contiguous()
    m, k = x.shape
    q = torch.empty((m, k), dtype=out_dtype, device=x.device)
    if granularity == "row":
        scale = torch.empty((m, 1), dtype=torch.float32, device=x.device)
        row_kernel[(m,)](x, q, scale, k, x.stride(0), q.stride(0), BLOCK=min(4096, _next_pow2(k)))
    else:
        scale = _scales_from_amax(torch.linalg.vector_norm(x, float("inf")))
        n, block = x.numel(), 4096
        tensor_kernel[((n + block - 1) // block,)](x, q, scale, n, BLOCK=block)
    return q, scale


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def quantize_activation(x: torch.Tensor, granularity: str = "row", impl: str = "reference"):
    """(q, scale) by the named implementation; see the module docstring for the math."""
    if impl == "triton":
        return quantize_triton(x, granularity)
    if impl == "compile":
        return _compiled()(x, granularity)
    if impl == "reference":
        return quantize_reference(x, granularity)
    raise ValueError(f"activation quantization impl must be one of {IMPLS}, got {impl!r}")


def act_quant_impl(device_type: str, triton_installed: bool, requested: str = "auto") -> tuple[str, str]:
    """(impl, reason): triton on CUDA when installed, else the plain-PyTorch reference (plain values:
    testable anywhere). A request that cannot run here falls back to the reference with the reason."""
    if requested == "reference":
        return "reference", "requested"
    if device_type != "cuda":
        return "reference", f"tensors are on {device_type}; the fused kernels run on CUDA"
    if requested in ("auto", "triton"):
        if triton_installed:
            return "triton", "fused Triton kernel" if requested == "auto" else "requested"
        if requested == "triton":
            return "reference", "triton requested but not installed; falling back"
        return "reference", "triton is not installed"
    if requested == "compile":
        return "compile", "requested"
    raise ValueError(f"activation quantization impl must be 'auto' or one of {IMPLS}, got {requested!r}")


def act_granularity(capability: tuple | None, dtype: torch.dtype) -> str:
    """Row-wise scales where _scaled_mm takes them (sm_90+, bf16 output), else one per tensor."""
    if capability is not None and tuple(capability) >= (9, 0) and dtype == torch.bfloat16:
        return "row"
    return "tensor"

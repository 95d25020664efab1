"""Per-block elementwise work (norm + modulation, RoPE, gated residuals) as small functions that
torch.compile can fuse, while attention and the matmuls keep their eager kernels.

Opt-in: `set_compiled_elementwise(tower, True)` marks each DiTBlock; its forward then runs
`block_forward` below (same math as DiTBlock.forward; inductor keeps fp32 between the fused ops, so
outputs differ from eager by bf16 rounding only). A compile failure (no compiler, an unsupported op)
switches that function to eager for good with one warning — never an error mid-run.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from ...kernels.attention import attention

log = logging.getLogger("mova")


def norm_modulate(x: torch.Tensor, eps: float, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """LayerNorm without affine, then x * (1 + scale) + shift (norm1 / norm2 of the block)."""
    return F.layer_norm(x, (x.shape[-1],), eps=eps) * (1 + scale) + shift


def rope_real(x: torch.Tensor, table_ri: torch.Tensor, num_heads: int) -> torch.Tensor:
    """apply_wan_rope in real arithmetic (inductor fuses it; complex tensors it does not):
    table_ri = view_as_real(table) [L, 1, D/2, 2]; adjacent dims (a, b) -> (a c - b s, a s + b c)."""
    b, n, c = x.shape
    xf = x.float().reshape(b, n, num_heads, -1, 2)
    a, bb = xf[..., 0], xf[..., 1]
    cos, sin = table_ri[..., 0], table_ri[..., 1]
    return torch.stack((a * cos - bb * sin, a * sin + bb * cos), dim=-1).reshape(b, n, c).to(x.dtype)


def gate_add(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
    return x + (y if gate is None else y * gate)


class SafeCompiled:
    """fn through torch.compile; on the first failure, eager for good with one warning."""

    def __init__(self, fn, enabled: bool = True, backend="inductor"):
        self.fn, self.name = fn, fn.__name__
        self.compiled = torch.compile(fn, dynamic=True, backend=backend) if enabled else None

    def __call__(self, *args):
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as exc:  # inductor / dynamo errors: fall back, keep sampling
                log.warning("mova compile: %s fell back to eager (%s: %s)", self.name, type(exc).__name__,
                            str(exc).splitlines()[0] if str(exc) else "")
                self.compiled = None
        return self.fn(*args)


class FusedOps:
    def __init__(self, compile_: bool = True):
        self.norm_modulate = SafeCompiled(norm_modulate, compile_)
        self.rope = SafeCompiled(rope_real, compile_)
        self.gate_add = SafeCompiled(gate_add, compile_)


def block_forward(block, ops: FusedOps, x, context, t_mod, rope):
    """DiTBlock.forward with the elementwise work through `ops` (modules are still called, so offload
    and LoRA hooks on them fire as in eager)."""
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
        block.modulation.to(t_mod.dtype) + t_mod).chunk(6, dim=1)
    attn = block.self_attn
    h = ops.norm_modulate(x, block.norm1.eps, shift_msa, scale_msa)
    table = torch.view_as_real(rope)
    q = ops.rope(attn.norm_q(attn.q(h)), table, attn.num_heads)
    k = ops.rope(attn.norm_k(attn.k(h)), table, attn.num_heads)
    y = attn.o(attention(q, k, attn.v(h), attn.num_heads, sharded="all"))
    x = ops.gate_add(x, y, gate_msa)
    x = ops.gate_add(x, block.cross_attn(block.norm3(x), context))
    y = block.ffn(ops.norm_modulate(x, block.norm2.eps, shift_mlp, scale_mlp))
    return ops.gate_add(x, y, gate_mlp)


def set_compiled_elementwise(root: torch.nn.Module, enabled: bool, compile_: bool = True) -> int:
    """Mark (or unmark) every DiTBlock under `root`; returns how many. One FusedOps is shared, so
    each function compiles once per shape family. compile_=False runs the same path eagerly (tests)."""
    from .dit import DiTBlock
    ops = FusedOps(compile_) if enabled else None
    blocks = [m for m in root.modules() if isinstance(m, DiTBlock)]
    for b in blocks:
        if enabled:
            b.__dict__["_fused"] = ops
        else:
            b.__dict__.pop("_fused", None)
    return len(blocks)

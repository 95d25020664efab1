"""Wan-style DiT: the block shared by both towers, the video tower (expert) and the audio tower.

State-dict keys are those of the released files (spec §7.2/7.3). Inference runs in place where the
tensor is our own fresh intermediate; with autograd enabled everything stays out of place.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...kernels.attention import attention
from ..config import DiTConfig
from .fused import block_forward
from .rope import apply_wan_rope, wan_audio_rope, wan_video_rope


def _inplace() -> bool:
    return not torch.is_grad_enabled()


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x * (1 + scale) + shift; `x` must be a fresh intermediate (it is overwritten in inference)."""
    if _inplace():
        return x.mul_(1 + scale).add_(shift)
    return x * (1 + scale) + shift


def gated_add(x: torch.Tensor, y: torch.Tensor, gate=None) -> torch.Tensor:
    """x + gate * y, same rounding order as the reference; overwrites x and y in inference."""
    if _inplace():
        if gate is not None:
            y.mul_(gate)
        return x.add_(y)
    return x + (y if gate is None else gate * y)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = nn.RMSNorm(dim, eps=eps)   # over the full width, before the head split
        self.norm_k = nn.RMSNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        q = apply_wan_rope(self.norm_q(self.q(x)), rope, self.num_heads)
        k = apply_wan_rope(self.norm_k(self.k(x)), rope, self.num_heads)
        # "all": q/k/v are this rank's slice of the sequence when the video tokens are split
        return self.o(attention(q, k, self.v(x), self.num_heads, sharded="all"))


class CrossAttention(nn.Module):
    """Text cross-attention (no RoPE, no mask: padded text positions are attended, as released)."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self.norm_q(self.q(x))
        k = self.norm_k(self.k(context))
        return self.o(attention(q, k, self.v(context), self.num_heads))


class DiTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, ffn_dim: int, eps: float):
        super().__init__()
        self.self_attn = SelfAttention(dim, num_heads, eps)
        self.cross_attn = CrossAttention(dim, num_heads, eps)
        self.norm1 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.norm3 = nn.LayerNorm(dim, eps=eps)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim ** 0.5)

    def forward(self, x, context, t_mod, rope):
        """x [B, L, dim]; context [B, Lt, dim]; t_mod [B, 6, dim] in x's dtype; rope from rope.py."""
        fused = self.__dict__.get("_fused")  # opt-in compiled elementwise work (models/net/fused.py)
        if fused is not None:
            return block_forward(self, fused, x, context, t_mod, rope)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.modulation.to(t_mod.dtype) + t_mod).chunk(6, dim=1)
        y = self.self_attn(modulate(self.norm1(x), shift_msa, scale_msa), rope)
        x = x + (y.mul_(gate_msa) if _inplace() else y * gate_msa)  # out of place: keep the caller's x
        x = gated_add(x, self.cross_attn(self.norm3(x), context))
        y = self.ffn(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return gated_add(x, y, gate_mlp)


class Head(nn.Module):
    def __init__(self, dim: int, out_dim: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.head = nn.Linear(dim, out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim ** 0.5)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """t is the time_embedding output [B, dim] (not t_mod)."""
        shift, scale = (self.modulation.to(t.dtype) + t.unsqueeze(1)).chunk(2, dim=1)
        return self.head(modulate(self.norm(x), shift, scale))


def sinusoidal_embedding(dim: int, timestep: torch.Tensor) -> torch.Tensor:
    """[cos | sin] in float64, returned as fp32 (timesteps are fp32 floats in [0, 1000])."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=timestep.device).div(half))
    arg = torch.outer(timestep.to(torch.float64), freqs)
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=1).float()


def _linear_fp32(x: torch.Tensor, lin: nn.Linear, rows: int = 4096) -> torch.Tensor:
    """fp32 x @ W.T + b with W upcast a slab of rows at a time (time_projection is 30720 x 5120:
    a whole fp32 copy would be a 630 MB temporary per forward). Equal up to fp32 summation order."""
    w, b = lin.weight, lin.bias
    if w.dtype == torch.float32:
        return F.linear(x, w, b)
    outs = [F.linear(x, w[i:i + rows].float(), None if b is None else b[i:i + rows].float())
            for i in range(0, w.shape[0], rows)]
    return torch.cat(outs, dim=-1)


def _run_fp32(seq: nn.Sequential, x: torch.Tensor, fallback_dtype: torch.dtype) -> torch.Tensor:
    """Run a small MLP in fp32 whatever the weight dtype (the official pipeline autocasts to fp32)."""
    for m in seq:
        if type(m) is nn.Linear:
            x = _linear_fp32(x, m)
        elif next(m.parameters(), None) is None:
            x = m(x)
        else:  # a replaced (e.g. quantized) linear: let it compute in its own dtype
            x = m(x.to(fallback_dtype)).float()
    return x


class _Tower(nn.Module):
    """Parts both towers share; subclasses define patch_embedding, patchify, unpatchify, rope."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.GELU(approximate="tanh"), nn.Linear(d, d))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.num_heads, cfg.ffn_dim, cfg.eps) for _ in range(cfg.num_layers))
        self.head = Head(d, cfg.out_dim * math.prod(cfg.patch_size), cfg.eps)

    @property
    def dtype(self) -> torch.dtype:
        """Activation dtype: that of the patch embedding (never quantized)."""
        return self.patch_embedding.weight.dtype

    def rope(self, grid, device) -> torch.Tensor:
        """In-tower RoPE table for this token grid, kept for the next call with the same grid."""
        key = (tuple(grid), str(device))
        cached = self.__dict__.get("_rope_cache")
        if cached is None or cached[0] != key:
            cached = (key, self._make_rope(grid, device))
            self.__dict__["_rope_cache"] = cached
        return cached[1]

    def embed_time(self, timestep: torch.Tensor):
        """(t [B, dim], t_mod [B, 6, dim]) computed in fp32, returned in the activation dtype."""
        ts = torch.as_tensor(timestep, dtype=torch.float32, device=self.patch_embedding.weight.device).reshape(-1)
        t = _run_fp32(self.time_embedding, sinusoidal_embedding(self.cfg.freq_dim, ts), self.dtype)
        t_mod = _run_fp32(self.time_projection, t, self.dtype).unflatten(1, (6, self.cfg.dim))
        return t.to(self.dtype), t_mod.to(self.dtype)

    def embed_text(self, context: torch.Tensor) -> torch.Tensor:
        return self.text_embedding(context.to(self.dtype))

    def forward(self, x, timestep, context, y=None):
        """Standalone tower (no Bridge): latents [B, C, ...] -> velocity in the activation dtype."""
        if y is not None:
            x = torch.cat([x, y], dim=1)
        t, t_mod = self.embed_time(timestep)
        ctx = self.embed_text(context)
        tokens, grid = self.patchify(x)
        rope = self.rope(grid, tokens.device)
        for block in self.blocks:
            tokens = block(tokens, ctx, t_mod, rope)
        return self.unpatchify(self.head(tokens, t), grid)


class VideoDiT(_Tower):
    """One video expert (Wan2.2-I2V-A14B layout: 36-ch input = noisy 16 + mask 4 + first frame 16)."""

    def __init__(self, cfg: DiTConfig):
        super().__init__(cfg)
        self.patch_embedding = nn.Conv3d(cfg.in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def patchify(self, x: torch.Tensor):
        x = self.patch_embedding(x.to(self.dtype))
        grid = tuple(x.shape[2:])
        return x.flatten(2).transpose(1, 2).contiguous(), grid

    def _make_rope(self, grid, device):
        return wan_video_rope(self.cfg.head_dim, grid, device)

    def unpatchify(self, x: torch.Tensor, grid) -> torch.Tensor:
        (f, h, w), (pf, ph, pw) = grid, self.cfg.patch_size
        x = x.view(x.shape[0], f, h, w, pf, ph, pw, self.cfg.out_dim)
        return x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(x.shape[0], self.cfg.out_dim, f * pf, h * ph, w * pw)


class AudioDiT(_Tower):
    """The audio tower: tokens are audio latent frames (Conv1d k=1 patchify), 1-D RoPE."""

    def __init__(self, cfg: DiTConfig):
        super().__init__(cfg)
        self.patch_embedding = nn.Conv1d(cfg.in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def patchify(self, x: torch.Tensor):
        x = self.patch_embedding(x.to(self.dtype))
        return x.transpose(1, 2).contiguous(), (x.shape[2],)

    def _make_rope(self, grid, device):
        return wan_audio_rope(self.cfg.head_dim, grid[0], device)

    def unpatchify(self, x: torch.Tensor, grid) -> torch.Tensor:
        p = self.cfg.patch_size[0]
        x = x.view(x.shape[0], grid[0], p, self.cfg.out_dim)
        return x.permute(0, 3, 1, 2).reshape(x.shape[0], self.cfg.out_dim, grid[0] * p)


def build_tower(cfg: DiTConfig) -> _Tower:
    return VideoDiT(cfg) if cfg.kind == "video" else AudioDiT(cfg)

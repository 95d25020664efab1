"""The Bridge: bidirectional cross-attention between the towers with aligned RoPE (spec §2-3).

At shared layer i: video' = video + a2v_i(video <- audio), audio' = audio + v2a_i(audio <- video), both
computed from the pre-bridge states. Only the condition stream is LayerNorm-ed. A direction whose
scale is 0 is skipped entirely (no compute).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ...kernels.attention import attention
from ..config import BridgeConfig
from .rope import AlignedRotary, aligned_positions, apply_aligned_rope

EPS = 1e-6


class ConditionalCrossAttention(nn.Module):
    """q from the primary stream, k/v from the (normed) condition stream projected to the primary width."""

    def __init__(self, dim: int, kv_dim: int, head_dim: int):
        super().__init__()
        self.head_dim, self.num_heads = head_dim, dim // head_dim
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(kv_dim, dim)
        self.v = nn.Linear(kv_dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = nn.RMSNorm(dim, eps=EPS)
        self.norm_k = nn.RMSNorm(dim, eps=EPS)

    def forward(self, x, y, x_rope=None, y_rope=None, sharded: str = "none"):
        q = self.norm_q(self.q(x))
        k = self.norm_k(self.k(y))
        if x_rope is not None:
            q = apply_aligned_rope(q, *x_rope, self.head_dim)
        if y_rope is not None:
            k = apply_aligned_rope(k, *y_rope, self.head_dim)
        return self.o(attention(q, k, self.v(y), self.num_heads, sharded=sharded))


class ConditionalCrossAttentionBlock(nn.Module):
    def __init__(self, dim: int, kv_dim: int, head_dim: int):
        super().__init__()
        self.y_norm = nn.LayerNorm(kv_dim, eps=EPS)
        self.inner = ConditionalCrossAttention(dim, kv_dim, head_dim)

    def forward(self, x, y, x_rope=None, y_rope=None, sharded: str = "none"):
        return self.inner(x, self.y_norm(y), x_rope, y_rope, sharded)


class DualTowerBridge(nn.Module):
    def __init__(self, cfg: BridgeConfig):
        super().__init__()
        self.cfg = cfg
        v, a, hd = cfg.visual_hidden_dim, cfg.audio_hidden_dim, cfg.head_dim
        self.audio_to_video_conditioners = nn.ModuleDict(
            {str(i): ConditionalCrossAttentionBlock(v, a, hd) for i in cfg.interaction_layers})
        self.video_to_audio_conditioners = nn.ModuleDict(
            {str(i): ConditionalCrossAttentionBlock(a, v, hd) for i in cfg.interaction_layers})
        self.rotary = AlignedRotary(hd)

    @property
    def layers(self) -> tuple:
        return self.cfg.interaction_layers

    def aligned_rope(self, grid, audio_len: int, video_fps: float, device, dtype):
        """((cos_v, sin_v) [1, f*h*w, D], (cos_a, sin_a) [1, L_a, D]) or (None, None) without cross RoPE."""
        if not self.cfg.apply_cross_rope:
            return None, None
        pos_v, pos_a = aligned_positions(grid, audio_len, video_fps, self.cfg.audio_fps,
                                         self.cfg.apply_first_frame_bias_in_rope, device)
        return self.rotary(pos_v, dtype), self.rotary(pos_a, dtype)

    def forward(self, layer: int, video_x, audio_x, video_rope=None, audio_rope=None,
                a2v_scale: float = 1.0, v2a_scale: float = 1.0):
        """Both directions at shared layer `layer`, from the pre-bridge states; returns new states."""
        key = str(layer)
        video_out = audio_out = None
        if a2v_scale != 0:
            video_out = self.audio_to_video_conditioners[key](video_x, audio_x, video_rope, audio_rope)
        if v2a_scale != 0:
            # the video is the key side: gathered first when its tokens are split across ranks
            audio_out = self.video_to_audio_conditioners[key](audio_x, video_x, audio_rope, video_rope, "keys")
        # Only now update (v2a above needed the un-updated video state).
        if video_out is not None:
            video_x = video_x + _scaled(video_out, a2v_scale)
        if audio_out is not None:
            audio_x = audio_x + _scaled(audio_out, v2a_scale)
        return video_x, audio_x


def _scaled(out: torch.Tensor, scale: float) -> torch.Tensor:
    if scale == 1:
        return out  # out * 1.0 is exact
    return out.mul_(scale) if not torch.is_grad_enabled() else out * scale

"""Rotary position embeddings.

Two different conventions live in MOVA (do not mix them up):
- in-tower RoPE (Wan): adjacent dims form complex pairs; video uses 3 axes (f|h|w), audio one axis.
- Bridge "aligned" RoPE (NeoX/Qwen rotate-half): all head dims temporal, audio index is the clock.
"""
from __future__ import annotations

import torch

THETA = 10000.0


def _angles(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """float64 [n, dim//2] angles pos * theta^(-2i/dim), as Wan's precompute_freqs_cis."""
    inv = 1.0 / THETA ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim)
    return torch.outer(positions.to(torch.float64), inv.to(positions.device))


def wan_video_rope(head_dim: int, grid, device) -> torch.Tensor:
    """complex64 [f*h*w, 1, head_dim//2] table for tokens ordered (f, h, w)."""
    f, h, w = grid
    d_hw = head_dim // 3
    d_f = head_dim - 2 * d_hw
    ar = lambda n: torch.arange(n, device=device)
    af, ah, aw = _angles(d_f, ar(f)), _angles(d_hw, ar(h)), _angles(d_hw, ar(w))
    ang = torch.cat([af[:, None, None, :].expand(f, h, w, -1),
                     ah[None, :, None, :].expand(f, h, w, -1),
                     aw[None, None, :, :].expand(f, h, w, -1)], dim=-1)
    return torch.polar(torch.ones_like(ang), ang).to(torch.complex64).reshape(f * h * w, 1, -1)


def wan_audio_rope(head_dim: int, length: int, device) -> torch.Tensor:
    """complex64 [length, 1, head_dim//2]: plain 1-D RoPE over the full head (released vae_type "dac")."""
    ang = _angles(head_dim, torch.arange(length, device=device))
    return torch.polar(torch.ones_like(ang), ang).to(torch.complex64).unsqueeze(1)


def apply_wan_rope(x: torch.Tensor, table: torch.Tensor, num_heads: int) -> torch.Tensor:
    """x [B, L, H*D] rotated by `table` [L, 1, D/2] (complex pairs = adjacent dims); computed in fp32."""
    b, n, c = x.shape
    xc = torch.view_as_complex(x.float().reshape(b, n, num_heads, -1, 2))
    return torch.view_as_real(xc * table).reshape(b, n, c).to(x.dtype)


class AlignedRotary(torch.nn.Module):
    """Bridge RoPE: cos/sin [1, L, head_dim] computed in fp32 then cast to the activation dtype."""

    def __init__(self, head_dim: int, base: float = THETA):
        super().__init__()
        self.head_dim, self.base = head_dim, base
        self.register_buffer("inv_freq", self._inv_freq(), persistent=False)

    def _inv_freq(self, device=None) -> torch.Tensor:
        exps = torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=device).float() / self.head_dim
        return 1.0 / (self.base ** exps)

    def rebuild_buffers(self, device=None):
        """Recreate the non-persistent buffer (modules built on `meta` never receive it from a file)."""
        if device is None and not self.inv_freq.is_meta:
            device = self.inv_freq.device
        self.inv_freq = self._inv_freq(device)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype):
        # Always fp32 frequencies: module.to(bfloat16) would otherwise round the buffer and shift positions.
        buf = self.inv_freq
        inv = buf if buf.dtype == torch.float32 and not buf.is_meta else self._inv_freq(positions.device)
        with torch.autocast(device_type=positions.device.type, enabled=False):
            freqs = torch.outer(positions.float(), inv.to(positions.device))
            emb = torch.cat((freqs, freqs), dim=-1)[None]
            return emb.cos().to(dtype), emb.sin().to(dtype)


def aligned_positions(grid, audio_len: int, video_fps: float, audio_fps: float,
                      first_frame_bias: bool, device):
    """Video token positions (per latent frame, repeated over h*w) and audio positions 0..L-1, fp32."""
    f, h, w = grid
    if first_frame_bias:
        starts = torch.zeros(f, device=device)
        if f > 1:
            starts[1:] = 1.0 / float(video_fps) + torch.arange(f - 1, device=device,
                                                               dtype=torch.float32) * (1.0 / (float(video_fps) / 4.0))
        per_frame = starts * float(audio_fps)
    else:
        # VAE temporal stride 4 is hard-coded in the official code too.
        per_frame = torch.arange(f, device=device, dtype=torch.float32) * (float(audio_fps) / (video_fps / 4.0))
    return per_frame.repeat_interleave(h * w), torch.arange(audio_len, device=device, dtype=torch.float32)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_aligned_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_dim: int) -> torch.Tensor:
    """x [B, L, H*D] with cos/sin [1, L, D] in x's dtype (rotate-half convention)."""
    b, n, c = x.shape
    xv = x.view(b, n, c // head_dim, head_dim)
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
    return (xv * cos + rotate_half(xv) * sin).view(b, n, c)

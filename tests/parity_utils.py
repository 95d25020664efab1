"""Shared pieces of the parity tests: seeded non-degenerate weights, diffsynth twins, error metric."""
import dataclasses
import math

import torch

import conftest  # noqa: F401  (registers mova_pack)
from mova_pack.models.config import PRESETS

TINY = PRESETS["tiny"]
TOL = 1e-5


def seed_params(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter drawn from a seeded normal at a scale that keeps activations O(1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            n = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)
            if name.endswith("modulation"):
                p.copy_(0.3 * n)
            elif p.ndim >= 2:
                p.copy_(n / math.sqrt(math.prod(p.shape[1:])))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * n)
            else:
                p.copy_(0.2 * n)
    return module


def rel_err(mine: torch.Tensor, ref: torch.Tensor) -> float:
    """max |mine - ref| / max |ref| (a scale-free max error)."""
    ref = ref.double()
    return ((mine.double() - ref).abs().max() / ref.abs().max()).item()


def tower_kwargs(cfg):
    return dict(dim=cfg.dim, in_dim=cfg.in_dim, ffn_dim=cfg.ffn_dim, out_dim=cfg.out_dim, text_dim=cfg.text_dim,
                freq_dim=cfg.freq_dim, eps=cfg.eps, patch_size=tuple(cfg.patch_size), num_heads=cfg.num_heads,
                num_layers=cfg.num_layers, has_image_input=False)


def ref_video(mine):
    from diffsynth.models.wan_video_dit import WanModel
    ref = WanModel(**tower_kwargs(mine.cfg))
    ref.load_state_dict(mine.state_dict(), strict=True)
    return ref.eval()


def ref_audio(mine):
    from diffsynth.models.mova_audio_dit import MovaAudioDit
    ref = MovaAudioDit(**tower_kwargs(mine.cfg))
    ref.load_state_dict(mine.state_dict(), strict=True)
    return ref.eval()


def ref_bridge(mine):
    from diffsynth.models.mova_dual_tower_bridge import DualTowerConditionalBridge
    ref = DualTowerConditionalBridge(**dataclasses.asdict(mine.cfg))
    ref.load_state_dict(mine.state_dict(), strict=True)
    return ref.eval()


def uncompiled_reference_rope(monkeypatch):
    """diffsynth wraps its rotate-half RoPE in torch.compile (30 s+ on CPU); run the same function eagerly."""
    from diffsynth.models import mova_dual_tower_bridge as m
    fn = m.apply_rotary_pos_emb
    monkeypatch.setattr(m, "apply_rotary_pos_emb", getattr(fn, "_torchdynamo_orig_callable", fn))


def tiny_inputs(seed=0, batch=1, frames=3, h=8, w=12, audio_len=None, video_fps=24.0):
    """Latents for the tiny preset: video [B,16,F,h,w], y [B,20,F,h,w], audio [B,128,L], context."""
    gen = torch.Generator().manual_seed(seed)
    cfg = TINY
    audio_len = audio_len or int((frames - 1) * 4 / video_fps * cfg.bridge.audio_fps) + 3
    video = torch.randn(batch, 16, frames, h, w, generator=gen)
    y = torch.randn(batch, 20, frames, h, w, generator=gen)
    audio = torch.randn(batch, cfg.audio_dit.in_dim, audio_len, generator=gen)
    ctx = torch.randn(batch, 24, cfg.video_dit.text_dim, generator=gen)
    ctx[:, 16:] = 0  # zero-padded text tail, as the released text path produces
    return video, y, audio, ctx

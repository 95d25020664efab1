"""DAC-style continuous audio VAE used by MOVA (48 kHz mono, 128-channel latents, hop 960).

Module names follow the released `audio_vae/diffusion_pytorch_model.safetensors` (spec section 10):
`encoder.block.N...`, `quant_conv`, `post_quant_conv`, `decoder.model.N...`, Snake `alpha` [1, C, 1].
Convolutions are plain (weight norm already fused in the release: `use_weight_norm=false`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import AudioVAEConfig, load_component_config
from ...common.checkpoint import expected_shapes, validate
from ...common.errors import CheckpointError, ConfigError, InputError
from ...common.files import load_safetensors


class Snake1d(nn.Module):
    """Periodic activation x + sin^2(a x) / a with one learned frequency per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 1e-9 keeps channels with alpha == 0 finite, as in the original DAC code.
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


class ResidualUnit(nn.Module):
    """Snake -> dilated k7 conv -> Snake -> k1 conv, added to the input."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(channels),
            nn.Conv1d(channels, channels, 7, dilation=dilation, padding=3 * dilation),
            Snake1d(channels),
            nn.Conv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        crop = (x.shape[-1] - y.shape[-1]) // 2
        if crop > 0:  # never happens with the symmetric padding above; kept for odd custom configs
            x = x[..., crop:-crop]
        return x + y


def _residual_stack(channels: int) -> list[nn.Module]:
    return [ResidualUnit(channels, d) for d in (1, 3, 9)]


class EncoderBlock(nn.Module):
    """Three residual units at `dim // 2` channels, then a strided conv to `dim` channels."""

    def __init__(self, dim: int, stride: int):
        super().__init__()
        half = dim // 2
        self.block = nn.Sequential(
            *_residual_stack(half),
            Snake1d(half),
            nn.Conv1d(half, dim, 2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DecoderBlock(nn.Module):
    """Snake, transposed conv upsampling by `stride`, then three residual units."""

    def __init__(self, in_dim: int, out_dim: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(in_dim),
            nn.ConvTranspose1d(in_dim, out_dim, 2 * stride, stride=stride,
                               padding=math.ceil(stride / 2), output_padding=stride % 2),
            *_residual_stack(out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class AudioEncoder(nn.Module):
    def __init__(self, dim: int, rates: list[int], latent_dim: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(1, dim, 7, padding=3)]
        for stride in rates:
            dim *= 2
            layers.append(EncoderBlock(dim, stride))
        layers += [Snake1d(dim), nn.Conv1d(dim, latent_dim, 3, padding=1)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class AudioDecoder(nn.Module):
    def __init__(self, latent_dim: int, dim: int, rates: list[int]):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(latent_dim, dim, 7, padding=3)]
        for i, stride in enumerate(rates):
            layers.append(DecoderBlock(dim // 2**i, dim // 2 ** (i + 1), stride))
        out_dim = dim // 2 ** len(rates)
        layers += [Snake1d(out_dim), nn.Conv1d(out_dim, 1, 7, padding=3), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _check_config(cfg: AudioVAEConfig) -> None:
    if getattr(cfg, "use_weight_norm", False):
        raise ConfigError(
            "audio_vae config has use_weight_norm=true: expected a checkpoint with weight norm fused "
            "(plain .weight keys, use_weight_norm=false as in the MOVA release). Fuse weight_g/weight_v "
            "into .weight (torch.nn.utils.remove_weight_norm) and set use_weight_norm=false.")
    if not getattr(cfg, "continuous", True):
        raise ConfigError(
            "audio_vae config has continuous=false (discrete RVQ codec): MOVA needs the continuous KL "
            "variant (continuous=true, quant_conv/post_quant_conv). Use the audio_vae folder of a MOVA release.")
    if list(cfg.encoder_rates) != list(cfg.decoder_rates)[::-1]:
        raise ConfigError(
            f"audio_vae encoder_rates {list(cfg.encoder_rates)} and decoder_rates {list(cfg.decoder_rates)} "
            "must mirror each other (MOVA: [2,3,4,5,8] / [8,5,4,3,2]); check audio_vae/config.json.")
    if cfg.decoder_dim % 2 ** len(cfg.decoder_rates):
        raise ConfigError(
            f"audio_vae decoder_dim {cfg.decoder_dim} must be divisible by 2**{len(cfg.decoder_rates)}.")


class AudioVAE(nn.Module):
    """Continuous DAC VAE: waveform [B, 1, N] <-> latent [B, latent_dim, N / hop]."""

    def __init__(self, cfg: AudioVAEConfig):
        super().__init__()
        _check_config(cfg)
        self.config = cfg
        d = cfg.latent_dim
        self.encoder = AudioEncoder(cfg.encoder_dim, list(cfg.encoder_rates), d)
        self.quant_conv = nn.Conv1d(d, 2 * d, 1)
        self.post_quant_conv = nn.Conv1d(d, d, 1)
        self.decoder = AudioDecoder(d, cfg.decoder_dim, list(cfg.decoder_rates))

    @property
    def sample_rate(self) -> int:
        return int(self.config.sample_rate)

    @property
    def hop_length(self) -> int:
        return math.prod(self.config.encoder_rates)

    @property
    def latent_dim(self) -> int:
        return int(self.config.latent_dim)

    def _ensure_fp32(self) -> None:
        # Snake activations and the long transposed-conv chain lose audible precision in bf16/fp16
        # (the official pipeline decodes under fp32 autocast); convert the weights once, in place.
        if any(p.dtype != torch.float32 for p in self.parameters()):
            self.float()

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent [B, latent_dim, T] -> waveform [B, 1, T * hop_length] in [-1, 1], float32."""
        if latent.dim() != 3 or latent.shape[1] != self.latent_dim:
            raise InputError(
                f"audio latent must be [batch, {self.latent_dim}, frames]; got shape {tuple(latent.shape)}. "
                "Pass the audio latent produced by the MOVA sampler.")
        self._ensure_fp32()
        device = self.post_quant_conv.weight.device
        z = latent.to(device=device, dtype=torch.float32)
        return self.decoder(self.post_quant_conv(z))

    @torch.no_grad()
    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """waveform [B, 1, N] (or [B, N]) at `sample_rate` -> posterior mean [B, latent_dim, ceil(N / hop)]."""
        if waveform.dim() == 2:
            waveform = waveform.unsqueeze(1)
        if waveform.dim() != 3 or waveform.shape[1] != 1:
            raise InputError(
                f"waveform must be mono [batch, 1, samples]; got shape {tuple(waveform.shape)}. "
                "Mix down to one channel and resample to the VAE sample rate first.")
        self._ensure_fp32()
        device = self.quant_conv.weight.device
        x = waveform.to(device=device, dtype=torch.float32)
        pad = -x.shape[-1] % self.hop_length  # right-pad to a whole number of latent frames
        x = F.pad(x, (0, pad))
        moments = self.quant_conv(self.encoder(x))
        return moments[:, : self.latent_dim]  # mean half; the log-variance half is unused at inference


def audio_vae_param_count(cfg: AudioVAEConfig) -> int:
    """Parameter count of the architecture described by `cfg` (built on the meta device, no memory)."""
    with torch.device("meta"):
        return sum(p.numel() for p in AudioVAE(cfg).parameters())


def audio_vae_from_state_dict(sd: Mapping[str, torch.Tensor], cfg: AudioVAEConfig, device="cpu") -> AudioVAE:
    """Strictly load released-layout weights; kept in float32 (decode always runs in fp32)."""
    with torch.device("meta"):
        model = AudioVAE(cfg)
    fuse = ("The file has weight-norm pairs (weight_g/weight_v): fuse them first. "
            if any(k.endswith("weight_g") for k in sd) else "")
    validate("audio VAE", expected_shapes(model), {k: tuple(v.shape) for k, v in sd.items()},
             fuse + "Use the audio_vae/ folder of a MOVA release (its config.json with it).")
    model.load_state_dict({k: v.to(device=device, dtype=torch.float32) for k, v in sd.items()}, assign=True)
    return model.eval().requires_grad_(False)


def load_audio_vae(path, device="cpu", cfg: Optional[AudioVAEConfig] = None) -> AudioVAE:
    """MOVA `audio_vae/` folder (config.json + diffusion_pytorch_model.safetensors) or a single
    .safetensors file (then `cfg`, or the released config when None)."""
    path = Path(path)
    if path.is_dir():
        cfg = cfg or load_component_config(path, "audio_vae")
        files = sorted(path.glob("*.safetensors"))
        if len(files) != 1:
            raise CheckpointError(f"{path}: expected one .safetensors weight file; found {[f.name for f in files]}.")
        path = files[0]
    if not path.is_file():
        raise CheckpointError(f"{path}: audio VAE file not found.")
    return audio_vae_from_state_dict(load_safetensors(path, "audio VAE"), cfg or AudioVAEConfig(), device=device)

"""Wan 2.1 video VAE (z_dim 16, 4x temporal / 8x spatial compression) with causal 3D convolutions.

Modules carry the Wan-native names (the layout of ComfyUI's `wan_2.1_vae.safetensors`); the diffusers
`AutoencoderKLWan` layout of a MOVA folder is converted on load by `video_vae_keys`.

Video is processed in temporal chunks exactly like the reference implementation: encode takes the
first frame alone and then 4 frames at a time, decode one latent frame at a time. Every causal conv
remembers the last two input frames of the previous chunk (`CausalCache`), so memory is bounded by one
chunk and the result equals the reference chunk by chunk.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import VideoVAEConfig
from ...common.errors import CheckpointError, ConfigError, InputError
from ...common.files import read_json, read_weights

CACHE_FRAMES = 2  # a k=3 causal conv needs the two previous frames


class CausalCache:
    """One slot per cached layer call; slots are claimed in call order, which repeats every chunk."""

    def __init__(self):
        self.slots: list = []
        self._next = 0

    def new_chunk(self) -> None:
        self._next = 0

    def claim(self) -> int:
        if self._next == len(self.slots):
            self.slots.append(None)
        self._next += 1
        return self._next - 1


_FIRST_CHUNK = "first-chunk"  # upsample3d marker: only the first latent frame has been seen so far


class CausalConv3d(nn.Conv3d):
    """Conv3d padded only on the past side in time (zeros, or frames handed in as `past`)."""

    def __init__(self, in_ch: int, out_ch: int, kernel, stride=1, padding=0):
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=0)
        pt, ph, pw = (padding,) * 3 if isinstance(padding, int) else padding
        self.causal_pad = (pw, pw, ph, ph, 2 * pt, 0)

    def forward(self, x: torch.Tensor, past: Optional[torch.Tensor] = None) -> torch.Tensor:
        pad = list(self.causal_pad)
        if past is not None and pad[4] > 0:
            x = torch.cat([past.to(x.device, x.dtype), x], dim=2)
            pad[4] = max(0, pad[4] - past.shape[2])
        return super().forward(F.pad(x, pad))


def cached_conv(conv: CausalConv3d, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
    """Run `conv` on one chunk with the previous chunk's last frames, then remember this chunk's."""
    slot = cache.claim()
    past = cache.slots[slot]
    tail = x[:, :, -CACHE_FRAMES:]
    if tail.shape[2] < CACHE_FRAMES and past is not None:
        tail = torch.cat([past[:, :, -1:].to(tail.device, tail.dtype), tail], dim=2)
    cache.slots[slot] = tail.clone()  # clone: a view would keep the whole chunk alive
    return conv(x, past)


class RMSNorm(nn.Module):
    """L2-normalize over channels, times sqrt(C) and a learned per-channel `gamma`."""

    def __init__(self, dim: int, spatial_dims: int = 3):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(dim, *([1] * spatial_dims)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        # Index layout (norm 0, conv 2, norm 3, conv 6) is the checkpoint's; 5 was dropout.
        self.residual = nn.Sequential(
            RMSNorm(in_dim), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim), nn.SiLU(), nn.Identity(), CausalConv3d(out_dim, out_dim, 3, padding=1))
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        h = self.shortcut(x)
        for layer in self.residual:
            x = cached_conv(layer, x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame separately."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, spatial_dims=2)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = x.transpose(1, 2).reshape(b * t, c, h, w)
        qkv = self.to_qkv(self.norm(y)).reshape(b * t, 3 * c, h * w).transpose(1, 2).contiguous()
        q, k, v = qkv.unsqueeze(1).chunk(3, dim=-1)
        # SDPA directly: head dim = C (up to 384) is beyond what the fused kernels behind
        # kernels.attention accept, and this runs once per frame only.
        y = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2).reshape(b * t, c, h, w)
        y = self.proj(y).reshape(b, t, c, h, w).transpose(1, 2)
        return x + y


class Upsample2x(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # nearest-exact has no bf16 kernel on some devices: compute in fp32.
        return F.interpolate(x.float(), scale_factor=2.0, mode="nearest-exact").to(x.dtype)


class Resample(nn.Module):
    """Spatial 2x up/down-sampling per frame, optionally with a 2x temporal step (`time_conv`)."""

    def __init__(self, dim: int, mode: str):
        super().__init__()
        self.mode = mode
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(Upsample2x(), nn.Conv2d(dim, dim // 2, 3, padding=1))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def _double_frames(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        slot = cache.claim()
        past = cache.slots[slot]
        if past is None:  # first latent frame maps to one output frame: no temporal step
            cache.slots[slot] = _FIRST_CHUNK
            return x
        first = isinstance(past, str)  # only the first chunk came before
        tail = x[:, :, -CACHE_FRAMES:]
        if tail.shape[2] < CACHE_FRAMES:
            prev = torch.zeros_like(tail) if first else past[:, :, -1:].to(tail.device, tail.dtype)
            tail = torch.cat([prev, tail], dim=2)
        # the frame before the second chunk is zeros, not the first frame (reference behaviour)
        y = self.time_conv(x, None if first else past)
        cache.slots[slot] = tail.clone()
        b, c2, t, h, w = y.shape
        y = y.reshape(b, 2, c2 // 2, t, h, w)  # channel halves = even / odd output frames
        return torch.stack((y[:, 0], y[:, 1]), dim=3).reshape(b, c2 // 2, 2 * t, h, w)

    def _halve_frames(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        slot = cache.claim()
        past = cache.slots[slot]
        cache.slots[slot] = x[:, :, -1:].clone()
        if past is None:  # the first frame passes through alone
            return x
        return self.time_conv(torch.cat([past.to(x.device, x.dtype), x], dim=2))

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        if self.mode == "upsample3d":
            x = self._double_frames(x, cache)
        b, c, t, h, w = x.shape
        y = self.resample(x.transpose(1, 2).reshape(b * t, c, h, w))
        x = y.reshape(b, t, *y.shape[1:]).transpose(1, 2)
        if self.mode == "downsample3d":
            x = self._halve_frames(x, cache)
        return x


def _head(out_dim: int, channels: int) -> nn.Sequential:
    return nn.Sequential(RMSNorm(out_dim), nn.SiLU(), CausalConv3d(out_dim, channels, 3, padding=1))


def _run(x: torch.Tensor, cache: CausalCache, conv_in, blocks, head) -> torch.Tensor:
    x = cached_conv(conv_in, x, cache)
    for block in blocks:
        x = block(x, cache)
    x = head[1](head[0](x))
    return cached_conv(head[2], x, cache)


class Encoder3d(nn.Module):
    def __init__(self, a: VideoVAEConfig):
        super().__init__()
        dims = [a.base_dim * m for m in (1, *a.dim_mult)]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        blocks: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(a.num_res_blocks):
                blocks.append(ResidualBlock(cin, cout))
                cin = cout
            if i < len(a.dim_mult) - 1:
                blocks.append(Resample(cout, "downsample3d" if a.temporal_downsample[i] else "downsample2d"))
        self.downsamples = nn.ModuleList(blocks)
        c = dims[-1]
        self.middle = nn.ModuleList([ResidualBlock(c, c), AttentionBlock(c), ResidualBlock(c, c)])
        self.head = _head(c, 2 * a.z_dim)

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        return _run(x, cache, self.conv1, [*self.downsamples, *self.middle], self.head)


class Decoder3d(nn.Module):
    def __init__(self, a: VideoVAEConfig):
        super().__init__()
        mult = a.dim_mult
        dims = [a.base_dim * m for m in (mult[-1], *mult[::-1])]
        temporal_up = a.temporal_downsample[::-1]
        self.conv1 = CausalConv3d(a.z_dim, dims[0], 3, padding=1)
        self.middle = nn.ModuleList([ResidualBlock(dims[0], dims[0]), AttentionBlock(dims[0]),
                                     ResidualBlock(dims[0], dims[0])])
        blocks: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                cin //= 2  # the previous upsampler halves the channels
            for _ in range(a.num_res_blocks + 1):
                blocks.append(ResidualBlock(cin, cout))
                cin = cout
            if i < len(mult) - 1:
                blocks.append(Resample(cout, "upsample3d" if temporal_up[i] else "upsample2d"))
        self.upsamples = nn.ModuleList(blocks)
        self.head = _head(dims[-1], 3)

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        return _run(x, cache, self.conv1, [*self.middle, *self.upsamples], self.head)


class WanVideoVAE(nn.Module):
    """pixels [-1, 1] [B, 3, 1+4k, H, W] <-> normalized latents [B, 16, 1+k, H/8, W/8]."""

    temporal_stride = 4
    spatial_stride = 8

    def __init__(self, cfg: VideoVAEConfig = VideoVAEConfig()):
        super().__init__()
        if len(cfg.temporal_downsample) != len(cfg.dim_mult) - 1 or sum(cfg.temporal_downsample) != 2:
            raise ConfigError(f"video VAE needs 2 temporal downsamples over {len(cfg.dim_mult) - 1} levels "
                              f"(Wan 2.1: [false, true, true]); got {list(cfg.temporal_downsample)}.")
        self.config = cfg
        z = cfg.z_dim
        self.encoder = Encoder3d(cfg)
        self.conv1 = CausalConv3d(2 * z, 2 * z, 1)
        self.conv2 = CausalConv3d(z, z, 1)
        self.decoder = Decoder3d(cfg)
        self.register_buffer("latents_mean", torch.empty(1, z, 1, 1, 1), persistent=False)
        self.register_buffer("latents_std", torch.empty(1, z, 1, 1, 1), persistent=False)
        self.reset_latent_stats()

    def reset_latent_stats(self) -> None:
        """(Re)fill the per-channel latent mean/std from the config (also after a meta-device build)."""
        z, device = self.config.z_dim, self.conv1.weight.device
        if device.type == "meta":
            device = torch.device("cpu")
        self.latents_mean = torch.tensor(self.config.latents_mean, device=device).view(1, z, 1, 1, 1)
        self.latents_std = torch.tensor(self.config.latents_std, device=device).view(1, z, 1, 1, 1)

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    def _param(self) -> torch.Tensor:
        return self.conv1.weight

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, 3, F, H, W] in [-1, 1], F = 1 + 4k, H and W multiples of 8 -> normalized latent (float32)."""
        if video.dim() != 5 or video.shape[1] != 3:
            raise InputError(f"video VAE encode expects pixels [batch, 3, frames, height, width]; got {tuple(video.shape)}.")
        f, h, w = video.shape[2:]
        if (f - 1) % 4 or h % 8 or w % 8:
            raise InputError(
                f"video VAE encode needs 1+4k frames and height/width divisible by 8; got {f} frames of {w}x{h}. "
                "Trim or pad the frames and resize the images first.")
        p = self._param()
        out_device = video.device
        video = video.to(p.device, p.dtype)
        cache = CausalCache()
        outs = []
        for start, end in [(0, 1)] + [(1 + 4 * i, 5 + 4 * i) for i in range((f - 1) // 4)]:
            cache.new_chunk()
            outs.append(self.encoder(video[:, :, start:end], cache))
        mu = self.conv1(torch.cat(outs, dim=2))[:, : self.z_dim].float()
        return ((mu - self.latents_mean.float()) / self.latents_std.float()).to(out_device)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor,
               on_frame: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
        """normalized latent [B, 16, T, h, w] -> pixels [B, 3, 1+4(T-1), 8h, 8w] in [-1, 1] (float32).

        Decodes one latent frame at a time (memory of one chunk) and moves each decoded chunk to the
        latent's device (a CPU latent keeps the full video off the GPU); `on_frame(done, total)` reports progress.
        """
        if latent.dim() != 5 or latent.shape[1] != self.z_dim:
            raise InputError(f"video VAE decode expects a latent [batch, {self.z_dim}, frames, h, w]; "
                             f"got {tuple(latent.shape)}.")
        p = self._param()
        z = latent.to(p.device, torch.float32) * self.latents_std.float() + self.latents_mean.float()
        x = self.conv2(z.to(p.dtype))
        cache = CausalCache()
        frames = []
        total = x.shape[2]
        for i in range(total):
            cache.new_chunk()
            frames.append(self.decoder(x[:, :, i:i + 1], cache).float().to(latent.device))
            if on_frame is not None:
                on_frame(i + 1, total)
        return torch.cat(frames, dim=2).clamp_(-1.0, 1.0)


def video_vae_param_count(cfg: VideoVAEConfig = VideoVAEConfig()) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in WanVideoVAE(cfg).parameters())


def _check_diffusers_config(raw: dict, where: str) -> None:
    if raw.get("is_residual") or raw.get("patch_size") or raw.get("z_dim", 16) != 16:
        raise ConfigError(f"{where} describes a Wan 2.2-style VAE (z_dim {raw.get('z_dim')}, residual blocks); "
                          "MOVA uses the Wan 2.1 VAE (z_dim 16). Use MOVA's video_vae/ or wan_2.1_vae.safetensors.")
    if raw.get("attn_scales"):
        raise ConfigError(f"{where}: attn_scales {raw['attn_scales']} are not supported (Wan 2.1 uses []).")


def video_vae_from_state_dict(sd: Mapping[str, torch.Tensor], cfg: Optional[VideoVAEConfig] = None,
                              dtype: torch.dtype = torch.float32, device="cpu") -> WanVideoVAE:
    """Build the VAE from a state dict in either key layout (Wan-native or diffusers)."""
    from .video_vae_keys import infer_config, to_native

    native, _ = to_native(sd, cfg)
    cfg = cfg or infer_config(native)
    with torch.device("meta"):
        model = WanVideoVAE(cfg)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(native))
    unexpected = sorted(set(native) - set(expected))
    wrong = [f"{k} {tuple(native[k].shape)} != {tuple(s)}" for k, s in expected.items()
             if k in native and native[k].shape != s]
    if missing or unexpected or wrong:
        raise CheckpointError(
            "video VAE weights do not fit the Wan 2.1 VAE: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(wrong)} wrong shapes (e.g. {wrong[:2]}). The file is truncated or another VAE; "
            "use wan_2.1_vae.safetensors or MOVA's video_vae/ folder.")
    model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in native.items()}, assign=True)
    model.reset_latent_stats()
    return model.eval().requires_grad_(False)


def _read_weights(path: Path) -> dict:
    return read_weights(path, "video VAE")


def load_video_vae(path, dtype: torch.dtype = torch.float32, device="cpu") -> WanVideoVAE:
    """Load MOVA's `video_vae/` folder (diffusers layout + config.json) or a single Wan 2.1 VAE file
    (ComfyUI `wan_2.1_vae.safetensors`, Wan `Wan2.1_VAE.pth`, or a diffusers-layout file)."""
    path = Path(path)
    cfg = None
    if path.is_dir():
        if (path / "config.json").is_file():
            raw = read_json(path / "config.json", "video VAE config")
            _check_diffusers_config(raw, str(path / "config.json"))
            cfg = VideoVAEConfig.from_dict(raw, str(path / "config.json"))
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.pth"))
        if len(files) != 1:
            raise CheckpointError(f"{path}: expected one weight file (diffusion_pytorch_model.safetensors); "
                                  f"found {[f.name for f in files]}.")
        path = files[0]
    if not path.is_file():
        raise CheckpointError(f"{path}: video VAE file not found.")
    return video_vae_from_state_dict(_read_weights(path), cfg, dtype=dtype, device=device)

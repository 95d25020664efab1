"""Wan 2.1 video VAE (z_dim 16, 4x temporal / 8x spatial compression) with causal 3D convolutions.

Modules carry the Wan-native names (the layout of ComfyUI's `wan_2.1_vae.safetensors`); the diffusers
`AutoencoderKLWan` layout of a MOVA folder is converted on load by `video_vae_keys`.

Video is processed in temporal chunks exactly like the reference implementation: encode takes the
first frame alone and then 4 frames at a time, decode one latent frame at a time. Every causal conv
remembers the last two input frames of the previous chunk (`CausalCache`), so memory is bounded by one
chunk and the result equals the reference chunk by chunk.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import VideoVAEConfig
from . import video_vae_tiles as tiles_mod
from .video_vae_tiles import choose_tile, feather, parse_tiling, spans
from ...kernels.device import free_memory_bytes
from ...common.checkpoint import expected_shapes, validate
from ...common.errors import CheckpointError, ConfigError, InputError
from ...common.files import read_json, read_weights

log = logging.getLogger("mova")
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


def _blocks(x: torch.Tensor, blocks, cache: CausalCache) -> torch.Tensor:
    for block in blocks:
        x = block(x, cache)
    return x


def _apply_head(head: nn.Sequential, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
    return cached_conv(head[2], head[1](head[0](x)), cache)


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
        return self.globl(self.local(x, cache), cache)

    def local(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """The convolutional part (tileable): conv1 and the downsamples."""
        return _blocks(cached_conv(self.conv1, x, cache), self.downsamples, cache)

    def globl(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """The part with frame-wide attention (run on whole frames): middle and head."""
        return _apply_head(self.head, _blocks(x, self.middle, cache), cache)


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
        return self.local(self.globl(x, cache), cache)

    def globl(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """The part with frame-wide attention (run on whole latent frames): conv1 and middle."""
        return _blocks(cached_conv(self.conv1, x, cache), self.middle, cache)

    def local(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """The convolutional part (tileable): upsamples and head."""
        return _apply_head(self.head, _blocks(x, self.upsamples, cache), cache)


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

    # ------------------------------------------------------------------------------- tiles
    def pick_tile(self, tiling, width: int, height: int, frames: int, device, frames_on_device: bool) -> int:
        """Widget/argument value -> tile side in output px (0 = untiled). "auto" asks the device for
        its free memory (none on CPU: untiled) and takes the largest tile that fits."""
        tile = parse_tiling(tiling) if not isinstance(tiling, int) else tiling
        if tile is not None:
            return tile
        free = free_memory_bytes(device)
        if free is None:
            return 0
        act = self._param().element_size()
        return choose_tile(int(free * 0.9), self.config, width, height, frames, act, frames_on_device)

    def _tiled(self, tile: int, lat_h: int, lat_w: int) -> bool:
        t = tile // self.spatial_stride if tile else 0
        return len(spans(lat_h, t, tiles_mod.overlap_for(t))) * len(spans(lat_w, t, tiles_mod.overlap_for(t))) > 1

    def _run_tiles(self, run, x, chunks, out, tile: int, in_f: int, out_f: int, on_chunk=None):
        """run(x tile chunk, cache) -> out chunk, over spatial tiles (each with its own causal cache
        through all chunks), feather-blended into `out` (zeros) on its own device."""
        stride = self.spatial_stride
        t = tile // stride if tile else 0
        ys = spans(x.shape[-2] // in_f, t, tiles_mod.overlap_for(t))
        xs = spans(x.shape[-1] // in_f, t, tiles_mod.overlap_for(t))
        m = tiles_mod.margin_for(t)
        single = len(ys) == len(xs) == 1
        wsum = None if single else torch.zeros(out.shape[-2:], dtype=torch.float32, device=out.device)
        done, total = 0, len(ys) * len(xs) * len(chunks)
        for iy, sy in enumerate(ys):
            wy = torch.tensor(feather(ys, iy, out_f, m))
            for ix, sx in enumerate(xs):
                inp = x[..., sy.start * in_f:sy.end * in_f, sx.start * in_f:sx.end * in_f]
                oy, ox = slice(sy.start * out_f, sy.end * out_f), slice(sx.start * out_f, sx.end * out_f)
                w2 = None if single else wy[:, None] * torch.tensor(feather(xs, ix, out_f, m))[None]
                cache = CausalCache()
                for tin, tout in chunks:
                    cache.new_chunk()
                    y = run(inp[:, :, tin], cache).float()
                    if single:
                        out[:, :, tout] = y.to(out.device)
                    else:
                        out[:, :, tout, oy, ox] += (y * w2.to(y.device)).to(out.device)
                    del y
                    done += 1
                    if on_chunk is not None:
                        on_chunk(done, total)
                if not single:
                    wsum[oy, ox] += w2.to(wsum.device)
        if not single:
            out /= wsum
        return out

    def _with_oom_retry(self, attempt, tile: int, what: str, width: int, height: int, frames: int, device):
        """attempt(tile); an untiled attempt that runs out of CUDA memory is retried tiled once
        (as ComfyUI's VAEDecode does), outside the except block so the failed attempt's tensors are freed."""
        try:
            return attempt(tile)
        except torch.OutOfMemoryError:
            if tile:
                raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        free = free_memory_bytes(device)
        act = self._param().element_size()
        retry = (choose_tile(int(free * 0.9), self.config, width, height, frames, act) if free else 0) or 256
        log.warning("MOVA: out of GPU memory in the untiled video VAE %s; retrying with %d px tiles.", what, retry)
        return attempt(retry)

    @torch.no_grad()
    def encode(self, video: torch.Tensor, tiling="auto") -> torch.Tensor:
        """video [B, 3, F, H, W] in [-1, 1], F = 1 + 4k, H and W multiples of 8 -> normalized latent (float32).
        `tiling`: "auto" (fit the free memory), "off" / 0 (untiled) or a tile side in pixels."""
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
        s = self.spatial_stride
        bounds = [(0, 1)] + [(1 + 4 * i, 5 + 4 * i) for i in range((f - 1) // 4)]
        chunks = [(slice(a, b), slice(i, i + 1)) for i, (a, b) in enumerate(bounds)]
        tile = self.pick_tile(tiling, w, h, f, p.device, frames_on_device=True)

        def attempt(tile: int) -> torch.Tensor:
            lat = (video.shape[0], self.z_dim, len(chunks), h // s, w // s)
            if not self._tiled(tile, h // s, w // s):
                run = lambda x, cache: self.conv1(self.encoder(x, cache))[:, : self.z_dim]  # noqa: E731
                return self._run_tiles(run, video, chunks, torch.zeros(lat, device=p.device), 0, s, 1)
            # tiles for the convolutions, whole frames for the attention (tiling it would change it)
            c = self.encoder.head[0].gamma.shape[0]
            feats = torch.zeros(lat[0], c, *lat[2:], device=p.device)
            self._run_tiles(self.encoder.local, video, chunks, feats, tile, s, 1)
            mu, cache = torch.zeros(lat, device=p.device), CausalCache()
            for i in range(len(chunks)):
                cache.new_chunk()
                y = self.encoder.globl(feats[:, :, i:i + 1].to(p.dtype), cache)
                mu[:, :, i:i + 1] = self.conv1(y)[:, : self.z_dim].float()
            return mu

        mu = self._with_oom_retry(attempt, tile, "encode", w, h, f, p.device)
        return ((mu - self.latents_mean.float()) / self.latents_std.float()).to(out_device)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor, on_frame: Optional[Callable[[int, int], None]] = None,
               tiling="auto") -> torch.Tensor:
        """normalized latent [B, 16, T, h, w] -> pixels [B, 3, 1+4(T-1), 8h, 8w] in [-1, 1] (float32).

        Decodes one latent frame at a time per spatial tile (causal cache per tile) and writes each
        chunk into the video on the latent's device (a CPU latent keeps the frames off the GPU).
        `tiling`: "auto" (largest tile that fits the free memory; untiled when it all fits or on CPU),
        "off" / 0 (untiled) or a tile side in pixels; an untiled decode that runs out of CUDA memory
        is retried tiled once. `on_frame(done, total)` reports progress in chunks."""
        if latent.dim() != 5 or latent.shape[1] != self.z_dim:
            raise InputError(f"video VAE decode expects a latent [batch, {self.z_dim}, frames, h, w]; "
                             f"got {tuple(latent.shape)}.")
        p = self._param()
        s, ts = self.spatial_stride, self.temporal_stride
        z = latent.to(p.device, torch.float32) * self.latents_std.float() + self.latents_mean.float()
        x = self.conv2(z.to(p.dtype))
        t = x.shape[2]
        frames, h, w = 1 + ts * (t - 1), x.shape[3] * s, x.shape[4] * s
        chunks = [(slice(i, i + 1), slice(0, 1) if i == 0 else slice(1 + ts * (i - 1), 1 + ts * i))
                  for i in range(t)]
        on_device = latent.device.type == p.device.type

        def attempt(tile: int) -> torch.Tensor:
            out = torch.zeros(x.shape[0], 3, frames, h, w, device=latent.device)
            if not self._tiled(tile, x.shape[3], x.shape[4]):
                return self._run_tiles(self.decoder, x, chunks, out, 0, 1, s, on_frame)
            # whole latent frames through the attention first (kept, small), then tiles for the rest
            feats, cache = None, CausalCache()
            for i in range(t):
                cache.new_chunk()
                y = self.decoder.globl(x[:, :, i:i + 1], cache)
                if feats is None:
                    feats = y.new_empty(y.shape[0], y.shape[1], t, *y.shape[3:])
                feats[:, :, i:i + 1] = y
            del cache, y
            return self._run_tiles(self.decoder.local, feats, chunks, out, tile, 1, s, on_frame)

        tile = self.pick_tile(tiling, w, h, frames, p.device, frames_on_device=on_device)
        return self._with_oom_retry(attempt, tile, "decode", w, h, frames, p.device).clamp_(-1.0, 1.0)


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
    validate("video VAE", expected_shapes(model), {k: tuple(v.shape) for k, v in native.items()},
             "The file is truncated or another VAE; use wan_2.1_vae.safetensors or MOVA's video_vae/ folder.")
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

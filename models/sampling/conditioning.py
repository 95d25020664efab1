"""Latent shapes and first-frame conditioning `y` (spec §4.1, §6.3), with input validation."""
from __future__ import annotations

import math

from dataclasses import dataclass

import torch

from ...common.errors import InputError

SPATIAL_MULTIPLE = 16   # VAE stride 8 x patch 2
TEMPORAL_STRIDE = 4     # Wan 2.1 VAE
SPATIAL_STRIDE = 8


@dataclass(frozen=True)
class LatentShapes:
    video: tuple          # (B, 16, (frames-1)//4+1, H/8, W/8)
    audio: tuple          # (B, audio channels, L)
    audio_samples: int    # int(sample_rate * frames / fps): trim decoded audio to this


def audio_num_samples(frames: int, fps: float, sample_rate: int = 48000) -> int:
    return int(sample_rate * frames / fps)


def audio_latent_length(frames: int, fps: float, sample_rate: int = 48000, hop: int = 960) -> int:
    """n = int(sr * frames / fps); L = (n - 1) // hop + 1 (193 frames @ 24 fps -> 403)."""
    return (audio_num_samples(frames, fps, sample_rate) - 1) // hop + 1


def check_video_size(width: int, height: int, frames: int):
    bad = []
    if width <= 0 or height <= 0 or width % SPATIAL_MULTIPLE or height % SPATIAL_MULTIPLE:
        bad.append(f"width and height must be positive multiples of {SPATIAL_MULTIPLE} (got {width}x{height}; "
                   f"e.g. use {_round(width)}x{_round(height)})")
    if frames < 1 or (frames - 1) % TEMPORAL_STRIDE:
        near = max(1, round((frames - 1) / TEMPORAL_STRIDE) * TEMPORAL_STRIDE + 1)
        bad.append(f"frames must be 4k+1 (1, 5, ..., 97, 193), got {frames}; e.g. use {near}")
    if bad:
        raise InputError("; ".join(bad) + ".")


def _round(v: int) -> int:
    return max(SPATIAL_MULTIPLE, round(v / SPATIAL_MULTIPLE) * SPATIAL_MULTIPLE)


def _half_up(x: float) -> int:
    return math.floor(x + 0.5)       # JavaScript's Math.round, so web/mova.js and this agree on ties


def nearest_geometry(width: int, height: int, frames: int) -> tuple:
    """The nearest request MOVA can take: sizes multiples of SPATIAL_MULTIPLE, frames TEMPORAL_STRIDE·k+1
    (ties up; at least one multiple / 1 frame). The memory estimate snaps with it; web/mova.js snaps
    the widgets with the same rule."""
    s, t = SPATIAL_MULTIPLE, TEMPORAL_STRIDE
    return (max(s, _half_up(width / s) * s), max(s, _half_up(height / s) * s), max(1, _half_up((frames - 1) / t) * t + 1))


def check_geometry(width: int, height: int, frames: int, fps: float):
    check_video_size(width, height, frames)
    if not fps > 0:
        raise InputError(f"fps must be positive, got {fps}.")


def latent_geometry(width: int, height: int, frames: int, fps: float = 24.0, sample_rate: int = 48000,
                    hop: int = 960, batch: int = 1, video_channels: int = 16,
                    audio_channels: int = 128) -> LatentShapes:
    check_geometry(width, height, frames, fps)
    n = audio_num_samples(frames, fps, sample_rate)
    if n < 1:
        raise InputError(f"{frames} frames at {fps} fps give no audio samples; use more frames.")
    video = (batch, video_channels, (frames - 1) // TEMPORAL_STRIDE + 1, height // SPATIAL_STRIDE,
             width // SPATIAL_STRIDE)
    return LatentShapes(video, (batch, audio_channels, (n - 1) // hop + 1), n)


def latent_shapes(config, width: int, height: int, frames: int, fps: float = 24.0, batch: int = 1):
    """(video_shape, audio_shape) of the noise for a MovaConfig (VAE channels, audio rate and hop)."""
    g = latent_geometry(width, height, frames, fps, config.audio_vae.sample_rate, config.audio_vae.hop_length,
                        batch, config.video_vae.z_dim, config.audio_dit.in_dim)
    return g.video, g.audio


def first_frame_mask(batch: int, latent_frames: int, h: int, w: int, last_frame: bool = False,
                     device=None, dtype=torch.float32) -> torch.Tensor:
    """[B, 4, T, h, w]: the 4 sub-frames of latent frame 0 are 1 (the given image), everything else 0."""
    mask = torch.zeros(batch, TEMPORAL_STRIDE, latent_frames, h, w, device=device, dtype=dtype)
    mask[:, :, 0] = 1
    if last_frame:  # the official FLF path marks the last pixel frame (sub-frame 3 of the last latent)
        mask[:, -1, -1] = 1
    return mask


def build_y(image_latent: torch.Tensor, last_frame: bool = False) -> torch.Tensor:
    """y = cat(mask, latent) [B, 20, T, h, w] from the normalized VAE latent of [image, zeros...]
    encoded at full length (the official code encodes the whole clip, not the image alone)."""
    if image_latent.ndim != 5:
        raise InputError(f"image latent must be [B, 16, T, h, w], got shape {list(image_latent.shape)}; "
                         "encode the first frame followed by black frames with the video VAE.")
    b, _, t, h, w = image_latent.shape
    mask = first_frame_mask(b, t, h, w, last_frame, image_latent.device, image_latent.dtype)
    return torch.cat([mask, image_latent], dim=1)


def check_y(y: torch.Tensor, video_shape) -> None:
    b, _, t, h, w = video_shape
    if y is None or tuple(y.shape) != (b, 20, t, h, w):
        found = None if y is None else list(y.shape)
        raise InputError(f"first-frame conditioning must be [B, 20, T, h, w] = {[b, 20, t, h, w]} for this "
                         f"video size, got {found}. Encode the first frame at the same width/height/frames.")


def fit_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[B, 3, h, w] in 0..1 -> [B, 3, height, width] in [-1, 1]: scale to cover, centre crop (as released)."""
    import torch.nn.functional as F
    if image.ndim != 4 or image.shape[1] != 3:
        raise InputError(f"first frame must be an RGB image [B, 3, H, W], got shape {list(image.shape)}.")
    h0, w0 = image.shape[-2:]
    scale = max(height / h0, width / w0)
    size = (max(height, round(h0 * scale)), max(width, round(w0 * scale)))
    x = image.float()
    if size != (h0, w0):
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return (x[:, :, top:top + height, left:left + width].clamp(0, 1) * 2 - 1)


@torch.no_grad()
def first_frame_y(video_vae, width: int, height: int, frames: int, image: torch.Tensor = None) -> torch.Tensor:
    """y [1, 20, T, h, w]: encode [image, black x (frames-1)] at full length with the video VAE (as the
    official pipeline does), then prepend the mask. No image = the white frame used for T2VA."""
    check_video_size(width, height, frames)
    first = fit_image(image[:1], width, height) if image is not None else white_frame(width, height)
    clip = torch.zeros(1, 3, frames, height, width)
    clip[:, :, 0] = first[0]
    return build_y(video_vae.encode(clip).float())


def white_frame(width: int, height: int, batch: int = 1) -> torch.Tensor:
    """The T2VA default first frame: pure white, [B, 3, H, W] in [-1, 1] (what the official README uses)."""
    return torch.ones(batch, 3, height, width)


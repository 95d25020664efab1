"""Cheap sampling previews: latent video -> small RGB frames, audio -> small waveform/latent images.

Pure numpy + PIL (no ComfyUI), so the sampler node can hand the result to ComfyUI's
`ProgressBar.update_absolute(step, total, preview=("JPEG", image, max_size))`.

The video projection is the fixed linear map ComfyUI uses for Wan 2.1 latents
(`comfy/latent_formats.py` Wan21.latent_rgb_factors / _bias): it applies to *normalized* latents,
i.e. `(z - mean) / std` — the space MOVA samples in. Output lands roughly in -1..1.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from PIL import Image

from ...common.errors import InputError

# Rows = the 16 latent channels, columns = R, G, B (facts from ComfyUI's Wan21 latent format).
WAN21_LATENT_RGB_FACTORS = np.array([
    [-0.1299, -0.1692, 0.2932],
    [0.0671, 0.0406, 0.0442],
    [0.3568, 0.2548, 0.1747],
    [0.0372, 0.2344, 0.1420],
    [0.0313, 0.0189, -0.0328],
    [0.0296, -0.0956, -0.0665],
    [-0.3477, -0.4059, -0.2925],
    [0.0166, 0.1902, 0.1975],
    [-0.0412, 0.0267, -0.1364],
    [-0.1293, 0.0740, 0.1636],
    [0.0680, 0.3019, 0.1128],
    [0.0032, 0.0581, 0.0639],
    [-0.1251, 0.0927, 0.1699],
    [0.0060, -0.0633, 0.0005],
    [0.3477, 0.2275, 0.2950],
    [0.1984, 0.0913, 0.1861],
], dtype=np.float32)
WAN21_LATENT_RGB_BIAS = np.array([-0.1835, -0.0868, -0.3360], dtype=np.float32)


def _to_numpy(x) -> np.ndarray:
    """Accept numpy arrays or torch tensors (any device/dtype) without importing torch."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """-1..1 -> 0..255 (what ComfyUI's latent previews do)."""
    return (np.clip((x + 1.0) * 0.5, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def video_latent_to_frames(latent, max_frames: Optional[int] = None) -> np.ndarray:
    """Normalized video latent [16, T, H, W] or [B, 16, T, H, W] (first batch item used)
    -> uint8 RGB frames [T', H, W, 3] at latent resolution (1/8 of the video).

    `max_frames` picks that many latent frames evenly spread over T (always keeps first and last)."""
    x = _to_numpy(latent)
    if x.ndim == 5:
        x = x[0]
    if x.ndim != 4 or x.shape[0] != WAN21_LATENT_RGB_FACTORS.shape[0]:
        raise InputError(f"video preview: expected a latent [16, frames, height, width] (or with a batch "
                         f"dimension first), found shape {tuple(x.shape)}. Pass the video latent, not the "
                         f"first-frame condition or the audio latent.")
    if max_frames is not None and max_frames < x.shape[1]:
        if max_frames < 1:
            raise InputError(f"video preview: max_frames must be >= 1, found {max_frames}")
        pick = np.unique(np.linspace(0, x.shape[1] - 1, max_frames).round().astype(int))
        x = x[:, pick]
    rgb = np.einsum("cthw,cr->thwr", x, WAN21_LATENT_RGB_FACTORS) + WAN21_LATENT_RGB_BIAS
    return _to_uint8(rgb)


def frames_strip(frames: np.ndarray, gap: int = 2, columns: Optional[int] = None) -> Image.Image:
    """uint8 frames [T, H, W, 3] -> one image with the frames side by side (dark gaps between),
    wrapped after `columns` frames (None: one row)."""
    t, h, w, _ = frames.shape
    cols = max(1, min(columns or t, t))
    rows = -(-t // cols)
    strip = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), 24, dtype=np.uint8)
    for i in range(t):
        r, c = divmod(i, cols)
        strip[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = frames[i]
    return Image.fromarray(strip)


def audio_latent_image(latent, height: int = 64, width: Optional[int] = None) -> Image.Image:
    """Audio latent [128, L] or [B, 128, L] (50 latent frames per second) -> a spectrogram-like
    image: channels on the vertical axis, time left to right, each channel scaled by its own
    spread so structure shows at every noise level. Greyscale-to-amber colour map."""
    x = _to_numpy(latent)
    if x.ndim == 3:
        x = x[0]
    if x.ndim != 2 or x.shape[1] < 1:
        raise InputError(f"audio preview: expected an audio latent [channels, frames] (or with a batch "
                         f"dimension first), found shape {tuple(x.shape)}.")
    centred = x - x.mean(axis=1, keepdims=True)
    spread = centred.std(axis=1, keepdims=True) + 1e-6
    v = np.clip(np.abs(centred / spread) / 3.0, 0.0, 1.0)       # 0 quiet .. 1 strong
    rgb = np.stack([v, v ** 1.5 * 0.8, v ** 3 * 0.3], axis=-1)   # amber ramp
    img = Image.fromarray((rgb * 255 + 0.5).astype(np.uint8))
    return img.resize((width or x.shape[1], height), Image.NEAREST)


def waveform_image(waveform, width: int = 256, height: int = 64) -> Image.Image:
    """Waveform [T], [C, T] or [B, C, T] in -1..1 -> min/max envelope per pixel column
    (channels averaged), green on dark, with a centre line."""
    x = _to_numpy(waveform)
    while x.ndim > 1:
        x = x.mean(axis=0)
    if x.size == 0:
        raise InputError("waveform preview: the waveform has no samples.")
    if width < 1 or height < 2:
        raise InputError(f"waveform preview: width >= 1 and height >= 2 required, found {width}x{height}")
    edges = np.linspace(0, x.size, width + 1).astype(int)
    canvas = np.full((height, width, 3), 20, dtype=np.uint8)
    mid = (height - 1) / 2.0
    canvas[int(round(mid)), :] = (60, 60, 60)
    for col in range(width):
        seg = x[edges[col]:max(edges[col + 1], edges[col] + 1)]
        lo, hi = np.clip(seg.min(), -1, 1), np.clip(seg.max(), -1, 1)
        top, bottom = int(round(mid - hi * mid)), int(round(mid - lo * mid))
        canvas[top:bottom + 1, col] = (90, 220, 120)
    return Image.fromarray(canvas)


def stack_images(images: Sequence[Image.Image], gap: int = 2) -> Image.Image:
    """Images top to bottom on a dark background, each scaled to the widest one's width."""
    width = max(im.width for im in images)
    scaled = [im if im.width == width else im.resize((width, max(1, round(im.height * width / im.width))),
                                                     Image.NEAREST) for im in images]
    out = Image.new("RGB", (width, sum(im.height for im in scaled) + gap * (len(scaled) - 1)), (24, 24, 24))
    y = 0
    for im in scaled:
        out.paste(im.convert("RGB"), (0, y))
        y += im.height + gap
    return out


def sampling_preview(video_latent=None, audio_latent=None, max_frames: int = 4,
                     audio_height: int = 48, columns: Optional[int] = None,
                     frame_height: Optional[int] = None) -> Image.Image:
    """One picture per sampling step: latent frames (a row, or `columns` per row) over the audio
    latent image. `frame_height`: scale frames up (whole factors, sharp pixels) to at least this
    height, so tiny latents stay readable next to the audio band. Either part may be None."""
    parts = []
    if video_latent is not None:
        frames = video_latent_to_frames(video_latent, max_frames=max_frames)
        scale = max(1, -(-int(frame_height) // frames.shape[1])) if frame_height else 1
        if scale > 1:
            frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
        parts.append(frames_strip(frames, columns=columns))
    if audio_latent is not None:
        width = parts[0].width if parts else None     # audio spans the same width as the frames
        parts.append(audio_latent_image(audio_latent, height=audio_height, width=width))
    if not parts:
        raise InputError("sampling preview: got neither a video nor an audio latent.")
    return stack_images(parts)

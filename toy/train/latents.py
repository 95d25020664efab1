"""Designed latent spaces for the toy codecs (why: a VAE learned from scratch did not converge on the
CPU budget — after 150 steps its decoder still drew no object and its audio decoder output silence).

The latent is computed from the rendered clip (and its scene) instead of being discovered: the VAE
decoders learn to render it and the encoders learn to predict it (plain regression), so the towers
train on informative, low-noise targets from the first step. Shapes are those of the real codecs:
video [16, 1 + (F-1)/4, H/8, W/8], audio [16, ceil(N/960)]; the video statistics go into the VAE config
(latents_mean/std) and the audio ones are folded into quant_conv/post_quant_conv.

Video channels per 8x8 cell and latent frame (4 pixel frames; the first latent frame has 1):
  0-3  object position bump of each pixel frame      4-6  object colour (broadcast)
  7-9  mean background colour of the cell            10-13 surface one-hot (wood, metal, glass, drum)
  14   background brightness slope inside the cell    15   size / 5, signed: + ball, - square (broadcast)
The position bump is a Gaussian of the distance from the cell centre to the object's centre (BUMP_PX
wide), not the cell's coverage: the object's place is spread over ~3x3 cells, so the decoder reads it
below the cell from their ratios and consecutive frames overlap (with coverage, a small fast ball left
its cells between latent frames and the towers drew it jumping from place to place).
Audio channels per 20 ms frame: 0 impact onset gain, 1 onset position inside the frame x gain,
  2-5 surface one-hot x impact envelope (e^-t/tau), 6-15 log energy in 10 bands (total + 9 bands).
"""
from __future__ import annotations

import numpy as np

from .. import scenes
from ..captions import SOUNDS

CELL = 8
BUMP_PX = 6.0
HOP = 960
TAU_S = {"wood": 0.05, "metal": 0.5, "glass": 0.12, "drum": 0.16}
BAND_EDGES = (0, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 24001)


def object_masks(scene: scenes.Scene, frame_times) -> np.ndarray:
    """[F, H, W] anti-aliased object coverage at the given times (same geometry as scenes.render)."""
    x, h = scenes.simulate(scene).at(np.asarray(frame_times, dtype=np.float64))
    cy = scenes.FLOOR_TOP - scene.size - h
    px = (np.arange(scenes.WIDTH) + 0.5)[None, None, :] - x[:, None, None]
    py = (np.arange(scenes.HEIGHT) + 0.5)[None, :, None] - cy[:, None, None]
    edge = scene.size + 0.5
    if scene.shape == "ball":
        return np.clip(edge - np.sqrt(px * px + py * py), 0.0, 1.0).astype(np.float32)
    return (np.clip(edge - np.abs(px), 0, 1) * np.clip(edge - np.abs(py), 0, 1)).astype(np.float32)


def object_centres(scene: scenes.Scene, frame_times) -> np.ndarray:
    """[F, 2] the object's centre (x, y) in px at the given times (pixel i spans [i, i + 1])."""
    x, h = scenes.simulate(scene).at(np.asarray(frame_times, dtype=np.float64))
    return np.stack([x, scenes.FLOOR_TOP - scene.size - h], axis=1)


def position_bumps(centres: np.ndarray) -> np.ndarray:
    """[F, H/8, W/8] Gaussian of the distance from each cell centre to the object's centre."""
    cx = (np.arange(scenes.WIDTH // CELL) + 0.5) * CELL
    cy = (np.arange(scenes.HEIGHT // CELL) + 0.5) * CELL
    dx = cx[None, None, :] - centres[:, 0, None, None]
    dy = cy[None, :, None] - centres[:, 1, None, None]
    return np.exp(-(dx * dx + dy * dy) / (2 * BUMP_PX ** 2)).astype(np.float32)


def _pool(a: np.ndarray) -> np.ndarray:
    """Mean over 8x8 cells of [..., H, W]."""
    *lead, h, w = a.shape
    return a.reshape(*lead, h // CELL, CELL, w // CELL, CELL).mean(axis=(-3, -1))


def clip_background(clip) -> np.ndarray:
    """[H, W, 3]: the static background (per-pixel median over time; the object keeps moving)."""
    return np.median(clip.video, axis=0)


def video_latent(centres: np.ndarray, background: np.ndarray, scene: scenes.Scene) -> np.ndarray:
    """Designed latent [16, 1 + (F-1)/4, H/8, W/8] of pixel frames with the object at these centres
    ([F, 2], F = 1 + 4k)."""
    f = centres.shape[0]
    if (f - 1) % 4:
        raise ValueError(f"need 1 + 4k frames, got {f}")
    bump = position_bumps(centres)                                       # [F, h, w]
    groups = [np.repeat(bump[:1], 4, axis=0)] + [bump[1 + 4 * i:5 + 4 * i] for i in range((f - 1) // 4)]
    bump4 = np.stack(groups, axis=1)                                     # [4, T, h, w]
    t, h, w = bump4.shape[1:]
    bg = _pool(background.transpose(2, 0, 1)) * 2 - 1                   # [3, h, w]
    lum = background.mean(axis=2)
    rows = lum.reshape(h, CELL, w, CELL)
    slope = (rows[:, :CELL // 2].mean(axis=(1, 3)) - rows[:, CELL // 2:].mean(axis=(1, 3))) * 10.0
    colour = np.asarray(scenes.RGB[scene.colour], dtype=np.float32) * 2 - 1
    surface = np.eye(len(SOUNDS), dtype=np.float32)[SOUNDS.index(scene.sound)]
    out = np.empty((16, t, h, w), dtype=np.float32)
    out[0:4] = bump4
    out[4:7] = colour[:, None, None, None]
    out[7:10] = bg[:, None]
    out[10:14] = surface[:, None, None, None]
    out[14] = slope[None]
    out[15] = scene.size / 5.0 * (1.0 if scene.shape == "ball" else -1.0)
    return out


def clip_video_latent(clip) -> np.ndarray:
    times = np.arange(clip.video.shape[0]) / clip.fps
    return video_latent(object_centres(clip.scene, times), clip_background(clip), clip.scene)


def _band_energies(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """[10, T] log10 energies per 960-sample frame: total, then 9 bands (Hann window of 2 frames)."""
    t = -(-len(audio) // HOP)
    padded = np.pad(audio.astype(np.float64), (HOP // 2, t * HOP - len(audio) + HOP // 2 + HOP))
    frames = np.lib.stride_tricks.sliding_window_view(padded, 2 * HOP)[::HOP][:t]
    spec = np.abs(np.fft.rfft(frames * np.hanning(2 * HOP), axis=1)) ** 2
    freqs = np.fft.rfftfreq(2 * HOP, 1.0 / sample_rate)
    bands = [spec[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) for lo, hi in zip(BAND_EDGES[:-1], BAND_EDGES[1:])]
    e = np.stack([spec.sum(axis=1)] + bands)
    return np.log10(e + 1e-6).astype(np.float32)


def audio_latent(audio: np.ndarray, impacts_s, strengths, sound: str, sample_rate: int = 48000) -> np.ndarray:
    """Designed latent [16, ceil(N / 960)] of a toy soundtrack with known impacts."""
    t = -(-len(audio) // HOP)
    out = np.zeros((16, t), dtype=np.float32)
    centres = (np.arange(t) + 0.5) * HOP / sample_rate
    k = SOUNDS.index(sound)
    for t0, s in zip(impacts_s, strengths):
        gain = 0.5 + 0.5 * float(np.clip(s, 0.0, 1.0))
        pos = t0 * sample_rate / HOP
        i = int(pos)
        if i < t:
            out[0, i] += gain
            out[1, i] += gain * (pos - i)
        after = centres >= t0
        out[2 + k, after] += gain * np.exp(-(centres[after] - t0) / TAU_S[sound])
    out[6:16] = _band_energies(audio, sample_rate)
    return out


def impact_strengths(scene: scenes.Scene) -> np.ndarray:
    motion = scenes.simulate(scene)
    return np.clip(np.asarray(motion.speeds) / 200.0, 0.0, 1.0)


def clip_audio_latent(clip) -> np.ndarray:
    return audio_latent(clip.audio, clip.impacts_s, impact_strengths(clip.scene), clip.scene.sound, clip.sample_rate)

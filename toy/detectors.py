"""Detectors that read toy clips back: impact times in the video, onsets in the audio, how well the two
line up, the object's colour and the impact sound class.

They only assume what any plausible output of the toy world shows (a saturated object over a plain,
static background; percussive sounds), so they also work on blurry or noisy generated clips.
Inputs may be numpy arrays or torch tensors: video [F, H, W, 3] in [0, 1] (uint8 is rescaled),
audio [N] or [C, N] (channels are averaged).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..common.errors import InputError
from .scenes import RGB
from .sounds import TIMBRES, draw_voice, synth_event


# ---------------------------------------------------------------- inputs

def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def as_video(video) -> np.ndarray:
    v = _numpy(video)
    if v.ndim != 4 or v.shape[-1] != 3 or v.shape[0] < 5:
        raise InputError(f"toy detectors expect video [frames>=5, H, W, 3]; got shape {tuple(v.shape)}. "
                         "Pass frames channels-last (ComfyUI IMAGE order) without the batch dimension.")
    return v.astype(np.float32) / 255.0 if v.dtype == np.uint8 else v.astype(np.float32)


def as_audio(audio) -> np.ndarray:
    a = _numpy(audio).astype(np.float64)
    if a.ndim == 3 and a.shape[0] == 1:  # ComfyUI AUDIO waveform [B=1, C, N]
        a = a[0]
    if a.ndim == 2:
        a = a.mean(axis=0)
    if a.ndim != 1 or a.size < 1024:
        raise InputError(f"toy detectors expect mono audio [N] or [C, N] with N >= 1024; got shape {tuple(a.shape)}.")
    return a


# ---------------------------------------------------------------- video: tracking and bounces

@dataclass(frozen=True)
class ObjectTrack:
    x: np.ndarray      # [F] centroid column, pixels (NaN where no object was found)
    y: np.ndarray      # [F] centroid row, pixels, down is positive
    mass: np.ndarray   # [F] salient area, pixels
    weights: np.ndarray  # [F, H, W] per-pixel object weight in [0, 1]


def _box(a: np.ndarray, r: int) -> np.ndarray:
    """Box-sum over (2r+1)^2 pixels of [F, H, W] (zero padded)."""
    p = np.pad(a, ((0, 0), (r + 1, r), (r + 1, r)))
    c = p.cumsum(1).cumsum(2)
    k = 2 * r + 1
    return c[:, k:, k:] - c[:, :-k, k:] - c[:, k:, :-k] + c[:, :-k, :-k]


def track_object(video) -> ObjectTrack:
    """Centroid of the pixels that differ from the static background (per-pixel median over time)."""
    v = as_video(video)
    scale = max(v.shape[1], v.shape[2]) / 64.0       # sizes below are tuned at 64x64
    radius = 12.0 * scale
    v = _box(v.transpose(0, 3, 1, 2).reshape(-1, *v.shape[1:3]), 1).reshape(
        v.shape[0], 3, *v.shape[1:3]).transpose(0, 2, 3, 1) / 9.0   # 3x3 mean: pixel noise / 3
    bg = np.median(v, axis=0)
    dist = np.linalg.norm(v - bg[None], axis=-1)
    lo = max(0.12, 3.0 * float(np.median(dist)))   # above the noise of the background itself
    w = np.clip((dist - lo) / 0.15, 0.0, 1.0)
    # Keep only the blob around the densest spot, so stray noise pixels do not pull the centroid.
    dense = _box(w, max(1, round(3 * scale))).reshape(len(w), -1).argmax(axis=1)
    F, H, W = w.shape
    rows, cols = np.mgrid[0:H, 0:W]
    py, px = dense // W, dense % W
    near = ((rows[None] - py[:, None, None]) ** 2 + (cols[None] - px[:, None, None]) ** 2) <= radius ** 2
    w = w * near
    mass = w.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        x = (w * (cols[None] + 0.5)).sum(axis=(1, 2)) / mass
        y = (w * (rows[None] + 0.5)).sum(axis=(1, 2)) / mass
    lost = mass < 2.0 * scale * scale
    x[lost] = np.nan
    y[lost] = np.nan
    return ObjectTrack(x, y, mass, w)


def _fill(a: np.ndarray) -> np.ndarray:
    ok = np.isfinite(a)
    if ok.sum() < 2:
        return np.full_like(a, np.nan)
    idx = np.arange(len(a))
    return np.interp(idx, idx[ok], a[ok])


def _reversals(p: np.ndarray, prominence: float, span: int = 3) -> list[int]:
    """Frames where p has a local maximum standing `prominence` above its neighbours on both sides."""
    out = []
    for k in range(1, len(p) - 1):
        a, b = max(0, k - 2), min(len(p), k + 3)
        if p[k] < p[a:b].max() or (out and k - out[-1] <= 2):
            continue
        left, right = p[max(0, k - span):k], p[k + 1:k + 1 + span]
        if p[k] - left.min() >= prominence and p[k] - right.min() >= prominence:
            out.append(k)
    return out


def _refine(p: np.ndarray, k: int, curvature: float) -> float:
    """Sub-frame time of the reversal near frame k: p follows two parabolas of known curvature (gravity)
    or lines (curvature 0) that meet at the impact; test the impact before and after frame k."""
    n = len(p)
    best, best_err = float(k), np.inf
    for s in (k - 1, k):                   # impact in (s, s+1]
        pre = np.arange(max(0, s - 2), s + 1)
        post = np.arange(s + 1, min(n, s + 4))
        if len(pre) < 2 or len(post) < 2:
            continue
        fits = []
        for idx in (pre, post):
            t = idx - float(k)
            z = p[idx] - 0.5 * curvature * t * t
            A = np.stack([np.ones_like(t), t], axis=1)
            coef, *_ = np.linalg.lstsq(A, z, rcond=None)
            fits.append((coef, float(((A @ coef - z) ** 2).sum())))
        (a1, b1), e1 = fits[0]
        (a2, b2), e2 = fits[1]
        if b1 <= 0 or b2 >= 0:             # must approach before and leave after
            continue
        t_hit = k + (a2 - a1) / (b1 - b2)
        outside = max(0.0, s - t_hit, t_hit - (s + 1))
        err = e1 + e2 + 100.0 * outside   # strongly prefer a hit inside the hypothesised interval
        if err < best_err:
            best, best_err = t_hit, err
    return float(np.clip(best, k - 1.0, k + 1.0))


def detect_video_impacts(video, fps: float = 24.0, with_kinds: bool = False):
    """Times (s) of bounces: floor hits (falling turns to rising) and wall hits (sideways reversal near
    the left/right border), refined below the frame. `with_kinds` also returns "floor"/"wall" labels."""
    v = as_video(video)
    track = track_object(v)
    x, y = _fill(track.x), _fill(track.y)
    W = v.shape[2]
    if not np.isfinite(y).all():
        return ([], []) if with_kinds else []
    d2 = y[2:] - 2 * y[1:-1] + y[:-2]
    gravity = max(0.0, float(np.median(d2)))    # px/frame^2; most frames are in free flight
    found: list[tuple[float, str]] = []
    span = y.max() - y.min()
    for k in _reversals(y, prominence=1.0):
        if y[k] >= y.max() - max(4.0, 0.35 * span):   # near the floor, not a wobble in flight
            found.append((_refine(y, k, gravity), "floor"))
    for sign in (1.0, -1.0):                           # right wall: max of x; left wall: max of -x
        for k in _reversals(sign * x, prominence=1.5):
            if (x[k] > 0.7 * W) if sign > 0 else (x[k] < 0.3 * W):
                t = _refine(sign * x, k, 0.0)
                if all(abs(t - f) > 1.5 for f, _ in found):   # a corner hit is one impact
                    found.append((t, "wall"))
    found.sort()
    times = [t / fps for t, _ in found]
    return (times, [kd for _, kd in found]) if with_kinds else times


# ---------------------------------------------------------------- audio: onsets

BAND_EDGES_HZ = (30, 150, 300, 600, 1200, 2400, 4800, 9600, 20000)  # octave-ish, each weighs the same
NFFT_S = 512 / 48000      # analysis window (10.7 ms)
HOP_S = 0.001
ONSET_LAG_S = 0.002         # constant between the detected half-rise and the true start of the sound


def onset_strength(audio, sample_rate: int = 48000) -> tuple[np.ndarray, float]:
    """Band-wise log-energy rise (dB, summed over octave bands) per 1 ms frame, and the frame rate.

    Each band's level sits on a floor of 5x its quiet (20th percentile) energy so stationary noise stays
    flat, and each band's own 97th-percentile rise is subtracted so only onsets that stand out count.
    """
    a = as_audio(audio)
    nfft, hop = int(round(NFFT_S * sample_rate)), max(1, int(round(HOP_S * sample_rate)))
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(a, nfft // 2, mode="reflect"), nfft)[::hop]
    power = np.abs(np.fft.rfft(frames * np.hanning(nfft), axis=1)) ** 2
    freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate)
    bands = [(freqs >= lo) & (freqs < hi) for lo, hi in zip(BAND_EDGES_HZ[:-1], BAND_EDGES_HZ[1:])]
    energy = np.stack([power[:, m].sum(axis=1) for m in bands if m.any()], axis=1)
    floor = 5.0 * np.percentile(energy, 20, axis=0) + 1e-12 * energy.max() + 1e-30
    level = 10.0 * np.log10(energy + floor)
    kernel = np.ones(3) / 3.0
    level = np.stack([np.convolve(col, kernel, mode="same") for col in level.T], axis=1)
    lag = 4
    rise = level[lag:] - level[:-lag]
    rise = np.maximum(rise - np.percentile(rise, 97, axis=0), 0.0).sum(axis=1)
    flux = np.concatenate([np.zeros(lag), rise])
    edge = int(0.01 * sample_rate / hop)   # reflect padding makes fake rises at the ends
    flux[:edge] = 0.0
    flux[-edge:] = 0.0
    return flux, sample_rate / hop


def detect_audio_onsets(audio, sample_rate: int = 48000, min_gap_s: float = 0.05,
                        rel_threshold: float = 0.12, min_strength: float = 6.0) -> list[float]:
    """Impact onset times (s): flux peaks above rel_threshold x the strongest one (and above
    min_strength dB, which plain noise does not reach), at least min_gap_s apart, each placed where
    its rise first reaches half the peak."""
    flux, rate = onset_strength(audio, sample_rate)
    thresh = max(rel_threshold * float(flux.max()), min_strength)
    gap = max(1, int(min_gap_s * rate))
    onsets: list[float] = []
    k = 0
    while k < len(flux):
        if flux[k] < thresh:
            k += 1
            continue
        peak = k + int(np.argmax(flux[k:k + gap]))
        if flux[peak + 1:peak + gap].max(initial=0.0) > flux[peak]:
            k = peak + 1               # a stronger peak follows: it owns this rise
            continue
        start = peak
        while start > 0 and flux[start - 1] >= 0.5 * flux[peak] and peak - start < gap:
            start -= 1
        onsets.append(start / rate + ONSET_LAG_S)
        k = peak + gap
    return onsets


# ---------------------------------------------------------------- sync metric

@dataclass(frozen=True)
class SyncResult:
    pairs: list[tuple[float, float]]     # (video impact, audio onset), seconds
    offsets_ms: list[float]              # audio minus video, per pair
    unmatched_video: list[float]
    unmatched_audio: list[float]
    median_abs_offset_ms: float          # NaN when nothing matched
    median_offset_ms: float
    best_lag_ms: float                   # constant audio delay that lines up the most events (NaN if none)

    def fraction_within(self, ms: float) -> float:
        """Share of video impacts whose matched onset is within `ms` (unmatched impacts count as misses)."""
        total = len(self.pairs) + len(self.unmatched_video)
        return float(sum(abs(o) <= ms for o in self.offsets_ms) / total) if total else float("nan")


def sync_offsets(video_impacts, audio_onsets, max_offset_s: float = 0.3, tolerance_s: float = 0.5 / 24) -> SyncResult:
    """Order-preserving one-to-one matching of impacts to onsets that minimises the total |offset|
    (pairs at most max_offset_s apart; an unmatched event costs max_offset_s), and the single audio lag
    (within max_offset_s) that brings the most onsets within tolerance_s of an impact."""
    v, a = sorted(float(t) for t in video_impacts), sorted(float(t) for t in audio_onsets)
    pairs = _align(v, a, max_offset_s)
    used_v, used_a = {tv for tv, _ in pairs}, {ta for _, ta in pairs}
    offsets = [1000.0 * (ta - tv) for tv, ta in pairs]
    nan = float("nan")
    return SyncResult(
        pairs=pairs,
        offsets_ms=offsets,
        unmatched_video=[t for t in v if t not in used_v],
        unmatched_audio=[t for t in a if t not in used_a],
        median_abs_offset_ms=float(np.median(np.abs(offsets))) if offsets else nan,
        median_offset_ms=float(np.median(offsets)) if offsets else nan,
        best_lag_ms=_best_lag_ms(v, a, max_offset_s, tolerance_s),
    )


def _align(v: list[float], a: list[float], max_offset_s: float) -> list[tuple[float, float]]:
    # Edit-distance style dynamic programme: skip an impact, skip an onset, or pair them.
    n, m, skip = len(v), len(a), max_offset_s
    cost = np.zeros((n + 1, m + 1))
    cost[:, 0] = np.arange(n + 1) * skip
    cost[0, :] = np.arange(m + 1) * skip
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d = abs(a[j - 1] - v[i - 1])
            pair = cost[i - 1, j - 1] + d if d <= max_offset_s else np.inf
            cost[i, j] = min(pair, cost[i - 1, j] + skip, cost[i, j - 1] + skip)
    pairs, i, j = [], n, m
    while i > 0 and j > 0:
        d = abs(a[j - 1] - v[i - 1])
        if d <= max_offset_s and np.isclose(cost[i, j], cost[i - 1, j - 1] + d):
            pairs.append((v[i - 1], a[j - 1]))
            i, j = i - 1, j - 1
        elif np.isclose(cost[i, j], cost[i - 1, j] + skip):
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def _best_lag_ms(v: list[float], a: list[float], max_offset_s: float, tolerance_s: float) -> float:
    if not v or not a:
        return float("nan")
    diffs = np.subtract.outer(np.asarray(a), np.asarray(v)).ravel()       # every audio-minus-video gap
    diffs = diffs[np.abs(diffs) <= max_offset_s + tolerance_s]
    if diffs.size == 0:
        return float("nan")
    lags = np.arange(-max_offset_s, max_offset_s + 1e-9, 0.001)
    hits = (np.abs(diffs[None, :] - lags[:, None]) <= tolerance_s).sum(axis=1)
    best = hits.max()
    # Among the best lags take the gaps they explain and report their median (ties: the smallest lag).
    lag = lags[hits == best][np.argmin(np.abs(lags[hits == best]))]
    return float(1000.0 * np.median(diffs[np.abs(diffs - lag) <= tolerance_s]))


# ---------------------------------------------------------------- colour

def _hue(rgb: np.ndarray) -> float:
    r, g, b = rgb
    return float(np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)) % 360.0)


COLOUR_HUES = {name: _hue(np.asarray(rgb)) for name, rgb in RGB.items()}


def classify_colour(video) -> str:
    """Name of the object's colour: hue of the mean colour of its solid pixels vs the palette hues."""
    v = as_video(video)
    w = track_object(v).weights
    solid = w >= 0.5
    if solid.sum() < 3:
        solid = w > 0
    if not solid.any():
        raise InputError("classify_colour found no object in the video (it looks like a plain background).")
    mean = v[solid].mean(axis=0)
    h = _hue(mean)
    return min(COLOUR_HUES, key=lambda n: abs((COLOUR_HUES[n] - h + 180.0) % 360.0 - 180.0))


# ---------------------------------------------------------------- sound class

def _event_features(a: np.ndarray, start: int, stop: int, noise: np.ndarray, sr: int) -> np.ndarray:
    """[log2 centroid, log2 peak frequency, decay dB/s] of one impact, noise spectrum removed."""
    head = a[start:start + int(0.04 * sr)]
    n = 4096
    win = np.hanning(len(head))
    spec = np.abs(np.fft.rfft(head * win, n)) ** 2 / (win ** 2).sum()
    spec = np.maximum(spec - noise, 0.0)
    f = np.fft.rfftfreq(n, 1.0 / sr)
    band = (f >= 30) & (f <= 16000)
    s, fb = spec[band], f[band]
    centroid = (s * fb).sum() / (s.sum() + 1e-20)
    peak = fb[np.argmax(s)]
    # Decay: energy drop from the first 25 ms to 60..100 ms (or as far as the next onset allows).
    e_noise = float(noise.sum()) * 2.0 / n
    def energy(t0, t1):
        seg = a[start + int(t0 * sr):start + int(t1 * sr)]
        return max(float(np.mean(seg ** 2)) - e_noise, 1e-12) if len(seg) else 1e-12
    late_end = min(0.1, (stop - start) / sr)
    late_start = max(0.03, late_end - 0.04)
    drop_db = 10 * np.log10(energy(0.0, 0.025) / energy(late_start, late_end))
    decay = drop_db / (0.5 * (late_start + late_end) - 0.0125)
    return np.array([np.log2(centroid + 1.0), np.log2(peak + 1.0), decay])


def _noise_spectrum(a: np.ndarray, sample_rate: int, n: int = 4096) -> np.ndarray:
    """Per-bin noise power (quiet 10th percentile of 40 ms frames), on the same scale as _event_features."""
    m = int(0.04 * sample_rate)
    frames = np.lib.stride_tricks.sliding_window_view(a, m)[:: m // 2]
    win = np.hanning(m)
    spec = np.abs(np.fft.rfft(frames * win, n, axis=1)) ** 2 / (win ** 2).sum()
    return np.percentile(spec, 10, axis=0)


def sound_features(audio, sample_rate: int = 48000, onsets=None) -> np.ndarray:
    """Feature rows [n_onsets, 3] of the impacts in a clip (onsets detected if not given)."""
    a = as_audio(audio)
    onsets = detect_audio_onsets(a, sample_rate) if onsets is None else list(onsets)
    noise = _noise_spectrum(a, sample_rate)
    starts = [int(round(t * sample_rate)) for t in onsets]
    rows = []
    for i, st in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else len(a)
        if stop - st >= int(0.045 * sample_rate):
            rows.append(_event_features(a, st, stop, noise, sample_rate))
    return np.array(rows).reshape(-1, 3)


@lru_cache(maxsize=None)
def sound_templates(sample_rate: int = 48000) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """(class names, mean features [K, 3], feature scale [3]) from the known synthesis, fixed seed."""
    rng = np.random.default_rng(1234)
    names = tuple(TIMBRES)
    feats = []
    for name in names:
        rows = []
        for _ in range(12):
            a = 0.0015 * rng.standard_normal(sample_rate // 2)
            event = synth_event(draw_voice(name, rng, sample_rate), rng, sample_rate)[: len(a) - 4800]
            a[4800:4800 + len(event)] += 0.4 * event
            rows.append(sound_features(a, sample_rate, onsets=[0.1])[0])
        feats.append(rows)
    feats = np.array(feats)                      # [K, 12, 3]
    scale = feats.std(axis=1).mean(axis=0) + np.array([0.1, 0.1, 10.0])
    return names, feats.mean(axis=1), scale


def classify_sound(audio, sample_rate: int = 48000, onsets=None) -> str:
    """Sound class ("wood", "metal", "glass", "drum"): nearest template, distances summed over impacts."""
    names, means, scale = sound_templates(sample_rate)
    feats = sound_features(audio, sample_rate, onsets)
    if len(feats) == 0:
        raise InputError("classify_sound found no impact onsets in the audio (silent or noise only).")
    dist = np.linalg.norm((feats[:, None, :] - means[None]) / scale, axis=-1)   # [n, K]
    return names[int(np.argmin(dist.sum(axis=0)))]


# ---------------------------------------------------------------- everything about one clip

@dataclass(frozen=True)
class ClipReport:
    video_impacts_s: list[float]
    audio_onsets_s: list[float]
    sync: SyncResult
    colour: str | None       # None when no object was found
    sound: str | None        # None when no impact was heard


def evaluate_clip(video, audio, fps: float = 24.0, sample_rate: int = 48000) -> ClipReport:
    """All detectors on one (generated) clip; a missing object or silence gives None, not an error."""
    v, a = as_video(video), as_audio(audio)
    impacts = detect_video_impacts(v, fps)
    onsets = detect_audio_onsets(a, sample_rate)
    try:
        colour = classify_colour(v)
    except InputError:
        colour = None
    sound = classify_sound(a, sample_rate, onsets) if len(sound_features(a, sample_rate, onsets)) else None
    return ClipReport(impacts, onsets, sync_offsets(impacts, onsets), colour, sound)

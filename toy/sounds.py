"""Impact sounds of the toy world: one timbre per surface, synthesised as decaying modes plus a noise burst.

Each impact starts exactly at its physics time (sub-sample: the waveform is evaluated on the continuous
time since impact), so audio onsets are known to the sample.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timbre:
    """How one surface rings when hit: partials of f0 (ratios, amplitudes, decay times) + a noise burst."""

    f0_range: tuple[float, float]
    ratios: tuple[float, ...]
    amps: tuple[float, ...]
    decays: tuple[float, ...]      # seconds (amplitude e-folding), per partial
    noise_amp: float
    noise_decay: float             # seconds
    noise_band: tuple[float, float]  # Hz
    length: float                  # seconds synthesised per event (after that it is inaudible)
    sweep: float = 1.0             # initial pitch multiplier (a drum skin starts sharp and settles)
    sweep_tau: float = 0.03


TIMBRES: dict[str, Timbre] = {
    # Low, quickly damped wooden modes and a dull noise burst: "hollow knock".
    "wood": Timbre((170.0, 240.0), (1.0, 2.7, 4.1), (1.0, 0.45, 0.2), (0.04, 0.022, 0.012),
                   0.7, 0.006, (80.0, 1500.0), 0.25),
    # Inharmonic free-bar partials with a long ring: "metal clang".
    "metal": Timbre((420.0, 620.0), (1.0, 2.76, 5.40, 8.93, 13.34), (0.8, 1.0, 0.7, 0.45, 0.25),
                    (0.55, 0.4, 0.28, 0.2, 0.12), 0.35, 0.002, (2000.0, 12000.0), 1.2),
    # High, sparse partials, medium ring, bright tick: "glass clink".
    "glass": Timbre((2200.0, 3200.0), (1.0, 2.32, 4.25), (1.0, 0.5, 0.3), (0.12, 0.07, 0.04),
                    0.3, 0.0015, (3000.0, 16000.0), 0.4),
    # Very low membrane modes with a falling pitch and a soft low noise burst: "drum thud".
    "drum": Timbre((60.0, 85.0), (1.0, 1.59, 2.14), (1.0, 0.35, 0.2), (0.16, 0.08, 0.05),
                   0.5, 0.012, (40.0, 800.0), 0.5, sweep=1.7, sweep_tau=0.03),
}

ATTACK_S = 0.0008   # raised-cosine attack, short enough to read as a click
EVENT_GAIN = 0.45   # peak of the loudest impact; overlapping rings stay inside [-1, 1]
ROOM_NOISE = 0.0015  # faint white noise so silence is not digital zero


@dataclass(frozen=True)
class Voice:
    """One surface's drawn pitch and partials; every impact on it in a clip shares them (no beating)."""

    sound: str
    freqs: tuple[float, ...]
    amps: tuple[float, ...]
    decays: tuple[float, ...]


def draw_voice(sound: str, rng: np.random.Generator, sample_rate: int = 48000) -> Voice:
    if sound not in TIMBRES:
        raise ValueError(f"toy sound must be one of {tuple(TIMBRES)}, got {sound!r}")
    tb = TIMBRES[sound]
    f0 = rng.uniform(*tb.f0_range)
    freqs, amps, decays = [], [], []
    for ratio, amp, decay in zip(tb.ratios, tb.amps, tb.decays):
        f = f0 * ratio * rng.uniform(0.98, 1.02)
        if f < 0.45 * sample_rate:
            freqs.append(f), amps.append(amp * rng.uniform(0.8, 1.2)), decays.append(decay * rng.uniform(0.85, 1.15))
    return Voice(sound, tuple(freqs), tuple(amps), tuple(decays))


def synth_event(voice: Voice, rng: np.random.Generator, sample_rate: int = 48000, frac: float = 0.0) -> np.ndarray:
    """One impact of `voice`, peak 1, starting `frac` samples before sample 0 (0 <= frac < 1)."""
    tb = TIMBRES[voice.sound]
    n = int(tb.length * sample_rate)
    t = ((np.arange(n) + frac) / sample_rate).astype(np.float32)   # float32: rendering speed matters
    if tb.sweep != 1.0:
        # Phase of f(t) = f * (1 + (sweep-1) e^{-t/tau}), integrated in closed form.
        base = t + np.float32((tb.sweep - 1.0) * tb.sweep_tau) * (1.0 - np.exp(-t / np.float32(tb.sweep_tau)))
    else:
        base = t
    wave = np.zeros(n, dtype=np.float32)
    for f, a, d in zip(voice.freqs, voice.amps, voice.decays):
        a = a * rng.uniform(0.9, 1.1)   # where it is struck changes the mix a little
        m = min(n, int(9.2 * d * sample_rate))   # beyond that the partial is below -80 dB
        wave[:m] += np.float32(a) * np.exp(-t[:m] / np.float32(d)) * np.sin(
            np.float32(2 * np.pi * f) * base[:m] + np.float32(rng.uniform(0, 2 * np.pi)))
    wave += np.float32(tb.noise_amp) * _noise_burst(tb, t, rng, sample_rate)
    head = int(ATTACK_S * sample_rate) + 2
    wave[:head] *= np.sin(0.5 * np.pi * np.clip(t[:head] / ATTACK_S, 0.0, 1.0)) ** 2
    tail = int(0.6 * n)   # fade the last 40% so the cut-off makes no click
    wave[tail:] *= np.cos(0.5 * np.pi * np.clip((t[tail:] / tb.length - 0.6) / 0.4, 0.0, 1.0)) ** 2
    return (wave / (np.abs(wave).max() + 1e-12)).astype(np.float32)


def _noise_burst(tb: Timbre, t: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    # Band-limited white noise (FFT mask) under a fast exponential decay; only the audible head is made.
    m = min(len(t), max(256, int(10 * tb.noise_decay * sample_rate)))
    spec = np.fft.rfft(rng.standard_normal(m))
    freqs = np.fft.rfftfreq(m, 1.0 / sample_rate)
    spec[(freqs < tb.noise_band[0]) | (freqs > tb.noise_band[1])] = 0.0
    noise = np.fft.irfft(spec, m)
    noise /= noise.std() + 1e-12
    out = np.zeros(len(t), dtype=np.float32)
    out[:m] = noise * np.exp(-t[:m] / tb.noise_decay)
    return out


def mix_impacts(sound: str, times_s, strengths, n_samples: int, rng: np.random.Generator,
                sample_rate: int = 48000) -> np.ndarray:
    """Mono track with one `sound` impact at each time (seconds), loudness 0.5..1 from strength 0..1."""
    audio = (ROOM_NOISE * rng.standard_normal(n_samples)).astype(np.float32)
    voice = draw_voice(sound, rng, sample_rate)
    for t0, strength in zip(times_s, strengths):
        start = int(np.ceil(t0 * sample_rate))
        if start >= n_samples:
            continue
        event = synth_event(voice, rng, sample_rate, frac=start - t0 * sample_rate)
        gain = EVENT_GAIN * (0.5 + 0.5 * float(np.clip(strength, 0.0, 1.0)))
        stop = min(n_samples, start + len(event))
        audio[start:stop] += np.float32(gain) * event[: stop - start]
    return np.clip(audio, -1.0, 1.0)

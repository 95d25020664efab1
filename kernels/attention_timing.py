"""The `timed` attention choice: measure each usable backend once per shape bucket, keep the fastest.

Pure parts (length buckets, picking the winner from measurements, the report line) take plain values so
they are tested with fake timings on the CPU; `cuda_timer` is the real clock.
"""
from __future__ import annotations

import statistics
from typing import Callable, Sequence

import torch


def length_bucket(n: int) -> int:
    """Sequence lengths share a timing when they round up to the same power of two."""
    return 1 << max(0, int(n) - 1).bit_length()


def pick_fastest(candidates: Sequence[str], measure: Callable[[str], float]) -> tuple[str, str, dict]:
    """(winner, reason, {backend: seconds or error text}). `measure(name)` returns seconds per call or
    raises; a backend that raises is left out. SDPA is the fallback when nothing else measures."""
    timings: dict = {}
    for name in candidates:
        try:
            timings[name] = float(measure(name))
        except Exception as exc:  # a kernel that cannot run this shape: reported, never fatal
            timings[name] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    measured = {k: v for k, v in timings.items() if isinstance(v, float)}
    if not measured:
        return "sdpa", "timed: no backend could be measured; " + _describe(timings), timings
    winner = min(measured, key=measured.get)
    return winner, "timed: " + _describe(timings), timings


def _describe(timings: dict) -> str:
    return ", ".join(f"{k} {v * 1e3:.2f} ms" if isinstance(v, float) else f"{k} {v}" for k, v in timings.items())


def cuda_timer(fn: Callable[[], object], reps: int = 3) -> float:
    """Median seconds of `fn` on the current CUDA stream after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)

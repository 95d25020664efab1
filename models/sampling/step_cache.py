"""Step caching for joint audio+video sampling (in the spirit of EasyCache / MagCache).

A step is skipped whole — both towers and the Bridge, every guidance pass — when the predicted change
of the guided velocity since the last computed step is small; the Euler step then uses, per modality,
the velocity forecast along the last two computed steps of the expert (linear in t), or with
forecast=False the last one. On the toy at 12 steps (48 clips) the forecast turned +10.8 ms of AV offset
at threshold 0.6 into +1.0 ms for the same skipped steps (docs/toy-model.md). The skip decision follows EasyCache's "transformation rate": between the last
two computed steps, k = |v_j - v_p| / |x_j - x_p| (output change per input change, per modality and
clip); at a later step the relative change of v is estimated as k * |x - x_last| / |v_last|. The step
is skipped while that estimate is below `threshold` for both modalities and every clip of the batch.

Never skipped: the first `warmup` steps, the last `last` steps, the step at the expert switch and the
next one (the rate must be measured again on the new expert), a step whose guidance plan differs from
the last computed one (e.g. bridge guidance starting), and any step before a rate is known.

Implemented as a guidance wrapper (the sampler's guidance seam): `StepCache(settings, guidance)` plans,
runs and combines like the guidance it wraps and returns no forwards for a skipped step. threshold 0
is off: every step runs, bit for bit the wrapped guidance.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...common.errors import InputError

THRESHOLD_MAX = 1.0


@dataclass(frozen=True)
class StepCacheSettings:
    threshold: float = 0.0   # predicted relative velocity change allowed before recomputing; 0 = off
    warmup: int = 2          # steps always computed at the start (>= 2: the rate needs two)
    last: int = 1            # steps always computed at the end
    forecast: bool = True    # a skipped step forecasts v along the last two computed steps (False: reuse)

    def __post_init__(self):
        if not 0.0 <= self.threshold <= THRESHOLD_MAX:
            raise InputError(f"step cache threshold must be within [0, {THRESHOLD_MAX}], got {self.threshold}; "
                             "0 turns caching off; the higher, the more steps are skipped (embedded toy at 12 steps: "
                             "0.6-0.7 skips 4 of 12 for +1 to +4 ms of AV offset, docs/toy-model.md).")
        if self.warmup < 2 or self.last < 1:
            raise InputError(f"step cache needs warmup >= 2 and last >= 1 computed steps, got warmup "
                             f"{self.warmup}, last {self.last}.")


def _per_clip_norm(t: torch.Tensor) -> torch.Tensor:
    return t.float().flatten(1).norm(dim=1)


class StepCache:
    """Guidance wrapper that skips predictable steps (see the module docstring)."""

    def __init__(self, settings: StepCacheSettings, guidance=None, video_cfg: float = 5.0, audio_cfg: float = 5.0):
        from .sampler import TextCFG
        self.settings = settings
        self.inner = guidance if guidance is not None else TextCFG(video_cfg, audio_cfg)
        self.total = None
        self._reset()

    def _reset(self):
        self.skipped: list[int] = []          # step indices skipped
        self.forced: dict[int, str] = {}      # step index -> why it had to run
        self.forwards_run = self.forwards_skipped = 0
        self._step, self._skip_now, self._pending = None, False, None
        self._last = None                     # (expert, plan, x (video, audio), v (video, audio))
        self._rate = None                     # (k_video [B], k_audio [B]) on the current expert
        self._t = None                        # timestep of the step being planned
        self._history = []                    # [(t, v)] of the last two computed steps on this expert

    def __getattr__(self, name):  # audio_negative, summary(steps), ... of the wrapped guidance
        if name in ("inner", "settings"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    # ---- the sampler's guidance seam ------------------------------------------------------------
    def bind(self, steps: int) -> "StepCache":
        if hasattr(self.inner, "bind"):
            self.inner = self.inner.bind(steps)
        self.total = steps
        self._reset()
        return self

    @property
    def contexts(self) -> dict:
        return getattr(self.inner, "contexts", {})

    def plan(self, step: int, timestep: float) -> list:
        self._step, self._t = step, timestep
        return self.inner.plan(step, timestep)

    def run_forwards(self, generator, expert, passes, video, audio, *args, **kwargs) -> list:
        why = self._must_run(expert, passes)
        self._skip_now = why is None and self._estimate(video, audio) < self.settings.threshold
        if self._skip_now:
            self.skipped.append(self._step)
            self.forwards_skipped += len(passes)
            return []
        if why is not None:
            self.forced[self._step] = why
        from .sampler import run_forwards
        runner = getattr(self.inner, "run_forwards", run_forwards)
        outputs = runner(generator, expert, passes, video, audio, *args, **kwargs)
        self.forwards_run += len(passes)
        self._pending = (expert, list(passes), video, audio)
        return outputs

    def combine(self, step: int, outputs) -> tuple:
        if self._skip_now:
            return self._predicted()
        v = self.inner.combine(step, outputs)
        expert, passes, x_video, x_audio = self._pending
        self._pending = None
        if self._last is not None and self._last[0] is expert:
            _, _, (px_v, px_a), (pv_v, pv_a) = self._last
            self._rate = tuple(_per_clip_norm(vn - vp) / _per_clip_norm(xn - xp).clamp(min=1e-12)
                               for vn, vp, xn, xp in ((v[0], pv_v, x_video, px_v), (v[1], pv_a, x_audio, px_a)))
        else:
            self._rate = None  # first step on this expert: no rate yet
            self._history = []
        # the latents are the sampler's own state: they are replaced, not modified, by the Euler step
        self._last = (expert, passes, (x_video, x_audio), v)
        self._history = (self._history + [(self._t, v)])[-2:]
        return v

    def _predicted(self) -> tuple:
        """The velocity of a skipped step: the line through the last two computed steps of this expert,
        evaluated at this step's t (a first-order forecast, as TaylorSeer / FORA-style caches do); without
        `forecast`, or before two steps are known, the last computed velocity."""
        last = self._last[3]
        if not self.settings.forecast or len(self._history) < 2 or self._t is None:
            return last
        (t0, v0), (t1, v1) = self._history
        if t1 == t0:
            return last
        w = (self._t - t1) / (t1 - t0)
        return tuple(b + (b - a) * w for a, b in zip(v0, v1))

    # ---- the decision ---------------------------------------------------------------------------
    def _must_run(self, expert, passes) -> str | None:
        s, i = self.settings, self._step
        if s.threshold <= 0:
            return "cache off"
        if i < s.warmup:
            return "warm-up"
        if self.total is not None and i >= self.total - s.last:
            return "last steps"
        if self._last is None or self._last[0] is not expert:
            return "expert switch"
        if list(passes) != self._last[1]:
            return "guidance plan changed"
        if self._rate is None:
            return "rate not measured on this expert yet"
        return None

    def _estimate(self, video, audio) -> float:
        """Largest predicted relative velocity change over modalities and clips."""
        _, _, (px_v, px_a), (pv_v, pv_a) = self._last
        worst = 0.0
        for k, x, px, pv in ((self._rate[0], video, px_v, pv_v), (self._rate[1], audio, px_a, pv_a)):
            est = k * _per_clip_norm(x - px) / _per_clip_norm(pv).clamp(min=1e-12)
            worst = max(worst, float(est.max()))
        return worst

    # ---- reporting ------------------------------------------------------------------------------
    @property
    def speedup(self) -> float:
        total = self.forwards_run + self.forwards_skipped
        return total / self.forwards_run if self.forwards_run else 1.0

    def progress(self) -> str:
        """For the sampler's progress text."""
        return f"step cache: {len(self.skipped)} step(s) skipped, {self.forwards_skipped} forwards saved"

    def report(self) -> str:
        steps = self.total if self.total is not None else len(self.skipped) + len(self.forced)
        return (f"step cache {self.settings.threshold:g}: skipped {len(self.skipped)} of {steps} steps "
                f"({self.forwards_skipped} of {self.forwards_run + self.forwards_skipped} forwards, "
                f"{self.speedup:.2f}x fewer); skipped steps {[i + 1 for i in self.skipped]}")

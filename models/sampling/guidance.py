"""Bridge guidance (dual CFG): text guidance and guidance against a "bridge off" pass, per modality.

API
    GuidanceSettings(...)                    frozen; see the fields below
    DualGuidance(settings, audio_negative=None, steps=None, forward=joint_forward)
        the sampler seam of models/sampling/sampler.py:
        .plan(step, timestep) -> [ForwardPass]        the forwards this step needs (redundant ones skipped)
        .combine(step, outputs) -> (video_v, audio_v)  fp32, per modality
        .contexts -> {"audio_negative": tensor}        extra text contexts the passes refer to
        .run_forwards(generator, expert, passes, ...)  same signature as sampler.run_forwards; batches
                                                       passes with equal bridge scales when batch_passes
        .bind(steps) -> DualGuidance                   the step count, needed for a partial step range
        .forwards_per_step(steps) -> [int], .summary(steps) -> str   for the progress text

Definitions (spec §4.3), per modality m (video, audio) with text scale s_T(m) and bridge scale s_B(m):
    C  = F(text=positive, bridge on)        B = F(text=negative, bridge on)   (= v_negtext)
    A  = F(text=negative, bridge off)       N = F(text=positive, bridge off)  (= v_bridge_off)
    "nested" (InstructPix2Pix, default):  v = A + s_B·(B − A) + s_T·(C − B)
    "independent":                        v = B + s_T·(C − B) + s_B·(C − N)   (s_T = 1: C + s_B·(C − N))
  The bridge scale of the VIDEO is `a2v_scale` (guidance along the audio->video conditioning), that of
  the AUDIO is `v2a_scale`. "Bridge off" = joint_forward with a2v_scale = v2a_scale = 0 (bridge_off
  "both": one pass serves both modalities) or only the modality's own direction set to 0 ("separate":
  video uses a2v=0, audio uses v2a=0; up to two passes). The audio's negative text is the audio
  negative prompt when given, else the shared negative.
  The bridge term is "neutral" (vanishes) at s_B = 1 for nested, s_B = 0 for independent, and outside
  [bridge_start, bridge_end) (fractions of the step count: step i of N is inside when
  start <= i/N < end). Then both forms are exactly the released text CFG: v = B + s_T·(C − B), and
  s_T = 1 drops the negative pass. Defaults = released behaviour (nested, s_T 5, s_B 1): 2 forwards.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from ...common.errors import InputError
from ..net.joint import joint_forward
from .sampler import ForwardPass, cfg_combine

POSITIVE, NEGATIVE, AUDIO_NEGATIVE = "positive", "negative", "audio_negative"
FORMS = ("nested", "independent")
BRIDGE_OFF = ("both", "separate")
ON = (1.0, 1.0)


# MOVA Bridge Guidance widget name -> GuidanceSettings field (the node and the /mova/estimate route)
NODE_WIDGETS = {"video_text_scale": "video_text_scale", "audio_text_scale": "audio_text_scale",
                "a2v_bridge_scale": "a2v_scale", "v2a_bridge_scale": "v2a_scale", "form": "form",
                "bridge_off": "bridge_off", "bridge_start": "bridge_start", "bridge_end": "bridge_end",
                "batch_passes": "batch_passes"}


@dataclass(frozen=True)
class GuidanceSettings:
    form: str = "nested"
    video_text_scale: float = 5.0
    audio_text_scale: float = 5.0
    a2v_scale: float = 1.0            # bridge guidance scale of the video velocity
    v2a_scale: float = 1.0            # bridge guidance scale of the audio velocity
    bridge_off: str = "both"
    bridge_start: float = 0.0         # fraction of the steps where bridge guidance starts
    bridge_end: float = 1.0           # ... and ends (exclusive)
    batch_passes: bool = False        # run passes with the same bridge setting as one batched forward

    def __post_init__(self):
        if self.form not in FORMS:
            raise InputError(f"guidance form must be one of {FORMS}, got {self.form!r}.")
        if self.bridge_off not in BRIDGE_OFF:
            raise InputError(f"bridge_off must be one of {BRIDGE_OFF}, got {self.bridge_off!r}.")
        for name in ("video_text_scale", "audio_text_scale", "a2v_scale", "v2a_scale"):
            if not math.isfinite(getattr(self, name)):
                raise InputError(f"{name} must be a finite number, got {getattr(self, name)}.")
        if not 0.0 <= self.bridge_start <= self.bridge_end <= 1.0:
            raise InputError(f"bridge step range must satisfy 0 <= start <= end <= 1, got "
                             f"start {self.bridge_start}, end {self.bridge_end}.")

    @classmethod
    def from_widgets(cls, values: dict) -> "GuidanceSettings":
        """Settings from the MOVA Bridge Guidance node's widget values (names in NODE_WIDGETS; missing
        ones keep their defaults). Numbers may arrive as strings (the estimate route's JSON)."""
        fields = {}
        for widget, field in NODE_WIDGETS.items():
            if widget not in values:
                continue
            value = values[widget]
            if field in ("form", "bridge_off"):
                fields[field] = str(value)
            elif field == "batch_passes":
                fields[field] = bool(value)
            else:
                try:
                    fields[field] = float(value)
                except (TypeError, ValueError):
                    raise InputError(f"guidance {widget} must be a number, got {value!r}.") from None
        return cls(**fields)

    @property
    def neutral_bridge_scale(self) -> float:
        return 1.0 if self.form == "nested" else 0.0

    @property
    def full_range(self) -> bool:
        return self.bridge_start == 0.0 and self.bridge_end == 1.0


@dataclass(frozen=True)
class _Modality:
    text_scale: float
    bridge_scale: float
    negative: str            # context name of this modality's negative text
    off: tuple               # (a2v, v2a) of this modality's bridge-off pass


def _needs(form: str, m: _Modality, bridge_active: bool) -> dict:
    """{role: ForwardPass} this modality reads; roles C, B, A, N as in the module docstring."""
    c, b = ForwardPass(POSITIVE), ForwardPass(m.negative)
    a, n = ForwardPass(m.negative, *m.off), ForwardPass(POSITIVE, *m.off)
    if not bridge_active:
        return {"C": c} if m.text_scale == 1.0 else {"C": c, "B": b}
    if form == "nested":
        return {"A": a, "B": b, "C": c}
    return {"C": c, "N": n} if m.text_scale == 1.0 else {"B": b, "C": c, "N": n}


def _combine(form: str, m: _Modality, bridge_active: bool, o: dict) -> torch.Tensor:
    """The formula of the module docstring in its literal order (released order when inactive)."""
    s_t, s_b = m.text_scale, m.bridge_scale
    if not bridge_active:
        return o["C"] if s_t == 1.0 else cfg_combine(o["C"], o["B"], s_t)
    if form == "nested":
        return o["A"] + s_b * (o["B"] - o["A"]) + s_t * (o["C"] - o["B"])
    if s_t == 1.0:
        return o["C"] + s_b * (o["C"] - o["N"])
    return o["B"] + s_t * (o["C"] - o["B"]) + s_b * (o["C"] - o["N"])


class DualGuidance:
    """Planner + combiner for one sampling run (see the module docstring)."""

    def __init__(self, settings: GuidanceSettings = GuidanceSettings(), audio_negative: torch.Tensor = None,
                 steps: Optional[int] = None, forward: Callable = joint_forward):
        self.settings, self.steps, self.forward = settings, steps, forward
        self.audio_negative = audio_negative
        s = settings
        both = s.bridge_off == "both"
        self.video = _Modality(s.video_text_scale, s.a2v_scale, NEGATIVE, (0.0, 0.0) if both else (0.0, 1.0))
        self.audio = _Modality(s.audio_text_scale, s.v2a_scale,
                               AUDIO_NEGATIVE if audio_negative is not None else NEGATIVE,
                               (0.0, 0.0) if both else (1.0, 0.0))

    @property
    def contexts(self) -> dict:
        return {} if self.audio_negative is None else {AUDIO_NEGATIVE: self.audio_negative}

    def bind(self, steps: int) -> "DualGuidance":
        return DualGuidance(self.settings, self.audio_negative, int(steps), self.forward)

    # ------------------------------------------------------------------------------ planning
    def bridge_active(self, step: int, modality: _Modality) -> bool:
        s = self.settings
        if modality.bridge_scale == s.neutral_bridge_scale:
            return False
        if s.full_range:
            return True
        if self.steps is None:
            raise InputError("the bridge guidance step range needs the step count; call bind(steps) first "
                             "(internal: the sampler binds it).")
        return s.bridge_start <= step / self.steps < s.bridge_end

    def _roles(self, step: int):
        form = self.settings.form
        return ((self.video, self.bridge_active(step, self.video)),
                (self.audio, self.bridge_active(step, self.audio)), form)

    def plan(self, step: int, timestep: float = None) -> list:
        (video, v_on), (audio, a_on), form = self._roles(step)
        passes = []
        for p in list(_needs(form, video, v_on).values()) + list(_needs(form, audio, a_on).values()):
            if p not in passes:
                passes.append(p)
        order = {POSITIVE: 0, NEGATIVE: 1, AUDIO_NEGATIVE: 2}  # C, B first: the released pair
        return sorted(passes, key=lambda p: (p.a2v_scale != 1.0 or p.v2a_scale != 1.0, order[p.text],
                                             -p.a2v_scale, -p.v2a_scale))

    def combine(self, step: int, outputs: Sequence) -> tuple:
        passes = self.plan(step)
        if len(outputs) != len(passes):
            raise InputError(f"guidance expected {len(passes)} forward outputs at step {step}, got {len(outputs)}.")
        by_pass = {p: tuple(t.float() for t in out) for p, out in zip(passes, outputs)}
        (video, v_on), (audio, a_on), form = self._roles(step)
        v = _combine(form, video, v_on, {r: by_pass[p][0] for r, p in _needs(form, video, v_on).items()})
        a = _combine(form, audio, a_on, {r: by_pass[p][1] for r, p in _needs(form, audio, a_on).items()})
        return v, a

    def forwards_per_step(self, steps: int) -> list:
        bound = self if self.steps == steps else self.bind(steps)
        return [len(bound.plan(i)) for i in range(steps)]

    def summary(self, steps: int) -> str:
        counts = self.forwards_per_step(steps)
        runs, start = [], 0
        for i in range(1, steps + 1):
            if i == steps or counts[i] != counts[start]:
                span = f"step {start + 1}" if i - 1 == start else f"steps {start + 1}-{i}"
                runs.append(f"{counts[start]} forwards/step for {span}")
                start = i
        batched = " (batched by bridge setting)" if self.settings.batch_passes else ""
        return f"{self.settings.form} guidance: " + ", ".join(runs) + batched + f"; {sum(counts)} forwards total"

    # ------------------------------------------------------------------------------ running
    def forward_groups(self, passes: Sequence) -> list:
        """`passes` as joint forwards: with batch_passes one group per distinct bridge setting, else one each."""
        groups = {}
        for p in passes:
            groups.setdefault((p.a2v_scale, p.v2a_scale) if self.settings.batch_passes else p, []).append(p)
        return list(groups.values())

    def largest_forward(self, steps: int) -> int:
        """The most passes one joint forward batches over `steps` steps (what activations scale with)."""
        return max(len(g) for i in range(steps) for g in self.forward_groups(self.plan(i)))

    def run_forwards(self, generator, expert, passes: Sequence, video, audio, timestep, contexts: dict, y,
                     video_fps: float, audio_timestep=None) -> list:
        """Outputs of `passes` in order; with batch_passes, one forward per distinct bridge setting."""
        contexts = {**contexts, **self.contexts}
        for p in passes:
            if contexts.get(p.text) is None:
                raise InputError(f"guidance asked for the {p.text!r} text conditioning but none was given; "
                                 "connect a negative prompt or set the text guidance scales to 1.")
        outputs = {}
        for group in self.forward_groups(passes):
            ctxs = [contexts[p.text] for p in group]
            if len(group) > 1 and len({tuple(c.shape) for c in ctxs}) == 1:
                n = len(group)
                vo, ao = self.forward(expert, generator.audio, generator.bridge, _rep(video, n), _rep(audio, n),
                                      _rep_t(timestep, n), torch.cat(ctxs), y=_rep(y, n), video_fps=video_fps,
                                      a2v_scale=group[0].a2v_scale, v2a_scale=group[0].v2a_scale,
                                      **_own_t(audio_timestep, n))
                for p, v, a in zip(group, vo.chunk(n), ao.chunk(n)):
                    outputs[p] = (v, a)
            else:
                for p, ctx in zip(group, ctxs):
                    outputs[p] = self.forward(expert, generator.audio, generator.bridge, video, audio, timestep, ctx,
                                              y=y, video_fps=video_fps, a2v_scale=p.a2v_scale,
                                              v2a_scale=p.v2a_scale, **_own_t(audio_timestep, 1))
        return [outputs[p] for p in passes]


def _rep(x, n):
    return None if x is None else torch.cat([x] * n)


def _own_t(audio_timestep, n) -> dict:
    """The audio's own t for a forward of n passes; nothing when it shares the video's (released), so a
    custom `forward` without that keyword keeps working."""
    if audio_timestep is None:
        return {}
    return {"audio_timestep": _rep_t(audio_timestep, n)}


def _rep_t(t, n):
    t = torch.as_tensor(t)
    return t if t.numel() == 1 else torch.cat([t.reshape(-1)] * n)


def make_guidance(settings: Optional[GuidanceSettings], audio_negative=None, steps=None) -> Optional[DualGuidance]:
    """None (released text CFG in the sampler) when there are no settings."""
    return None if settings is None else DualGuidance(settings, audio_negative, steps)


def passes_needed(settings: GuidanceSettings, steps: int, audio_negative: bool) -> tuple[int, int]:
    """(peak joint-forward passes per step, largest group batched into one forward) that the sampler
    will run with `settings` over `steps`: for planners, which know whether an audio negative prompt is
    linked but have no tensor for it (the plan depends only on whether there is one)."""
    guidance = DualGuidance(settings, audio_negative=_LINKED if audio_negative else None, steps=steps)
    per_step = max(len(guidance.plan(i)) for i in range(steps))
    return per_step, (guidance.largest_forward(steps) if settings.batch_passes else 1)


_LINKED = object()   # stands for "an audio negative context is linked" in plans that never run a forward

"""The sampling loop: schedule, expert switch, guided joint forwards, Euler step on both modalities.

Released behaviour (guidance=None, audio_shift=None): 2-pass text CFG (positive, negative; one pass when
both scales are 1), v = v_neg + s * (v_pos - v_neg) per modality in fp32; the high-noise expert runs until
the first step with t < boundary_ratio * 1000, then the low-noise expert for good. Latents stay fp32
between steps and are cast to the model dtype inside each forward.

Per-modality shift: the paired scheduler MOVA ships (FlowMatchPairScheduler) steps video and audio on
their own sigma schedules; the released pipeline leaves its visual/audio shift arguments unused (one
shift for both). `audio_shift` gives the audio its own shift: higher keeps the audio noisier than the
video at every step, so the audio settles its timing after the picture has (what the Bridge reads).
The expert switch follows the video's timestep.

Guidance seam: any object with `plan(step, timestep) -> list[ForwardPass]` and
`combine(step, outputs) -> (video_velocity, audio_velocity)` can replace TextCFG (e.g. dual CFG with a
"bridge off" pass: ForwardPass("positive", a2v_scale=0, v2a_scale=0)). Optional hooks, used when present:
`bind(steps) -> guidance` (learns the step count), `contexts` (extra named text contexts) and
`run_forwards(...)` (same signature as run_forwards below, e.g. to batch passes; audio_timestep is
passed as a keyword only when the audio has its own schedule).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from ...kernels.parallel import parallel_runner
from .conditioning import check_y
from .finite import check_settings, check_step
from ...common.errors import InputError, SamplingStopped
from ..net.joint import joint_forward
from .schedule import SCHEDULES, euler_step, make_schedule

HIGH_NOISE, LOW_NOISE = "high-noise", "low-noise"


@dataclass(frozen=True)
class SamplerSettings:
    steps: int = 50
    shift: float = 5.0
    boundary_ratio: float = 0.9
    seed: int = 0
    video_cfg: float = 5.0
    audio_cfg: float = 5.0
    schedule: str = "mova"
    video_fps: float = 24.0
    audio_shift: Optional[float] = None     # None: the audio shares `shift` (released)

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule {self.schedule!r} is unknown; expected one of {SCHEDULES}.")
        if not 0.0 <= self.boundary_ratio <= 1.0:
            raise InputError(f"boundary_ratio must be within [0, 1], got {self.boundary_ratio}.")
        if self.video_fps <= 0:
            raise InputError(f"video_fps must be positive, got {self.video_fps}.")
        if self.audio_shift is not None and not self.audio_shift > 0:
            raise InputError(f"audio_shift must be positive (or None: same as shift), got {self.audio_shift}.")

    @property
    def own_audio_schedule(self) -> bool:
        return self.audio_shift is not None and float(self.audio_shift) != float(self.shift)


@dataclass(frozen=True)
class ForwardPass:
    """One joint forward: which text context ("positive"/"negative") and the Bridge scales."""
    text: str = "positive"
    a2v_scale: float = 1.0
    v2a_scale: float = 1.0


@dataclass(frozen=True)
class StepInfo:
    """Reported after each step; latents are the fp32 state after the step (for previews)."""
    index: int
    total: int
    expert: str
    forwards: int
    timestep: float
    video_latent: torch.Tensor
    audio_latent: torch.Tensor


class TextCFG:
    """The released guidance: text CFG with separate video/audio scales."""

    def __init__(self, video_scale: float = 5.0, audio_scale: float = 5.0):
        self.video_scale, self.audio_scale = float(video_scale), float(audio_scale)

    def plan(self, step: int, timestep: float) -> list:
        if self.video_scale == 1.0 and self.audio_scale == 1.0:
            return [ForwardPass("positive")]
        return [ForwardPass("positive"), ForwardPass("negative")]

    def combine(self, step: int, outputs: Sequence) -> tuple:
        (pos_v, pos_a) = (o.float() for o in outputs[0])
        if len(outputs) == 1:
            return pos_v, pos_a
        (neg_v, neg_a) = (o.float() for o in outputs[1])
        return cfg_combine(pos_v, neg_v, self.video_scale), cfg_combine(pos_a, neg_a, self.audio_scale)


def cfg_combine(pos: torch.Tensor, neg: torch.Tensor, scale: float) -> torch.Tensor:
    return pos if scale == 1.0 else neg + scale * (pos - neg)


def make_noise(seed: int, video_shape, audio_shape):
    """fp32 CPU noise as the official pipeline draws it: video randn, then audio randn, one generator."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    video = torch.randn(tuple(video_shape), generator=gen, dtype=torch.float32)
    audio = torch.randn(tuple(audio_shape), generator=gen, dtype=torch.float32)
    return video, audio


def run_forwards(generator, expert, passes: Sequence[ForwardPass], video, audio, timestep, contexts: dict, y,
                 video_fps: float, audio_timestep=None) -> list:
    """Every planned joint forward of one step, in plan order (audio_timestep: the audio's own t)."""
    outputs = []
    for p in passes:
        ctx = contexts.get(p.text)
        if ctx is None:
            raise InputError(f"guidance asked for the {p.text!r} text conditioning but none was given; "
                             "connect a negative prompt or set the CFG scales to 1.")
        outputs.append(joint_forward(expert, generator.audio, generator.bridge, video, audio, timestep, ctx,
                                     y=y, video_fps=video_fps, a2v_scale=p.a2v_scale, v2a_scale=p.v2a_scale,
                                     audio_timestep=audio_timestep))
    return outputs


def check_inputs(config, video_noise, audio_noise, positive, negative, y):
    """Clear errors for mismatched shapes before any forward runs."""
    v, a = config.video_dit, config.audio_dit
    if video_noise.ndim != 5 or audio_noise.ndim != 3 or video_noise.shape[0] != audio_noise.shape[0]:
        raise InputError(f"noise must be video [B, C, F, H, W] and audio [B, C, L] with one batch size; got "
                         f"{list(video_noise.shape)} and {list(audio_noise.shape)}.")
    if audio_noise.shape[1] != a.in_dim:
        raise InputError(f"audio latents need {a.in_dim} channels (the audio VAE's latent_dim), got "
                         f"{audio_noise.shape[1]}.")
    if y is None:
        if video_noise.shape[1] != v.in_dim:
            raise InputError(f"this video tower takes {v.in_dim} input channels: pass the first-frame "
                             "conditioning y (mask + image latent; a white frame for text-to-video+audio).")
    else:
        if video_noise.shape[1] + 20 != v.in_dim:
            raise InputError(f"video latents have {video_noise.shape[1]} channels; with y the tower expects "
                             f"{v.in_dim - 20}.")
        check_y(y, tuple(video_noise.shape))
    for name, ctx in (("positive", positive), ("negative", negative)):
        if ctx is not None and (ctx.ndim != 3 or ctx.shape[-1] != v.text_dim):
            raise InputError(f"{name} text conditioning must be [B, tokens, {v.text_dim}] (umT5-xxl output), "
                             f"got {list(ctx.shape)}; use the umT5-xxl text encoder MOVA was trained with.")


@torch.no_grad()
def sample(generator, video_noise: torch.Tensor, audio_noise: torch.Tensor, positive: torch.Tensor,
           negative: Optional[torch.Tensor], y: Optional[torch.Tensor], settings: SamplerSettings,
           guidance=None, on_step: Callable = None, should_stop: Callable = None, given=None):
    """Denoise (video [B,16,F,H,W], audio [B,C,L]) from noise; returns fp32 latents.
    given: a GivenLatents (given.py) holding a video/audio (or a prefix of frames) fixed."""
    cfg = generator.config
    check_inputs(cfg, video_noise, audio_noise, positive, negative, y)
    check_settings(settings)
    schedule = make_schedule(settings.schedule, settings.steps, settings.shift, cfg.scheduler)
    audio_schedule = (make_schedule(settings.schedule, settings.steps, settings.audio_shift, cfg.scheduler)
                      if settings.own_audio_schedule else schedule)
    total = len(schedule)
    if guidance is None:
        guidance = TextCFG(settings.video_cfg, settings.audio_cfg)
    elif hasattr(guidance, "bind"):
        guidance = guidance.bind(total)
    # several ranks: the passes of a step spread over groups of ranks (kernels/parallel.py), else itself
    runner = parallel_runner(getattr(guidance, "run_forwards", run_forwards))
    device = generator.device
    video = video_noise.to(device=device, dtype=torch.float32)
    audio = audio_noise.to(device=device, dtype=torch.float32)
    if given is not None:   # substitutes the given parts before every forward
        runner = given.runner(runner, generator, video, audio, schedule, audio_schedule)
    contexts = {"positive": positive, "negative": negative, **getattr(guidance, "contexts", {})}
    boundary = settings.boundary_ratio * cfg.scheduler.num_train_timesteps
    low_noise = False
    for i in range(total):
        if should_stop is not None and should_stop():
            raise SamplingStopped(f"sampling stopped before step {i + 1} of {total}.")
        t = schedule.timesteps[i]
        if not low_noise and t.item() < boundary:
            low_noise = True
        expert = generator.expert(low_noise)
        passes = guidance.plan(i, t.item())
        own_t = ({"audio_timestep": audio_schedule.timesteps[i].reshape(1).to(device)}
                 if audio_schedule is not schedule else {})
        outputs = runner(generator, expert, passes, video, audio, t.reshape(1).to(device), contexts, y,
                         settings.video_fps, **own_t)
        video_v, audio_v = guidance.combine(i, outputs)
        del outputs
        video = euler_step(video, video_v, schedule.sigma_from[i].to(device), schedule.sigma_to[i].to(device))
        audio = euler_step(audio, audio_v, audio_schedule.sigma_from[i].to(device),
                           audio_schedule.sigma_to[i].to(device))
        check_step(i, total, video, audio, LOW_NOISE if low_noise else HIGH_NOISE)
        if on_step is not None:
            on_step(StepInfo(i, total, LOW_NOISE if low_noise else HIGH_NOISE, len(passes), t.item(), video, audio))
    return (video, audio) if given is None else given.finish(video, audio)

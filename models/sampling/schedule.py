"""Flow-matching sigma/timestep schedules and the Euler step (spec §4.2).

"mova" (default) reproduces the official FlowMatchPairScheduler exactly: timesteps fed to the towers come
from the N-step shifted schedule, while the Euler step looks each timestep up (nearest neighbour) in the
1000-entry training table built with the config's shift. "diffsynth" is DiffSynth's
FlowMatchScheduler("Wan") (sigma_min 0, no lookup), offered as a named alternative.
All arithmetic is fp32 torch, as in both references.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import SchedulerConfig
from ...common.errors import InputError

SCHEDULES = ("mova", "diffsynth")
RELEASED_SCHEDULER = SchedulerConfig(shift=5.0, extra_one_step=True)


@dataclass(frozen=True)
class Schedule:
    """timesteps [N] fed to the towers; Euler step i moves sigma_from[i] -> sigma_to[i] (last -> 0)."""
    name: str
    timesteps: torch.Tensor
    sigma_from: torch.Tensor
    sigma_to: torch.Tensor

    def __len__(self) -> int:
        return len(self.timesteps)


def shifted_sigmas(steps: int, shift: float, sigma_min: float, sigma_max: float = 1.0,
                   extra_one_step: bool = True, denoising_strength: float = 1.0) -> torch.Tensor:
    """linspace(start, sigma_min, N(+1))[:N] then sigma' = shift*s / (1 + (shift-1)*s), fp32."""
    start = sigma_min + (sigma_max - sigma_min) * denoising_strength
    if extra_one_step:
        lin = torch.linspace(start, sigma_min, steps + 1, dtype=torch.float32)[:-1]
    else:
        lin = torch.linspace(start, sigma_min, steps, dtype=torch.float32)
    return shift * lin / (1 + (shift - 1) * lin)


def training_table(config: SchedulerConfig):
    """(timesteps, sigmas) of the official scheduler's 1000-entry table, built at init with the config shift."""
    n = config.num_train_timesteps
    sig = shifted_sigmas(n, config.shift, config.sigma_min, config.sigma_max, config.extra_one_step)
    return sig * n, sig


def timestep_to_sigma(t, table_timesteps: torch.Tensor, table_sigmas: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour lookup (first index on ties), exactly as the official step_from_to."""
    idx = torch.argmin((table_timesteps - torch.tensor(float(t))).abs())
    return table_sigmas[idx]


def mova_sigmas(steps: int, shift: float = 5.0, config: SchedulerConfig = RELEASED_SCHEDULER) -> torch.Tensor:
    """The N inference sigmas of the official schedule (timesteps = 1000 * sigmas)."""
    _check_steps(steps)
    return shifted_sigmas(steps, float(shift), config.sigma_min, config.sigma_max, config.extra_one_step)


def mova_schedule(steps: int, shift: float = None, config: SchedulerConfig = RELEASED_SCHEDULER) -> Schedule:
    _check_steps(steps)
    shift = config.shift if shift is None else float(shift)
    sig = shifted_sigmas(steps, shift, config.sigma_min, config.sigma_max, config.extra_one_step)
    timesteps = sig * config.num_train_timesteps
    tt, ts = training_table(config)
    frm = torch.stack([timestep_to_sigma(t, tt, ts) for t in timesteps])
    to = torch.cat([frm[1:], torch.zeros(1)])
    return Schedule("mova", timesteps, frm, to)


def diffsynth_schedule(steps: int, shift: float = 5.0) -> Schedule:
    _check_steps(steps)
    sig = shifted_sigmas(steps, float(shift), sigma_min=0.0)
    return Schedule("diffsynth", sig * 1000, sig, torch.cat([sig[1:], torch.zeros(1)]))


def make_schedule(name: str, steps: int, shift: float = None,
                  config: SchedulerConfig = RELEASED_SCHEDULER) -> Schedule:
    if name == "mova":
        return mova_schedule(steps, shift, config)
    if name == "diffsynth":
        return diffsynth_schedule(steps, config.shift if shift is None else shift)
    raise InputError(f"unknown schedule {name!r}; expected one of {SCHEDULES} ('mova' = released behaviour).")


def euler_step(x: torch.Tensor, velocity: torch.Tensor, sigma_from: torch.Tensor, sigma_to: torch.Tensor):
    """x + v * (sigma_to - sigma_from); v = noise - x0 (flow matching)."""
    return x + velocity * (sigma_to - sigma_from)


def high_noise_steps(schedule: Schedule, boundary_ratio: float, num_train_timesteps: int = 1000) -> int:
    """Steps run by the high-noise expert: those before the first t < boundary*1000."""
    below = (schedule.timesteps < boundary_ratio * num_train_timesteps).nonzero()
    return int(below[0]) if len(below) else len(schedule)


def _check_steps(steps):
    if int(steps) != steps or steps < 1:
        raise InputError(f"steps must be a positive whole number, got {steps!r}.")

"""Schedules: 'diffsynth' vs diffsynth's own scheduler, 'mova' vs an independent float64 recomputation
of the spec formulas and the values quoted in the spec."""
import numpy as np
import pytest
import torch

import conftest  # noqa: F401
from mova_pack.common.errors import InputError
from mova_pack.models.sampling.schedule import (diffsynth_schedule, euler_step, high_noise_steps, make_schedule,
                                       mova_schedule, mova_sigmas)

STEPS = [10, 25, 30, 50]


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _spec_schedule(n, shift=5.0):
    """Spec §4.2 in float64 numpy: inference timesteps and the Euler sigmas via the 1000-entry table."""
    smin = 0.003 / 1.002
    lin = np.linspace(1.0, smin, n + 1)[:-1]
    sig = shift * lin / (1 + (shift - 1) * lin)
    t = 1000 * sig
    tl = np.linspace(1.0, smin, 1001)[:-1]
    table_sig = shift * tl / (1 + (shift - 1) * tl)
    table_t = 1000 * table_sig
    frm = np.array([table_sig[np.argmin(np.abs(table_t - x))] for x in t])
    return t, frm


@pytest.mark.parametrize("n", STEPS)
def test_diffsynth_schedule_equals_diffsynth(n):
    from diffsynth.diffusion import FlowMatchScheduler
    ref = FlowMatchScheduler("Wan")
    ref.set_timesteps(n, shift=5.0)
    mine = diffsynth_schedule(n, 5.0)
    assert _rel(mine.timesteps, ref.timesteps) <= 1e-5
    assert _rel(mine.sigma_from, ref.sigmas) <= 1e-5
    # Euler step against the reference scheduler's own step, every index
    x, v = torch.randn(3, 5), torch.randn(3, 5)
    for i in range(n):
        exp = ref.step(v, ref.timesteps[i], x)
        assert torch.allclose(euler_step(x, v, mine.sigma_from[i], mine.sigma_to[i]), exp, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("n", STEPS)
def test_mova_schedule_equals_spec_formulas(n):
    sched = mova_schedule(n)
    t, frm = _spec_schedule(n)
    assert len(sched) == n and torch.equal(mova_sigmas(n) * 1000, sched.timesteps)
    assert _rel(sched.timesteps, t) <= 1e-5
    assert _rel(sched.sigma_from, frm) <= 1e-5
    assert sched.sigma_to[-1] == 0 and torch.equal(sched.sigma_to[:-1], sched.sigma_from[1:])
    if 1000 % n == 0:  # lookup is exact: Euler sigmas equal t/1000
        assert _rel(sched.sigma_from, t / 1000) <= 1e-5
    else:  # N=30: nearest-neighbour table lookup differs from t/1000 by up to ~1.3 timestep units
        assert 0.2 < np.max(np.abs(sched.sigma_from.numpy() * 1000 - t)) < 1.5


def test_mova_50_step_values_quoted_in_spec():
    t = mova_schedule(50).timesteps.tolist()
    for got, want in zip(t[:3] + t[-3:], [1000.0, 995.95, 991.76, 251.0, 183.0, 105.0]):
        assert abs(got - want) < 0.06, (got, want)
    # differs from diffsynth's schedule at the tail (sigma_min 0 there)
    assert abs(diffsynth_schedule(50).timesteps[-1].item() - 92.59) < 0.01


@pytest.mark.parametrize("n, high", [(50, 18), (40, 15), (30, 11), (25, 9), (20, 8), (10, 4)])
def test_high_noise_step_counts(n, high):
    assert high_noise_steps(mova_schedule(n), 0.9) == high


def test_shift_override_keeps_training_table_from_config():
    s3 = mova_schedule(20, shift=3.0)
    lin = np.linspace(1.0, 0.003 / 1.002, 21)[:-1]
    assert _rel(s3.timesteps, 1000 * 3 * lin / (1 + 2 * lin)) <= 1e-5
    assert np.max(np.abs(s3.sigma_from.numpy() * 1000 - s3.timesteps.numpy())) < 3.0


def test_bad_names_and_steps():
    with pytest.raises(InputError, match="unknown schedule"):
        make_schedule("karras", 10)
    with pytest.raises(InputError, match="positive"):
        make_schedule("mova", 0)
    assert make_schedule("diffsynth", 10).name == "diffsynth"

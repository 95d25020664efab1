"""Step caching (models/sampling/step_cache.py) on the tiny generator: off = bit-identical, what is
never skipped, the estimate that decides, counts for the progress text, refused thresholds."""
import pytest
import torch

from parity_utils import seed_params, tiny_inputs
from mova_pack.common.errors import InputError
from mova_pack.models.net.generator import build_generator
from mova_pack.models.sampling.guidance import DualGuidance, GuidanceSettings
from mova_pack.models.sampling.sampler import SamplerSettings, make_noise, sample
from mova_pack.models.sampling.step_cache import StepCache, StepCacheSettings

torch.set_num_threads(2)
STEPS = 8


@pytest.fixture(scope="module")
def setup():
    g = build_generator("tiny")
    for i, m in enumerate((g.video_high, g.video_low, g.audio, g.bridge)):
        seed_params(m, 100 + i)
    _, y, _, pos = tiny_inputs(seed=31, frames=3, h=6, w=8)
    neg = torch.randn(pos.shape, generator=torch.Generator().manual_seed(32))
    noise = make_noise(7, (1, 16, 3, 6, 8), (1, 128, 19))
    return g, y, pos, neg, noise


def _run(setup, cache=None, steps=STEPS, boundary=0.9):
    g, y, pos, neg, (video, audio) = setup
    settings = SamplerSettings(steps=steps, boundary_ratio=boundary, seed=7)
    infos = []
    out = sample(g, video, audio, pos, neg, y, settings, guidance=cache, on_step=infos.append)
    return out, infos


@pytest.fixture(scope="module")
def reference(setup):
    return _run(setup)[0]


def test_threshold_zero_is_the_released_loop_bit_for_bit(setup, reference):
    ref = reference
    cache = StepCache(StepCacheSettings(threshold=0.0))
    out, _ = _run(setup, cache)
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
    assert cache.skipped == [] and cache.forwards_run == 2 * STEPS and cache.speedup == 1.0


def test_skips_only_where_allowed_and_reports(setup, reference):
    ref = reference
    cache = StepCache(StepCacheSettings(threshold=1.0))
    out, infos = _run(setup, cache)
    experts = [i.expert for i in infos]
    switch = experts.index("low-noise")
    never = {0, 1, STEPS - 1, switch, switch + 1}
    assert cache.skipped and not never & set(cache.skipped), (cache.skipped, cache.forced)
    assert cache.forced[switch] == "expert switch" and cache.forced[STEPS - 1] == "last steps"
    assert cache.forwards_skipped == 2 * len(cache.skipped)
    assert cache.forwards_run + cache.forwards_skipped == 2 * STEPS
    assert "skipped" in cache.report() and f"{cache.speedup:.2f}x" in cache.report()
    assert f"{len(cache.skipped)} step(s) skipped" in cache.progress()
    rel = max(((o - r).norm() / r.norm()).item() for o, r in zip(out, ref))
    assert 0 < rel < 0.5   # an approximation, not a different sample


def test_lower_threshold_skips_no_more(setup):
    counts = []
    for th in (0.02, 1.0):
        cache = StepCache(StepCacheSettings(threshold=th))
        _run(setup, cache)
        counts.append(len(cache.skipped))
    assert counts == sorted(counts) and counts[-1] > counts[0]


def test_a_guidance_plan_change_is_computed(setup):
    gs = GuidanceSettings(a2v_scale=2.0, v2a_scale=2.0, bridge_start=0.5)   # extra pass from step 5 of 8
    cache = StepCache(StepCacheSettings(threshold=1.0), DualGuidance(gs))
    _run(setup, cache)
    assert cache.forced.get(4) == "guidance plan changed"


def test_estimate_is_the_transformation_rate(setup):
    """The decision value from two computed steps, by hand."""
    cache = StepCache(StepCacheSettings(threshold=1.0)).bind(STEPS)
    expert, passes = object(), ["p"]
    xs = [(torch.full((1, 2), float(i)), torch.full((1, 3), 2.0 * i)) for i in range(3)]
    vs = [(torch.full((1, 2), 1.0 + i), torch.full((1, 3), 1.0)) for i in range(2)]
    for i in range(2):
        cache._step, cache._skip_now, cache._pending = i, False, (expert, passes, *xs[i])
        cache.inner = type("G", (), {"combine": lambda self, step, o, v=vs[i]: v})()
        cache.combine(i, [])
    # video: k = |1| / |1| per element -> sqrt2/sqrt2 = 1; change |x2 - x1| / |v1| = sqrt2 / (2 sqrt2) = 0.5
    # audio: k = 0 (velocity unchanged) -> 0
    assert cache._estimate(*xs[2]) == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_out_of_range_threshold_is_refused(bad):
    with pytest.raises(InputError, match="step cache threshold must be within"):
        StepCacheSettings(threshold=bad)


def test_forecast_along_the_last_two_computed_steps(setup, reference):
    """forecast (default): a skipped step's velocity is the line through the last two computed steps of
    this expert, evaluated at its timestep; the same steps are skipped as with plain reuse."""
    plain = StepCache(StepCacheSettings(threshold=1.0, forecast=False))
    _run(setup, plain)
    seen = []
    forecast = StepCache(StepCacheSettings(threshold=1.0))
    original = forecast._predicted

    def spy():
        (t0, v0), (t1, v1) = forecast._history
        out = original()
        seen.append((forecast._t, t0, t1, v0[0], v1[0], out[0]))
        return out
    forecast._predicted = spy
    out, _ = _run(setup, forecast)
    assert forecast.skipped == plain.skipped and seen
    for t, t0, t1, a, b, got in seen:
        assert t < t1 < t0                       # timesteps fall: a forecast beyond the last computed step
        expected = b + (b - a) * (t - t1) / (t1 - t0)
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5), (got - expected).abs().max()
        assert not torch.allclose(got, b)
    assert all(torch.isfinite(o).all() for o in out)

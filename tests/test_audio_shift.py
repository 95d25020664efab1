"""The sampler's per-modality shift: the audio on its own sigma schedule (paired scheduler), tiny config."""
import pytest
import torch

from parity_utils import rel_err, seed_params, tiny_inputs
from mova_pack.models.sampling import sampler as sampler_mod
from mova_pack.common.errors import InputError
from mova_pack.models.net.generator import build_generator
from mova_pack.models.sampling.guidance import DualGuidance, GuidanceSettings
from mova_pack.models.net.joint import joint_forward
from mova_pack.models.sampling.sampler import HIGH_NOISE, LOW_NOISE, SamplerSettings, make_noise, sample
from mova_pack.models.sampling.schedule import euler_step, make_schedule

torch.set_num_threads(2)
STEPS = 4


@pytest.fixture(scope="module")
def setup():
    g = build_generator("tiny")
    for i, m in enumerate((g.video_high, g.video_low, g.audio, g.bridge)):
        seed_params(m, 300 + i)
    _, y, _, pos = tiny_inputs(seed=41, frames=3, h=6, w=8)
    neg = torch.randn(pos.shape, generator=torch.Generator().manual_seed(42))
    video, audio = make_noise(9, (1, 16, 3, 6, 8), (1, 128, 19))
    return g, y, pos, neg, video, audio


def _recording(monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append((float(torch.as_tensor(args[5]).reshape(-1)[0]), kwargs.get("audio_timestep"), args[0]))
        return joint_forward(*args, **kwargs)
    monkeypatch.setattr(sampler_mod, "joint_forward", spy)
    return calls


@pytest.mark.parametrize("audio_shift", [None, 5.0])
def test_no_own_audio_shift_is_the_released_loop(setup, monkeypatch, audio_shift):
    g, y, pos, neg, video, audio = setup
    base = sample(g, video, audio, pos, neg, y, SamplerSettings(steps=STEPS))
    calls = _recording(monkeypatch)
    out = sample(g, video, audio, pos, neg, y, SamplerSettings(steps=STEPS, audio_shift=audio_shift))
    assert torch.equal(out[0], base[0]) and torch.equal(out[1], base[1])
    assert len(calls) == 2 * STEPS and all(c[1] is None for c in calls)


def test_own_audio_shift_steps_the_audio_on_its_own_schedule(setup, monkeypatch):
    g, y, pos, neg, video, audio = setup
    calls = _recording(monkeypatch)
    infos = []
    out_v, out_a = sample(g, video, audio, pos, neg, y, SamplerSettings(steps=STEPS, audio_shift=50.0),
                          on_step=infos.append)
    sv, sa = (make_schedule("mova", STEPS, s, g.config.scheduler) for s in (5.0, 50.0))
    assert sa.sigma_from[1] > sv.sigma_from[1]              # the audio stays noisier than the video
    assert [c[0] for c in calls[::2]] == pytest.approx(sv.timesteps.tolist())
    assert [float(c[1]) for c in calls[::2]] == pytest.approx(sa.timesteps.tolist())
    # the expert switch follows the video's timesteps
    assert [i.expert for i in infos] == [HIGH_NOISE if t >= 900 else LOW_NOISE for t in sv.timesteps.tolist()]
    # by hand: both passes with the audio's own t, CFG 5, each modality's own Euler sigmas
    v, a = video.clone(), audio.clone()
    for i in range(STEPS):
        expert = g.expert(sv.timesteps[i].item() < 900)
        outs = [joint_forward(expert, g.audio, g.bridge, v, a, sv.timesteps[i].reshape(1), ctx, y=y,
                              audio_timestep=sa.timesteps[i].reshape(1)) for ctx in (pos, neg)]
        dv = outs[1][0] + 5.0 * (outs[0][0] - outs[1][0])
        da = outs[1][1] + 5.0 * (outs[0][1] - outs[1][1])
        v = euler_step(v, dv, sv.sigma_from[i], sv.sigma_to[i])
        a = euler_step(a, da, sa.sigma_from[i], sa.sigma_to[i])
    assert rel_err(out_v, v) < 1e-6 and rel_err(out_a, a) < 1e-6
    assert rel_err(out_a, sample(g, video, audio, pos, neg, y, SamplerSettings(steps=STEPS))[1]) > 1e-3


def test_batched_dual_guidance_passes_the_audio_t_to_every_pass(setup):
    g, y, pos, neg, video, audio = setup
    settings = SamplerSettings(steps=STEPS, audio_shift=20.0)
    one = GuidanceSettings(a2v_scale=2.0, v2a_scale=2.0)
    plain = sample(g, video, audio, pos, neg, y, settings, guidance=DualGuidance(one))
    batched = sample(g, video, audio, pos, neg, y, settings,
                     guidance=DualGuidance(GuidanceSettings(a2v_scale=2.0, v2a_scale=2.0, batch_passes=True)))
    assert rel_err(batched[0], plain[0]) < 1e-5 and rel_err(batched[1], plain[1]) < 1e-5


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_bad_audio_shift_is_a_clear_error(bad):
    with pytest.raises(InputError, match="audio_shift must be positive"):
        SamplerSettings(audio_shift=bad)

"""A given video/audio held in the sampler (models/sampling/given.py), on a tiny seeded generator."""
import pytest
import torch

from parity_utils import seed_params, tiny_inputs
from mova_pack.common.errors import InputError
from mova_pack.models.net.generator import build_generator
from mova_pack.models.net.joint import joint_forward
from mova_pack.models.sampling import sampler as sampler_mod
from mova_pack.models.sampling.given import GivenLatents
from mova_pack.models.sampling.guidance import DualGuidance, GuidanceSettings
from mova_pack.models.sampling.sampler import SamplerSettings, make_noise, sample
from mova_pack.models.sampling.schedule import make_schedule

torch.set_num_threads(2)
STEPS = 4
VSHAPE, ASHAPE = (1, 16, 3, 6, 8), (1, 128, 19)


@pytest.fixture(scope="module")
def setup():
    g = build_generator("tiny")
    for i, m in enumerate((g.video_high, g.video_low, g.audio, g.bridge)):
        seed_params(m, 500 + i)
    _, y, _, pos = tiny_inputs(seed=51, frames=3, h=6, w=8)
    neg = torch.randn(pos.shape, generator=torch.Generator().manual_seed(52))
    noise = make_noise(9, VSHAPE, ASHAPE)
    clean = make_noise(77, VSHAPE, ASHAPE)      # stands for encoded media
    return g, y, pos, neg, noise, clean


def _record(monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append({"expert": args[0], "video": args[3].clone(), "audio": args[4].clone(),
                      "t": float(torch.as_tensor(args[5]).reshape(-1)[0]),
                      "audio_t": kwargs.get("audio_timestep")})
        return joint_forward(*args, **kwargs)
    monkeypatch.setattr(sampler_mod, "joint_forward", spy)
    return calls


def _run(setup, given, audio_shift=None, guidance=None):
    g, y, pos, neg, (nv, na), _ = setup
    settings = SamplerSettings(steps=STEPS, video_cfg=3.0, audio_cfg=3.0, audio_shift=audio_shift)
    return sample(g, nv, na, pos, neg, y, settings, guidance=guidance, given=given)


def test_clean_given_video_is_seen_at_t0_on_the_low_noise_expert_and_returned(setup, monkeypatch):
    g, *_, (cv, _) = setup
    calls = _record(monkeypatch)
    video, audio = _run(setup, GivenLatents(video=cv, mode="clean"), audio_shift=50.0)
    assert torch.equal(video, cv)
    assert all(c["expert"] is g.video_low and c["t"] == 0.0 and torch.equal(c["video"], cv) for c in calls)
    audio_sched = make_schedule("mova", STEPS, 50.0)
    seen = sorted({float(c["audio_t"].reshape(-1)[0]) for c in calls}, reverse=True)
    assert seen == pytest.approx([float(t) for t in audio_sched.timesteps])   # the audio keeps its own t
    free_video, free_audio = _run(setup, None, audio_shift=50.0)
    assert not torch.allclose(audio, free_audio)                                # the audio follows the video


def test_noised_given_video_is_the_clean_latent_at_each_steps_sigma(setup, monkeypatch):
    g, y, pos, neg, (nv, na), (cv, _) = setup
    calls = _record(monkeypatch)
    video, _ = _run(setup, GivenLatents(video=cv, mode="noised"))
    sched = make_schedule("mova", STEPS, 5.0)
    passes = len(calls) // STEPS
    for i in range(STEPS):
        s = float(sched.sigma_from[i])
        assert torch.allclose(calls[i * passes]["video"], (1 - s) * cv + s * nv, atol=1e-6)
        assert calls[i * passes]["t"] == pytest.approx(float(sched.timesteps[i]))
    assert torch.equal(video, cv)


def test_given_audio_clean_and_bridge_guidance(setup, monkeypatch):
    _, _, _, _, _, (_, ca) = setup
    calls = _record(monkeypatch)
    guidance = DualGuidance(GuidanceSettings(video_text_scale=3.0, audio_text_scale=3.0, a2v_scale=2.0, v2a_scale=2.0),
                            forward=sampler_mod.joint_forward)   # the recording spy
    video, audio = _run(setup, GivenLatents(audio=ca, mode="clean"), guidance=guidance)
    assert torch.equal(audio, ca)
    assert all(float(c["audio_t"].reshape(-1)[0]) == 0.0 and torch.equal(c["audio"][:1], ca) for c in calls)
    assert len(calls) > STEPS * 2    # the guidance's extra (bridge-off) passes ran too


def test_given_prefix_only_replaces_its_frames(setup, monkeypatch):
    _, _, _, _, (nv, na), (cv, ca) = setup
    calls = _record(monkeypatch)
    video, audio = _run(setup, GivenLatents(video=cv, audio=ca, mode="noised", video_frames=1, audio_frames=5))
    assert torch.equal(video[:, :, :1], cv[:, :, :1]) and not torch.equal(video[:, :, 1:], cv[:, :, 1:])
    assert torch.equal(audio[:, :, :5], ca[:, :, :5]) and not torch.equal(audio[:, :, 5:], ca[:, :, 5:])
    first = calls[0]
    s = float(make_schedule("mova", STEPS, 5.0).sigma_from[0])
    assert torch.allclose(first["video"][:, :, :1], (1 - s) * cv[:, :, :1] + s * nv[:, :, :1], atol=1e-6)
    assert torch.equal(first["video"][:, :, 1:], nv[:, :, 1:])     # the rest is the sampler's own state


@pytest.mark.parametrize("kwargs, words", [
    ({"mode": "later"}, ["later", "clean", "noised"]),
    ({}, ["needs a video latent"]),
    ({"video": torch.zeros(VSHAPE), "video_frames": 1, "mode": "clean"}, ["prefix", "noised"]),
    ({"video": torch.zeros(VSHAPE), "audio": torch.zeros(ASHAPE), "mode": "clean"}, ["nothing to sample"]),
])
def test_bad_given_settings_are_refused(kwargs, words):
    with pytest.raises(InputError) as err:
        GivenLatents(**kwargs)
    for word in words:
        assert word in str(err.value)


def test_given_latent_of_another_size_is_a_clear_error(setup):
    with pytest.raises(InputError, match=r"given video latent has shape \[1, 16, 3, 6, 6\].*\[1, 16, 3, 6, 8\]"):
        _run(setup, GivenLatents(video=torch.zeros(1, 16, 3, 6, 6)))

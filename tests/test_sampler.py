"""The sampling loop vs diffsynth's own denoising loop pieces (model_fn_mova_audio_video driven through
MovaAudioVideoPipeline.cfg_guided_model_fn and .step with its two WanModel experts), fp32, tiny config."""
import pytest
import torch

from parity_utils import (ref_audio, ref_bridge, ref_video, rel_err, seed_params, tiny_inputs,
                          uncompiled_reference_rope)
from mova_pack.common.errors import InputError, SamplingStopped
from mova_pack.models.net.generator import build_generator
from mova_pack.models.sampling.sampler import (HIGH_NOISE, LOW_NOISE, SamplerSettings, StepInfo, TextCFG, make_noise,
                                      sample)
from mova_pack.models.sampling.schedule import make_schedule

torch.set_num_threads(2)


@pytest.fixture()
def gen(monkeypatch):
    uncompiled_reference_rope(monkeypatch)
    g = build_generator("tiny")
    for i, m in enumerate((g.video_high, g.video_low, g.audio, g.bridge)):
        seed_params(m, 100 + i)
    return g


def _reference_loop(gen, schedule, video, audio, y, pos, neg, cfg_scale, fps):
    from diffsynth.pipelines.mova_audio_video import MovaAudioVideoPipeline
    pipe = MovaAudioVideoPipeline(device="cpu", torch_dtype=torch.float32)
    high, low = ref_video(gen.video_high), ref_video(gen.video_low)
    models = {"video_dit": high, "audio_dit": ref_audio(gen.audio), "dual_tower_bridge": ref_bridge(gen.bridge)}
    pipe.scheduler.set_timesteps(len(schedule), shift=5.0)
    # same timesteps and Euler sigmas as ours (diffsynth steps sigmas[i] -> sigmas[i+1], last -> 0)
    pipe.scheduler.timesteps, pipe.scheduler.sigmas = schedule.timesteps.clone(), schedule.sigma_from.clone()
    shared = {"video_latents": video.clone(), "audio_latents": audio.clone(), "y": y, "frame_rate": fps}
    experts = []
    for i, t in enumerate(pipe.scheduler.timesteps):
        if t.item() < 0.9 * 1000 and models["video_dit"] is not low:
            models["video_dit"] = low
        experts.append(LOW_NOISE if models["video_dit"] is low else HIGH_NOISE)
        t = t.unsqueeze(0).to(torch.float32)
        nv, na = pipe.cfg_guided_model_fn(pipe.model_fn, cfg_scale, shared, {"context": pos}, {"context": neg},
                                          **models, timestep=t, progress_id=i)
        shared["video_latents"] = pipe.step(pipe.scheduler, shared["video_latents"], progress_id=i,
                                            noise_pred=nv)
        shared["audio_latents"] = pipe.step(pipe.scheduler, shared["audio_latents"], progress_id=i,
                                            noise_pred=na)
    return shared["video_latents"], shared["audio_latents"], experts


@pytest.mark.parametrize("schedule_name", ["mova", "diffsynth"])
def test_full_run_matches_diffsynth_loop(gen, schedule_name):
    _, y, _, pos = tiny_inputs(seed=31, frames=3, h=6, w=8)
    neg = torch.randn(pos.shape, generator=torch.Generator().manual_seed(32))
    audio_len = 19
    video, audio = make_noise(7, (1, 16, 3, 6, 8), (1, 128, audio_len))
    settings = SamplerSettings(steps=4, video_cfg=5.0, audio_cfg=5.0, schedule=schedule_name, seed=7)
    infos, stops = [], []
    out_v, out_a = sample(gen, video, audio, pos, neg, y, settings, on_step=infos.append,
                          should_stop=lambda: stops.append(1) and False)
    schedule = make_schedule(schedule_name, 4, 5.0, gen.config.scheduler)
    exp_v, exp_a, experts = _reference_loop(gen, schedule, video, audio, y, pos, neg, 5.0, 24.0)
    ev, ea = rel_err(out_v, exp_v), rel_err(out_a, exp_a)
    print(f"sampler {schedule_name}: video {ev:.2e} audio {ea:.2e}")
    assert ev <= 1e-4 and ea <= 1e-4
    assert [i.expert for i in infos] == experts == [HIGH_NOISE, HIGH_NOISE, LOW_NOISE, LOW_NOISE]
    assert [i.index for i in infos] == [0, 1, 2, 3] and all(i.forwards == 2 and i.total == 4 for i in infos)
    assert len(stops) == 4 and out_v.dtype == torch.float32
    assert torch.equal(infos[-1].video_latent, out_v)
    # the experts really differ: running the high-noise expert throughout gives another result
    solo = build_generator("tiny", low_noise_expert=False)
    solo.load_state_dict({k: v for k, v in gen.state_dict().items() if not k.startswith("video_low.")})
    assert rel_err(sample(solo, video, audio, pos, neg, y, settings)[0], out_v) > 1e-3


def test_separate_audio_scale_and_single_pass(gen):
    _, y, _, pos = tiny_inputs(seed=33, frames=2, h=4, w=4)
    neg = torch.zeros_like(pos)
    video, audio = make_noise(1, (1, 16, 2, 4, 4), (1, 128, 11))
    base = SamplerSettings(steps=2, video_cfg=5.0, audio_cfg=5.0)
    ref_v, ref_a = sample(gen, video, audio, pos, neg, y, base)
    v2, a2 = sample(gen, video, audio, pos, neg, y, SamplerSettings(steps=2, video_cfg=5.0, audio_cfg=2.0))
    assert rel_err(v2, ref_v) > 1e-4 and rel_err(a2, ref_a) > 1e-4  # coupled through the bridge
    infos = []
    sample(gen, video, audio, pos, None, y, SamplerSettings(steps=2, video_cfg=1.0, audio_cfg=1.0),
           on_step=infos.append)
    assert [i.forwards for i in infos] == [1, 1]
    with pytest.raises(InputError, match="negative"):
        sample(gen, video, audio, pos, None, y, base)


def test_should_stop_between_steps(gen):
    _, y, _, pos = tiny_inputs(seed=34, frames=2, h=4, w=4)
    video, audio = make_noise(2, (1, 16, 2, 4, 4), (1, 128, 11))
    seen = []
    with pytest.raises(SamplingStopped, match="before step 3 of 5"):
        sample(gen, video, audio, pos, pos, y, SamplerSettings(steps=5), on_step=seen.append,
               should_stop=lambda: len(seen) >= 2)
    assert [i.index for i in seen] == [0, 1]

    class Interrupt(Exception):
        pass

    def raise_at_once():
        raise Interrupt()
    with pytest.raises(Interrupt):
        sample(gen, video, audio, pos, pos, y, SamplerSettings(steps=5), should_stop=raise_at_once)


def test_make_noise_is_video_then_audio_from_one_generator():
    v, a = make_noise(42, (1, 16, 2, 4, 4), (1, 128, 7))
    g = torch.Generator().manual_seed(42)
    assert torch.equal(v, torch.randn(1, 16, 2, 4, 4, generator=g))
    assert torch.equal(a, torch.randn(1, 128, 7, generator=g))


def test_custom_guidance_plugs_into_the_seam(gen):
    """A guidance object only needs plan() and combine(); here a bridge-off pass is requested."""
    _, y, _, pos = tiny_inputs(seed=35, frames=2, h=4, w=4)
    video, audio = make_noise(3, (1, 16, 2, 4, 4), (1, 128, 11))
    from mova_pack.models.sampling.sampler import ForwardPass

    class BridgeOff(TextCFG):
        def plan(self, step, timestep):
            return [ForwardPass("positive", a2v_scale=0.0, v2a_scale=0.0)]

    off = sample(gen, video, audio, pos, None, y, SamplerSettings(steps=2), guidance=BridgeOff())
    on = sample(gen, video, audio, pos, None, y, SamplerSettings(steps=2, video_cfg=1, audio_cfg=1))
    assert rel_err(off[0], on[0]) > 1e-4
    assert isinstance(StepInfo, type)


def test_input_checks_are_clear(gen):
    _, y, _, pos = tiny_inputs(seed=36, frames=2, h=4, w=4)
    video, audio = make_noise(4, (1, 16, 2, 4, 4), (1, 128, 11))
    s = SamplerSettings(steps=1, video_cfg=1, audio_cfg=1)
    with pytest.raises(InputError, match="first-frame conditioning y"):
        sample(gen, video, audio, pos, None, None, s)
    with pytest.raises(InputError, match="same width/height/frames"):
        sample(gen, video, audio, pos, None, y[:, :, :1], s)
    with pytest.raises(InputError, match="umT5-xxl"):
        sample(gen, video, audio, pos[..., :16], None, y, s)
    with pytest.raises(InputError, match="128 channels"):
        sample(gen, video, audio[:, :64], pos, None, y, s)

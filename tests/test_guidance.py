"""Bridge guidance: formulas pass by pass against recorded forwards, pass counts, released-CFG identity,
batching, and the real sampler loop."""
import pytest
import torch

import mova_pack.models.sampling.sampler as sampler_module
from mova_pack.models.net.generator import build_generator
from mova_pack.models.sampling.guidance import DualGuidance, GuidanceSettings
from mova_pack.models.net.joint import joint_forward
from mova_pack.common.errors import InputError
from mova_pack.models.sampling.sampler import ForwardPass, SamplerSettings, TextCFG, sample

torch.set_num_threads(1)  # 2 shared cores: no oversubscription
POS, NEG, ANEG = 1.0, 2.0, 3.0  # constant values of the fake text contexts


class FakeForward:
    """Stands in for joint_forward: records each call and returns outputs that encode its inputs."""

    def __init__(self):
        self.calls = []

    @staticmethod
    def value(text, a2v, v2a):
        return text + 10.0 * a2v + 100.0 * v2a

    def __call__(self, video_dit, audio_dit, bridge, video, audio, timestep, context, y=None, video_fps=24.0,
                 a2v_scale=1.0, v2a_scale=1.0):
        self.calls.append((tuple(context[:, 0, 0].tolist()), a2v_scale, v2a_scale))
        per = torch.tensor([self.value(c, a2v_scale, v2a_scale) for c in context[:, 0, 0].tolist()])
        v = per.view(-1, 1, 1, 1, 1).expand(-1, *video.shape[1:]).clone()
        a = (1000.0 - 3.0 * per).view(-1, 1, 1).expand(-1, *audio.shape[1:]).clone()
        return v, a


class _Gen:
    audio = bridge = None


def _step(settings, step=0, steps=10, audio_negative=True, fake=None):
    fake = fake or FakeForward()
    g = DualGuidance(settings, torch.full((1, 4, 2), ANEG) if audio_negative else None, steps, forward=fake)
    ctx = {"positive": torch.full((1, 4, 2), POS), "negative": torch.full((1, 4, 2), NEG)}
    passes = g.plan(step, 500.0)
    outs = g.run_forwards(_Gen(), None, passes, torch.zeros(1, 16, 1, 2, 2), torch.zeros(1, 8, 3),
                          torch.tensor([500.0]), ctx, None, 24.0)
    v, a = g.combine(step, outs)
    return v.flatten()[0].item(), a.flatten()[0].item(), fake.calls, passes


def _F(text, a2v, v2a):
    """(video, audio) value the fake forward returns for a pass."""
    x = FakeForward.value(text, a2v, v2a)
    return x, 1000.0 - 3.0 * x


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("form", ["nested", "independent"])
@pytest.mark.parametrize("bridge_off", ["both", "separate"])
def test_formula_pass_by_pass(form, bridge_off, batch):
    s = GuidanceSettings(form=form, video_text_scale=4.0, audio_text_scale=3.0, a2v_scale=2.5, v2a_scale=1.5,
                         bridge_off=bridge_off, batch_passes=batch)
    v, a, calls, _ = _step(s)
    off_v = (0.0, 0.0) if bridge_off == "both" else (0.0, 1.0)
    off_a = (0.0, 0.0) if bridge_off == "both" else (1.0, 0.0)
    # video: negative text = NEG; audio: negative text = the audio negative prompt
    Cv, Bv, Av, Nv = _F(POS, 1, 1)[0], _F(NEG, 1, 1)[0], _F(NEG, *off_v)[0], _F(POS, *off_v)[0]
    Ca, Ba, Aa, Na = _F(POS, 1, 1)[1], _F(ANEG, 1, 1)[1], _F(ANEG, *off_a)[1], _F(POS, *off_a)[1]
    if form == "nested":
        want_v = Av + 2.5 * (Bv - Av) + 4.0 * (Cv - Bv)
        want_a = Aa + 1.5 * (Ba - Aa) + 3.0 * (Ca - Ba)
    else:
        want_v = Bv + 4.0 * (Cv - Bv) + 2.5 * (Cv - Nv)
        want_a = Ba + 3.0 * (Ca - Ba) + 1.5 * (Ca - Na)
    assert v == pytest.approx(want_v, rel=1e-6) and a == pytest.approx(want_a, rel=1e-6)
    recorded = sorted((c, a2v, v2a) for texts, a2v, v2a in calls for c in texts)
    if form == "nested":
        needed = {(POS, 1.0, 1.0), (NEG, 1.0, 1.0), (ANEG, 1.0, 1.0), (NEG, *off_v), (ANEG, *off_a)}
    else:
        needed = {(POS, 1.0, 1.0), (NEG, 1.0, 1.0), (ANEG, 1.0, 1.0), (POS, *off_v), (POS, *off_a)}
    assert recorded == sorted(needed)  # every needed pass once, nothing else
    n_settings = len({(a2v, v2a) for _, a2v, v2a in recorded})
    assert len(calls) == (n_settings if batch else len(needed))


@pytest.mark.parametrize("kwargs,audio_negative,count", [
    ({}, False, 2),                                                               # released: pos + neg
    (dict(video_text_scale=1.0, audio_text_scale=1.0), False, 1),                 # text scale 1: no negative
    (dict(video_text_scale=1.0), False, 2),                                       # audio still needs it
    (dict(a2v_scale=2.0, v2a_scale=2.0), False, 3),                               # nested: A, B, C
    (dict(a2v_scale=2.0, v2a_scale=2.0, video_text_scale=1.0, audio_text_scale=1.0), False, 3),
    (dict(form="independent", a2v_scale=0.0, v2a_scale=0.0), False, 2),           # bridge term vanishes
    (dict(form="independent", a2v_scale=2.0), False, 3),                          # C, B, N
    (dict(form="independent", a2v_scale=2.0, v2a_scale=2.0, video_text_scale=1.0, audio_text_scale=1.0),
     False, 2),                                                                   # C, N
    (dict(a2v_scale=2.0, v2a_scale=3.0, bridge_off="separate"), False, 4),        # C, B, A(a2v off), A(v2a off)
    (dict(a2v_scale=2.0, bridge_off="separate"), False, 3),
    ({}, True, 3),                                                                # + audio negative
    (dict(a2v_scale=2.0, v2a_scale=2.0), True, 5),
])
def test_forwards_per_setting(kwargs, audio_negative, count):
    _, _, calls, passes = _step(GuidanceSettings(**kwargs), audio_negative=audio_negative)
    assert len(passes) == len(calls) == count


def test_step_range_and_summary():
    g = DualGuidance(GuidanceSettings(a2v_scale=2.0, v2a_scale=2.0, bridge_start=0.2, bridge_end=0.5))
    assert g.forwards_per_step(10) == [2, 2, 3, 3, 3, 2, 2, 2, 2, 2]
    assert g.summary(10) == ("nested guidance: 2 forwards/step for steps 1-2, 3 forwards/step for steps 3-5, "
                             "2 forwards/step for steps 6-10; 23 forwards total")
    with pytest.raises(InputError, match="needs the step count"):
        g.plan(3)
    with pytest.raises(InputError, match="start <= end"):
        GuidanceSettings(bridge_start=0.6, bridge_end=0.5)


def test_outside_range_is_released_cfg_bitwise():
    outs = [tuple(torch.randn(2, 3, generator=torch.Generator().manual_seed(i)) for _ in range(2)) for i in range(2)]
    released = TextCFG(5.0, 3.0)
    guided = DualGuidance(GuidanceSettings(video_text_scale=5.0, audio_text_scale=3.0, a2v_scale=1.0, v2a_scale=1.0))
    assert guided.plan(0) == released.plan(0, 1000.0) == [ForwardPass("positive"), ForwardPass("negative")]
    for got, want in zip(guided.combine(0, outs), released.combine(0, outs)):
        assert torch.equal(got, want)


# ------------------------------------------------------------------------------------ with the real model

@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    gen = build_generator("tiny", seed=0)
    g = torch.Generator().manual_seed(1)
    data = dict(video=torch.randn(1, 16, 2, 8, 8, generator=g), audio=torch.randn(1, 128, 11, generator=g),
                pos=torch.randn(1, 12, 32, generator=g), neg=torch.randn(1, 12, 32, generator=g),
                aneg=torch.randn(1, 12, 32, generator=g), y=torch.randn(1, 20, 2, 8, 8, generator=g))
    return gen, data


def _real_step(gen, data, settings, audio_negative=None, forward=joint_forward):
    g = DualGuidance(settings, audio_negative, 10, forward=forward)
    passes = g.plan(0)
    outs = g.run_forwards(gen, gen.video_high, passes, data["video"], data["audio"], torch.tensor([700.0]),
                          {"positive": data["pos"], "negative": data["neg"]}, data["y"], 24.0)
    return g.combine(0, outs), passes


@torch.no_grad()
def test_real_forward_formula_and_bridge_off(tiny):
    gen, d = tiny

    def F(ctx, a2v=1.0, v2a=1.0):
        return [o.float() for o in joint_forward(gen.video_high, gen.audio, gen.bridge, d["video"], d["audio"],
                                                 torch.tensor([700.0]), ctx, y=d["y"], a2v_scale=a2v, v2a_scale=v2a)]
    s = GuidanceSettings(video_text_scale=5.0, audio_text_scale=4.0, a2v_scale=2.0, v2a_scale=3.0)
    (v, a), _ = _real_step(gen, d, s, audio_negative=d["aneg"])
    C, B, Ba, A, Aa = F(d["pos"]), F(d["neg"]), F(d["aneg"]), F(d["neg"], 0, 0), F(d["aneg"], 0, 0)
    want_v = A[0] + 2.0 * (B[0] - A[0]) + 5.0 * (C[0] - B[0])
    want_a = Aa[1] + 3.0 * (Ba[1] - Aa[1]) + 4.0 * (C[1] - Ba[1])
    assert torch.equal(v, want_v) and torch.equal(a, want_a)
    assert not torch.allclose(A[0], B[0])  # the bridge-off pass really differs (the term is not empty)


@torch.no_grad()
def test_batching_matches_unbatched(tiny):
    gen, d = tiny
    calls = []

    def recorder(*args, **kw):
        calls.append(args[6].shape[0])
        return joint_forward(*args, **kw)
    s = GuidanceSettings(a2v_scale=2.0, v2a_scale=2.0)
    (v1, a1), _ = _real_step(gen, d, s, forward=recorder)
    assert calls == [1, 1, 1]
    calls.clear()
    (v2, a2), _ = _real_step(gen, d, GuidanceSettings(a2v_scale=2.0, v2a_scale=2.0, batch_passes=True),
                             forward=recorder)
    assert sorted(calls) == [1, 2]  # pos+neg with the bridge on in one call, the bridge-off pass alone
    assert (v1 - v2).abs().max().item() <= 1e-5 and (a1 - a2).abs().max().item() <= 1e-5


@torch.no_grad()
def test_sampler_nested_sb1_is_released_cfg_bitwise(tiny, monkeypatch):
    gen, d = tiny
    settings = SamplerSettings(steps=4, seed=0)
    args = (gen, d["video"], d["audio"], d["pos"], d["neg"], d["y"], settings)
    released = sample(*args)
    guided = sample(*args, guidance=DualGuidance(GuidanceSettings(a2v_scale=1.0, v2a_scale=1.0)))
    assert all(torch.equal(x, y) for x, y in zip(released, guided))
    # And a real dual run through the sampler seam: forwards recorded around the real joint_forward.
    seen, infos = [], []

    def recorder(*a, **kw):
        seen.append((kw["a2v_scale"], kw["v2a_scale"]))
        return joint_forward(*a, **kw)
    monkeypatch.setattr(sampler_module, "joint_forward", recorder)  # whichever runner the sampler uses
    dual = sample(*args, guidance=DualGuidance(GuidanceSettings(a2v_scale=2.0, v2a_scale=2.0, bridge_end=0.5),
                                               steps=4, forward=recorder), on_step=infos.append)
    assert [i.forwards for i in infos] == [3, 3, 2, 2]
    assert seen.count((0.0, 0.0)) == 2 and len(seen) == 10
    assert not torch.equal(dual[0], released[0])


@torch.no_grad()
def test_sampler_uses_guidance_runner_for_audio_negative_and_batching(tiny):
    """Needs the sampler to call guidance.run_forwards / guidance.contexts / guidance.bind (see
    docs/contracts.md, "Bridge guidance")."""
    gen, d = tiny
    args = (gen, d["video"], d["audio"], d["pos"], d["neg"], d["y"], SamplerSettings(steps=4, seed=0))
    calls = []

    def recorder(*a, **kw):
        calls.append((a[6].shape[0], kw["a2v_scale"]))
        return joint_forward(*a, **kw)
    s = dict(a2v_scale=2.0, v2a_scale=2.0, bridge_end=0.5)  # no steps given: the sampler must bind them
    plain = sample(*args, guidance=DualGuidance(GuidanceSettings(**s), d["aneg"], forward=recorder))
    assert len(calls) == 2 * 5 + 2 * 3  # steps 1-2: C, B, Ba, A, Aa; steps 3-4: C, B, Ba
    calls.clear()
    batched = sample(*args, guidance=DualGuidance(GuidanceSettings(**s, batch_passes=True), d["aneg"], forward=recorder))
    assert calls == [(3, 1.0), (2, 0.0)] * 2 + [(3, 1.0)] * 2
    assert all((x - y).abs().max().item() <= 1e-5 for x, y in zip(plain, batched))


def test_batching_falls_back_when_context_lengths_differ():
    fake = FakeForward()
    g = DualGuidance(GuidanceSettings(batch_passes=True), forward=fake)
    ctx = {"positive": torch.full((1, 4, 2), POS), "negative": torch.full((1, 7, 2), NEG)}
    passes = g.plan(0)
    outs = g.run_forwards(_Gen(), None, passes, torch.zeros(1, 16, 1, 2, 2), torch.zeros(1, 8, 3),
                          torch.tensor([500.0]), ctx, None, 24.0)
    assert len(fake.calls) == 2 and len(outs) == 2
    v, _ = g.combine(0, outs)
    assert v.flatten()[0].item() == pytest.approx(_F(NEG, 1, 1)[0] + 5.0 * (_F(POS, 1, 1)[0] - _F(NEG, 1, 1)[0]))


def test_text_scale_one_formulas():
    # independent, s_T = 1: the negative pass drops out, v = C + s_B (C - N)
    v, a, calls, _ = _step(GuidanceSettings(form="independent", video_text_scale=1.0, audio_text_scale=1.0,
                                            a2v_scale=2.0, v2a_scale=0.5), audio_negative=False)
    C, N = _F(POS, 1, 1), _F(POS, 0, 0)
    assert v == pytest.approx(C[0] + 2.0 * (C[0] - N[0])) and a == pytest.approx(C[1] + 0.5 * (C[1] - N[1]))
    assert len(calls) == 2
    # nested, s_T = 1: B stays (v = A + s_B (B - A) + (C - B))
    v, a, calls, _ = _step(GuidanceSettings(video_text_scale=1.0, audio_text_scale=1.0, a2v_scale=3.0,
                                            v2a_scale=3.0), audio_negative=False)
    A, B = _F(NEG, 0, 0), _F(NEG, 1, 1)
    assert v == pytest.approx(A[0] + 3.0 * (B[0] - A[0]) + (C[0] - B[0]))
    assert len(calls) == 3

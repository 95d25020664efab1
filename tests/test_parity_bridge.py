"""The Bridge (aligned RoPE, both directions, per-direction scales) vs diffsynth 2.1.12, fp32."""
import dataclasses

import pytest
import torch

from parity_utils import TINY, TOL, ref_bridge, rel_err, seed_params, uncompiled_reference_rope
from mova_pack.models.net.bridge import DualTowerBridge
from mova_pack.models.config import PRESETS

torch.set_num_threads(2)
GRID = (4, 3, 5)


@pytest.fixture()
def pair(monkeypatch):
    uncompiled_reference_rope(monkeypatch)
    mine = seed_params(DualTowerBridge(TINY.bridge), 7).eval()
    return mine, ref_bridge(mine)


def _states(seed=0, audio_len=29):
    gen = torch.Generator().manual_seed(seed)
    video = torch.randn(2, GRID[0] * GRID[1] * GRID[2], TINY.bridge.visual_hidden_dim, generator=gen)
    audio = torch.randn(2, audio_len, TINY.bridge.audio_hidden_dim, generator=gen)
    return video, audio


@pytest.mark.parametrize("fps, bias", [(24.0, False), (25.0, False), (24.0, True)])
def test_aligned_rope_matches_reference(fps, bias, monkeypatch):
    uncompiled_reference_rope(monkeypatch)
    cfg = dataclasses.replace(TINY.bridge, apply_first_frame_bias_in_rope=bias)
    mine = DualTowerBridge(cfg)
    ref = ref_bridge(mine)
    (cv, sv), (ca, sa) = mine.aligned_rope(GRID, 29, fps, torch.device("cpu"), torch.float32)
    (rcv, rsv), (rca, rsa) = ref.build_aligned_freqs(fps, GRID, 29, torch.device("cpu"), torch.float32)
    for a, b in ((cv, rcv), (sv, rsv), (ca, rca), (sa, rsa)):
        assert a.shape == b.shape and torch.equal(a, b)
    # bf16 tables: computed in fp32, then cast (as released)
    (cvb, _), _ = mine.to(torch.bfloat16).aligned_rope(GRID, 29, fps, torch.device("cpu"), torch.bfloat16)
    assert cvb.dtype == torch.bfloat16 and torch.equal(cvb, rcv.to(torch.bfloat16))  # even after .to(bf16)


def test_released_alignment_positions():
    mine = DualTowerBridge(dataclasses.replace(TINY.bridge))
    (cos_v, _), (cos_a, _) = mine.aligned_rope((49, 1, 1), 403, 24.0, torch.device("cpu"), torch.float32)
    # frame 48 sits at audio position 400 (= 48 * 50 / 6): identical angles to audio token 400
    assert torch.allclose(cos_v[0, 48], cos_a[0, 400], atol=1e-5)
    assert not torch.allclose(cos_v[0, 47], cos_a[0, 400], atol=1e-2)


@pytest.mark.parametrize("a2v, v2a", [(1.0, 1.0), (0.5, 1.0), (1.0, 0.5), (0.0, 1.0), (1.0, 0.0), (0.0, 0.0)])
@torch.no_grad()
def test_bridge_layer_matches_reference(pair, a2v, v2a):
    mine, ref = pair
    video, audio = _states()
    rope_v, rope_a = mine.aligned_rope(GRID, audio.shape[1], 24.0, video.device, video.dtype)
    rv, ra = ref.build_aligned_freqs(24.0, GRID, audio.shape[1], video.device, video.dtype)
    calls = []
    hooks = [m.register_forward_hook(lambda *_, n=name: calls.append(n))
             for name, m in (("a2v", mine.audio_to_video_conditioners["2"]),
                             ("v2a", mine.video_to_audio_conditioners["2"]))]
    out_v, out_a = mine(2, video, audio, rope_v, rope_a, a2v_scale=a2v, v2a_scale=v2a)
    for h in hooks:
        h.remove()
    exp_v, exp_a = ref(2, video, audio, x_freqs=rv, y_freqs=ra, a2v_condition_scale=a2v,
                       v2a_condition_scale=v2a)
    ev, ea = rel_err(out_v, exp_v), rel_err(out_a, exp_a)
    print(f"bridge a2v={a2v} v2a={v2a}: video {ev:.2e} audio {ea:.2e}")
    assert ev <= TOL and ea <= TOL
    assert calls == [n for n, s in (("a2v", a2v), ("v2a", v2a)) if s != 0], "scale 0 must skip the compute"
    if a2v:
        assert rel_err(video, exp_v) > 1e-3  # the bridge really changed the state


@torch.no_grad()
def test_both_directions_use_pre_bridge_states(pair):
    mine, _ = pair
    video, audio = _states(seed=3)
    rope_v, rope_a = mine.aligned_rope(GRID, audio.shape[1], 24.0, video.device, video.dtype)
    _, audio_joint = mine(1, video, audio, rope_v, rope_a)
    _, audio_only = mine(1, video, audio, rope_v, rope_a, a2v_scale=0.0)
    assert torch.equal(audio_joint, audio_only)


def test_bridge_keys_and_shapes_released():
    with torch.device("meta"):
        sd = DualTowerBridge(PRESETS["mova-360p"].bridge).state_dict()
    assert "rotary.inv_freq" not in sd
    assert tuple(sd["audio_to_video_conditioners.29.inner.k.weight"].shape) == (5120, 1536)
    assert tuple(sd["video_to_audio_conditioners.0.inner.v.weight"].shape) == (1536, 5120)
    assert tuple(sd["video_to_audio_conditioners.0.y_norm.weight"].shape) == (5120,)
    assert "audio_to_video_conditioners.30.inner.q.weight" not in sd

"""The full joint forward vs diffsynth's model_fn_mova_audio_video (fp32, tiny config, seeded weights)."""
import pytest
import torch

from parity_utils import (TINY, TOL, ref_audio, ref_bridge, ref_video, rel_err, seed_params, tiny_inputs,
                          uncompiled_reference_rope)
from mova_pack.models.bridge import DualTowerBridge
from mova_pack.models.dit import AudioDiT, VideoDiT
from mova_pack.models.joint import joint_forward

torch.set_num_threads(2)


@pytest.fixture()
def models(monkeypatch):
    uncompiled_reference_rope(monkeypatch)
    video = seed_params(VideoDiT(TINY.video_dit), 11).eval()
    audio = seed_params(AudioDiT(TINY.audio_dit), 12).eval()
    bridge = seed_params(DualTowerBridge(TINY.bridge), 13).eval()
    return (video, audio, bridge), (ref_video(video), ref_audio(audio), ref_bridge(bridge))


@pytest.mark.parametrize("fps, t", [(24.0, 991.76), (25.0, 105.0)])
@torch.no_grad()
def test_joint_forward_matches_model_fn(models, fps, t):
    from diffsynth.pipelines.mova_audio_video import model_fn_mova_audio_video
    (video, audio, bridge), (rv, ra, rb) = models
    v_lat, y, a_lat, ctx = tiny_inputs(seed=21, frames=4, h=6, w=10, video_fps=fps)
    inputs = (v_lat.clone(), a_lat.clone(), y.clone(), ctx.clone())
    timestep = torch.tensor([t])
    out_v, out_a = joint_forward(video, audio, bridge, v_lat, a_lat, timestep, ctx, y=y, video_fps=fps)
    exp_v, exp_a = model_fn_mova_audio_video(rv, ra, rb, video_latents=v_lat, audio_latents=a_lat,
                                             timestep=timestep, context=ctx, y=y, frame_rate=fps)
    assert all(torch.equal(a, b) for a, b in zip(inputs, (v_lat, a_lat, y, ctx))), "inputs were modified"
    assert out_v.shape == v_lat.shape and out_a.shape == a_lat.shape
    ev, ea = rel_err(out_v, exp_v), rel_err(out_a, exp_a)
    print(f"joint fps={fps} t={t}: video {ev:.2e} audio {ea:.2e}")
    assert ev <= TOL and ea <= TOL


@torch.no_grad()
def test_bridge_matters_and_scale_zero_decouples(models):
    (video, audio, bridge), _ = models
    v_lat, y, a_lat, ctx = tiny_inputs(seed=22)
    t = torch.tensor([700.0])
    with_bridge = joint_forward(video, audio, bridge, v_lat, a_lat, t, ctx, y=y)
    no_bridge = joint_forward(video, audio, bridge, v_lat, a_lat, t, ctx, y=y, a2v_scale=0.0, v2a_scale=0.0)
    assert rel_err(with_bridge[0], no_bridge[0]) > 1e-3 and rel_err(with_bridge[1], no_bridge[1]) > 1e-3
    # bridge off == each tower alone
    assert rel_err(no_bridge[0], video(v_lat, t, ctx, y=y)) <= TOL
    assert rel_err(no_bridge[1], audio(a_lat, t, ctx)) <= TOL
    # a2v off leaves the audio path fully bridged (v2a still reads the video tower)
    a2v_off = joint_forward(video, audio, bridge, v_lat, a_lat, t, ctx, y=y, a2v_scale=0.0)
    assert rel_err(a2v_off[0], with_bridge[0]) > 1e-3


@torch.no_grad()
def test_bf16_joint_forward_is_close_to_fp32(models):
    (video, audio, bridge), _ = models
    v_lat, y, a_lat, ctx = tiny_inputs(seed=23)
    t = torch.tensor([500.0])
    ref_v, ref_a = joint_forward(video, audio, bridge, v_lat, a_lat, t, ctx, y=y)
    for m in (video, audio, bridge):
        m.to(torch.bfloat16)
    out_v, out_a = joint_forward(video, audio, bridge, v_lat, a_lat, t, ctx, y=y)
    assert out_v.dtype == torch.bfloat16
    assert rel_err(out_v, ref_v) < 0.05 and rel_err(out_a, ref_a) < 0.05

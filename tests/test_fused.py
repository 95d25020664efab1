"""Opt-in compiled elementwise work per block (models/net/fused.py): same output as eager, a
compile failure falls back to eager with one warning."""
import logging

import torch

from mova_pack.models.config import PRESETS
from mova_pack.models.net import fused
from mova_pack.models.net.bridge import DualTowerBridge
from mova_pack.models.net.dit import AudioDiT, VideoDiT
from mova_pack.models.net.joint import joint_forward
from mova_pack.models.net.rope import apply_wan_rope, wan_video_rope

CFG = PRESETS["tiny"]


def _towers():
    torch.manual_seed(0)
    towers = [VideoDiT(CFG.video_dit), AudioDiT(CFG.audio_dit), DualTowerBridge(CFG.bridge)]
    for t in towers:
        for name, p in t.named_parameters():
            if name.endswith("modulation"):
                p.data.normal_(0, 0.3)
    return [t.eval() for t in towers]


def _inputs():
    g = torch.Generator().manual_seed(5)
    return dict(video_latents=torch.randn(1, 16, 2, 8, 8, generator=g), audio_latents=torch.randn(
        1, CFG.audio_dit.in_dim, 6, generator=g), timestep=torch.tensor([700.0]),
        context=torch.randn(1, 12, CFG.video_dit.text_dim, generator=g), y=torch.randn(1, 20, 2, 8, 8, generator=g))


def test_real_rope_equals_complex_rope():
    table = wan_video_rope(CFG.video_dit.head_dim, (2, 4, 4), "cpu")
    x = torch.randn(1, 32, CFG.video_dit.dim)
    heads = CFG.video_dit.num_heads
    torch.testing.assert_close(fused.rope_real(x, torch.view_as_real(table), heads),
                               apply_wan_rope(x, table, heads), rtol=1e-6, atol=1e-6)


def _joint(towers, x):
    with torch.no_grad():
        return joint_forward(*towers, **x)


def test_fused_path_matches_eager_and_unmarks():
    towers, x = _towers(), _inputs()
    ref = _joint(towers, x)
    n = sum(fused.set_compiled_elementwise(t, True, compile_=False) for t in towers[:2])
    assert n == CFG.video_dit.num_layers + CFG.audio_dit.num_layers
    out = _joint(towers, x)
    for o, r in zip(out, ref):
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5)
    for t in towers[:2]:
        fused.set_compiled_elementwise(t, False)
    assert all(torch.equal(o, r) for o, r in zip(_joint(towers, x), ref))


def test_compiled_path_matches_eager_bf16():
    towers, x = _towers(), _inputs()
    towers = [t.to(torch.bfloat16) for t in towers]
    towers[2].rotary.rebuild_buffers()
    ref = _joint(towers, x)
    fused.set_compiled_elementwise(towers[0], True)   # video tower compiled, audio eager
    out = _joint(towers, x)
    for o, r in zip(out, ref):
        assert ((o.float() - r.float()).norm() / r.float().norm()).item() < 2e-2
    ops = towers[0].blocks[0].__dict__["_fused"]
    assert all(f.compiled is not None for f in (ops.norm_modulate, ops.rope, ops.gate_add))  # no fallback


def test_compile_failure_falls_back_to_eager_with_one_warning(caplog):
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no C++ compiler found")
    op = fused.SafeCompiled(fused.gate_add, backend=broken_backend)
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    with caplog.at_level(logging.WARNING, logger="mova"):
        out = op(a, b)
        op(a, b)
    assert torch.equal(out, a + b)
    warnings = [r.getMessage() for r in caplog.records if "mova compile" in r.getMessage()]
    assert len(warnings) == 1 and "gate_add fell back to eager" in warnings[0]

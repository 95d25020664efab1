"""fp8 activation quantization for the fast matmul: the math (reference), its fused implementations
(torch.compile; the Triton kernel through Triton's CPU interpreter) and the _scaled_mm linear on CPU."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mova_pack.kernels import fp8_act as fa
from mova_pack.kernels.quant import FP8Linear, fp8_linear, fp8_matmul_problem

ROOT = Path(__file__).resolve().parents[1]
BF16 = torch.bfloat16


def _activation(rows=37, cols=200, seed=0):
    """Rows of very different magnitude (as tokens are), one all-zero row."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g) * torch.logspace(-3, 2, rows)[:, None]
    x[3] = 0
    return x.to(BF16)


def test_reference_scales_and_values():
    x = _activation()
    q, s = fa.quantize_reference(x, "row")
    assert s.shape == (37, 1) and s.dtype == torch.float32 and q.dtype == torch.float8_e4m3fn
    amax = x.float().abs().amax(dim=1, keepdim=True)
    assert torch.equal(s[amax > 0], (amax / 448.0)[amax > 0])
    assert s[3].item() == pytest.approx(fa.MIN_SCALE) and torch.count_nonzero(q[3].float()) == 0
    assert q.float().abs().max() == 448.0  # each row's largest value maps to the top of the range
    deq = q.float() * s
    rel = (deq - x.float()).abs() / x.float().abs().clamp(min=1e-30)
    assert rel[x.float().abs() > s * 16].max() < 2 ** -4  # e4m3: 3 mantissa bits away from subnormals
    qt, st = fa.quantize_reference(x, "tensor")
    assert st.shape == () and st == x.float().abs().max() / 448.0


def test_row_scales_keep_small_tokens_that_one_tensor_scale_flushes():
    x = _activation()
    err = {}
    for g in fa.GRANULARITIES:
        q, s = fa.quantize_reference(x, g)
        err[g] = ((q.float() * s - x.float()).norm(dim=1) / x.float().norm(dim=1).clamp(min=1e-30))
    assert err["row"].max() < 0.05
    assert err["tensor"][[0, 1, 2]].min() > 0.15  # the smallest tokens sink into the shared scale's subnormals


def test_reference_refuses_bad_shapes_and_names():
    with pytest.raises(ValueError, match="2-D"):
        fa.quantize_reference(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="granularity must be one of"):
        fa.quantize_reference(torch.zeros(2, 4), "block")
    with pytest.raises(ValueError, match="impl must be one of"):
        fa.quantize_activation(torch.zeros(2, 4), "row", "cuda")


TRITON_PROBE = r"""
import sys, torch
sys.path.insert(0, sys.argv[1]); import _pack
from mova_pack.kernels import fp8_act as fa
sys.path.insert(0, sys.argv[2]); from test_fp8_act import _activation
x = _activation()
for g in fa.GRANULARITIES:
    q, s = fa.quantize_reference(x, g)
    q32, s2 = fa.quantize_triton(x, g, torch.float32)  # the kernel's values before the fp8 cast
    assert s2.shape == s.shape and torch.equal(s2, s), g
    assert torch.equal(q32, (x.float() * torch.reciprocal(s)).clamp(-448, 448)), g
    assert torch.equal(q32.to(torch.float8_e4m3fn).float(), q.float()), g
    q8, _ = fa.quantize_triton(x, g)  # the whole kernel, cast included (emulated)
    same = q8.float() == q.float()
    print(g, int(same.sum()))
"""


def test_triton_kernel_matches_the_reference_in_the_interpreter():
    """Triton's CPU interpreter runs the real kernel. It rounds exact fp8 ties its own way (numpy
    emulation of the cast), so ties are excluded here; the GPU bench compares every value."""
    pytest.importorskip("triton", reason="optional: triton comes with CUDA builds of torch only")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run([sys.executable, "-c", TRITON_PROBE, str(ROOT / "scripts"), str(ROOT / "tests")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.split()
    assert lines[0] == "row" and int(lines[1]) > 0.9 * 37 * 200  # the emulated cast agrees mostly


def test_fp8_linear_through_scaled_mm_matches_the_dequantized_math():
    """torch._scaled_mm runs on the CPU in this torch, so the GPU path's math is checked here."""
    torch.manual_seed(0)
    lin = nn.Linear(64, 48).to(BF16)
    x = _activation(rows=20, cols=64)
    for per_channel in (False, True):
        layer = FP8Linear.from_linear(lin, per_channel=per_channel)
        for g in fa.GRANULARITIES:
            if per_channel and g == "tensor":
                continue  # per-channel weights need row-wise scaling (sm_90 rule)
            out = fp8_linear(x, layer.weight, layer.weight_scale, layer.bias, g)
            q, s = fa.quantize_reference(x, g)
            w = layer.weight.float() * layer.weight_scale.float()
            ref = (q.float() * s) @ w.t() + layer.bias.float()
            assert out.dtype == BF16 and out.shape == (20, 48)
            assert ((out.float() - ref).norm() / ref.norm()).item() < 1e-2, (per_channel, g)
    exact = lin(x).float()
    row = fp8_linear(x, layer.weight, layer.weight_scale, layer.bias, "row").float()
    assert ((row - exact).norm() / exact.norm()).item() < 0.06


def test_fast_path_method_runs_on_cpu_tensors():
    torch.manual_seed(1)
    lin = nn.Linear(64, 32).to(BF16)
    layer = FP8Linear.from_linear(lin, fast_matmul=True)
    x = torch.randn(2, 5, 64).to(BF16)
    out = layer._forward_scaled_mm(x)   # CPU: tensor-wise scales, reference quantization
    assert out.shape == (2, 5, 32)
    assert ((out.float() - lin(x).float()).norm() / lin(x).float().norm()).item() < 0.06


def test_compiled_quantization_equals_the_reference():
    x = _activation(rows=8, cols=64)
    for g in fa.GRANULARITIES:
        q, s = fa.quantize_reference(x, g)
        q2, s2 = fa.quantize_activation(x, g, "compile")
        assert torch.equal(s, s2) and torch.equal(q.float(), q2.float()), g


@pytest.mark.parametrize("device,triton,requested,impl,words", [
    ("cuda", True, "auto", "triton", "fused Triton"),
    ("cuda", False, "auto", "reference", "not installed"),
    ("cuda", False, "triton", "reference", "triton requested but not installed"),
    ("cpu", True, "auto", "reference", "on cpu"),
    ("cuda", True, "compile", "compile", "requested"),
    ("cuda", True, "reference", "reference", "requested"),
])
def test_implementation_rule(device, triton, requested, impl, words):
    chosen, reason = fa.act_quant_impl(device, triton, requested)
    assert chosen == impl and words in reason, reason


def test_unusable_kernel_falls_back_with_one_log_line_naming_why(caplog):
    """Issue 27's bad input: a requested kernel that cannot run here is replaced, said once per device."""
    import logging
    from mova_pack.kernels import quant
    quant._act_impls.clear()
    with caplog.at_level(logging.INFO, logger="mova"):
        first = quant._act_impl_for(torch.device("cpu"), "triton")
        again = quant._act_impl_for(torch.device("cpu"), "triton")
    lines = [r.getMessage() for r in caplog.records if "activation quantization" in r.getMessage()]
    assert first == again == "reference"
    assert len(lines) == 1 and "reference on cpu" in lines[0] and "run on CUDA" in lines[0], lines
    quant._act_impls.clear()


def test_granularity_and_per_channel_rule():
    assert fa.act_granularity((9, 0), BF16) == "row"
    assert fa.act_granularity((9, 0), torch.float16) == "tensor"
    assert fa.act_granularity((8, 9), BF16) == "tensor"
    assert fa.act_granularity(None, BF16) == "tensor"
    assert fp8_matmul_problem((9, 0), BF16, False, 5120, 5120) is None      # row-wise takes per-channel
    assert "per-channel" in fp8_matmul_problem((8, 9), BF16, False, 5120, 5120)
    assert "per-channel" in fp8_matmul_problem((9, 0), torch.float16, False, 5120, 5120)

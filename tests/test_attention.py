"""Attention dispatch: SDPA math, backend choice and the CPU fallback for forced GPU backends."""
import logging

import pytest
import torch

from mova_pack.kernels import attention as att


def _manual(q, k, v, heads):
    b, lq, w = q.shape
    d = w // heads
    q, k, v = (t.view(b, t.shape[1], heads, d).transpose(1, 2).float() for t in (q, k, v))
    p = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, dim=-1)
    return (p @ v).transpose(1, 2).reshape(b, lq, w)


@pytest.fixture(autouse=True)
def _reset():
    yield
    att.set_attention_settings(att.AttentionSettings())


def test_sdpa_matches_softmax_attention():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 7, 64), torch.randn(2, 5, 64), torch.randn(2, 5, 64)
    out = att.attention(q, k, v, num_heads=4)
    assert out.shape == (2, 7, 64)
    torch.testing.assert_close(out, _manual(q, k, v, 4), rtol=1e-5, atol=1e-5)


def test_auto_on_cpu_is_sdpa_with_reason_logged(caplog):
    q = torch.randn(1, 3, 256, dtype=torch.bfloat16)
    backend, reason = att.choose_backend(q.view(1, 3, 2, 128), 128)
    assert backend == "sdpa" and "cpu" in reason
    with caplog.at_level(logging.INFO, logger="mova"):
        att.attention(q, q, q, 2)
        att.attention(q, q, q, 2)
    lines = [r.getMessage() for r in caplog.records if "mova attention" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("mova attention: sdpa")


@pytest.mark.parametrize("forced", ["sage", "flash"])
def test_forced_gpu_backend_on_cpu_warns_and_falls_back(forced, caplog):
    att.set_attention_settings(att.AttentionSettings(backend=forced))
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 6, 256, dtype=torch.bfloat16) for _ in range(3))
    with caplog.at_level(logging.INFO, logger="mova"):
        out = att.attention(q, k, v, 2)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert f"{forced} requested but unusable" in msg and "CUDA" in msg and "sdpa" in msg
    att.set_attention_settings(att.AttentionSettings(backend="sdpa"))
    torch.testing.assert_close(out, att.attention(q, k, v, 2), rtol=0, atol=0)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="auto"):
        att.AttentionSettings(backend="xformers")


# The GPU rule, with the capability of GPUs people own (no GPU needed: plain values, no mocks).
BF16, FP32 = torch.bfloat16, torch.float32
S = att.AttentionSite


@pytest.mark.parametrize("site,requested,backend,words", [
    (S((8, 9), BF16, 128, sage_installed=True, flash_installed=True), "auto", "sage", "SageAttention available"),
    (S((8, 6), BF16, 128, flash_installed=True), "auto", "flash", "flash-attention available"),
    (S((8, 6), BF16, 80, sage_installed=True, flash_installed=True), "auto", "flash", "flash-attention"),
    (S((7, 5), torch.float16, 128, sage_installed=True, flash_installed=True), "auto", "sdpa", "older than sm_80"),
    (S((9, 0), FP32, 128, sage_installed=True, flash_installed=True), "auto", "sdpa", "needs fp16/bf16"),
    (S((8, 9), BF16, 128), "auto", "sdpa", "not installed"),
    (S((8, 9), BF16, 128, sage_installed=True), "flash", "sdpa", "flash requested but unusable"),
    (S((8, 0), BF16, 264, flash_installed=True), "flash", "sdpa", "at most 256"),
    (S((8, 9), BF16, 128, sage_installed=True), "sage", "sage", "requested"),
    (S(None, BF16, 128, device_type="mps"), "sage", "sdpa", "on mps"),
    (S((9, 0), BF16, 128, sage_installed=True, flash_installed=True), "sdpa", "sdpa", "requested"),
])
def test_backend_rule_for_gpu_capabilities(site, requested, backend, words):
    chosen, reason = att.select_backend(site, requested)
    assert chosen == backend and words in reason, reason


def test_flash_3_only_on_hopper_when_installed():
    assert att.flash_variant((9, 0), True) == "fa3"
    assert att.flash_variant((8, 9), True) == "fa2"
    assert att.flash_variant((9, 0), False) == "fa2"


def test_cpu_tensors_map_to_a_site_without_importing_gpu_kernels():
    site = att.site_of(torch.zeros(1, 2, 2, 64), 64)
    assert site == S(None, FP32, 64, False, False, "cpu")


# ---- the generation rule (Hopper+) and the timed choice, with fake timings ------------------------
@pytest.mark.parametrize("site,backend,words", [
    (S((9, 0), BF16, 128, sage_installed=True, sage_version=(1, 0, 6)), "sdpa", "18 % slower"),
    (S((9, 0), BF16, 128, sage_installed=True, flash_installed=True, sage_version=(2, 2, 0)), "sdpa", "timed"),
    (S((9, 0), BF16, 128, flash_installed=True, fa3_installed=True, sage_installed=True), "flash",
     "flash-attention 3 on sm_90"),
    (S((9, 0), BF16, 128, flash_installed=True), "sdpa", "flash-attn 2 is slower than SDPA on sm_90"),
    (S((10, 0), BF16, 128, sage_installed=True), "sdpa", "sm_100"),
    (S((9, 0), BF16, 128), "sdpa", "not installed"),
    (S((8, 0), BF16, 128, sage_installed=True, sage_version=(1, 0, 6)), "sage", "SageAttention available"),
])
def test_auto_rule_per_gpu_generation(site, backend, words):
    chosen, reason = att.select_backend(site, "auto")
    assert chosen == backend and words in reason, reason


def test_pick_fastest_with_fake_timings_skips_failures():
    from mova_pack.kernels.attention_timing import pick_fastest
    fake = {"sdpa": 0.066, "sage": 0.078, "flash": 0.108}
    winner, reason, timings = pick_fastest(["sdpa", "sage", "flash"], fake.__getitem__)
    assert winner == "sdpa" and "sdpa 66.00 ms" in reason and "flash 108.00 ms" in reason

    def measure(name):
        if name == "sdpa":
            raise RuntimeError("no kernel for this shape")
        return {"sage": 0.05, "flash": 0.04}[name]
    winner, reason, timings = pick_fastest(["sdpa", "sage", "flash"], measure)
    assert winner == "flash" and "sdpa failed: RuntimeError: no kernel" in reason
    winner, reason, _ = pick_fastest(["sage"], lambda n: 1 / 0)
    assert winner == "sdpa" and "no backend could be measured" in reason


def test_length_buckets():
    from mova_pack.kernels.attention_timing import length_bucket
    assert [length_bucket(n) for n in (1, 2, 3, 403, 512, 513, 43120)] == [1, 2, 4, 512, 512, 1024, 65536]


def test_timed_choice_measures_each_usable_backend(monkeypatch):
    calls = []

    def fake_timer(backend, fn):  # the GPU kernels cannot run here: fake timings by name
        calls.append(backend)
        return {"sdpa": 0.066, "sage": 0.05}[backend]
    monkeypatch.setattr(att, "_timer", fake_timer)
    q = torch.zeros(1, 40, 2, 128, dtype=BF16)
    site = S((8, 9), BF16, 128, sage_installed=True)
    backend, reason = att._timed_choice(site, q, q, "sage", "rule")
    assert backend == "sage" and calls == ["sdpa", "sage"] and "sage 50.00 ms" in reason


def test_timed_on_cpu_is_logged_once_per_length_bucket(caplog):
    att.set_attention_settings(att.AttentionSettings(backend="timed"))
    with caplog.at_level(logging.INFO, logger="mova"):
        for n in (5, 7, 8, 9):   # buckets 8, 8, 8, 16
            x = torch.randn(1, n, 256)
            att.attention(x, x, x, 2)
    lines = [r.getMessage() for r in caplog.records if "mova attention" in r.getMessage()]
    assert len(lines) == 2 and "lengths<=8x8" in lines[0] and "only sdpa can run here" in lines[0]
    report = att.attention_report()
    assert len(report) == 2 and report[1].startswith("cpu float32 head_dim=128 lengths<=16x16: sdpa")

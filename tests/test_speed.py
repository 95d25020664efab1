"""runtime/speed.apply_speed: settings land on the generator and come back to the defaults."""
import pytest
import torch

from mova_pack.kernels import attention as att
from mova_pack.kernels.quant import FP8Linear, QuantSettings, quantize_module
from mova_pack.models.net.generator import build_generator
from mova_pack.runtime.speed import SpeedSettings, apply_speed, expected_attention


@pytest.fixture(autouse=True)
def _reset():
    yield
    att.set_attention_settings(att.AttentionSettings())


def _marked(gen):
    return [any("_fused" in m.__dict__ for m in t.modules()) for t in (gen.video_high, gen.video_low, gen.audio)]


def test_apply_and_restore():
    gen = build_generator("tiny")
    quantize_module(gen.audio, QuantSettings(mode="fp8_e4m3fn"))
    apply_speed(gen, SpeedSettings("timed", compile_elementwise=True, fp8_fast_matmul=True))
    assert att.get_attention_settings().backend == "timed"
    assert _marked(gen) == [True, True, True]
    fp8 = [m for m in gen.audio.modules() if isinstance(m, FP8Linear)]
    assert fp8 and all(m.fast_matmul for m in fp8)
    ops = gen.video_high.blocks[0].__dict__["_fused"]
    apply_speed(gen, SpeedSettings("timed", compile_elementwise=True, fp8_fast_matmul=None))
    assert gen.video_high.blocks[0].__dict__["_fused"] is ops      # unchanged: compiled functions kept
    assert all(m.fast_matmul for m in fp8)                          # None: as loaded / last set
    apply_speed(gen, None)
    assert att.get_attention_settings().backend == "auto" and _marked(gen) == [False, False, False]


def test_bad_backend_is_refused():
    with pytest.raises(ValueError, match="attention backend must be one of"):
        SpeedSettings("xformers")


def test_expected_attention_on_hopper_and_cpu():
    assert expected_attention((9, 0), torch.bfloat16, 128, True, False, False, "auto")[0] == "sdpa"
    assert expected_attention((8, 9), torch.bfloat16, 128, True, False, False, "auto")[0] == "sage"
    assert expected_attention(None, torch.float32, 128, False, False, False, "auto")[0] == "sdpa"
    assert expected_attention((9, 0), torch.bfloat16, 128, True, True, False, "timed")[0] == "measured at first use"

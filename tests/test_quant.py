"""Quantized linears: which layers, how close, file round trips and refusals."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from mova_pack.kernels.quant import (FP8Linear, Int8Linear, QuantLinear, QuantSettings,
                                     quantize_module, quantized_paths)
from mova_pack.kernels.quant_io import load_quantized_into, quantize_file, read_metadata, save_quantized
from mova_pack.models.net.bridge import DualTowerBridge
from mova_pack.models.config import PRESETS
from mova_pack.models.net.dit import AudioDiT, VideoDiT
from mova_pack.common.errors import CheckpointError

CFG = PRESETS["tiny"]
MODES = ["fp8_e4m3fn", "nf4", "int8"]
ROOT = Path(__file__).resolve().parents[1]


def _video(seed=0):
    torch.manual_seed(seed)
    return VideoDiT(CFG.video_dit)


def _inputs():
    g = torch.Generator().manual_seed(5)
    return (torch.randn(1, 16, 2, 8, 8, generator=g), 500.0, torch.randn(1, 12, 32, generator=g),
            torch.randn(1, 20, 2, 8, 8, generator=g))


def test_skip_rule_keeps_embeddings_heads_and_modulation():
    video = _video()
    quantize_module(video, "fp8_e4m3fn")
    paths = set(quantized_paths(video))
    n = CFG.video_dit.num_layers
    expected = {f"blocks.{i}.{a}.{p}" for i in range(n) for a in ("self_attn", "cross_attn") for p in "qkvo"}
    expected |= {f"blocks.{i}.ffn.{j}" for i in range(n) for j in (0, 2)}
    assert paths == expected
    for name in ("text_embedding.0", "text_embedding.2", "time_embedding.0", "time_projection.1", "head.head"):
        assert type(video.get_submodule(name)) is nn.Linear
    assert video.blocks[0].modulation.dtype == torch.float32
    assert video.blocks[0].self_attn.q.bias.dtype == torch.float32

    torch.manual_seed(0)
    bridge = DualTowerBridge(CFG.bridge)
    quantize_module(bridge, "int8")
    assert set(quantized_paths(bridge)) == {f"{d}_conditioners.{i}.inner.{p}" for d in ("audio_to_video", "video_to_audio")
                                             for i in CFG.bridge.interaction_layers for p in "qkvo"}


@pytest.mark.parametrize("mode,dtype,bound", [("fp8_e4m3fn", torch.float8_e4m3fn, 0.05),
                                              ("nf4", torch.uint8, 0.12), ("int8", torch.int8, 0.01)])
def test_layer_error_and_storage(mode, dtype, bound):
    torch.manual_seed(0)
    lin = nn.Linear(256, 128)
    x = torch.randn(4, 256)
    ref = lin(x)
    seq = nn.Sequential(lin)
    quantize_module(seq, mode)
    layer = seq[0]
    assert isinstance(layer, QuantLinear) and layer.weight.dtype == dtype
    err = ((layer(x) - ref).norm() / ref.norm()).item()
    assert 0 < err < bound
    out_bf16 = layer(x.bfloat16())
    assert out_bf16.dtype == torch.bfloat16


def test_fp8_per_channel_beats_per_tensor_on_uneven_rows():
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    with torch.no_grad():
        lin.weight.mul_(torch.logspace(-3, 0, 32)[:, None])
    x = torch.randn(8, 64)
    ref = lin(x)
    err = {}
    for gran in ("tensor", "channel"):
        layer = FP8Linear.from_linear(lin, per_channel=gran == "channel")
        err[gran] = ((layer(x) - ref).norm() / ref.norm()).item()
    assert err["channel"] < err["tensor"]


def test_adapters_equal_merged_weights():
    torch.manual_seed(0)
    lin = nn.Linear(64, 48)
    layer = Int8Linear.from_linear(lin)
    a, b = torch.randn(4, 64) * 0.1, torch.randn(48, 4) * 0.1
    x = torch.randn(3, 64)
    merged = torch.nn.functional.linear(x, layer.dequantize(torch.float32) + 0.5 * b @ a, layer.bias)
    layer.add_adapter(a, b, 0.5)
    torch.testing.assert_close(layer(x), merged, rtol=1e-5, atol=1e-5)
    assert not any("adapters" in k for k in layer.state_dict())
    layer.clear_adapters()
    with pytest.raises(ValueError, match="do not fit"):
        layer.add_adapter(torch.randn(4, 63), b, 1.0)


@pytest.mark.parametrize("mode", MODES)
def test_prequantized_file_round_trip_is_bit_identical(mode, tmp_path):
    src = tmp_path / "video_bf16.safetensors"
    save_file({k: v.bfloat16() for k, v in _video().state_dict().items()}, str(src))
    dest = tmp_path / f"video_{mode}.safetensors"
    meta = quantize_file(src, dest, QuantSettings(mode=mode), "video_dit")
    assert read_metadata(dest) == meta and meta["mova_quant"] == mode and meta["mova_quant_version"] == "1"

    on_load = _video(seed=1).bfloat16()  # different init: everything must come from the files
    with safe_open(str(src), "pt") as f:
        on_load.load_state_dict({k: f.get_tensor(k) for k in f.keys()})
    quantize_module(on_load, mode)

    with torch.device("meta"):
        from_file = VideoDiT(CFG.video_dit)
    with safe_open(str(dest), "pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    load_quantized_into(from_file, state, read_metadata(dest), str(dest), "video_dit")
    assert quantized_paths(from_file) == quantized_paths(on_load)

    x, t, ctx, y = _inputs()
    a = on_load(x.bfloat16(), t, ctx, y.bfloat16())
    b = from_file(x.bfloat16(), t, ctx, y.bfloat16())
    assert torch.equal(a, b)

    resaved = tmp_path / "resaved.safetensors"
    save_quantized(from_file, resaved, mode, "video_dit")
    with safe_open(str(resaved), "pt") as f:
        assert all(torch.equal(f.get_tensor(k), state[k]) for k in state)


def _file(tmp_path, mode="fp8_e4m3fn"):
    src = tmp_path / "v.safetensors"
    save_file({k: v.bfloat16() for k, v in _video().state_dict().items()}, str(src))
    dest = tmp_path / "q.safetensors"
    quantize_file(src, dest, QuantSettings(mode=mode), "video_dit")
    with safe_open(str(dest), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, read_metadata(dest)


def test_refuses_missing_scale(tmp_path):
    state, meta = _file(tmp_path)
    del state["blocks.1.ffn.0.weight_scale"]
    with pytest.raises(CheckpointError, match=r"no '\.weight_scale'.*blocks\.1\.ffn\.0\.weight"):
        load_quantized_into(_video(), state, meta, "q.safetensors", "video_dit")


def test_refuses_other_formats_and_components(tmp_path):
    state, meta = _file(tmp_path)
    with pytest.raises(CheckpointError, match="no 'mova_quant' metadata"):
        load_quantized_into(_video(), state, {}, "q.safetensors")
    with pytest.raises(CheckpointError, match="not supported"):
        load_quantized_into(_video(), state, {**meta, "mova_quant": "gguf_q4"}, "q.safetensors")
    with pytest.raises(CheckpointError, match="quantized video_dit file, loaded as audio_dit"):
        load_quantized_into(_video(), state, meta, "q.safetensors", "audio_dit")
    bad = dict(state)
    bad["blocks.0.ffn.2.weight"] = bad["blocks.0.ffn.2.weight"].bfloat16()
    with pytest.raises(CheckpointError, match=r"blocks\.0\.ffn\.2\.weight should be F8_E4M3"):
        load_quantized_into(_video(), bad, meta, "q.safetensors")
    torch.manual_seed(0)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_quantized_into(AudioDiT(CFG.audio_dit), state, meta, "q.safetensors")


def test_nf4_without_bitsandbytes_says_how_to_install(tmp_path):
    code = ("import sys; sys.modules['bitsandbytes'] = None; sys.path.insert(0, 'scripts'); import _pack\n"
            "import torch\nfrom mova_pack.kernels.quant import quantize_module\n"
            "try:\n    quantize_module(torch.nn.Sequential(torch.nn.Linear(64, 64)), 'nf4')\n"
            "except ImportError as e:\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "ERR" in out.stdout and "pip install bitsandbytes" in out.stdout, out.stderr


def test_quantize_script_writes_a_labelled_file(tmp_path):
    folder = tmp_path / "audio_dit"
    folder.mkdir()
    torch.manual_seed(0)
    save_file({k: v.bfloat16() for k, v in AudioDiT(CFG.audio_dit).state_dict().items()},
              str(folder / "diffusion_pytorch_model.safetensors"))
    dest = tmp_path / "audio_nf4.safetensors"
    out = subprocess.run([sys.executable, "scripts/quantize.py", str(folder), str(dest), "--mode", "nf4"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    meta = read_metadata(dest)
    assert meta["mova_quant"] == "nf4" and meta["mova_component"] == "audio_dit"
    again = subprocess.run([sys.executable, "scripts/quantize.py", str(dest), str(tmp_path / "x.safetensors"),
                            "--mode", "int8", "--component", "audio_dit"], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 1 and "already quantized" in again.stderr


def test_fast_fp8_request_on_cpu_warns_once_and_matches(caplog):
    import logging
    from mova_pack.kernels import quant
    quant._warned_fp8.clear()
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    slow, fast = FP8Linear.from_linear(lin), FP8Linear.from_linear(lin, fast_matmul=True)
    x = torch.randn(5, 64)
    with caplog.at_level(logging.WARNING, logger="mova"):
        out = fast(x)
        fast(x)
    assert torch.equal(out, slow(x))
    assert sum("fp8 fast matmul needs a CUDA GPU" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("cap,dtype,per_tensor,shape,words", [
    ((8, 9), torch.bfloat16, True, (64, 32), None),          # Ada
    ((9, 0), torch.float16, True, (5120, 5120), None),      # Hopper
    ((8, 6), torch.bfloat16, True, (64, 32), "older than sm_89"),
    (None, torch.bfloat16, True, (64, 32), "CUDA GPU of sm_89+"),
    ((8, 9), torch.float32, True, (64, 32), "fp16/bf16"),
    ((8, 9), torch.bfloat16, False, (64, 32), "per-channel"),
    ((8, 9), torch.bfloat16, True, (64, 24), "multiples of 16"),
])
def test_fast_fp8_rule_for_gpu_capabilities(cap, dtype, per_tensor, shape, words):
    from mova_pack.kernels.quant import fp8_matmul_problem
    problem = fp8_matmul_problem(cap, dtype, per_tensor, *shape)
    assert problem is None if words is None else words in problem, problem

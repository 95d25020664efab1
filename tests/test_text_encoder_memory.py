"""Peak private RAM while loading umT5 (reduced size, bf16 compute) from ComfyUI's scaled-fp8 single
file and from a MOVA folder, in a fresh process (MALLOC_MMAP_THRESHOLD_=65536 so freed tensors leave
RSS at once): never more than the loaded model plus its largest tensor, and the loaded size is what
the planner's text stage counts. Tensors read in their stored dtype stay views of the file's pages
(safetensors maps it: reclaimable page cache, not private memory); casts are private copies."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import conftest  # noqa: F401  (registers mova_pack)
from mova_pack.models.codecs import text_encoder as te
from mova_pack.models.codecs.text_encoder_stream import text_encoder_bytes, write_comfy_scaled_fp8
from mova_pack.models.config import PRESETS

ROOT = Path(__file__).resolve().parents[1]
# umT5-xxl's proportions at 1/8 width, 6 of 24 layers: ~27 M parameters (the xxl has 5.7 B)
CFG = dataclasses.replace(PRESETS["mova-360p"].text_encoder, d_model=512, d_kv=64, num_heads=8, d_ff=1280,
                          num_layers=6, vocab_size=16384)
SLACK = 6 * 2 ** 20   # module objects, tokenizer, Python bookkeeping of a load

CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import _pack, torch
from mova_pack.kernels.memstat import PeakSampler, private_rss
from mova_pack.kernels.device import module_bytes
from mova_pack.models.codecs import text_encoder as te
import transformers.models.umt5.modeling_umt5, safetensors.torch, sentencepiece   # imports out of the figure
import gc; gc.collect()
base = private_rss()
with PeakSampler(interval=0.0005) as p:
    enc = te.load_text_encoder(sys.argv[2], dtype=torch.bfloat16, quantization=sys.argv[3])
gc.collect()
steady = private_rss() - base
ctx = enc.encode(["a cat walks along the beach at sunset"])
print(json.dumps({"peak": p.peak - base, "steady": steady, "bytes": module_bytes(enc.model),
                  "fp8": sum(t.numel() for t in enc.model.parameters() if t.dtype == torch.float8_e4m3fn),
                  "finite": bool(torch.isfinite(ctx).all()),
                  "shape": list(ctx.shape)}))
"""


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("umt5")
    te.save_random_text_encoder(folder, CFG, seed=0)        # MOVA layout: text_encoder/ (fp32) + tokenizer/
    model = te.load_text_encoder(folder, dtype=torch.float32).model
    spiece = (folder / "tokenizer" / "spiece.model").read_bytes()
    fp8 = folder / "umt5_fp8_e4m3fn_scaled.safetensors"
    write_comfy_scaled_fp8({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}, fp8, spiece)
    return {"folder": folder, "fp8": fp8}


def _measure(path, quantization="none") -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "scripts"), str(path), quantization], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("source, quantization, fp8, largest_bytes", [
    ("fp8", "none", True, CFG.vocab_size * CFG.d_model * 2),        # the bf16 embedding, read as stored
    # an fp32 file read into bf16: the largest tensor read (fp32) and its bf16 cast live together
    ("folder", "none", False, CFG.vocab_size * CFG.d_model * (4 + 2)),
    ("folder", "fp8_e4m3fn", True, CFG.vocab_size * CFG.d_model * (4 + 2)),   # quantized while reading
])
def test_load_peak_is_the_loaded_model_plus_one_tensor(sources, source, quantization, fp8, largest_bytes):
    got = _measure(sources[source], quantization)
    planned = text_encoder_bytes(CFG, 2, fp8_linears=fp8)
    assert got["finite"] and got["shape"] == [1, 512, CFG.d_model]
    assert abs(got["bytes"] - planned) <= 1e-3 * planned, (got, planned)    # the planner counts the format
    assert got["peak"] <= planned + largest_bytes + SLACK, (got, planned, largest_bytes)
    assert got["steady"] <= planned + SLACK, (got, planned)
    if fp8:   # the linears stay fp8 (views of the file), so the model is much smaller than bf16
        assert got["fp8"] > 0.6 * (got["bytes"] - CFG.vocab_size * CFG.d_model * 2)
        assert got["bytes"] < 0.75 * text_encoder_bytes(CFG, 2, fp8_linears=False)
    if source == "folder":   # every tensor cast or quantized from fp32: all of it private, as planned
        assert got["steady"] >= 0.9 * planned, (got, planned)
    print(source, quantization, json.dumps({**got, "planned": planned}))


def test_planner_text_stage_counts_the_stored_format():
    from mova_pack.runtime.planner import plan_memory

    cfg = PRESETS["mova-360p"]
    fp8 = plan_memory(cfg, 640, 352, 193, text_fp8=True).stages["text encode"]["text_encoder"]
    bf16 = plan_memory(cfg, 640, 352, 193).stages["text encode"]["text_encoder"]
    assert fp8 == text_encoder_bytes(cfg.text_encoder, 2, True)
    assert bf16 == text_encoder_bytes(cfg.text_encoder, 2, False)
    # umT5-xxl: 5.68 B parameters; its 1.05 B-entry embedding stays bf16 in the fp8 file's load
    assert 11.0e9 < bf16 < 11.6e9 and 6.2e9 < fp8 < 6.9e9

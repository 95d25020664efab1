"""Weight streaming: identical outputs with and without offload, bounded host RAM when streaming."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mova_pack.kernels.device import module_bytes
from mova_pack.runtime.offload import OffloadEngine, OffloadSettings
from mova_pack.kernels.quant import QuantSettings, quantize_module
from mova_pack.kernels.quant_io import load_quantized_into, quantize_file, read_metadata
from mova_pack.models.net.bridge import DualTowerBridge
from mova_pack.models.config import PRESETS
from mova_pack.models.net.dit import AudioDiT, VideoDiT
from mova_pack.models.net.joint import joint_forward

CFG = PRESETS["tiny"]
ROOT = Path(__file__).resolve().parents[1]
NAMES = ("video_dit", "audio_dit", "dual_tower_bridge")


def _build(seed=0, meta=False):
    torch.manual_seed(seed)
    with torch.device("meta" if meta else "cpu"):
        return VideoDiT(CFG.video_dit), AudioDiT(CFG.audio_dit), DualTowerBridge(CFG.bridge)


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return dict(video_latents=torch.randn(1, 16, 3, 8, 8, generator=g), audio_latents=torch.randn(1, 128, 20, generator=g),
                timestep=700.0, context=torch.randn(1, 12, 32, generator=g), y=torch.randn(1, 20, 3, 8, 8, generator=g))


def _run(towers, **kw):
    with torch.no_grad():
        return joint_forward(*towers, **_inputs(), **kw)


def _save(towers, folder):
    files = {}
    for name, module in zip(NAMES, towers):
        path = Path(folder) / f"{name}.safetensors"
        save_file(module.state_dict(), str(path))
        files[name] = [path]
    return files


def _loaded_blocks(engine):
    return sum(g.loaded for g in engine.blocks.values())


@pytest.mark.parametrize("storage", ["cpu_pinned", "disk"])
@pytest.mark.parametrize("resident", [0, 2, -1])
def test_offload_outputs_are_bit_identical(storage, resident, tmp_path):
    ref = _build()
    expected = [_run(ref), _run(ref, a2v_scale=0.0, v2a_scale=0.5)]
    files = _save(ref, tmp_path)
    towers = _build(meta=True) if storage == "disk" else _build()
    engine = OffloadEngine(towers[0], towers[1], towers[2], OffloadSettings(resident_units=resident, storage=storage),
                           "cpu", files)
    for exp, kw in zip(expected, [{}, dict(a2v_scale=0.0, v2a_scale=0.5)]):
        out = _run(towers, **kw)
        assert all(torch.equal(a, b) for a, b in zip(out, exp))
    kept = {0: 0, 2: 8, -1: len(engine.blocks)}[resident]  # a unit = video, audio, a2v, v2a block
    assert _loaded_blocks(engine) == kept
    engine.release()
    assert module_bytes(towers[0]) == 0 and _loaded_blocks(engine) == 0
    engine.to()
    assert all(torch.equal(a, b) for a, b in zip(_run(towers), expected[0]))
    engine.close()


@pytest.mark.parametrize("mode", ["fp8_e4m3fn", "nf4"])
def test_offload_with_quantized_modules(mode, tmp_path):
    ref = _build()
    for m in ref:
        quantize_module(m, mode)
    expected = _run(ref)
    engine = OffloadEngine(*ref, OffloadSettings(storage="cpu_pinned"), "cpu")
    assert all(torch.equal(a, b) for a, b in zip(_run(ref), expected))
    engine.close()

    # disk: stream from pre-quantized files into modules built on meta
    src = _save(_build(), tmp_path)
    files, towers = {}, _build(meta=True)
    for name, module in zip(NAMES, towers):
        dest = tmp_path / f"{name}_{mode}.safetensors"
        quantize_file(src[name], dest, QuantSettings(mode=mode), name)
        from safetensors import safe_open
        with safe_open(str(dest), "pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
        load_quantized_into(module, state, read_metadata(dest), str(dest), name)
        files[name] = [dest]
    engine = OffloadEngine(*towers, OffloadSettings(storage="disk"), "cpu", files)
    assert all(torch.equal(a, b) for a, b in zip(_run(towers), expected))
    assert _loaded_blocks(engine) == 0


def test_two_experts_share_audio_and_bridge():
    high, audio, bridge = _build(seed=0)
    low = _build(seed=3)[0]
    exp_high, exp_low = _run((high, audio, bridge)), _run((low, audio, bridge))
    engine = OffloadEngine({"video_dit": high, "video_dit_2": low}, audio, bridge,
                           OffloadSettings(resident_units=1), "cpu")
    assert all(torch.equal(a, b) for a, b in zip(_run((high, audio, bridge)), exp_high))
    assert all(torch.equal(a, b) for a, b in zip(_run((low, audio, bridge)), exp_low))
    assert engine.active == "video_dit_2"
    assert not any(g.loaded for (c, _, _), g in engine.blocks.items() if c == "video_dit")
    assert all(torch.equal(a, b) for a, b in zip(_run((high, audio, bridge)), exp_high))


def test_disk_needs_files_and_matching_shapes(tmp_path):
    with pytest.raises(ValueError, match="files"):
        OffloadEngine(*_build(), OffloadSettings(storage="disk"), "cpu")
    files = _save(_build(), tmp_path)
    files["audio_dit"] = files["video_dit"]  # wrong component file
    from mova_pack.common.errors import CheckpointError
    with pytest.raises(CheckpointError, match="shape"):
        OffloadEngine(*_build(meta=True), OffloadSettings(storage="disk"), "cpu", files)


# Runs in a fresh process: a model of a few tens of MB, built on meta, streamed from disk.
PROBE = r"""
import json, sys, dataclasses
sys.path.insert(0, "scripts"); import _pack
import torch
torch.set_num_threads(1)
from safetensors.torch import save_file
from mova_pack.models.config import PRESETS
from mova_pack.models.net.dit import VideoDiT, AudioDiT
from mova_pack.models.net.bridge import DualTowerBridge
from mova_pack.models.net.joint import joint_forward
from mova_pack.runtime.offload import OffloadEngine, OffloadSettings
from mova_pack.kernels.memstat import PeakSampler, private_rss
t = PRESETS["tiny"]
v = dataclasses.replace(t.video_dit, dim=256, ffn_dim=1024, num_heads=8, num_layers=12)
a = dataclasses.replace(t.audio_dit, dim=128, ffn_dim=512, num_heads=4, num_layers=8)
cfg = dataclasses.replace(t, video_dit=v, audio_dit=a, bridge=dataclasses.replace(
    t.bridge, visual_layers=12, audio_layers=8, visual_hidden_dim=256, audio_hidden_dim=128))
folder, storage = sys.argv[1], sys.argv[2]
with torch.device("meta"):
    towers = VideoDiT(cfg.video_dit), AudioDiT(cfg.audio_dit), DualTowerBridge(cfg.bridge)
names = ("video_dit", "audio_dit", "dual_tower_bridge")
files = {n: [f"{folder}/{n}.safetensors"] for n in names}
if storage == "write":
    torch.manual_seed(0)
    for n, m in zip(names, (VideoDiT(cfg.video_dit), AudioDiT(cfg.audio_dit), DualTowerBridge(cfg.bridge))):
        save_file(m.state_dict(), files[n][0])
    sys.exit(0)
g = torch.Generator().manual_seed(1)
x = dict(video_latents=torch.randn(1, 16, 2, 8, 8, generator=g), audio_latents=torch.randn(1, 128, 11, generator=g),
         timestep=500.0, context=torch.randn(1, 512, 32, generator=g), y=torch.randn(1, 20, 2, 8, 8, generator=g))
base = private_rss()
with PeakSampler() as peak:
    if storage == "resident":
        towers = VideoDiT(cfg.video_dit), AudioDiT(cfg.audio_dit), DualTowerBridge(cfg.bridge)
        engine = None
    else:
        engine = OffloadEngine(*towers, OffloadSettings(storage="disk"), "cpu", files)
    after = []
    for _ in range(4):
        with torch.no_grad():
            out = joint_forward(*towers, **x)
        after.append(private_rss() - base)
weights = sum(__import__("os").path.getsize(f[0]) for f in files.values())
print(json.dumps({"peak": peak.peak - base, "after": after, "weights": weights,
                  "unit": engine.unit_bytes(0) if engine else 0,
                  "stems": sum(g.nbytes for g in engine.stems.values()) if engine else 0}))
"""


def probe_config():
    """The PROBE's model config (kept in sync by test_planner, which plans the same run)."""
    import dataclasses
    t = PRESETS["tiny"]
    v = dataclasses.replace(t.video_dit, dim=256, ffn_dim=1024, num_heads=8, num_layers=12)
    a = dataclasses.replace(t.audio_dit, dim=128, ffn_dim=512, num_heads=4, num_layers=8)
    return dataclasses.replace(t, video_dit=v, audio_dit=a, bridge=dataclasses.replace(
        t.bridge, visual_layers=12, audio_layers=8, visual_hidden_dim=256, audio_hidden_dim=128))


def _probe(folder, storage):
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # freed tensors go back to the OS at once
    out = subprocess.run([sys.executable, "-c", PROBE, str(folder), storage], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1]) if storage != "write" else None


_PROBED = {}


def probe_results() -> tuple[dict, dict]:
    """(streamed, resident) measurements, run once per test session (test_planner reuses them)."""
    if not _PROBED:
        import tempfile
        with tempfile.TemporaryDirectory() as folder:
            _probe(folder, "write")
            _PROBED["disk"], _PROBED["resident"] = _probe(folder, "disk"), _probe(folder, "resident")
    return _PROBED["disk"], _PROBED["resident"]


def test_disk_streaming_keeps_host_ram_near_one_unit():
    streamed, resident = probe_results()
    w = streamed["weights"]
    assert resident["peak"] > 0.95 * w              # the measurement sees the whole model when resident
    # streamed weights stay page cache; private memory holds only the stems and the unit in flight (each
    # tensor is copied out of the mmap into an aligned buffer, runtime/offload.py _Slot.fetch)
    assert streamed["peak"] < 0.1 * w + streamed["unit"] + streamed["stems"] < 0.35 * w
    # repeated runs do not grow host RAM: a unit's copies kept per run would add >= 2 units by the 4th run;
    # the allocator's own churn from copying units in and out moves the figure by up to ~1.5 MB either way
    assert max(streamed["after"][1:]) - streamed["after"][1] < 0.5 * streamed["unit"]
    assert max(resident["after"][1:]) - resident["after"][1] < 1e6


@pytest.mark.parametrize("mode,storage,prequantized", [
    ("bf16", None, False), ("bf16", "disk", False), ("fp8_e4m3fn", None, False), ("fp8_e4m3fn", "disk", False),
    ("nf4", "cpu_pinned", False), ("fp8_e4m3fn", "disk", True), ("nf4", None, True), ("int8", "disk", True)])
def test_place_towers_from_files(mode, storage, prequantized, tmp_path):
    """The loader path: meta modules + files -> quantized (on load or from a pre-quantized file) and
    placed; outputs equal quantize_module on an in-memory copy, bit for bit."""
    from mova_pack.runtime.placement import place_towers
    ref = [m.bfloat16() for m in _build()]
    ref[2].rotary.rebuild_buffers()
    files = _save(ref, tmp_path)
    if prequantized:
        for name in NAMES:
            dest = tmp_path / f"{name}.q.safetensors"
            quantize_file(files[name], dest, QuantSettings(mode=mode), name)
            files[name] = [dest]
    for m in ref:
        quantize_module(m, mode)
    x = {k: (v.bfloat16() if torch.is_tensor(v) else v) for k, v in _inputs().items()}
    with torch.no_grad():
        expected = joint_forward(*ref, **x)
    towers = dict(zip(NAMES, _build(meta=True)))
    offload = None if storage is None else OffloadSettings(storage=storage)
    engine = place_towers(towers, files, torch.bfloat16, QuantSettings(mode=mode), offload, "cpu", tmp_path / "cache")
    with torch.no_grad():
        out = joint_forward(*towers.values(), **x)
    assert all(torch.equal(a, b) for a, b in zip(out, expected))
    assert (engine is None) == (storage is None)
    if storage == "disk" and mode != "bf16" and not prequantized:
        copies = list((tmp_path / "cache").glob("*/video_dit/diffusion_pytorch_model.safetensors.index.json"))
        assert len(copies) == 1 and len(list(copies[0].parent.glob("*.safetensors"))) > 1   # written in shards


def test_quantized_stream_cache_is_keyed_reused_and_never_half_used(tmp_path):
    """The quantized copy for streaming: one per (sources, mode, scale, dtype), written in shards no
    larger than about half the largest source tensor; reused while complete; a truncated shard makes it
    be written again and leftover temporary folders are never read."""
    from mova_pack.runtime.placement import cache_key, cache_shard_bytes, stream_files
    ref = [m.bfloat16() for m in _build()]
    src = _save(ref, tmp_path)["video_dit"]
    fp8, int8 = QuantSettings(mode="fp8_e4m3fn"), QuantSettings(mode="int8")
    cache_dir = tmp_path / "cache"
    shards = stream_files(src, "video_dit", torch.bfloat16, fp8, cache_dir)
    folder = shards[0].parent
    assert folder.parent.name == cache_key(src, "video_dit", torch.bfloat16, fp8) and folder.name == "video_dit"
    assert len(shards) > 1 and all(read_metadata(s)["mova_quant"] == "fp8_e4m3fn" for s in shards)
    limit = cache_shard_bytes(src, torch.bfloat16)
    from safetensors.torch import load_file
    for s in shards:   # a shard only passes the limit when it holds a single tensor
        t = load_file(s)
        assert len(t) == 1 or sum(v.numel() * v.element_size() for v in t.values()) <= limit
    assert not list(cache_dir.rglob("*.partial"))
    stamp = [(s.stat().st_ino, s.stat().st_mtime_ns) for s in shards]
    assert stream_files(src, "video_dit", torch.bfloat16, fp8, cache_dir) == shards
    assert [(s.stat().st_ino, s.stat().st_mtime_ns) for s in shards] == stamp    # reused, not rewritten
    keys = {cache_key(src, "video_dit", torch.bfloat16, q) for q in (fp8, int8, QuantSettings(
        mode="fp8_e4m3fn", fp8_scale="channel"))} | {cache_key(src, "video_dit", torch.float32, fp8)}
    assert len(keys) == 4                                                      # every setting has its own copy
    good = {k: t.clone() for s in shards for k, t in load_file(s).items()}
    raw = shards[-1].read_bytes()
    shards[-1].write_bytes(raw[: len(raw) // 2])                               # an interrupted copy
    (folder.parent / ".video_dit.123.abcd.partial").mkdir()
    again = stream_files(src, "video_dit", torch.bfloat16, fp8, cache_dir)
    assert again == shards and shards[-1].stat().st_size == len(raw)
    rewritten = {k: t for s in again for k, t in load_file(s).items()}
    assert rewritten.keys() == good.keys() and all(torch.equal(rewritten[k], good[k]) for k in good)
    os.utime(src[0], ns=(1, 1))                                                # the source file changed
    assert cache_key(src, "video_dit", torch.bfloat16, fp8) != folder.parent.name


def test_cached_copy_equals_quantizing_the_loaded_module(tmp_path):
    """The copy is made from weights cast to the load dtype, as quantize_module sees them: fp32 files
    loaded as bf16 stream exactly what quantizing the loaded bf16 module gives."""
    from mova_pack.runtime.placement import place_towers
    ref = _build()
    files = _save(ref, tmp_path)                                               # fp32 files
    ref = [m.bfloat16() for m in ref]
    ref[2].rotary.rebuild_buffers()
    for m in ref:
        quantize_module(m, "int8")
    x = {k: (v.bfloat16() if torch.is_tensor(v) else v) for k, v in _inputs().items()}
    with torch.no_grad():
        expected = joint_forward(*ref, **x)
    towers = dict(zip(NAMES, _build(meta=True)))
    place_towers(towers, files, torch.bfloat16, QuantSettings(mode="int8"), OffloadSettings(storage="disk"), "cpu",
                 tmp_path / "cache")
    with torch.no_grad():
        out = joint_forward(*towers.values(), **x)
    assert all(torch.equal(a, b) for a, b in zip(out, expected))


@pytest.mark.parametrize("resident", [0, 2, -1])
def test_resident_and_peak_bytes_are_what_the_device_holds(resident):
    """resident_bytes() = the device's share after to(); peak_bytes() adds the one streamed unit that
    a forward brings in (no CUDA side stream here) and is the largest the device holds in a forward."""
    towers = _build()
    engine = OffloadEngine(*towers, OffloadSettings(resident_units=resident, storage="cpu_pinned"), "cpu")
    assert engine.device_bytes() == engine.resident_bytes()
    assert [engine.is_resident(i) for i in range(engine.num_units)] == [
        resident < 0 or i < resident for i in range(engine.num_units)]
    seen = []
    hooks = [b.register_forward_hook(lambda *_: seen.append(engine.device_bytes())) for b in towers[0].blocks]
    _run(towers)
    for h in hooks:
        h.remove()
    streamed = [engine.unit_bytes(i) for i in range(engine.num_units) if not engine.is_resident(i)]
    assert engine.peak_bytes() == engine.resident_bytes() + max(streamed, default=0)
    assert max(seen) <= engine.peak_bytes()
    if streamed:
        assert max(seen) > engine.resident_bytes()
    else:
        assert engine.peak_bytes() == engine.resident_bytes() == engine.total_bytes()
    engine.release()
    assert engine.device_bytes() == 0 and engine.resident_bytes() > 0      # planned, not measured


def test_pinning_and_side_stream_only_for_cuda():
    from mova_pack.runtime.offload import transfer_mode
    pinned, disk = OffloadSettings(storage="cpu_pinned"), OffloadSettings(storage="disk")
    assert transfer_mode("cuda", pinned) == (True, True)
    assert transfer_mode("cuda", disk) == (False, True)
    assert transfer_mode("cuda", OffloadSettings(prefetch=False)) == (True, False)
    assert transfer_mode("cpu", pinned) == (False, False) and transfer_mode("mps", disk) == (False, False)


def test_prefetch_targets_streamed_units_only():
    towers = _build()
    engine = OffloadEngine(*towers, OffloadSettings(resident_units=1), "cpu")
    assert [engine.wants_prefetch(i) for i in range(-1, engine.num_units + 1)] == \
        [False, False] + [True] * (engine.num_units - 1) + [False]

"""Benchmark of the kernels/ engines on a mid-size MOVA config (CPU is fine; ~5-10 min on 2 cores).

    python scripts/bench.py --json bench.json [--rounds 5] [--threads 2]

Writes speed vs the reference implementation (diffsynth), host RAM while streaming from disk, private
RAM while loading for every quantization x offload combination (`--only load` for that section alone),
weight bytes and error per quantization mode, and the planner's figures for the real 360p model.
See docs/benchmarks.md for the recorded figures.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _pack  # noqa: F401  (registers mova_pack)
import torch
from safetensors.torch import save_file

from mova_pack.kernels.device import module_bytes
from mova_pack.runtime.offload import OffloadSettings
from mova_pack.runtime.params import bridge_part, dit_part, dit_stem
from mova_pack.runtime.planner import plan_memory
from mova_pack.kernels.quant import quantize_module
from mova_pack.models.net.bridge import DualTowerBridge
from mova_pack.models.config import PRESETS
from mova_pack.models.net.dit import AudioDiT, VideoDiT
from mova_pack.models.net.joint import joint_forward

NAMES = ("video_dit", "audio_dit", "dual_tower_bridge")


def mid_config():
    """~430M parameters in the released model's proportions: the same depth (40 video blocks, 30 audio
    blocks, the Bridge on all 30 shared layers), head_dim 128, text_dim 4096, freq_dim 256 and ffn/dim
    ratios (2.7 video, 5.8 audio, rounded to multiples of 64), with both towers 6.7x / 6x narrower (video
    6 heads, audio 2). Parameter shares video / audio / bridge: 76 / 9 / 15 % (released: 78 / 8 / 15 %).
    The never-quantized stems are 2.3 % of the weights (released 1.4 %): the text embedding reads 4096
    wide whatever the tower width, so narrow towers give it a larger share; see docs/benchmarks.md."""
    r = PRESETS["mova-360p"]

    def narrow(c, dim):
        ffn = round(dim * c.ffn_dim / c.dim / 64) * 64
        return dataclasses.replace(c, dim=dim, ffn_dim=ffn, num_heads=dim // (c.dim // c.num_heads))
    video, audio = narrow(r.video_dit, 768), narrow(r.audio_dit, 256)
    bridge = dataclasses.replace(r.bridge, visual_hidden_dim=video.dim, audio_hidden_dim=audio.dim)
    return dataclasses.replace(r, video_dit=video, audio_dit=audio, bridge=bridge)


def proportions(cfg) -> dict:
    """Parameter count, video/audio/bridge shares and the share of never-quantized stems."""
    parts = {"video": dit_part(cfg.video_dit), "audio": dit_part(cfg.audio_dit), "bridge": bridge_part(cfg.bridge)}
    params = sum(p.params for p in parts.values())
    stems = dit_stem(cfg.video_dit).params + dit_stem(cfg.audio_dit).params
    return {"params": params, "shares": {k: p.params / params for k, p in parts.items()},
            "stem_share": stems / params}


def build(cfg, seed=0):
    """Seeded weights at a scale that keeps activations O(1) (default init would be as good)."""
    torch.manual_seed(seed)
    towers = VideoDiT(cfg.video_dit), AudioDiT(cfg.audio_dit), DualTowerBridge(cfg.bridge)
    with torch.no_grad():
        for t in towers:
            for name, p in t.named_parameters():
                if name.endswith("modulation"):
                    p.normal_(0, 0.3)
    return [t.eval().requires_grad_(False) for t in towers]


def inputs(cfg, seed=1):
    """3 latent frames of 16x20 (240 video tokens), 20 audio tokens, a 512-token context."""
    g = torch.Generator().manual_seed(seed)
    return dict(video_latents=torch.randn(1, 16, 3, 16, 20, generator=g),
                audio_latents=torch.randn(1, cfg.audio_dit.in_dim, 20, generator=g),
                timestep=torch.tensor([700.0]), context=torch.randn(1, 512, cfg.video_dit.text_dim, generator=g),
                y=torch.randn(1, 20, 3, 16, 20, generator=g))


def forward(towers, x):
    with torch.no_grad():
        return joint_forward(*towers, **x)


def rel_err(out, ref) -> float:
    """max over (video, audio) of ||out - ref|| / ||ref|| (relative Frobenius error)."""
    return max(((o.double() - r.double()).norm() / r.double().norm()).item() for o, r in zip(out, ref))


# ---- speed vs reference ----------------------------------------------------------------------
def reference_towers(towers):
    from diffsynth.models import mova_dual_tower_bridge as mb
    from diffsynth.models.mova_audio_dit import MovaAudioDit
    from diffsynth.models.wan_video_dit import WanModel
    fn = mb.apply_rotary_pos_emb  # diffsynth wraps it in torch.compile; compare eager with eager
    mb.apply_rotary_pos_emb = getattr(fn, "_torchdynamo_orig_callable", fn)

    def kw(c):
        return dict(dim=c.dim, in_dim=c.in_dim, ffn_dim=c.ffn_dim, out_dim=c.out_dim, text_dim=c.text_dim,
                    freq_dim=c.freq_dim, eps=c.eps, patch_size=tuple(c.patch_size), num_heads=c.num_heads,
                    num_layers=c.num_layers, has_image_input=False)
    v, a, b = towers
    refs = (WanModel(**kw(v.cfg)), MovaAudioDit(**kw(a.cfg)), mb.DualTowerConditionalBridge(**dataclasses.asdict(b.cfg)))
    for r, m in zip(refs, towers):
        r.load_state_dict(m.state_dict(), strict=True)
    dtype = v.dtype
    return [r.to(dtype).eval().requires_grad_(False) for r in refs]


def reference_forward(refs, x):
    from diffsynth.pipelines.mova_audio_video import model_fn_mova_audio_video
    dtype = refs[0].patch_embedding.weight.dtype
    with torch.no_grad():
        return model_fn_mova_audio_video(*refs, video_latents=x["video_latents"].to(dtype),
                                         audio_latents=x["audio_latents"].to(dtype), timestep=x["timestep"].to(dtype),
                                         context=x["context"].to(dtype), y=x["y"].to(dtype), frame_rate=24)


def bench_speed(towers, x, rounds: int) -> dict:
    """Interleaved rounds; the ratio uses process CPU time (all threads), which shared-machine load
    distorts far less than wall time (both are recorded)."""
    refs = reference_towers(towers)
    forward(towers, x), reference_forward(refs, x)  # warm-up
    wall = {"ours": [], "reference": []}
    cpu = {"ours": [], "reference": []}
    for _ in range(rounds):
        for name, fn in (("ours", lambda: forward(towers, x)), ("reference", lambda: reference_forward(refs, x))):
            w0, c0 = time.perf_counter(), time.process_time()
            result = fn()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
            if name == "ours":
                out = result
            else:
                ref = result
    med = {k: {n: statistics.median(v[n]) for n in v} for k, v in (("cpu", cpu), ("wall", wall))}
    return {"speed_ratio_vs_reference": med["cpu"]["ours"] / med["cpu"]["reference"],
            "speed": {"cpu_s": cpu, "wall_s": wall, "median_cpu_s": med["cpu"], "median_wall_s": med["wall"],
                      "wall_ratio": med["wall"]["ours"] / med["wall"]["reference"], "rounds": rounds,
                      "dtype": str(towers[0].dtype).replace("torch.", ""),
                      "max_rel_err_vs_reference": rel_err(out, ref)}}


# ---- quantization -----------------------------------------------------------------------------
def real_ratio(mode: str) -> float:
    """Same ratio for the released model (both experts + audio + bridge) from the config arithmetic
    that tests/test_planner.py checks byte-for-byte against quantized modules."""
    r = PRESETS["mova-360p"]
    parts = (dit_part(r.video_dit), dit_part(r.video_dit), dit_part(r.audio_dit), bridge_part(r.bridge))
    return sum(p.bytes(mode) for p in parts) / sum(p.bytes("bf16") for p in parts)


def bench_quant(cfg, x) -> dict:
    fp32 = build(cfg)
    ref = forward(fp32, x)
    state = [t.state_dict() for t in fp32]
    del fp32
    result, base_bytes = {}, None
    for mode in ("bf16", "fp8_e4m3fn", "nf4", "int8"):
        towers = build(cfg)
        for t, s in zip(towers, state):
            t.load_state_dict(s)
            t.to(torch.bfloat16)
        towers[2].rotary.rebuild_buffers()
        for t in towers:
            quantize_module(t, mode)
        nbytes = sum(module_bytes(t) for t in towers)
        base_bytes = base_bytes or nbytes
        t0 = time.perf_counter()
        out = forward(towers, x)
        key = {"fp8_e4m3fn": "fp8"}.get(mode, mode)
        result[key] = {"weight_bytes": nbytes, "weight_bytes_ratio": nbytes / base_bytes,
                       "rel_err": rel_err(out, ref), "forward_s": time.perf_counter() - t0,
                       "weight_bytes_ratio_mova_360p": real_ratio(mode)}
        del towers
    return result


# ---- streaming from disk (fresh process) ------------------------------------------------------
STREAM_PROBE = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[3]); import _pack
from bench import mid_config, inputs, forward, NAMES
from mova_pack.kernels.memstat import PeakSampler, private_rss, _status_kb
from mova_pack.runtime.offload import OffloadEngine, OffloadSettings
from mova_pack.models.net.bridge import DualTowerBridge
from mova_pack.models.net.dit import AudioDiT, VideoDiT
torch.set_num_threads(int(sys.argv[2]))
folder = sys.argv[1]
cfg = mid_config()
x = inputs(cfg)
with torch.device("meta"):
    towers = [m.to(torch.bfloat16) for m in (VideoDiT(cfg.video_dit), AudioDiT(cfg.audio_dit),
                                             DualTowerBridge(cfg.bridge))]  # the files' dtype: zero-copy
base = private_rss()
with PeakSampler() as peak:
    engine = OffloadEngine(*towers, OffloadSettings(resident_units=0, storage="disk"), "cpu",
                           {n: [f"{folder}/{n}.safetensors"] for n in NAMES})
    out = forward(towers, x)
torch.save({"video": out[0], "audio": out[1]}, f"{folder}/stream_out.pt")
print(json.dumps({"peak_private": peak.peak - base, "rss_file_kb": _status_kb("RssFile"),
                  "unit_bytes": engine.unit_bytes(0), "stem_bytes": sum(g.nbytes for g in engine.stems.values())}))
"""


def bench_stream(cfg, x, threads: int) -> dict:
    towers = [t.to(torch.bfloat16) for t in build(cfg)]
    towers[2].rotary.rebuild_buffers()
    resident = forward(towers, x)
    with tempfile.TemporaryDirectory() as folder:
        for name, t in zip(NAMES, towers):
            save_file({k: v.contiguous() for k, v in t.state_dict().items()}, f"{folder}/{name}.safetensors")
        weight_bytes = sum(os.path.getsize(f"{folder}/{n}.safetensors") for n in NAMES)
        del towers
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # freed tensors return to the OS at once
        here = str(Path(__file__).resolve().parent)
        run = subprocess.run([sys.executable, "-c", STREAM_PROBE, folder, str(threads), here], env=env,
                             capture_output=True, text=True, timeout=900)
        if run.returncode:
            raise RuntimeError(run.stderr)
        probe = json.loads(run.stdout.strip().splitlines()[-1])
        streamed = torch.load(f"{folder}/stream_out.pt", weights_only=True)
    diff = max((streamed["video"] - resident[0]).abs().max().item(), (streamed["audio"] - resident[1]).abs().max().item())
    return {"peak_private_rss_ratio": probe["peak_private"] / weight_bytes, "max_abs_diff": diff,
            "peak_private_bytes": probe["peak_private"], "weight_bytes": weight_bytes,
            "unit_bytes": probe["unit_bytes"], "stem_bytes": probe["stem_bytes"],
            "file_backed_rss_bytes_at_end": probe["rss_file_kb"] * 1024,
            "settings": "resident_units=0, storage=disk, bf16, cpu"}


# ---- loading: private RAM per combination (fresh process each) -------------------------------
LOAD_QUANT = ("none", "fp8_e4m3fn", "nf4", "int8")
LOAD_OFFLOAD = ("none", "cpu", "disk")


def save_mova_folder(cfg, folder: Path, seed: int = 0) -> int:
    """The config as a MOVA folder with both experts (bf16 weights); returns the weight bytes."""
    from mova_pack.models.net.generator import build_generator, save_generator
    gen = build_generator(cfg, dtype=torch.bfloat16, seed=seed)
    save_generator(gen, folder)
    del gen
    return sum(f.stat().st_size for f in Path(folder).glob("*/*.safetensors"))


def save_prequantized(folder: Path, dest: Path, mode: str) -> None:
    """The folder's towers as pre-quantized files (scripts/quantize.py's format), configs beside them."""
    import shutil
    from mova_pack.kernels.quant import QuantSettings
    from mova_pack.kernels.quant_io import quantize_file
    for name in ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"):
        (dest / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / name / "config.json", dest / name / "config.json")
        quantize_file(sorted((folder / name).glob("*.safetensors")), dest / name / "diffusion_pytorch_model.safetensors",
                      QuantSettings(mode=mode), name)


def probe_load(folder, quant: str, offload: str, cache_dir, threads: int = 2, dtype: str = "bf16") -> dict:
    """One combination in a fresh process (scripts/load_probe.py), freed memory returned at once."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    probe = str(Path(__file__).resolve().parent / "load_probe.py")
    run = subprocess.run([sys.executable, probe, str(folder), "--quant", quant, "--offload", offload, "--dtype", dtype,
                          "--cache-dir", str(cache_dir), "--threads", str(threads)],
                         env=env, capture_output=True, text=True, timeout=1800)
    if run.returncode:
        raise RuntimeError(f"load probe {quant}/{offload} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def load_row(probe: dict, weight_bytes: int) -> dict:
    plan = probe["planner"]
    return {"peak_private_ratio": round(probe["peak_private"] / weight_bytes, 4),
            "steady_private_ratio": round(probe["steady_private"] / weight_bytes, 4),
            "planner_peak_ratio": round(plan["peak_host_bytes"] / weight_bytes, 4),
            "planner_steady_ratio": round(plan["steady_host_bytes"] / weight_bytes, 4),
            "largest_tensor_ratio": round(plan["largest_tensor_bytes"] / weight_bytes, 4),
            "peak_within_planner_5pct": probe["peak_private"] <= 1.05 * plan["peak_host_bytes"],
            "peak_within_steady_plus_largest": probe["peak_private"] <= probe["steady_private"]
            + 1.05 * plan["largest_tensor_bytes"]}


def bench_load(cfg, threads: int) -> dict:
    """Every loader combination (and pre-quantized fp8 / nf4 files) on `cfg` saved as a MOVA folder."""
    from mova_pack.kernels.device import optional_import
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "mova"
        weight_bytes = save_mova_folder(cfg, folder)
        for quant in LOAD_QUANT:
            if quant in ("nf4", "int8") and optional_import("bitsandbytes") is None:
                rows.update({f"{quant}/{o}": "bitsandbytes not installed" for o in LOAD_OFFLOAD})
                continue
            for offload in LOAD_OFFLOAD:
                rows[f"{quant}/{offload}"] = load_row(probe_load(folder, quant, offload, Path(tmp) / "cache", threads),
                                                      weight_bytes)
                print(f"load {quant}/{offload}: {rows[f'{quant}/{offload}']}", flush=True)
        for mode in ("fp8_e4m3fn", "nf4"):
            if mode == "nf4" and optional_import("bitsandbytes") is None:
                continue
            pre = Path(tmp) / f"pre_{mode}"
            save_prequantized(folder, pre, mode)
            for offload in LOAD_OFFLOAD:
                key = f"prequantized {mode}/{offload}"
                rows[key] = load_row(probe_load(pre, "none", offload, Path(tmp) / "cache", threads), weight_bytes)
                print(f"load {key}: {rows[key]}", flush=True)
    return {"weight_bytes_bf16": weight_bytes, "dtype": "bf16", "device": "cpu",
            "env": "MALLOC_MMAP_THRESHOLD_=65536, one fresh process per row, first load (quantized copies "
                   "for disk streaming written in it)", "rows": rows}


# ---- planner -----------------------------------------------------------------------------------
def bench_planner() -> dict:
    kw = dict(width=640, height=352, frames=193, fps=24.0)
    cases = {"bf16_no_offload": dict(quant="bf16", offload=None),
             "fp8_stream": dict(quant="fp8_e4m3fn", offload=OffloadSettings(storage="disk")),
             "nf4_stream": dict(quant="nf4", offload=OffloadSettings(storage="disk"))}
    return {name: plan_memory("mova-360p", **kw, **c).as_dict() for name, c in cases.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="where to write the results")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per implementation (median)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="dtype of the speed comparison")
    ap.add_argument("--only", choices=["load"], help="run one section only (its JSON alone)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = mid_config()
    if args.only == "load":
        out = {"load": bench_load(cfg, args.threads), "torch": torch.__version__}
        Path(args.json).write_text(json.dumps(out, indent=2))
        return
    x = inputs(cfg)
    started = time.time()
    out = {"config": {"video": dataclasses.asdict(cfg.video_dit), "audio": dataclasses.asdict(cfg.audio_dit),
                      "bridge_layers": len(cfg.bridge.interaction_layers), **proportions(cfg)},
           "planner": {"mova_360p": bench_planner()}}
    print("planner done", flush=True)
    out["stream"] = bench_stream(cfg, x, args.threads)
    print("stream done", flush=True)
    out["load"] = bench_load(cfg, args.threads)
    print("load done", flush=True)
    out["quant"] = bench_quant(cfg, x)
    print("quant done", flush=True)
    towers = build(cfg)
    if args.dtype == "bf16":
        towers = [t.to(torch.bfloat16) for t in towers]
        towers[2].rotary.rebuild_buffers()
    out.update(bench_speed(towers, x, args.rounds))
    out["seconds"] = time.time() - started
    out["torch"] = torch.__version__
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(json.dumps({k: out[k] for k in ("speed_ratio_vs_reference",)}, indent=2))
    print(json.dumps({"stream": {k: out["stream"][k] for k in ("peak_private_rss_ratio", "max_abs_diff")},
                      "quant": {m: {k: round(v, 4) for k, v in d.items() if k != "weight_bytes"}
                                for m, d in out["quant"].items()}}, indent=2))


if __name__ == "__main__":
    main()

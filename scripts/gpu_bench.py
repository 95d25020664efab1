"""Speed of one joint forward at the released 360p size, 193 frames (issue 27's table), as JSON.

    python scripts/gpu_bench.py --json gpu_bench.json                 # CUDA: released size, ~4 min
    python scripts/gpu_bench.py --json tiny.json --tiny               # tiny config on the CPU (tests)

One video expert + audio tower + Bridge with seeded random weights (modulation std 0.3, matrices 0.02),
bf16, 640x352x193 at 24 fps (43,120 video + 403 audio tokens), t = 700, a 512-token context. Cases
(--cases picks some; each is isolated: a failure is recorded and the next runs; the JSON is rewritten
after every case; --budget-s skips what would start after the budget):
  env                    torch / GPU / which optional packages import
  micro_linear           bf16 Linear vs torch._scaled_mm vs FP8Linear fast path per activation-quantization
                         implementation and scale granularity; the Triton kernel checked against the reference
  micro_attention        one self-attention at the tower's shape per backend (SDPA default/cuDNN/flash/efficient,
                         sage, flash-attn)
  resident               joint_forward, bf16, SDPA via attention `auto`
  attention_<b>          the same with the pack's attention backend b (auto rule, timed, sage, flash)
  compile_elementwise    models/net/fused.py: norms/modulation/RoPE/gates compiled, attention+matmuls eager
  cache                  the step cache's decision cost per step at this size, and the toy's measured
                         forward ratio (docs/toy-model-eval.json) applied to the resident time
  diffsynth              DiffSynth's model_fn_mova_audio_video on the same weights
  fp8_dequant            fp8 e4m3fn per-tensor weights, dequantized per layer
  fp8_fast_<impl>_<g>    fp8 fast matmul, activation quantized by impl (triton|compile|reference), scales g (row|tensor)
  streamed               OffloadEngine cpu_pinned, resident_units=0, prefetch (bf16; set-up ~1 min)
A package that is missing is reported "not available", never an error.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
import traceback
import types
from contextlib import contextmanager
from pathlib import Path

import _pack  # noqa: F401  (registers mova_pack)
import torch

from mova_pack.kernels import attention as att
from mova_pack.kernels import fp8_act
from mova_pack.kernels.device import optional_import
from mova_pack.kernels.quant import FP8Linear, QuantSettings, fp8_linear, fp8_quantize, quantize_module
from mova_pack.models.config import PRESETS
from mova_pack.models.net.bridge import DualTowerBridge
from mova_pack.models.net.dit import AudioDiT, VideoDiT
from mova_pack.models.net.joint import joint_forward
from mova_pack.models.sampling.conditioning import latent_shapes

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("triton", "sageattention", "flash_attn", "flash_attn_interface", "bitsandbytes", "diffsynth")
FP8_VARIANTS = [("triton", "row"), ("triton", "tensor"), ("compile", "row"), ("reference", "row")]
MICRO_VARIANTS = FP8_VARIANTS + [("compile", "tensor"), ("reference", "tensor")]
DEFAULT_CASES = (["env", "micro_linear", "micro_attention", "resident", "fp8_dequant"]
                 + [f"fp8_fast_{i}_{g}" for i, g in FP8_VARIANTS]
                 + ["attention_timed", "compile_elementwise", "cache", "attention_sage", "attention_flash",
                    "diffsynth", "streamed"])


@dataclasses.dataclass
class Size:
    name: str
    config: object
    width: int
    height: int
    frames: int
    rows: int            # micro benchmarks: tokens
    dims: tuple          # micro linear shapes (in, out)
    heads: int
    head_dim: int
    context: int


def sizes(tiny: bool) -> Size:
    if tiny:
        return Size("tiny", PRESETS["tiny"], 32, 32, 9, 256, ((64, 64), (64, 128)), 2, 32, 12)
    return Size("mova-360p 640x352x193", PRESETS["mova-360p"], 640, 352, 193, 43120, ((5120, 5120), (5120, 13824)),
                40, 128, 512)


# ---- timing ------------------------------------------------------------------------------------
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, reps: int, warmup: int = 1) -> dict:
    """Median wall seconds of fn over reps after warm-up (CUDA synchronised around each call)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"s": statistics.median(times), "all_s": [round(t, 5) for t in times]}


@contextmanager
def peak_memory(device, into: dict):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield
    if device.type == "cuda":
        into["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)


def rel_err(out, ref) -> float:
    return max(((o.float() - r.float()).norm() / r.float().norm()).item() for o, r in zip(out, ref))


# ---- the model at true size, built in seconds --------------------------------------------------
def build_towers(cfg, device, dtype=torch.bfloat16, seed=0):
    """Construct on meta, allocate on the device in `dtype`, initialise in place (no CPU copy)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            towers = [VideoDiT(cfg.video_dit), AudioDiT(cfg.audio_dit), DualTowerBridge(cfg.bridge)]
    finally:
        torch.set_default_dtype(old)
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    for t in towers:
        t = t.to_empty(device=device)
        seed_in_place(t, gen)
        out.append(t.eval().requires_grad_(False))
    return out


def seed_in_place(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Random weights that keep activations O(1) (matrices N(0, 0.02), modulation N(0, 0.3), biases 0,
    norm weights 1) written into the allocated module, and its non-persistent buffers rebuilt."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("modulation"):
                p.normal_(0, 0.3, generator=gen)
            elif p.dim() >= 2:
                p.normal_(0, 0.02, generator=gen)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)     # norm weights
    device = next(module.parameters()).device
    for m in module.modules():
        if hasattr(m, "rebuild_buffers"):
            m.rebuild_buffers(device)


def make_inputs(size: Size, device, dtype=torch.bfloat16, seed=1) -> dict:
    cfg = size.config
    vshape, ashape = latent_shapes(cfg, size.width, size.height, size.frames, 24.0)
    g = torch.Generator(device="cpu").manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g).to(device)
    return dict(video_latents=rnd(*vshape), audio_latents=rnd(*ashape), timestep=torch.tensor([700.0], device=device),
                context=rnd(1, size.context, cfg.video_dit.text_dim).to(dtype),
                y=rnd(vshape[0], 20, *vshape[2:]), video_fps=24.0)


def forward(towers, x):
    with torch.no_grad():
        return joint_forward(*towers, **x)


# ---- cases -------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args):
        self.args = args
        self.device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
        self.size = sizes(self.device.type != "cuda")
        self.reps = args.reps
        self._towers = self._fp8 = self._ref = None
        self.result = {"size": self.size.name, "device": str(self.device), "reps": self.reps, "cases": {}}

    # shared state, built on first use
    @property
    def towers(self):
        if self._towers is None:
            t0 = time.perf_counter()
            self._towers = build_towers(self.size.config, self.device)
            self.x = make_inputs(self.size, self.device)
            self.result["build_s"] = round(time.perf_counter() - t0, 2)
            tokens = self.x["video_latents"].shape
            self.result["tokens"] = {"video": tokens[2] * tokens[3] * tokens[4] // 4,
                                     "audio": self.x["audio_latents"].shape[2]}
        return self._towers

    @property
    def reference(self):
        if self._ref is None:
            att.set_attention_settings(att.AttentionSettings("sdpa"))
            self._ref = [o.detach().clone() for o in forward(self.towers, self.x)]
        return self._ref

    def e2e(self, towers=None, ref=True) -> dict:
        towers = towers or self.towers
        out = {}
        with peak_memory(self.device, out):
            first = forward(towers, self.x)   # the warm-up call gives the error figure
            if ref:
                out["rel_err_vs_resident"] = rel_err(first, self.reference)
            del first
            out.update(timed(lambda: forward(towers, self.x), self.device, self.reps, warmup=0))
        return out

    def case_env(self):
        info = {"torch": torch.__version__, "python": sys.version.split()[0], "device": str(self.device),
                "packages": {p: ("available" if optional_import(p) is not None else "not available")
                             for p in PACKAGES if p != "diffsynth"}}
        info["packages"]["diffsynth"] = "available" if diffsynth_modules() is not None else "not available"
        if self.device.type == "cuda":
            info.update(gpu=torch.cuda.get_device_name(self.device),
                        capability=list(torch.cuda.get_device_capability(self.device)),
                        cudnn=torch.backends.cudnn.version())
        return info

    def case_micro_linear(self):
        s, dev = self.size, self.device
        x = torch.randn(s.rows, s.dims[0][0], device=dev, dtype=torch.bfloat16)
        out = {}
        for k, n in s.dims:
            lin = torch.nn.Linear(k, n, device=dev, dtype=torch.bfloat16)
            q, sc = fp8_quantize(lin.weight, per_channel=False)
            layer = FP8Linear(k, n, lin.bias, q, sc, fast_matmul=True)
            xk = x[:, :k].contiguous()
            ref = lin(xk)
            flops = 2 * s.rows * k * n
            shape = f"{k}->{n}"
            row = {"bf16_ms": timed(lambda: lin(xk), dev, 5)["s"] * 1e3}
            row["bf16_tflops"] = flops / row["bf16_ms"] / 1e9
            x8, xs = fp8_act.quantize_reference(xk, "tensor")
            row["scaled_mm_prequantized_ms"] = self._try(lambda: timed(lambda: torch._scaled_mm(
                x8, q.t(), scale_a=xs, scale_b=sc.float(), out_dtype=torch.bfloat16), dev, 5)["s"] * 1e3)
            row["scaled_mm_prequantized_fast_accum_ms"] = self._try(lambda: timed(lambda: torch._scaled_mm(
                x8, q.t(), scale_a=xs, scale_b=sc.float(), out_dtype=torch.bfloat16, use_fast_accum=True),
                dev, 5)["s"] * 1e3)
            for impl, g in MICRO_VARIANTS:
                key = f"fp8_{impl}_{g}"
                if impl == "triton" and (dev.type != "cuda" or optional_import("triton") is None):
                    row[key] = "not available: needs CUDA and triton"
                    continue
                def run(impl=impl, g=g):
                    return fp8_linear(xk, layer.weight, layer.weight_scale, layer.bias, g, impl)
                r = self._try(lambda: {"ms": timed(run, dev, 5)["s"] * 1e3, "rel_err_vs_bf16": rel_err([run()], [ref]),
                                       "quantize_only_ms": timed(lambda: fp8_act.quantize_activation(xk, g, impl),
                                                                 dev, 5)["s"] * 1e3})
                if isinstance(r, dict):
                    r["speedup_vs_bf16"] = row["bf16_ms"] / r["ms"]
                row[key] = r
            if dev.type == "cuda" and optional_import("triton") is not None:
                row["triton_vs_reference"] = self._try(lambda: triton_agreement(xk))
            out[shape] = row
        return out

    def case_micro_attention(self):
        s, dev = self.size, self.device
        if dev.type != "cuda":
            kinds = {"sdpa_default": None}
        else:
            from torch.nn.attention import SDPBackend
            kinds = {"sdpa_default": None, "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION,
                     "sdpa_flash": SDPBackend.FLASH_ATTENTION, "sdpa_efficient": SDPBackend.EFFICIENT_ATTENTION}
        q, k, v = (torch.randn(1, s.rows, s.heads, s.head_dim, device=dev, dtype=torch.bfloat16) for _ in range(3))
        flops = 4 * s.rows * s.rows * s.heads * s.head_dim
        out = {}
        for name, backend in kinds.items():
            def run(backend=backend):
                if backend is None:
                    return att._run("sdpa", q, k, v)
                from torch.nn.attention import sdpa_kernel
                with sdpa_kernel([backend]):
                    return att._run("sdpa", q, k, v)
            out[name] = self._try(lambda: _ms_tflops(timed(run, dev, 3)["s"], flops))
        site = att.site_of(q, s.head_dim)
        for name, problem in (("sage", att.sage_problem(site)), ("flash", att.flash_problem(site))):
            out[name] = (f"not available: {problem}" if problem else
                         self._try(lambda name=name: _ms_tflops(timed(lambda: att._run(name, q, k, v), dev, 3)["s"],
                                                                flops)))
        out["auto_rule"] = list(att.select_backend(site, "auto"))
        return out

    def case_resident(self):
        att.set_attention_settings(att.AttentionSettings("auto"))
        r = self.e2e()
        r["attention"] = att.attention_report()
        return r

    def _attention_case(self, backend):
        site = att.site_of(torch.empty(1, device=self.device, dtype=torch.bfloat16), self.size.head_dim)
        problem = {"sage": att.sage_problem, "flash": att.flash_problem}.get(backend, lambda s: None)(site)
        if problem:
            return f"not available: {problem}"
        att.set_attention_settings(att.AttentionSettings(backend))
        try:
            r = self.e2e()
            r["attention"] = att.attention_report()
            return r
        finally:
            att.set_attention_settings(att.AttentionSettings("auto"))

    def case_attention_timed(self):
        return self._attention_case("timed")

    def case_attention_sage(self):
        return self._attention_case("sage")

    def case_attention_flash(self):
        return self._attention_case("flash")

    def case_compile_elementwise(self):
        from mova_pack.models.net import fused
        att.set_attention_settings(att.AttentionSettings("auto"))
        towers = self.towers
        try:
            for t in towers[:2]:
                fused.set_compiled_elementwise(t, True)
            t0 = time.perf_counter()
            forward(towers, self.x)
            _sync(self.device)
            first = time.perf_counter() - t0
            r = self.e2e(towers)
            ops = towers[0].blocks[0].__dict__["_fused"]
            r["first_call_s_incl_compile"] = first
            r["fell_back_to_eager"] = [f.name for f in (ops.norm_modulate, ops.rope, ops.gate_add) if f.compiled is None]
            return r
        finally:
            for t in towers[:2]:
                fused.set_compiled_elementwise(t, False)

    def case_cache(self):
        from mova_pack.models.sampling.step_cache import StepCache, StepCacheSettings
        _ = self.towers   # the inputs at this size
        x = self.x
        v, a = x["video_latents"].float(), x["audio_latents"].float()
        cache = StepCache(StepCacheSettings(threshold=0.1)).bind(12)
        expert = object()
        for i in range(2):  # two computed steps give the rate
            cache._step, cache._skip_now, cache._pending = i, False, (expert, ["p"], v + i, a + i)
            cache.inner = types.SimpleNamespace(combine=lambda step, o: (v * 0.5, a * 0.5))
            cache.combine(i, [])
        est = timed(lambda: cache._estimate(v + 2, a + 2), self.device, 5)
        r = {"decision_ms_per_step": est["s"] * 1e3}
        eval_json = ROOT / "docs" / "toy-model-eval.json"
        rows = json.loads(eval_json.read_text()).get("rows", {}) if eval_json.exists() else {}
        toy = {k: v["forward_ratio"] for k, v in rows.items() if k.startswith("step_cache_") and "forward_ratio" in v}
        r["toy_forward_ratio"] = toy or "no step_cache rows in docs/toy-model-eval.json"
        resident = self.result["cases"].get("resident", {})
        if toy and isinstance(resident, dict) and "s" in resident:
            r["projected_s_per_forward_equivalent"] = {k: resident["s"] / f for k, f in toy.items()}
        return r

    def case_diffsynth(self):
        mods = diffsynth_modules()
        if mods is None:
            return "not available: diffsynth is not installed (pip install diffsynth==2.1.12)"
        refs = diffsynth_towers(mods, self.towers, self.device)
        x = self.x
        from diffsynth.pipelines.mova_audio_video import model_fn_mova_audio_video

        def run():
            with torch.no_grad():
                return model_fn_mova_audio_video(*refs, video_latents=x["video_latents"].bfloat16(),
                                                 audio_latents=x["audio_latents"].bfloat16(),
                                                 timestep=x["timestep"].bfloat16(), context=x["context"],
                                                 y=x["y"].bfloat16(), frame_rate=24)
        out = {}
        with peak_memory(self.device, out):
            out.update(timed(run, self.device, self.reps))
        out["rel_err_vs_resident"] = rel_err(run(), self.reference)
        del refs
        return out

    @property
    def fp8(self):
        if self._fp8 is None:
            _ = self.reference
            t0 = time.perf_counter()
            self._fp8 = [copy.deepcopy(t) for t in self.towers]
            for t in self._fp8:
                quantize_module(t, QuantSettings(mode="fp8_e4m3fn"))
            self.result["fp8_quantize_s"] = round(time.perf_counter() - t0, 2)
        return self._fp8

    def _fp8_case(self, fast: bool, impl="auto", scale="auto"):
        att.set_attention_settings(att.AttentionSettings("auto"))
        towers = self.fp8
        for t in towers:
            for m in t.modules():
                if isinstance(m, FP8Linear):
                    m.fast_matmul, m.act_quant, m.act_scale = fast, impl, scale
        return self.e2e(towers)

    def case_fp8_dequant(self):
        return self._fp8_case(False)

    def case_streamed(self):
        from mova_pack.runtime.offload import OffloadEngine, OffloadSettings
        if self._fp8 is not None:   # free the fp8 copy: the engine pins the bf16 towers in host memory
            self._fp8 = None
            torch.cuda.empty_cache() if self.device.type == "cuda" else None
        t0 = time.perf_counter()
        engine = OffloadEngine(self.towers[0], self.towers[1], self.towers[2],
                               OffloadSettings(resident_units=0, storage="cpu_pinned", prefetch=True), self.device)
        setup = time.perf_counter() - t0
        r = self.e2e()
        r["setup_s"] = setup
        r["planner_peak_bytes"] = engine.peak_bytes()
        return r

    # ---- plumbing -------------------------------------------------------------------------------
    def _try(self, fn):
        try:
            return fn()
        except Exception as exc:  # one variant failing must not hide the others
            return f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"

    def run(self, cases, out_path: Path, budget_s: float):
        t_start = time.perf_counter()
        for name in cases:
            elapsed = time.perf_counter() - t_start
            if elapsed > budget_s:
                self.result["cases"][name] = f"skipped: budget of {budget_s:.0f} s spent ({elapsed:.0f} s)"
            else:
                t0 = time.perf_counter()
                try:
                    r = self._case(name)()
                except Exception as exc:
                    r = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()
                if isinstance(r, dict):
                    r["case_wall_s"] = round(time.perf_counter() - t0, 2)
                self.result["cases"][name] = r
                print(f"{name}: {_short(r)}", flush=True)
            self.result["elapsed_s"] = round(time.perf_counter() - t_start, 2)
            out_path.write_text(json.dumps(self.result, indent=2, default=str))
        return self.result

    def _case(self, name):
        if name.startswith("fp8_fast_"):
            impl, g = name.removeprefix("fp8_fast_").rsplit("_", 1)
            return lambda: self._fp8_case(True, impl, g)
        fn = getattr(self, f"case_{name}", None)
        if fn is None:
            raise ValueError(f"unknown case {name!r}")
        return fn


def _ms_tflops(seconds: float, flops: float) -> dict:
    return {"ms": seconds * 1e3, "tflops": flops / seconds / 1e12}


def _short(r) -> str:
    if isinstance(r, dict):
        keep = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
                if k in ("s", "rel_err_vs_resident", "peak_gib", "error", "setup_s")}
        return json.dumps(keep) if keep else f"{len(r)} figures"
    return str(r)


def triton_agreement(x) -> dict:
    """The Triton kernel against the reference on the GPU: scales and fp8 values, bit for bit."""
    out = {}
    for g in fp8_act.GRANULARITIES:
        q, s = fp8_act.quantize_reference(x, g)
        q2, s2 = fp8_act.quantize_triton(x, g)
        out[g] = {"scales_equal": bool(torch.equal(s, s2)),
                  "values_differing": int((q.view(torch.uint8) != q2.view(torch.uint8)).sum())}
    return out


def diffsynth_modules():
    """diffsynth's MOVA modules, or None. diffsynth imports modelscope only for downloads: a stand-in
    module avoids carrying it (and its dependencies) where it is missing."""
    if optional_import("modelscope") is None and "modelscope" not in sys.modules:
        stub = types.ModuleType("modelscope")
        stub.snapshot_download = None
        sys.modules["modelscope"] = stub
    try:
        from diffsynth.models import mova_dual_tower_bridge as mb
        from diffsynth.models.mova_audio_dit import MovaAudioDit
        from diffsynth.models.wan_video_dit import WanModel
    except Exception:
        return None
    return mb, MovaAudioDit, WanModel


def diffsynth_towers(mods, towers, device):
    mb, MovaAudioDit, WanModel = mods
    fn = mb.apply_rotary_pos_emb   # diffsynth compiles its RoPE; eager like ours
    mb.apply_rotary_pos_emb = getattr(fn, "_torchdynamo_orig_callable", fn)

    def kw(c):
        return dict(dim=c.dim, in_dim=c.in_dim, ffn_dim=c.ffn_dim, out_dim=c.out_dim, text_dim=c.text_dim,
                    freq_dim=c.freq_dim, eps=c.eps, patch_size=tuple(c.patch_size), num_heads=c.num_heads,
                    num_layers=c.num_layers, has_image_input=False)
    v, a, b = towers
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            refs = (WanModel(**kw(v.cfg)), MovaAudioDit(**kw(a.cfg)),
                    mb.DualTowerConditionalBridge(**dataclasses.asdict(b.cfg)))
    finally:
        torch.set_default_dtype(old)
    for r, m in zip(refs, towers):
        r.load_state_dict(m.state_dict(), strict=True)
    return [r.eval().requires_grad_(False) for r in refs]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, required=True, help="where to write the results (after every case)")
    ap.add_argument("--tiny", action="store_true", help="tiny config on the CPU (also used without CUDA)")
    ap.add_argument("--cases", default=",".join(DEFAULT_CASES), help="comma-separated cases, in order")
    ap.add_argument("--reps", type=int, default=1, help="timed joint forwards per case after one warm-up")
    ap.add_argument("--budget-s", type=float, default=180.0, help="start no case after this many seconds")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() and not args.tiny:
        print("no CUDA device: running the tiny config on the CPU", flush=True)
        args.tiny = True
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bench = Bench(args)
    unknown = [c for c in cases if not c.startswith("fp8_fast_") and not hasattr(bench, f"case_{c}")]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; known: {DEFAULT_CASES}")
    torch.manual_seed(0)
    bench.run(cases, args.json, args.budget_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""End-to-end check at (near) the released size: per-stage peak VRAM and host RAM beside the planner, and
seconds per sampling step, for the settings of the default and the low-VRAM templates.

    python scripts/gpu_check.py --out /tmp/check --json check.json [--scale 0.25] [--frames 193]
    python scripts/gpu_check.py --tiny --out /tmp/check --json check.json          # CPU, tiny config

Writes a released-layout MOVA folder with seeded random weights (true widths; `--scale` keeps that
fraction of the transformer layers, so a 64 GB disk holds it), then runs the stages the node graph runs,
through the same calls nodes/backend.py makes: text encode (umT5 loaded from the folder) -> load the
generator (runtime/loading.py, the template's dtype / quantization / offload) -> first-frame latent ->
`--steps` sampling steps with text CFG -> decode video and audio. Each stage's peak VRAM (CUDA
allocator) and peak private host RAM (RssAnon) are printed beside the planner's figure for that stage.
Every setting is isolated (one failure is recorded, the rest still run); the JSON is rewritten after each.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import time
import traceback
from pathlib import Path

import _pack  # noqa: F401  (registers mova_pack)
import torch
from safetensors.torch import save_file

from mova_pack.kernels.memstat import PeakSampler, private_rss
from mova_pack.models.codecs import text_encoder as te
from mova_pack.models.codecs.audio_vae import AudioVAE
from mova_pack.models.codecs.video_vae import WanVideoVAE, load_video_vae
from mova_pack.models.codecs.video_vae_keys import to_diffusers
from mova_pack.models.config import PRESETS
from mova_pack.models.net.generator import COMPONENTS, build_component, save_generator
from mova_pack.models.sampling import conditioning as cond
from mova_pack.models.sampling import sampler as sampler_mod
from mova_pack.runtime.loading import load, settings_from_options
from mova_pack.runtime.planner import GB, plan_memory
from gpu_bench import seed_in_place  # noqa: E402  (scripts/ is on sys.path: one initialiser for both)

# The loader settings of the shipped templates (workflows/*.json).
SETTINGS = {"default": dict(quantization="none", offload="none", resident_layers=40),
            "low_vram": dict(quantization="fp8_e4m3fn", offload="disk", resident_layers=1)}


def scaled_config(scale: float, tiny: bool):
    if tiny:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from make_embedded import config
        return config()
    r = PRESETS["mova-360p"]
    video = max(1, round(r.video_dit.num_layers * scale))
    audio = max(1, min(video, round(r.audio_dit.num_layers * scale)))
    layers = tuple(sorted(r.bridge.interaction_layers))[:audio]
    text = dataclasses.replace(r.text_encoder, num_layers=max(1, round(r.text_encoder.num_layers * scale)))
    return dataclasses.replace(r, video_dit=dataclasses.replace(r.video_dit, num_layers=video),
                               audio_dit=dataclasses.replace(r.audio_dit, num_layers=audio),
                               bridge=dataclasses.replace(r.bridge, interaction_layers=layers), text_encoder=text)


def write_folder(cfg, folder: Path, device: str) -> float:
    """The released layout with random bf16 towers (built on `device` for speed), VAEs and umT5."""
    start = time.time()
    from mova_pack.models.net.generator import MovaGenerator
    parts = {}
    for i, name in enumerate(COMPONENTS):
        with torch.device("meta"):
            module = build_component(name, cfg)
        module = module.to_empty(device=device).to(torch.bfloat16)
        seed_in_place(module, torch.Generator(device=device).manual_seed(1000 + i))
        parts[name] = module.cpu()
        del module
        if device == "cuda":
            torch.cuda.empty_cache()
    save_generator(MovaGenerator(cfg, *(parts[n] for n in COMPONENTS)), folder)
    parts.clear()
    gc.collect()
    vvae = WanVideoVAE(cfg.video_vae)
    (folder / "video_vae").mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in to_diffusers(vvae.state_dict(), cfg.video_vae).items()},
              str(folder / "video_vae" / "diffusion_pytorch_model.safetensors"))
    (folder / "video_vae" / "config.json").write_text(json.dumps(cfg.video_vae.to_dict()))
    avae = AudioVAE(cfg.audio_vae)
    (folder / "audio_vae").mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in avae.state_dict().items()},
              str(folder / "audio_vae" / "diffusion_pytorch_model.safetensors"))
    (folder / "audio_vae" / "config.json").write_text(json.dumps(cfg.audio_vae.to_dict()))
    try:
        te.save_random_text_encoder(folder, cfg.text_encoder, seed=7)
    except Exception as exc:  # noqa: BLE001 - the text stage then records the error and uses random contexts
        print(f"text encoder not written: {type(exc).__name__}: {exc}", flush=True)
    return time.time() - start


class Stage:
    """Peak VRAM (allocator) and peak private host RAM of a block, and its seconds."""

    def __init__(self, device: str):
        self.device, self.figures = device, {}

    def __enter__(self):
        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        self.base_host, self.start = private_rss(), time.time()
        self.sampler = PeakSampler().__enter__()
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.sampler.__exit__(*exc)
        self.figures = {"seconds": round(time.time() - self.start, 3),
                        "peak_host_gb": round((self.sampler.peak - self.base_host) / GB, 3)}
        if self.device == "cuda":
            self.figures["peak_vram_gb"] = round(torch.cuda.max_memory_allocated() / GB, 3)


def run_setting(name: str, folder: Path, cfg, args, device: str) -> dict:
    opts = SETTINGS[name]
    dtype_name = "bf16" if device == "cuda" else "fp32"
    out = {"settings": {**opts, "dtype": dtype_name}}
    plan = plan_memory(cfg, args.width, args.height, args.frames, args.fps, dtype=dtype_name,
                       quant="bf16" if opts["quantization"] == "none" else opts["quantization"],
                       offload=settings_from_options(dtype_name, opts["quantization"], opts["offload"],
                                                     opts["resident_layers"], device).offload,
                       cfg_passes=2, device=device)
    out["planner_gb"] = {s: round(sum(v.values()) / GB, 3) for s, v in plan.stages.items()}
    dtype = torch.bfloat16 if device == "cuda" else torch.float32

    try:
        with Stage(device) as st:
            encoder = te.load_text_encoder(folder, dtype=dtype, device=device)
            pos, neg = encoder.encode(["a red ball bouncing, hollow knock"]), encoder.encode([""])
        out["text_encode"] = st.figures
        del encoder
    except Exception as exc:  # noqa: BLE001 - e.g. no sentencepiece on the machine: random contexts instead
        out["text_encode"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        g = torch.Generator().manual_seed(3)
        pos, neg = (torch.randn(1, 512, cfg.video_dit.text_dim, generator=g).to(device, dtype) * 0.1 for _ in range(2))
    with Stage(device) as st:
        settings = settings_from_options(dtype_name, opts["quantization"], opts["offload"], opts["resident_layers"],
                                         device, folder / "quant_cache")
        loaded = load(folder=folder, settings=settings)
    out["load"] = st.figures
    video_vae = load_video_vae(folder / "video_vae", dtype=dtype, device=device)
    with Stage(device) as st:
        y = cond.first_frame_y(video_vae, args.width, args.height, args.frames)
    out["first_frame_latent"] = st.figures
    steps = []
    with Stage(device) as st:
        vshape, ashape = cond.latent_shapes(cfg, args.width, args.height, args.frames, args.fps)
        vn, an = sampler_mod.make_noise(1, vshape, ashape)
        s = sampler_mod.SamplerSettings(steps=args.steps, seed=1, video_fps=args.fps)
        last = [time.time()]

        def on_step(info):
            if device == "cuda":
                torch.cuda.synchronize()
            steps.append(round(time.time() - last[0], 3))
            last[0] = time.time()
        video, audio = sampler_mod.sample(loaded.generator, vn, an, pos, neg, y, s, on_step=on_step)
    out["denoise"] = {**st.figures, "seconds_per_step": steps}
    if loaded.engine is not None:
        loaded.engine.release()
    del loaded
    with Stage(device) as st:
        frames = video_vae.decode(video.cpu())   # as the node does: frames assembled in host RAM
        avae = AudioVAE(cfg.audio_vae).to(device)
        wave = avae.decode(audio.to(device))
    out["decode"] = {**st.figures, "frames": list(frames.shape), "audio": list(wave.shape),
                     "finite": bool(torch.isfinite(frames).all() and torch.isfinite(wave).all())}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="where the random MOVA folder is written")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the transformer layers kept")
    ap.add_argument("--tiny", action="store_true", help="the tiny config (CPU-sized)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=352)
    ap.add_argument("--frames", type=int, default=193)
    ap.add_argument("--fps", type=float, default=24.0)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--settings", default="default,low_vram")
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = scaled_config(args.scale, args.tiny)
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
              "geometry": [args.width, args.height, args.frames, args.fps], "scale": args.scale, "tiny": args.tiny,
              "layers": [cfg.video_dit.num_layers, cfg.audio_dit.num_layers, len(cfg.bridge.interaction_layers)]}
    if not (args.out / "audio_dit" / "config.json").is_file():
        result["write_seconds"] = round(write_folder(cfg, args.out, device), 1)
    for name in args.settings.split(","):
        try:
            result[name] = run_setting(name, args.out, cfg, args, device)
        except Exception as exc:  # noqa: BLE001 - one setting's failure is recorded, the rest still run
            result[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        args.json.write_text(json.dumps(result, indent=2))
        print(json.dumps({name: result[name]}, indent=1)[:3000], flush=True)
    return 0 if all("error" not in result[n] for n in args.settings.split(",")) else 1


if __name__ == "__main__":
    sys.exit(main())

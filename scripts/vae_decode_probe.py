"""Wan 2.1 video VAE decode: peak memory and time, tiled and untiled, beside the planner's figure.

    python scripts/vae_decode_probe.py            # CUDA: released config, bf16, 640x352 and 1280x704 x 193
    python scripts/vae_decode_probe.py --tiny     # CPU (or no CUDA): a tiny config, seconds

One JSON line per case, printed as soon as the case ends; a failing case prints its error and the
others still run. Random weights (fan-in scaled normal, seeded), random latent. On CUDA the peak is
torch.cuda.max_memory_allocated beyond the weights; "planner" is models/codecs/video_vae_tiles.
decode_peak_bytes for the same case (the planner's decode stage adds weights and CUDA context). Tiled
cases report their max abs difference on [0, 1] frames against the untiled decode of the same size.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback

import _pack  # noqa: F401  (registers the repo as `mova_pack`)
import torch

from mova_pack.kernels.memstat import PeakSampler
from mova_pack.models.codecs.video_vae import WanVideoVAE
from mova_pack.models.codecs.video_vae_tiles import decode_peak_bytes, tile_count
from mova_pack.models.config import VideoVAEConfig

GIB = 2 ** 30
# (width, height, frames, tiling, frames on the GPU): the node decodes a CPU latent, so frames land in
# host RAM; "gpu" repeats the layout of the earlier H200 measurement (latent and frames on the GPU)
# most valuable first (a time limit keeps what ran): the untiled reference of a size before its tiles
CUDA_CASES = [(640, 352, 193, "off", False), (1280, 704, 193, "off", False), (1280, 704, 193, 256, False),
              (640, 352, 193, 256, False), (1280, 704, 193, 512, False), (640, 352, 193, "off", True),
              (640, 352, 193, 512, False), (1280, 704, 193, 384, False)]
TINY_CASES = [(128, 64, 5, "off", False), (128, 64, 5, 64, False)]


def random_vae(cfg: VideoVAEConfig, device: str, dtype: torch.dtype, seed: int = 0) -> WanVideoVAE:
    """Built on meta, materialised on `device`, filled in place (no CPU copy of the weights)."""
    with torch.device("meta"):
        vae = WanVideoVAE(cfg)
    vae = vae.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(vae.named_parameters()):
            if name.endswith("gamma"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, p[0].numel() ** -0.5, generator=gen)
    vae = vae.to(dtype)
    vae.reset_latent_stats()     # fp32 statistics, as the loader leaves them
    return vae.eval().requires_grad_(False)


def run_case(vae, cfg, width, height, frames, tiling, on_gpu, device, act, reference) -> dict:
    tile = 0 if tiling == "off" else int(tiling)
    lat = (1, cfg.z_dim, (frames - 1) // 4 + 1, height // 8, width // 8)
    latent = torch.randn(lat, generator=torch.Generator().manual_seed(1))
    latent = latent.to(device) if on_gpu else latent
    row = {"width": width, "height": height, "frames": frames, "tiling": tiling,
           "tiles": tile_count(width, height, tile), "frames_on": "gpu" if on_gpu else "host",
           "planner_gib": round(decode_peak_bytes(cfg, width, height, frames, act, tile, on_gpu) / GIB, 3)}
    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    with PeakSampler() as host:
        host_base = host.peak
        out = vae.decode(latent, tiling=tiling)
        if cuda:
            torch.cuda.synchronize()
    row["seconds"] = round(time.perf_counter() - start, 2)
    if cuda:
        row["peak_gib"] = round((torch.cuda.max_memory_allocated() - base) / GIB, 3)
        row["reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 3)
    else:
        row["peak_private_rss_gib"] = round((host.peak - host_base) / GIB, 3)
    out = out.cpu()
    key = (width, height, frames)
    if tile == 0 and key not in reference:
        reference[key] = out
    elif key in reference:   # on [0, 1] frames: half the difference on [-1, 1]
        row["max_abs_vs_untiled"] = float((out - reference[key]).abs_().max()) / 2
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny config on the CPU (what runs without CUDA)")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.tiny
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    cfg = VideoVAEConfig() if cuda else VideoVAEConfig(base_dim=8, num_res_blocks=1)
    cases = CUDA_CASES if cuda else TINY_CASES
    act = torch.empty((), dtype=dtype).element_size()
    vae = random_vae(cfg, device, dtype)
    weights = sum(p.numel() * p.element_size() for p in vae.parameters())
    print(json.dumps({"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
                      "config": "released" if cuda else "tiny", "dtype": str(dtype).split(".")[-1],
                      "weights_gib": round(weights / GIB, 3)}), flush=True)
    reference: dict = {}
    failed = 0
    for width, height, frames, tiling, on_gpu in cases:
        try:
            row = run_case(vae, cfg, width, height, frames, tiling, on_gpu and cuda, device, act, reference)
        except Exception as exc:   # isolate: report and go on with the next case
            failed += 1
            row = {"width": width, "height": height, "frames": frames, "tiling": tiling,
                   "error": f"{type(exc).__name__}: {exc}"[:500]}
            traceback.print_exc(file=sys.stderr)
        print(json.dumps(row), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

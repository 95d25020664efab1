"""Private host RAM while and after loading a MOVA folder through the one load path (one combination per
process, so nothing earlier in the process is counted). Prints one JSON line.

    MALLOC_MMAP_THRESHOLD_=65536 python scripts/load_probe.py FOLDER --quant fp8_e4m3fn --offload disk \
        --cache-dir /tmp/q [--dtype bf16] [--resident 0] [--threads 2]

peak_private / steady_private: RssAnon growth during / after the load (mmap'd file pages excluded: they
are the OS's cache, reclaimable), measured after a first, weightless build of the same model (its module
objects, `structure_private`, ~10 MB whatever the size, stay alive so they are not counted twice); planner: runtime/planner.plan_load for the same combination on the CPU.
Used by scripts/bench.py (section "load") and tests/test_load_memory.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys

import _pack  # noqa: F401  (registers mova_pack)
import torch

from mova_pack.kernels.device import optional_import
from mova_pack.kernels.memstat import PeakSampler, private_rss
from mova_pack.runtime.loading import load, settings_from_options
from mova_pack.runtime.planner import plan_load


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--quant", default="none", choices=["none", "fp8_e4m3fn", "nf4", "int8"])
    ap.add_argument("--offload", default="none", choices=["none", "cpu", "disk"])
    ap.add_argument("--resident", type=int, default=0, help="resident layers with offload")
    ap.add_argument("--cache-dir", required=True, help="where a quantized copy for disk streaming goes")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = settings_from_options(args.dtype, args.quant, args.offload, args.resident, "cpu", args.cache_dir)
    optional_import("bitsandbytes")   # its libraries (~130 MB) load once per process: runtime, not weights
    gc.collect()
    base = private_rss()
    skeleton = load(folder=args.folder, settings=dataclasses.replace(settings, device="meta"))
    gc.collect()
    structure = private_rss() - base   # module objects and headers, no weights (~10 MB at any size)
    base = private_rss()
    with PeakSampler(interval=0.001) as peak:
        loaded = load(folder=args.folder, settings=settings)
    gc.collect()
    steady = private_rss() - base
    gen = loaded.generator
    experts = sum(m is not None for m in (gen.video_high, gen.video_low))
    plan = plan_load(gen.config, args.dtype, loaded.quant_mode, settings.offload, "cpu", experts)
    print(json.dumps({"peak_private": peak.peak - base, "steady_private": steady, "structure_private": structure,
                      "planner": plan}))
    del skeleton
    return 0


if __name__ == "__main__":
    sys.exit(main())

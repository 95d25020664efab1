"""Write a pre-quantized MOVA component file (fp8_e4m3fn, nf4 or int8) from its bf16 safetensors.

    python scripts/quantize.py MOVA-360p/video_dit video_dit_fp8.safetensors --mode fp8_e4m3fn
    python scripts/quantize.py MOVA-360p/dual_tower_bridge/diffusion_pytorch_model.safetensors \
        bridge_nf4.safetensors --mode nf4 --component dual_tower_bridge

Only the large Linear weights of the blocks / bridge conditioners are quantized (norms, biases,
modulation, embeddings and heads keep their dtype). The file records what it is in its safetensors
metadata ({"mova_quant", "mova_quant_version", "mova_component"}), so loaders can refuse mismatches.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _pack  # noqa: F401  (registers mova_pack)

from mova_pack.kernels.quant import QUANTIZED_MODES, QuantSettings
from mova_pack.kernels.quant_io import quantize_file
from mova_pack.common.checkpoint import resolve_files
from mova_pack.common.errors import MovaError

COMPONENTS = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge")


def guess_component(source: Path) -> str | None:
    for part in (source.name, source.parent.name):
        if part in COMPONENTS:
            return part
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="component folder, .safetensors file or shard index.json")
    ap.add_argument("dest", type=Path, help="output .safetensors file")
    ap.add_argument("--mode", required=True, choices=QUANTIZED_MODES)
    ap.add_argument("--component", choices=COMPONENTS, help="default: guessed from the source path")
    ap.add_argument("--fp8-scale", default="tensor", choices=("tensor", "channel"),
                    help="fp8 scale granularity: one per tensor or one per output channel")
    args = ap.parse_args(argv)
    component = args.component or guess_component(args.source)
    if component is None:
        ap.error(f"cannot tell which component {args.source} is; pass --component")
    try:
        files = resolve_files(args.source, component)
        meta = quantize_file(files, args.dest, QuantSettings(mode=args.mode, fp8_scale=args.fp8_scale), component)
    except (MovaError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    size = args.dest.stat().st_size
    src = sum(Path(f).stat().st_size for f in files)
    print(f"wrote {args.dest} ({size / 1e9:.2f} GB, {size / src:.2f}x of {src / 1e9:.2f} GB): {meta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

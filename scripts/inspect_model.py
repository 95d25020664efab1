"""Build every MOVA component of a preset (or a downloaded folder's configs) on the `meta` device and
report parameter and key counts, without allocating any weights.

    python scripts/inspect_model.py --preset mova-360p --json
    python scripts/inspect_model.py --folder /models/MOVA-360p --keys dual_tower_bridge
"""
from __future__ import annotations

import argparse
import json
import sys

import _pack  # noqa: F401  (registers the repo as `mova_pack`)
import torch

from mova_pack.models.config import PRESETS, load_mova_config
from mova_pack.models.net.generator import build_component

TOWERS = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge")


def build_on_meta(config, name: str):
    with torch.device("meta"):
        if name == "audio_vae":
            from mova_pack.models.codecs.audio_vae import AudioVAE
            return AudioVAE(config.audio_vae)
        return build_component(name, config)


def inspect(config, names=TOWERS + ("audio_vae",)) -> dict:
    out = {}
    for name in names:
        module = build_on_meta(config, name)
        out[name] = {"params": sum(p.numel() for p in module.parameters()), "keys": len(module.state_dict())}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--preset", default="mova-360p", choices=sorted(PRESETS))
    src.add_argument("--folder", help="a MOVA folder: read each component's config.json instead of a preset")
    ap.add_argument("--json", action="store_true", help="print JSON {components: {name: {params, keys}}}")
    ap.add_argument("--keys", metavar="COMPONENT", help="also list every key and shape of one component")
    args = ap.parse_args(argv)
    config = load_mova_config(args.folder) if args.folder else PRESETS[args.preset]
    report = {"components": inspect(config)}
    if args.keys:
        sd = build_on_meta(config, args.keys).state_dict()
        report["keys"] = {k: list(v.shape) for k, v in sd.items()}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for name, row in report["components"].items():
        print(f"{name:<18} {row['params']:>16,} params {row['keys']:>6,} keys")
    for k, shape in report.get("keys", {}).items():
        print(f"  {k} {shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write the embedded stand-in model: a randomly initialised MOVA folder of the `tiny` preset.

The trained toy (embedded/mova-toy/) is committed and is the loaders' default; this seeded random
stand-in sits beside it for the test fixtures (old saved workflows name it): same architecture and file
layout as the released MOVA folders, fixed seed, so every machine writes the same weights. It is
random: clips are valid mp4s of noise-like video and sound.
Idempotent: does nothing when the folder is complete (pass --force to rewrite).

    python scripts/make_embedded.py [--out embedded/mova-toy-random] [--force]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import _pack  # noqa: F401  (registers the repo as the package `mova_pack`)
import torch
from safetensors.torch import save_file

from mova_pack.models.codecs import text_encoder as te
from mova_pack.models.codecs.audio_vae import AudioVAE
from mova_pack.models.config import PRESETS, AudioVAEConfig, VideoVAEConfig
from mova_pack.models.net.generator import build_generator, save_generator
from mova_pack.models.codecs.video_vae import WanVideoVAE
from mova_pack.models.codecs.video_vae_keys import to_diffusers

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "embedded" / "mova-toy-random"
SEED = 20260122
DONE = "EMBEDDED_OK"
# Small codecs with the real interfaces: 16 latent channels, stride 4x8x8; 128-channel audio at hop 960.
VIDEO_VAE = VideoVAEConfig(base_dim=16)
AUDIO_VAE = AudioVAEConfig(encoder_dim=8, decoder_dim=64)


def config():
    return dataclasses.replace(PRESETS["tiny"], video_vae=VIDEO_VAE, audio_vae=AUDIO_VAE)


def _save(folder: Path, state: dict, cfg: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file({k: v.detach().contiguous() for k, v in state.items()},
              str(folder / "diffusion_pytorch_model.safetensors"))


def write(out: Path) -> None:
    cfg = config()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    torch.manual_seed(SEED)
    save_generator(build_generator(cfg, dtype=torch.float32, seed=SEED), tmp)
    video_vae = WanVideoVAE(VIDEO_VAE)
    _save(tmp / "video_vae", to_diffusers(video_vae.state_dict(), VIDEO_VAE), VIDEO_VAE.to_dict())
    audio_vae = AudioVAE(AUDIO_VAE)
    _save(tmp / "audio_vae", audio_vae.state_dict(), AUDIO_VAE.to_dict())
    te.save_random_text_encoder(tmp, cfg.text_encoder, seed=SEED)
    (tmp / DONE).write_text(f"random stand-in, preset tiny, seed {SEED}\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    if (args.out / DONE).is_file() and not args.force:
        print(f"embedded model present: {args.out}")
        return 0
    torch.set_num_threads(2)
    write(args.out)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote embedded stand-in model {args.out} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

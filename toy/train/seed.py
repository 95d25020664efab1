"""Seed a fresh work dir from an exported toy MOVA folder, so the recipe fine-tunes those weights instead of
starting from nothing (`scripts/train_toy.py --init-from FOLDER`). This is how each toy release after
the first was made from the one before (docs/toy-model.md).

Written: the text folders, the audio VAE, the frozen video encoder, and checkpoints of the video VAE and
of stage `dit` (the folder's high-noise expert, audio tower and Bridge) at the given steps, with fresh
optimiser state and the learning-rate schedule advanced to those steps. A video VAE step equal to
`--video-vae-steps` writes the folder's video VAE as the finished stage instead of a checkpoint (stage
video_vae then trains nothing).
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ...models.net.generator import build_generator
from ...runtime.loading import load_generator
from ...models.codecs.video_vae import WanVideoVAE
from ...models.codecs.video_vae_keys import to_native
from . import configs
from .common import channels_last, save_state

SEEDED = ("video_vae.ckpt.pt", "video_vae.safetensors", "dit.ckpt.pt", "generator.safetensors", "video_encoder.safetensors")


def _advanced(sched, steps: int):
    with warnings.catch_warnings():      # no optimiser step happens here: only the schedule's position
        warnings.simplefilter("ignore")
        for _ in range(steps):
            sched.step()
    return sched.state_dict()


def seed_work_dir(o, folder: Path, video_vae_step: int, dit_step: int) -> None:
    from . import pipeline
    from . import dit, vae as vae_stage

    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"--init-from expects an exported toy MOVA folder (with model_index.json); "
                                f"{folder} has none. Export one with `--stage export --out FOLDER`.")
    taken = [name for name in SEEDED if (o.work / name).exists()]
    if taken:
        raise FileExistsError(f"{o.work} already holds {taken}: seeding would overwrite trained state. "
                              "Use an empty --work directory.")
    if not 0 < video_vae_step <= o.video_vae_steps or not 0 < dit_step < o.dit_steps:
        raise ValueError(f"seed steps ({video_vae_step}, {dit_step}) must lie inside the targets "
                         f"(--video-vae-steps {o.video_vae_steps}, --dit-steps {o.dit_steps}; the video VAE "
                         "step may equal its target: the folder's video VAE is then taken as finished).")
    o.work.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer", "text_encoder"):
        shutil.copytree(folder / name, pipeline.text_dir(o) / name, dirs_exist_ok=True)
    save_file(load_file(str(folder / "audio_vae" / "diffusion_pytorch_model.safetensors")),
              str(o.work / "audio_vae.safetensors"))
    pipeline.audio_latent_stats_file(o)
    vcfg = pipeline.video_vae_config(o)          # statistics of the current designed latent
    native, _ = to_native(load_file(str(folder / "video_vae" / "diffusion_pytorch_model.safetensors")), vcfg)
    save_file({k: v.contiguous() for k, v in native.items() if k.startswith(vae_stage.ENCODER_KEYS)},
              str(o.work / "video_encoder.safetensors"))
    vae = channels_last(WanVideoVAE(vcfg))
    vae.load_state_dict(native)
    if video_vae_step == o.video_vae_steps:      # finished: stage video_vae skips, its decoder kept byte for byte
        save_state(vae, o.work / "video_vae.safetensors")
    else:
        opt = vae_stage._optimiser(vae.parameters(), vae_stage.VIDEO_VAE_LR)
        torch.save({"model": vae.state_dict(), "opt": opt.state_dict(),
                    "sched": _advanced(vae_stage._schedule(opt, o.video_vae_steps), video_vae_step),
                    "step": video_vae_step}, o.work / "video_vae.ckpt.pt")

    released = load_generator(folder, dtype=torch.float32)
    gen = build_generator(configs.mova_config(vcfg), dtype=torch.float32, seed=o.seed + 3, low_noise_expert=False)
    gen.load_state_dict({k: v for k, v in released.state_dict().items() if not k.startswith("video_low.")})
    opt = dit._optimiser(gen.parameters(), dit.LR)
    torch.save({"model": gen.state_dict(), "ema": gen.state_dict(), "opt": opt.state_dict(),
                "sched": _advanced(dit._schedule(opt, o.dit_steps, anneal=o.dit_anneal_steps), dit_step), "step": dit_step}, o.work / "dit.ckpt.pt")

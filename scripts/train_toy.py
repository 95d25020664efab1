"""Train the embedded toy MOVA from nothing on 2 CPU cores and write it to embedded/mova-toy/.

    python scripts/train_toy.py                 # every stage in order (resumes where it stopped)
    python scripts/train_toy.py --stage video_vae   # one stage (video_vae and audio_vae may run in parallel)
    python scripts/train_toy.py --work .toy-train/ft --init-from embedded/mova-toy   # fine-tune a model

Stages: text (tokenizer + frozen random umT5), video_vae, audio_vae, encode (latents of N clips),
dit (flow matching of video tower + audio tower + Bridge), sync (audio tower + video->audio Bridge
tuned to follow the video's timing), export (MOVA folder layout).
Everything is seeded; checkpoints in .toy-train/ every 2 minutes make every stage resumable.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _pack  # noqa: F401  (registers the repo as the package `mova_pack`)
import torch

from mova_pack.toy.train import configs, pipeline

STAGES = ("text", "video_vae", "audio_vae", "encode", "dit", "sync", "export")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=STAGES + ("all",), default="all")
    parser.add_argument("--work", type=Path, default=configs.WORK_DIR, help="checkpoints and caches")
    parser.add_argument("--out", type=Path, default=configs.MODEL_DIR, help="the MOVA folder to write")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=configs.SEED)
    parser.add_argument("--video-vae-steps", type=int, default=pipeline.DEFAULTS["video_vae_steps"])
    parser.add_argument("--audio-vae-steps", type=int, default=pipeline.DEFAULTS["audio_vae_steps"])
    parser.add_argument("--clips", type=int, default=pipeline.DEFAULTS["clips"], help="clips encoded for stage dit")
    parser.add_argument("--dit-steps", type=int, default=pipeline.DEFAULTS["dit_steps"])
    parser.add_argument("--dit-anneal-steps", type=int, default=pipeline.DEFAULTS["dit_anneal_steps"],
                        help="the last N steps of stage dit, learning rate falling linearly from 0.1x to 0.01x")
    parser.add_argument("--expert-steps", type=int, default=pipeline.DEFAULTS["expert_steps"],
                        help="per-expert fine-tuning on its own t range after stage dit (0: one expert in both slots)")
    parser.add_argument("--sync-steps", type=int, default=pipeline.DEFAULTS["sync_steps"],
                        help="stage sync: audio tower + video->audio Bridge steps (0: skip the stage)")
    parser.add_argument("--batch", type=int, default=pipeline.DEFAULTS["batch"])
    parser.add_argument("--init-from", type=Path, help="seed an empty --work from this exported toy folder "
                        "(text, audio VAE, video encoder; video VAE and dit checkpoints at the --init-steps)")
    parser.add_argument("--init-steps", default="2300,3000", help="VIDEO_VAE_STEP,DIT_STEP the --init-from weights "
                        "stand for (default: the first release's 2300,3000)")
    args = parser.parse_args(argv)
    if not 0 <= args.dit_anneal_steps < args.dit_steps:
        parser.error(f"--dit-anneal-steps must lie in [0, --dit-steps); got {args.dit_anneal_steps} "
                     f"with --dit-steps {args.dit_steps}")
    torch.set_num_threads(args.threads)
    opts = pipeline.Options(work=args.work, out=args.out, seed=args.seed, video_vae_steps=args.video_vae_steps,
                            audio_vae_steps=args.audio_vae_steps, clips=args.clips, dit_steps=args.dit_steps,
                            dit_anneal_steps=args.dit_anneal_steps, expert_steps=args.expert_steps,
                            sync_steps=args.sync_steps,
                            batch=args.batch)
    if args.init_from is not None:
        from mova_pack.toy.train.seed import seed_work_dir

        try:
            vae_step, dit_step = (int(x) for x in args.init_steps.split(","))
            seed_work_dir(opts, args.init_from, vae_step, dit_step)
        except (OSError, ValueError) as e:
            parser.error(str(e))
    for stage in (STAGES if args.stage == "all" else (args.stage,)):
        t0 = time.monotonic()
        getattr(pipeline, f"stage_{stage}")(opts)
        print(f"[train_toy] stage {stage} done in {time.monotonic() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Rank processes for tests/test_parallel.py: each rank joins a gloo group, builds the same seeded tiny
generator, samples under a layout (sequence / guidance passes / both) and rank 0 saves its latents."""
from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist

from parity_utils import seed_params  # (registers mova_pack, also in spawned rank processes)
from mova_pack.models.config import PRESETS
from mova_pack.models.net.generator import build_generator
from mova_pack.models.sampling.guidance import DualGuidance, GuidanceSettings
from mova_pack.models.sampling.sampler import SamplerSettings, make_noise, sample

# Video latent 3 x 6 x 10 -> 3*3*5 = 45 tokens: not a multiple of 2 or 4 ranks, so padding is exercised.
VIDEO_SHAPE, AUDIO_LEN = (1, 16, 3, 6, 10), 19


def tiny_config(heads: int):
    """The tiny preset with `heads` video heads (head_dim 32; 4 heads lets 4 ranks split them)."""
    cfg = PRESETS["tiny"]
    video = dataclasses.replace(cfg.video_dit, dim=32 * heads, num_heads=heads, ffn_dim=64 * heads)
    bridge = dataclasses.replace(cfg.bridge, visual_hidden_dim=32 * heads)
    return dataclasses.replace(cfg, video_dit=video, bridge=bridge)


def seeded_generator(heads: int):
    gen = build_generator(tiny_config(heads))
    for i, module in enumerate((gen.video_high, gen.video_low, gen.audio, gen.bridge)):
        seed_params(module, 100 + i)
    return gen


def run_sampling(gen, steps: int = 4):
    """Full run: nested bridge guidance (3 passes per step) with the expert switch inside the range."""
    g = torch.Generator().manual_seed(5)
    text_dim = gen.config.video_dit.text_dim
    pos, neg = (torch.randn(1, 7, text_dim, generator=g) for _ in range(2))
    y = torch.randn(1, 20, *VIDEO_SHAPE[2:], generator=g)
    video, audio = make_noise(3, VIDEO_SHAPE, (1, gen.config.audio_dit.in_dim, AUDIO_LEN))
    settings = SamplerSettings(steps=steps, seed=3, video_fps=24.0)
    guidance = DualGuidance(GuidanceSettings(video_text_scale=4.0, audio_text_scale=3.0, a2v_scale=2.0,
                                             v2a_scale=1.5))
    return sample(gen, video, audio, pos, neg, y, settings, guidance=guidance)


def rank_main(rank: int, world: int, port: int, pass_groups: int, sequence_ranks: int, heads: int,
              out: str) -> None:
    from mova_pack.runtime.parallel_groups import make_rank_groups, sampling_on_ranks
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        groups = make_rank_groups(pass_groups, sequence_ranks, rank)
        gen = seeded_generator(heads)
        with sampling_on_ranks(groups):
            video, audio = run_sampling(gen)
        if rank == 0:
            torch.save({"video": video, "audio": audio}, out)
    finally:
        dist.destroy_process_group()

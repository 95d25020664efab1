"""Stage 4: the audio learns to follow the video the towers *generate*, not only rendered video.

After stage 3 the audio's onsets land ~9 ms from the impacts of a rendered video noised like the
sampler's, but ~35 ms from those of the sampler's own video, even when that video is given clean: the
generated latents bounce less regularly than rendered ones (small reversals, a jump or so per clip), and
the audio reads them differently from how the decoder draws them. This stage closes that gap on-policy:
- `generate_pairs` samples clips from training captions with fresh seeds (disjoint from eval_sync's) the
  way the nodes do, records the video latent each step's positive pass saw, decodes the final video,
  finds its bounces with the same detector eval_sync uses, and renders the prompt's sound at exactly
  those times (designed audio latent, as in the dataset);
- `train_own` (sync.train_sync with these pairs) tunes the same parameters as stage 3 on a mix of
  rendered pairs and generated ones, where the video input is the recorded trajectory latent at that
  step's video and audio t, so the Bridge learns what the decoder will show for the latents it really
  meets when sampling.
"""
from __future__ import annotations

import numpy as np
import torch

from ...models import sampler as S
from ...models.conditioning import latent_shapes
from .. import detectors, scenes, sounds
from . import latents as L
from .configs import AUDIO_SHIFT, NEGATIVE_PROMPT

SEED_OFFSET = 300_000      # scene and noise seeds of generated pairs: o.seed + SEED_OFFSET + i
SAMPLE_STEPS = 12          # what eval_sync and the shipped workflows use
TEXT_CFG = 5.0
OWN_FRACTION = 0.5         # share of stage 4's steps on generated pairs (the rest keep rendered ones)
OWN_LR = 2e-4
STRENGTH = 0.75            # impact loudness of generated pairs (the video shows no speed to copy reliably)


class Recorder:
    """Text CFG that keeps, per step, the video latent the positive pass saw and both towers' t."""

    def __init__(self, video_scale: float = TEXT_CFG, audio_scale: float = TEXT_CFG):
        self.cfg = S.TextCFG(video_scale, audio_scale)
        self.steps: list[tuple[torch.Tensor, float, float, bool]] = []

    def plan(self, step, timestep):
        return self.cfg.plan(step, timestep)

    def combine(self, step, outputs):
        return self.cfg.combine(step, outputs)

    def run_forwards(self, generator, expert, passes, video, audio, timestep, contexts, y, video_fps,
                     audio_timestep=None):
        audio_t = timestep if audio_timestep is None else audio_timestep
        self.steps.append((video.clone(), float(timestep), float(audio_t), expert is generator.video_high))
        return S.run_forwards(generator, expert, passes, video, audio, timestep, contexts, y, video_fps,
                              audio_timestep=audio_timestep)


def impacts_audio_latent(impacts_s, sound: str, seed: int, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """Normalised designed audio latent [16, T] of `sound` hitting at `impacts_s` (as the dataset's)."""
    strengths = [STRENGTH] * len(impacts_s)
    audio = sounds.mix_impacts(sound, impacts_s, strengths, scenes.N_SAMPLES, np.random.default_rng(seed),
                               scenes.SAMPLE_RATE)
    latent = L.audio_latent(audio, impacts_s, strengths, sound, scenes.SAMPLE_RATE)
    return torch.from_numpy((latent - mean[:, None]) / std[:, None]).float()


@torch.no_grad()
def generate_pairs(o, gen, video_vae, y: torch.Tensor, data: dict, audio_stats, count: int, batch: int = 8,
                   log=None) -> dict:
    """`count` generated clips: trajectories `video` [n, steps, 16, F, H, W] (what the video tower saw),
    per-step `video_t`, `audio_t`, `high` (expert), `audio` [n, 16, T] (the prompt's sound at the
    decoded video's bounces), `caption_ids` into data["prompts"], `impacts` (s) per clip."""
    index = {p: i for i, p in enumerate(data["prompts"])}
    negative = data["contexts"][index[NEGATIVE_PROMPT]][None]
    vshape, ashape = latent_shapes(gen.config, scenes.WIDTH, scenes.HEIGHT, scenes.FRAMES, scenes.FPS)
    settings = S.SamplerSettings(steps=SAMPLE_STEPS, video_cfg=TEXT_CFG, audio_cfg=TEXT_CFG, video_fps=scenes.FPS,
                                 audio_shift=AUDIO_SHIFT)
    mean, std = (np.asarray(s, dtype=np.float32) for s in audio_stats)
    trajs, audios, ids, impacts = [], [], [], []
    record = None
    for first in range(0, count, batch):
        seeds = [o.seed + SEED_OFFSET + i for i in range(first, min(count, first + batch))]
        chosen = [scenes.scene_for_seed(s) for s in seeds]
        noise = [S.make_noise(s, vshape, ashape) for s in seeds]
        caption_ids = torch.tensor([index[sc.caption] for sc in chosen])
        record = Recorder()
        video, _ = S.sample(gen, torch.cat([n[0] for n in noise]), torch.cat([n[1] for n in noise]),
                            data["contexts"][caption_ids], negative.expand(len(seeds), -1, -1),
                            y.expand(len(seeds), -1, -1, -1, -1), settings, guidance=record)
        frames = ((video_vae.decode(video).movedim(1, -1) + 1) / 2).clamp(0, 1).numpy()   # [B, F, H, W, 3]
        for j, (seed, scene) in enumerate(zip(seeds, chosen)):
            times = detectors.detect_video_impacts(frames[j], scenes.FPS)
            audios.append(impacts_audio_latent(times, scene.sound, seed, mean, std))
            impacts.append(times)
        trajs.append(torch.stack([v for v, *_ in record.steps], dim=1))
        ids.append(caption_ids)
        if log is not None:
            log(stage="own_pairs", clips=first + len(seeds))
    return {"video": torch.cat(trajs), "audio": torch.stack(audios), "caption_ids": torch.cat(ids),
            "video_t": torch.tensor([t for _, t, _, _ in record.steps]),
            "audio_t": torch.tensor([t for _, _, t, _ in record.steps]),
            "high": torch.tensor([h for *_, h in record.steps]), "impacts": impacts}


def own_batch(rng: np.random.Generator, g: torch.Generator, pairs: dict, idx: torch.Tensor, use_high: bool,
              num_train_timesteps: int):
    """(video x_t, audio x_t, video t, audio t, flow target) for clips `idx` at steps the given expert ran."""
    b = len(idx)
    steps = np.nonzero(pairs["high"].numpy() == use_high)[0]
    k = torch.from_numpy(steps[rng.integers(0, len(steps), size=b)])
    x0a = pairs["audio"][idx]
    ea = torch.randn(x0a.shape, generator=g)
    sa = (pairs["audio_t"][k] / num_train_timesteps).view(b, 1, 1)
    return pairs["video"][idx, k], (1 - sa) * x0a + sa * ea, pairs["video_t"][k], pairs["audio_t"][k], ea - x0a

"""Stages B and C: encode a cached dataset of toy clips, then train video tower + audio tower + Bridge
jointly with flow matching as MOVA does (x_t = (1-s) x0 + s eps, target eps - x0, t drawn uniformly
from the official 1000-entry shifted training table, the same t for both towers).

One video expert is trained over all t and copied into both expert slots (video_dit and video_dit_2):
on this budget a split would halve each expert's data. Text dropout (10 %: the default negative
prompt or the empty prompt) makes text CFG meaningful; Bridge dropout (10 % of steps run with
a2v = v2a = 0) teaches the towers the unbridged marginals that bridge guidance contrasts against.
The first frame is always the white T2VA frame (no image-to-video training on this budget).
"""
from __future__ import annotations

import copy
import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from ...models.sampling.conditioning import first_frame_y
from ...models.net.generator import build_generator
from ...models.net.joint import joint_forward
from ...models.sampling.schedule import training_table
from .. import captions, scenes
from . import configs
from . import latents as L
from .common import Checkpoint, Log, channels_last, draw_batch, optimise, rng_for, save_state, update_ema

SHARD = 512     # clips per latents file; shard k holds clips k*SHARD .. (k+1)*SHARD-1


def shard_path(work, k: int):
    return work / ("latents.pt" if k == 0 else f"latents.{k}.pt")


@torch.no_grad()
def encode_dataset(o, video_vae_cfg, audio_stats, text) -> None:
    """Shards `latents[.k].pt` of normalised designed latents (video [n,16,13,8,8], audio [n,16,103]),
    caption ids and text contexts, for o.clips clips in all. Each shard is claimed with a lock file, so
    several `--stage encode` processes split the work."""
    for k in range(-(-o.clips // SHARD)):
        path, lock = shard_path(o.work, k), o.work / f"latents.{k}.lock"
        if path.is_file():
            continue
        try:
            lock.touch(exist_ok=False)
        except FileExistsError:       # another process is encoding it (delete the lock after a crash)
            continue
        try:
            _encode_shard(o, k, path, video_vae_cfg, audio_stats, text)
        finally:
            lock.unlink(missing_ok=True)


def _encode_shard(o, k, path, video_vae_cfg, audio_stats, text) -> None:
    log = Log(o.work, "encode")
    vmean = np.asarray(video_vae_cfg.latents_mean, dtype=np.float32).reshape(-1, 1, 1, 1)
    vstd = np.asarray(video_vae_cfg.latents_std, dtype=np.float32).reshape(-1, 1, 1, 1)
    amean, astd = (np.asarray(s, dtype=np.float32)[:, None] for s in audio_stats)
    vids, auds, caps, impacts = [], [], [], []
    for i in range(k * SHARD, min(o.clips, (k + 1) * SHARD)):
        clip = scenes.render(scenes.scene_for_seed(o.seed + 100_000 + i))
        vids.append(torch.from_numpy((L.clip_video_latent(clip) - vmean) / vstd))
        auds.append(torch.from_numpy((L.clip_audio_latent(clip) - amean) / astd))
        caps.append(clip.caption)
        impacts.append(clip.impacts_s)
        if (i + 1) % 64 == 0:
            log(stage="encode", clips=i + 1)
    prompts = captions.all_captions() + [configs.NEGATIVE_PROMPT, ""]
    contexts = torch.cat([text.encode(prompts[i:i + 32]).float() for i in range(0, len(prompts), 32)])
    index = {c: i for i, c in enumerate(prompts)}
    tmp = path.with_suffix(".tmp")
    torch.save({"video": torch.stack(vids).float(), "audio": torch.stack(auds).float(),
                "caption_ids": torch.tensor([index[c] for c in caps]), "contexts": contexts, "prompts": prompts,
                "impacts": impacts}, tmp)
    tmp.replace(path)


def load_dataset(work) -> dict:
    """Every shard, caption ids remapped onto one prompt list (the last two: negative and empty)."""
    shards, k = [], 0
    while shard_path(work, k).is_file():
        shards.append(torch.load(shard_path(work, k), weights_only=True))
        k += 1
    tail = [configs.NEGATIVE_PROMPT, ""]
    known = captions.all_captions()
    extra = sorted({p for d in shards for p in d["prompts"]} - set(known) - set(tail))
    prompts = known + extra + tail
    index = {c: i for i, c in enumerate(prompts)}
    contexts = torch.zeros(len(prompts), *shards[0]["contexts"].shape[1:])
    ids = []
    for d in shards:
        for j, p in enumerate(d["prompts"]):
            contexts[index[p]] = d["contexts"][j]
        ids.append(torch.tensor([index[d["prompts"][int(i)]] for i in d["caption_ids"]]))
    return {"video": torch.cat([d["video"] for d in shards]), "audio": torch.cat([d["audio"] for d in shards]),
            "caption_ids": torch.cat(ids), "contexts": contexts, "prompts": prompts}


@torch.no_grad()
def white_frame_y(video_vae) -> torch.Tensor:
    """The T2VA conditioning the nodes build (white first frame through the trained encoder)."""
    return first_frame_y(channels_last(video_vae), scenes.WIDTH, scenes.HEIGHT, scenes.FRAMES)


def _lr(step: int, steps: int, warmup: int = 100, anneal: int = 0) -> float:
    """Warm-up, cosine down to 0.1 at `steps - anneal`, then linear down to 0.01 over the last `anneal`
    steps (the towers kept improving as the rate fell, so the recipe ends with a low-rate tail)."""
    if step < warmup:
        return (step + 1) / warmup
    anneal = min(anneal, max(0, steps - warmup))     # short runs (tests) have no room for the tail
    cosine_end = steps - anneal
    if anneal > 0 and step >= cosine_end:
        return 0.1 - 0.09 * min(1.0, (step - cosine_end) / anneal)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, cosine_end - warmup)))


LR = 1e-3


def _optimiser(params, lr: float) -> torch.optim.AdamW:
    """The towers' optimiser (stages dit and sync, and what toy/train/seed.py checkpoints)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))


def _schedule(opt, steps: int, warmup: int = 100, anneal: int = 0):
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr(s, steps, warmup, anneal))


@dataclass
class _Run:
    """One flow-matching run: `trained` is optimised, `ema` tracks it, `video` is the expert used."""
    name: str
    gen: torch.nn.Module
    trained: torch.nn.Module
    ema: torch.nn.Module
    video: torch.nn.Module
    steps: int
    lr: float
    t_pool: np.ndarray          # indices into the training table this run draws t from
    anneal: int = 0             # low-rate tail of the schedule (see _lr)


# From this step of stage 1 on, half of the samples draw the audio tower's t independently of the
# video's: with one modality cleaner than the other the Bridge is the only way to lower the loss, which
# teaches the towers to read timing from each other (with a shared t only, 1500 steps gave a Bridge that
# barely moved the onsets: 68 ms on vs 93 ms off).
DECOUPLE_FROM = 1500
DECOUPLE_FRACTION = 0.5

# In this fraction of the video samples, 1-3 latent frames are replaced by pure noise and the tower is
# asked for their clean latent (loss on the implied x0): it can only find their object from the
# neighbouring frames. Without it the tower placed the object in each latent frame independently (a
# frame given as noise came back ~20 px from its neighbours' track even at sigma 0.3) and drew the ball
# jumping from place to place.
FRAME_MASK_FRACTION = 0.3
FRAME_MASK_MAX = 3


def mask_frames(rng: np.random.Generator, g: torch.Generator, x: torch.Tensor,
                fraction: float = FRAME_MASK_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
    """(x with some latent frames of some samples replaced by N(0, 1) noise, mask [B, T] of them)."""
    b, t = x.shape[0], x.shape[2]
    mask = torch.zeros(b, t, dtype=torch.bool)
    for i in np.nonzero(rng.random(b) < fraction)[0]:
        mask[i, rng.choice(t, size=int(rng.integers(1, FRAME_MASK_MAX + 1)), replace=False)] = True
    noise = torch.randn(x.shape, generator=g)
    return torch.where(mask[:, None, :, None, None], noise, x), mask


def video_loss(out: torch.Tensor, xt: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
    """Flow-matching MSE (target eps - x0); on masked frames the error of the implied x0 instead."""
    flow = (out - (eps - x0)).square()
    implied = (xt - sigma * out - x0).square()
    return torch.where(mask[:, None, :, None, None], implied, flow).mean()


def train_dit(o, cfg, y: torch.Tensor, lr: float = LR, ema_decay: float = 0.998, log_every: int = 10):
    """Stage 1: one video expert + audio tower + Bridge over all t. Stage 2 (o.expert_steps > 0): each
    expert fine-tuned from it on its own t range (high: t >= boundary, low: below), audio tower and
    Bridge frozen because both experts share them. Returns the generator with EMA weights."""
    data = load_dataset(o.work)
    table_t, table_s = training_table(cfg.scheduler)
    gen = build_generator(cfg, dtype=torch.float32, seed=o.seed + 3, low_noise_expert=False)
    gen.train().requires_grad_(True)
    ema = copy.deepcopy(gen).requires_grad_(False)
    run = _Run("dit", gen, gen, ema, gen.video_high, o.dit_steps, lr, np.arange(len(table_t)), o.dit_anneal_steps)
    if _train(o, run, data, y, table_t, table_s, ema_decay, log_every, snapshot_cfg=cfg):
        for name in ("video_high", "video_low"):    # tuned from an older stage 1: start them again
            Checkpoint(o.work, f"expert_{name}").path.unlink(missing_ok=True)
    full = _both_experts(cfg, ema, o.seed)
    if o.expert_steps <= 0:
        return full
    expert_lr = 3 * lr * _lr(o.dit_steps, o.dit_steps, anneal=o.dit_anneal_steps)   # 3x where stage 1 ended
    for name, pool in zip(("video_high", "video_low"), expert_pools(cfg, table_t)):
        gen = copy.deepcopy(full).train()
        expert = getattr(gen, name).requires_grad_(True)
        run = _Run(f"expert_{name}", gen, expert, copy.deepcopy(expert).requires_grad_(False), expert,
                   o.expert_steps, expert_lr, pool)
        _train(o, run, data, y, table_t, table_s, ema_decay, log_every)
        getattr(full, name).load_state_dict(run.ema.state_dict())
    return full


def expert_pools(cfg, table_t: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the training table served by the high-noise expert (t >= boundary) and the low."""
    high = table_t.numpy() >= cfg.boundary_ratio * 1000
    return np.nonzero(high)[0], np.nonzero(~high)[0]


def _train(o, run: _Run, data, y, table_t, table_s, ema_decay, log_every, text_drop: float = 0.1,
           bridge_drop: float = 0.1, snapshot_cfg=None, frame_mask: float = FRAME_MASK_FRACTION) -> int:
    """Runs `run` from its checkpoint to run.steps; returns how many steps it took. Text dropout
    (negative or empty prompt) makes text CFG meaningful; Bridge dropout (a2v = v2a = 0) teaches the
    unbridged marginals that bridge guidance contrasts against."""
    video, audio, contexts = data["video"], data["audio"], data["contexts"]
    params = [p for p in run.trained.parameters() if p.requires_grad]
    opt = _optimiser(params, run.lr)
    sched = _schedule(opt, run.steps, anneal=run.anneal)
    ckpt, log = Checkpoint(o.work, run.name), Log(o.work, run.name)
    step = first = ckpt.load(model=run.trained, ema=run.ema, opt=opt, sched=sched)
    b = o.batch
    salt = zlib.crc32(run.name.encode())
    while step < run.steps:
        rng = rng_for(o.seed + 5 + salt, step)
        g = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        idx, ids = draw_batch(rng, data, b, text_drop)
        k = torch.from_numpy(run.t_pool[rng.integers(0, len(run.t_pool), size=b)])
        sigma, timestep = table_s[k], table_t[k]
        x0v, x0a = video[idx], audio[idx]
        ev = torch.randn(x0v.shape, generator=g)
        ea = torch.randn(x0a.shape, generator=g)
        sv, sa = sigma.view(b, 1, 1, 1, 1), sigma.view(b, 1, 1)
        xv, masked = mask_frames(rng, g, (1 - sv) * x0v + sv * ev, frame_mask)
        bridge = 0.0 if rng.random() < bridge_drop else 1.0
        audio_t = None
        if run.name == "dit" and step >= DECOUPLE_FROM:
            own = torch.from_numpy(rng.random(b) < DECOUPLE_FRACTION)
            ka = torch.where(own, torch.from_numpy(run.t_pool[rng.integers(0, len(run.t_pool), size=b)]), k)
            sa, audio_t = table_s[ka].view(b, 1, 1), table_t[ka]
        out_v, out_a = joint_forward(run.video, run.gen.audio, run.gen.bridge, xv,
                                     (1 - sa) * x0a + sa * ea, timestep, contexts[ids], y=y.expand(b, -1, -1, -1, -1),
                                     video_fps=scenes.FPS, a2v_scale=bridge, v2a_scale=bridge, audio_timestep=audio_t)
        loss_v = video_loss(out_v, xv, x0v, ev, sv, masked)
        loss_a = (out_a - (ea - x0a)).square().mean()
        loss = loss_v + loss_a
        optimise(loss, opt, sched, params)
        step += 1
        update_ema(run.ema.parameters(), run.trained.parameters(), step, ema_decay)
        if step % log_every == 0 or step == run.steps:
            log(stage=run.name, step=step, loss=loss.item(), video=loss_v.item(), audio=loss_a.item(),
                lr=sched.get_last_lr()[0])
        ckpt.maybe_save(step, force=step == run.steps, model=run.trained, ema=run.ema, opt=opt, sched=sched)
        if snapshot_cfg is not None and (o.work / "dit.snapshot").is_file():   # touch it: current EMA as generator
            (o.work / "dit.snapshot").unlink()
            snapshot(o, snapshot_cfg, run.ema)
    return step - first


def _both_experts(cfg, trained, seed):
    full = build_generator(cfg, dtype=torch.float32, seed=seed)
    full.video_high.load_state_dict(trained.video_high.state_dict())
    full.video_low.load_state_dict(trained.video_high.state_dict())
    full.audio.load_state_dict(trained.audio.state_dict())
    full.bridge.load_state_dict(trained.bridge.state_dict())
    return full.eval().requires_grad_(False)


def snapshot(o, cfg, ema) -> None:
    """Write the current EMA as `generator.snapshot.safetensors` (for an early look with eval_sync)."""
    save_state(_both_experts(cfg, ema, o.seed), o.work / "generator.snapshot.safetensors")

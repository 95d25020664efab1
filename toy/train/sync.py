"""Stage 3: teach the audio tower to take its timing from the video through the Bridge.

After stages 1-2 the towers generate the right colour and sound, but each decides its own impact times:
even with the clean video given, the audio's onsets landed 49 ms from the true impacts, and with the
video noised to the audio's own t (what sampling sees) 91 ms (random pairing gives ~100 ms). This stage
fine-tunes only the audio tower and the video->audio half of the Bridge, the video experts and the
audio->video half frozen (both experts share the audio tower, so it must not drift from either):
- the video side runs without gradients, the audio side reads its (detached) states: ~3x cheaper steps;
- the loss weights the audio latent's timing channels (onset 0-1, decay envelopes 2-5) up, so capacity
  goes to *when* rather than to the band energies;
- half of the samples share t with the video (what sampling does), the rest draw the audio's t on its
  own, so the Bridge also sees cleaner-video pairs where reading the video is the only way to the onsets.
Measured on 32 held-out clips (onsets vs the true impacts): with the clean video 49 -> 13 ms after 1500
steps; with the video noised to the audio's t 91 -> 68 ms, and no better after 4000 steps (so 1500).
"""
from __future__ import annotations

import copy
import zlib

import numpy as np
import torch

from ...models.net.joint import joint_forward
from ...models.sampling.schedule import training_table
from .. import scenes
from .common import Checkpoint, Log, draw_batch, optimise, rng_for, save_state, update_ema
from .dit import _optimiser, _schedule, expert_pools, load_dataset

TIMING_CHANNELS = {0: 4.0, 1: 4.0, 2: 2.0, 3: 2.0, 4: 2.0, 5: 2.0}   # audio latent channel -> loss weight
SHARED_FRACTION = 0.5
BRIDGE_DROP = 0.1
TEXT_DROP = 0.1


def audio_forward(gen, expert, video_latents, audio_latents, video_t, audio_t, context, y, video_fps,
                  bridge: float = 1.0):
    """The audio half of joint_forward with gradients only on the audio tower and the v2a Bridge blocks
    (video states computed without gradients, the same values joint_forward gives)."""
    audio_dit, br = gen.audio, gen.bridge
    with torch.no_grad():
        _, video_t_mod = expert.embed_time(video_t)
        video_ctx = expert.embed_text(context)
        video_x, grid = expert.patchify(torch.cat([video_latents, y], dim=1))
        video_rope = expert.rope(grid, video_x.device)
    audio_emb, audio_t_mod = audio_dit.embed_time(audio_t)
    audio_ctx = audio_dit.embed_text(context)
    audio_x, audio_grid = audio_dit.patchify(audio_latents)
    audio_rope = audio_dit.rope(audio_grid, audio_x.device)
    video_cross, audio_cross = br.aligned_rope(grid, audio_x.shape[1], video_fps, video_x.device, video_x.dtype)
    bridged = set(br.layers)
    for i in range(len(audio_dit.blocks)):
        if i in bridged and bridge != 0:
            with torch.no_grad():
                new_video, _ = br(i, video_x, audio_x.detach(), video_cross, audio_cross, bridge, 0.0)
            _, audio_x = br(i, video_x, audio_x, video_cross, audio_cross, 0.0, bridge)
            video_x = new_video
        with torch.no_grad():
            video_x = expert.blocks[i](video_x, video_ctx, video_t_mod, video_rope)
        audio_x = audio_dit.blocks[i](audio_x, audio_ctx, audio_t_mod, audio_rope)
    return audio_dit.unpatchify(audio_dit.head(audio_x, audio_emb), audio_grid)


def trainable(gen) -> list:
    """The parameters this stage tunes: audio tower and the video->audio Bridge blocks."""
    gen.requires_grad_(False)
    gen.audio.requires_grad_(True)
    gen.bridge.video_to_audio_conditioners.requires_grad_(True)
    return [p for p in gen.parameters() if p.requires_grad]


def train_sync(o, cfg, y: torch.Tensor, full, lr: float = 5e-4, ema_decay: float = 0.998, log_every: int = 10):
    """Fine-tunes `full` (both experts, audio tower, Bridge; EMA weights of stages 1-2) for o.sync_steps;
    returns it with the EMA of the tuned parameters."""
    data = load_dataset(o.work)
    table_t, table_s = training_table(cfg.scheduler)
    high, low = expert_pools(cfg, table_t)
    gen = copy.deepcopy(full).train()
    params = trainable(gen)
    ema = copy.deepcopy(gen).requires_grad_(False)
    tuned_ema = [p for p, q in zip(ema.parameters(), gen.parameters()) if q.requires_grad]
    opt = _optimiser(params, lr)
    sched = _schedule(opt, o.sync_steps, warmup=50)
    ckpt, log = Checkpoint(o.work, "sync"), Log(o.work, "sync")
    step = ckpt.load(model=gen, ema=ema, opt=opt, sched=sched)
    weights = torch.ones(data["audio"].shape[1])
    for c, w in TIMING_CHANNELS.items():
        weights[c] = w
    weights = (weights / weights.mean()).view(1, -1, 1)
    video, audio, contexts = data["video"], data["audio"], data["contexts"]
    b, salt = o.batch, zlib.crc32(b"sync")
    while step < o.sync_steps:
        rng = rng_for(o.seed + 11 + salt, step)
        g = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        idx, ids = draw_batch(rng, data, b, TEXT_DROP)
        use_high = rng.random() < len(high) / len(table_t)          # one video expert per step
        pool = high if use_high else low
        kv = torch.from_numpy(pool[rng.integers(0, len(pool), size=b)])
        shared = torch.from_numpy(rng.random(b) < SHARED_FRACTION)
        ka = torch.where(shared, kv, torch.from_numpy(rng.integers(0, len(table_t), size=b)))
        sv, sa = table_s[kv].view(b, 1, 1, 1, 1), table_s[ka].view(b, 1, 1)
        x0v, x0a = video[idx], audio[idx]
        ev, ea = torch.randn(x0v.shape, generator=g), torch.randn(x0a.shape, generator=g)
        bridge = 0.0 if rng.random() < BRIDGE_DROP else 1.0
        expert = gen.video_high if use_high else gen.video_low
        out = audio_forward(gen, expert, (1 - sv) * x0v + sv * ev, (1 - sa) * x0a + sa * ea, table_t[kv],
                            table_t[ka], contexts[ids], y.expand(b, -1, -1, -1, -1), scenes.FPS, bridge)
        loss = ((out - (ea - x0a)).square() * weights).mean()
        optimise(loss, opt, sched, params)
        step += 1
        update_ema(tuned_ema, params, step, ema_decay)
        if step % log_every == 0 or step == o.sync_steps:
            log(stage="sync", step=step, loss=loss.item(), lr=sched.get_last_lr()[0])
        ckpt.maybe_save(step, force=step == o.sync_steps, model=gen, ema=ema, opt=opt, sched=sched)
        if (o.work / "sync.snapshot").is_file():      # touch it: current EMA as generator.sync.snapshot
            (o.work / "sync.snapshot").unlink()
            save_state(ema, o.work / "generator.sync.snapshot.safetensors")
    return ema.eval().requires_grad_(False)

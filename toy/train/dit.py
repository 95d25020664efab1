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

import numpy as np
import torch

from ...models.conditioning import first_frame_y
from ...models.generator import build_generator
from ...models.joint import joint_forward
from ...models.schedule import training_table
from .. import scenes
from . import configs
from . import latents as L
from .common import Checkpoint, Log, channels_last, rng_for

@torch.no_grad()
def encode_dataset(o, video_vae_cfg, audio_stats, text) -> None:
    """`latents.pt`: normalised designed latents (video [N,16,13,8,8], audio [N,16,103]) of N rendered
    clips, caption ids and text contexts (captions + negative + empty prompt)."""
    log = Log(o.work, "encode")
    vmean = np.asarray(video_vae_cfg.latents_mean, dtype=np.float32).reshape(-1, 1, 1, 1)
    vstd = np.asarray(video_vae_cfg.latents_std, dtype=np.float32).reshape(-1, 1, 1, 1)
    amean, astd = (np.asarray(s, dtype=np.float32)[:, None] for s in audio_stats)
    vids, auds, caps, impacts = [], [], [], []
    for i in range(o.clips):
        clip = scenes.render(scenes.scene_for_seed(o.seed + 100_000 + i))
        vids.append(torch.from_numpy((L.clip_video_latent(clip) - vmean) / vstd))
        auds.append(torch.from_numpy((L.clip_audio_latent(clip) - amean) / astd))
        caps.append(clip.caption)
        impacts.append(clip.impacts_s)
        if (i + 1) % 64 == 0:
            log(stage="encode", clips=i + 1)
    captions = sorted(set(caps))
    prompts = captions + [configs.NEGATIVE_PROMPT, ""]
    contexts = torch.cat([text.encode(prompts[i:i + 32]).float() for i in range(0, len(prompts), 32)])
    index = {c: i for i, c in enumerate(prompts)}
    torch.save({"video": torch.stack(vids).float(), "audio": torch.stack(auds).float(),
                "caption_ids": torch.tensor([index[c] for c in caps]), "contexts": contexts, "prompts": prompts,
                "impacts": impacts}, o.work / "latents.pt")


@torch.no_grad()
def white_frame_y(video_vae) -> torch.Tensor:
    """The T2VA conditioning the nodes build (white first frame through the trained encoder)."""
    return first_frame_y(channels_last(video_vae), scenes.WIDTH, scenes.HEIGHT, scenes.FRAMES)


def _lr(step: int, steps: int, warmup: int = 100) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train_dit(o, cfg, y: torch.Tensor, lr: float = 1e-3, ema_decay: float = 0.995, text_drop: float = 0.1,
              bridge_drop: float = 0.1, log_every: int = 10):
    """Returns the generator (EMA weights) with the trained expert in both expert slots."""
    data = torch.load(o.work / "latents.pt", weights_only=True)
    video, audio, cap = data["video"], data["audio"], data["caption_ids"]
    contexts = data["contexts"]
    neg_ids = torch.tensor([len(data["prompts"]) - 2, len(data["prompts"]) - 1])
    gen = build_generator(cfg, dtype=torch.float32, seed=o.seed + 3, low_noise_expert=False)
    gen.train().requires_grad_(True)
    ema = copy.deepcopy(gen).requires_grad_(False)
    opt = torch.optim.AdamW(gen.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr(s, o.dit_steps))
    ckpt, log = Checkpoint(o.work, "dit"), Log(o.work, "dit")
    step = ckpt.load(model=gen, ema=ema, opt=opt, sched=sched)
    table_t, table_s = training_table(cfg.scheduler)
    n, b = len(video), o.batch
    while step < o.dit_steps:
        rng = rng_for(o.seed + 5, step)
        g = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        idx = torch.from_numpy(rng.integers(0, n, size=b))
        ids = cap[idx].clone()
        drop = torch.from_numpy(rng.random(b) < text_drop)
        ids[drop] = neg_ids[torch.from_numpy(rng.integers(0, 2, size=b))][drop]
        k = torch.from_numpy(rng.integers(0, len(table_t), size=b))
        sigma, timestep = table_s[k], table_t[k]
        x0v, x0a = video[idx], audio[idx]
        ev = torch.randn(x0v.shape, generator=g)
        ea = torch.randn(x0a.shape, generator=g)
        sv, sa = sigma.view(b, 1, 1, 1, 1), sigma.view(b, 1, 1)
        bridge = 0.0 if rng.random() < bridge_drop else 1.0
        out_v, out_a = joint_forward(gen.video_high, gen.audio, gen.bridge, (1 - sv) * x0v + sv * ev,
                                     (1 - sa) * x0a + sa * ea, timestep, contexts[ids], y=y.expand(b, -1, -1, -1, -1),
                                     video_fps=scenes.FPS, a2v_scale=bridge, v2a_scale=bridge)
        loss_v = (out_v - (ev - x0v)).square().mean()
        loss_a = (out_a - (ea - x0a)).square().mean()
        loss = loss_v + loss_a
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gen.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), gen.parameters()):
                pe.lerp_(pm, 1 - decay)
        if step % log_every == 0 or step == o.dit_steps:
            log(stage="dit", step=step, loss=loss.item(), video=loss_v.item(), audio=loss_a.item(),
                lr=sched.get_last_lr()[0])
        ckpt.maybe_save(step, force=step == o.dit_steps, model=gen, ema=ema, opt=opt, sched=sched)
        if (o.work / "dit.snapshot").is_file():     # touch this file to get the current EMA as generator
            (o.work / "dit.snapshot").unlink()
            snapshot(o, cfg, ema)
    return _both_experts(cfg, ema, o.seed)


def _both_experts(cfg, trained, seed):
    full = build_generator(cfg, dtype=torch.float32, seed=seed)
    full.video_high.load_state_dict(trained.video_high.state_dict())
    full.video_low.load_state_dict(trained.video_high.state_dict())
    full.audio.load_state_dict(trained.audio.state_dict())
    full.bridge.load_state_dict(trained.bridge.state_dict())
    return full.eval().requires_grad_(False)


def snapshot(o, cfg, ema) -> None:
    """Write the current EMA as `generator.snapshot.safetensors` (for an early look with eval_sync)."""
    from safetensors.torch import save_file

    full = _both_experts(cfg, ema, o.seed)
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(o.work / "generator.snapshot.safetensors"))

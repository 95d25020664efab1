"""Stage A: train the toy video VAE (Wan 2.1 layout) and audio VAE (DAC) on rendered clips.

Video: 5-frame windows (the first frame alone + one 4-frame chunk, as the causal encoder sees them),
32x32 crops mostly around the object, L1 + L2 with the object's pixels weighted up (it is ~1 % of the
frame). Audio: 0.4 s crops around impacts, L1 + multi-resolution log-STFT loss. Afterwards the audio
latent is standardised by an exact reparametrisation of quant_conv/post_quant_conv, and the video
latent statistics go into the config (latents_mean/std) as the Wan VAE expects.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...models.audio_vae import AudioVAE
from ...models.video_vae import CausalCache, WanVideoVAE
from .common import Checkpoint, Log, channels_last, render_pool, rng_for, video_tensor

VIDEO_WINDOW, CROP = 5, 32
AUDIO_CROP = 19200   # 0.4 s, 20 latent frames


def video_autoencode(vae: WanVideoVAE, x: torch.Tensor, latent_noise: float = 0.0):
    """Differentiable encode -> decode of [B, 3, 1+4k, H, W] (same chunking as encode/decode)."""
    cache, outs = CausalCache(), []
    for start, end in [(0, 1)] + [(1 + 4 * i, 5 + 4 * i) for i in range((x.shape[2] - 1) // 4)]:
        cache.new_chunk()
        outs.append(vae.encoder(x[:, :, start:end], cache))
    mu = vae.conv1(torch.cat(outs, dim=2))[:, : vae.z_dim]
    z = mu + latent_noise * torch.randn_like(mu) if latent_noise else mu
    h = vae.conv2(z)
    cache, frames = CausalCache(), []
    for i in range(h.shape[2]):
        cache.new_chunk()
        frames.append(vae.decoder(h[:, :, i:i + 1], cache))
    return torch.cat(frames, dim=2), mu


def _video_batch(pool, rng, batch: int):
    xs, ws = [], []
    for _ in range(batch):
        clip = pool[rng.integers(len(pool))]
        v = video_tensor(clip)                                   # [3, F, H, W]
        s = int(rng.integers(0, v.shape[1] - VIDEO_WINDOW + 1))
        w = v[:, s:s + VIDEO_WINDOW]
        bg = v.median(dim=1).values[:, None]                     # static background of the clip
        obj = ((w - bg).abs().amax(dim=0, keepdim=True) > 0.1).float()
        if rng.random() < 0.75 and obj.sum() > 0:                # crop around the object
            yy, xx = torch.nonzero(obj[0, 0] if obj[0, 0].any() else obj[0].amax(0), as_tuple=True)
            cy, cx = int(yy.float().mean()), int(xx.float().mean())
            cy += int(rng.integers(-10, 11))
            cx += int(rng.integers(-10, 11))
        else:
            cy, cx = int(rng.integers(0, 64)), int(rng.integers(0, 64))
        y0 = min(max(cy - CROP // 2, 0), 64 - CROP)
        x0 = min(max(cx - CROP // 2, 0), 64 - CROP)
        xs.append(w[:, :, y0:y0 + CROP, x0:x0 + CROP])
        ws.append(1.0 + 15.0 * obj[:, :, y0:y0 + CROP, x0:x0 + CROP])
    return torch.stack(xs), torch.stack(ws)


def train_video_vae(cfg, work, steps: int, seed: int, pool_size: int = 48, batch: int = 4, lr: float = 6e-4,
                    log_every: int = 10) -> WanVideoVAE:
    torch.manual_seed(seed)
    vae = channels_last(WanVideoVAE(cfg)).train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 30) * (0.1 + 0.9 * (1 - s / steps)))
    ckpt, log = Checkpoint(work, "video_vae"), Log(work, "video_vae")
    step = ckpt.load(model=vae, opt=opt, sched=sched)
    pool = render_pool(seed, pool_size)
    while step < steps:
        x, w = _video_batch(pool, rng_for(seed, step), batch)
        x = x.contiguous(memory_format=torch.channels_last_3d)
        rec, mu = video_autoencode(vae, x, latent_noise=0.05)
        err = rec - x
        loss = (w * (err.abs() + err.square())).mean() + 1e-4 * mu.square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        if step % log_every == 0 or step == steps:
            log(stage="video_vae", step=step, loss=loss.item(), l1=err.abs().mean().item())
        ckpt.maybe_save(step, force=step == steps, model=vae, opt=opt, sched=sched)
    return vae.eval().requires_grad_(False)


def _stft_loss(rec: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    total = 0.0
    for n in (128, 512, 2048):
        win = torch.hann_window(n)
        a = torch.stft(rec, n, n // 4, window=win, return_complex=True).abs()
        b = torch.stft(ref, n, n // 4, window=win, return_complex=True).abs()
        total = total + (torch.log(a + 1e-5) - torch.log(b + 1e-5)).abs().mean() + (a - b).abs().mean()
    return total


def _audio_batch(pool, rng, batch: int) -> torch.Tensor:
    out = []
    for _ in range(batch):
        clip = pool[rng.integers(len(pool))]
        t = clip.impacts_s[rng.integers(len(clip.impacts_s))]
        start = int((t - rng.uniform(0.01, 0.3)) * clip.sample_rate)
        start = min(max(start, 0), len(clip.audio) - AUDIO_CROP)
        out.append(torch.from_numpy(clip.audio[start:start + AUDIO_CROP]))
    return torch.stack(out)[:, None]


def train_audio_vae(cfg, work, steps: int, seed: int, pool_size: int = 96, batch: int = 8, lr: float = 2e-3,
                    log_every: int = 10) -> AudioVAE:
    torch.manual_seed(seed + 1)
    vae = AudioVAE(cfg).train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 30) * (0.1 + 0.9 * (1 - s / steps)))
    ckpt, log = Checkpoint(work, "audio_vae"), Log(work, "audio_vae")
    step = ckpt.load(model=vae, opt=opt, sched=sched)
    pool = render_pool(seed + 50_000, pool_size)
    d = cfg.latent_dim
    while step < steps:
        x = _audio_batch(pool, rng_for(seed + 1, step), batch)
        mu = vae.quant_conv(vae.encoder(x))[:, :d]
        rec = vae.decoder(vae.post_quant_conv(mu + 0.02 * torch.randn_like(mu)))
        l1 = (rec - x).abs().mean()
        loss = 5.0 * l1 + _stft_loss(rec[:, 0], x[:, 0]) + 1e-4 * mu.square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        if step % log_every == 0 or step == steps:
            log(stage="audio_vae", step=step, loss=loss.item(), l1=l1.item())
        ckpt.maybe_save(step, force=step == steps, model=vae, opt=opt, sched=sched)
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def standardise_audio_latent(vae: AudioVAE, pool) -> tuple[np.ndarray, np.ndarray]:
    """Rescale so the posterior mean has zero mean / unit std per channel (decode output unchanged)."""
    d = vae.latent_dim
    lat = torch.cat([vae.encode(torch.from_numpy(c.audio)[None, None]) for c in pool], dim=2)[0]  # [d, T]
    mean, std = lat.mean(dim=1), lat.std(dim=1).clamp_min(1e-3)
    qc, pc = vae.quant_conv, vae.post_quant_conv
    qc.weight[:d] /= std[:, None, None]
    qc.bias[:d] = (qc.bias[:d] - mean) / std
    pc.bias += (pc.weight[:, :, 0] @ mean)
    pc.weight *= std[None, :, None]
    return mean.numpy(), std.numpy()


@torch.no_grad()
def video_latent_stats(vae: WanVideoVAE, pool) -> tuple[list, list]:
    """Per-channel mean/std of the raw (un-normalised) posterior mean over `pool`."""
    raw = []
    for c in pool:
        z = vae.encode(video_tensor(c)[None].contiguous(memory_format=torch.channels_last_3d))
        raw.append(z * vae.latents_std + vae.latents_mean)
    z = torch.cat(raw, dim=0).transpose(0, 1).reshape(vae.z_dim, -1)
    return z.mean(dim=1).tolist(), z.std(dim=1).clamp_min(1e-3).tolist()

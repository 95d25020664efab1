"""Stage A: train the toy video VAE (Wan 2.1 layout) and audio VAE (DAC) on rendered clips, with the
designed latents of latents.py as targets: each decoder learns to render its latent, each encoder to
predict it (MSE).

Video: 5-frame windows (the first frame alone + one 4-frame chunk, as the causal codec sees them),
4x4-cell (32x32 px) crops mostly around the object, L1 + L2 with the object's pixels weighted up (it
is ~1 % of the frame). Audio: 0.4 s crops around impacts, multi-resolution log-STFT loss + a little L1.
Afterwards the audio latent is standardised by an exact reparametrisation of quant_conv /
post_quant_conv; the video latent statistics go into the config (latents_mean/std) as Wan expects.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...models.codecs.audio_vae import AudioVAE
from ...models.codecs.video_vae import CausalCache, WanVideoVAE
from . import latents as L
from safetensors.torch import save_file

from .common import Checkpoint, Log, channels_last, render_pool, rng_for, video_tensor

CELLS = 4                      # 4x4 latent cells = 32x32 px crops
# Pixel frames per window: 5 = the first latent frame + one chunk; from step 1100 on, 9 = + a chunk that
# decodes with a real cached chunk before it (the steady state of a full clip, unseen with 5 frames:
# without it the decoded motion lagged by 40-140 ms); from step 2000 on, 25 = 7 latent frames (with 9,
# the colour drifted after the 4th latent frame of a full clip: yellow turned red, green grey-blue).
WINDOWS = ((0, 5), (1100, 9), (2000, 25))


# From step 1400 on, the object's solid pixels weigh 4x more again: before it the decoder blended small
# objects into the background and lost their colour (yellow decoded orange-red, green grey).
SOLID_WEIGHT_FROM = 1400

# From step 4000 on (ninth session): a wider pool of clips and the frames around each impact weighted up.
# Before it the decoder rendered the 48 pool clips' bounces to 15 ms but unseen clips' to 20 ms (median),
# and it rounded the bounce off: at the impact frame the object sat 2 px short of the floor, 1 px past it
# two frames later, so decoded impacts came ~15 ms late. 3000 such steps: 10 ms on unseen clips.
SHARP_FROM = 4000
SHARP_POOL = 512
IMPACT_WEIGHT = 4.0            # extra weight of a frame at an impact, falling off over ~1.5 frames


# The video encoder only makes the first-frame conditioning y: it is frozen (and saved) after this many
# steps so the tower training can start while the decoder keeps learning (decoder-only steps are faster).
ENCODER_STEPS = 80
ENCODER_KEYS = ("encoder.", "conv1.")
AUDIO_FRAMES = 20              # 0.4 s


def video_window(step: int) -> int:
    return [w for start, w in WINDOWS if step >= start][-1]


def pool_clips(step: int, pool_size: int) -> int:
    """Clips in the decoder's pool at this step (the pool widens at SHARP_FROM; it never shrinks)."""
    return pool_size if step < SHARP_FROM else max(pool_size, SHARP_POOL)


def encode_train(vae: WanVideoVAE, x: torch.Tensor) -> torch.Tensor:
    """Differentiable raw posterior mean of [B, 3, 1+4k, H, W] (the chunking of WanVideoVAE.encode)."""
    cache, outs = CausalCache(), []
    for start, end in [(0, 1)] + [(1 + 4 * i, 5 + 4 * i) for i in range((x.shape[2] - 1) // 4)]:
        cache.new_chunk()
        outs.append(vae.encoder(x[:, :, start:end], cache))
    return vae.conv1(torch.cat(outs, dim=2))[:, : vae.z_dim]


def decode_train(vae: WanVideoVAE, z: torch.Tensor) -> torch.Tensor:
    """Differentiable decode of a raw latent (the chunking of WanVideoVAE.decode)."""
    h = vae.conv2(z)
    cache, frames = CausalCache(), []
    for i in range(h.shape[2]):
        cache.new_chunk()
        frames.append(vae.decoder(h[:, :, i:i + 1], cache))
    return torch.cat(frames, dim=2)


def impact_closeness(impacts_s, frames: int, fps: float) -> np.ndarray:
    """[F] 1 at a frame that shows an impact, falling off as a Gaussian of 1.5 frames around it."""
    t = np.arange(frames)[:, None] - np.asarray(impacts_s, dtype=np.float64)[None, :] * fps
    return np.exp(-0.5 * (t / 1.5) ** 2).max(axis=1, initial=0.0).astype(np.float32)


def video_pool(first_seed: int, count: int):
    """(pixels [3,F,H,W], masks [F,H,W], centres [F,2], background [H,W,3], scene, impact closeness [F])
    per rendered clip."""
    out = []
    for clip in render_pool(first_seed, count):
        frames = clip.video.shape[0]
        times = np.arange(frames) / clip.fps
        out.append((video_tensor(clip), L.object_masks(clip.scene, times), L.object_centres(clip.scene, times),
                    L.clip_background(clip), clip.scene, impact_closeness(clip.impacts_s, frames, clip.fps)))
    return out


def _video_batch(pool, rng, batch: int, window: int = 5, solid_weight: float = 0.0, impact_weight: float = 0.0):
    xs, zs, ws = [], [], []
    for _ in range(batch):
        pixels, masks, centres, bg, scene, closeness = pool[rng.integers(len(pool))]
        s = int(rng.integers(0, pixels.shape[1] - window + 1))
        m = masks[s:s + window]
        near = closeness[s:s + window]
        z = L.video_latent(centres[s:s + window], bg, scene)               # [16, 1 + (window-1)/4, 8, 8]
        # crop around the object: where it hits something when weighting impacts, else at the first frame
        f = int(near.argmax()) if impact_weight and near.max() > 0.5 and rng.random() < 0.5 else 0
        if rng.random() < 0.85 and m[f].any():
            ys, xs_ = np.nonzero(m[f] > 0.5) if (m[f] > 0.5).any() else np.nonzero(m[f])
            cy, cx = int(ys.mean()) // L.CELL, int(xs_.mean()) // L.CELL
            cy += int(rng.integers(-1, 2))
            cx += int(rng.integers(-1, 2))
        else:
            cy, cx = int(rng.integers(0, 8)), int(rng.integers(0, 8))
        y0, x0 = min(max(cy - CELLS // 2, 0), 8 - CELLS), min(max(cx - CELLS // 2, 0), 8 - CELLS)
        py, px = slice(y0 * L.CELL, (y0 + CELLS) * L.CELL), slice(x0 * L.CELL, (x0 + CELLS) * L.CELL)
        xs.append(pixels[:, s:s + window, py, px])
        zs.append(torch.from_numpy(z[:, :, y0:y0 + CELLS, x0:x0 + CELLS]))
        crop = torch.from_numpy(m[None, :, py, px])
        per_frame = torch.from_numpy(1.0 + impact_weight * near)[None, :, None, None]
        ws.append((1.0 + 15.0 * (crop > 0.05).float() + solid_weight * (crop > 0.5).float()) * per_frame)
    return torch.stack(xs), torch.stack(zs), torch.stack(ws)


VIDEO_VAE_LR = 2e-3


def _optimiser(params, lr: float) -> torch.optim.AdamW:
    """Both VAEs' optimiser (also what toy/train/seed.py checkpoints, so a seeded run resumes into it)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.99))


def _schedule(opt, steps: int):
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 30) * (0.1 + 0.9 * (1 - s / steps)))


def train_video_vae(cfg, work, steps: int, seed: int, pool_size: int = 48, batch: int = 4, lr: float = VIDEO_VAE_LR,
                    log_every: int = 10) -> WanVideoVAE:
    torch.manual_seed(seed)
    vae = channels_last(WanVideoVAE(cfg)).train().requires_grad_(True)
    opt = _optimiser(vae.parameters(), lr)
    sched = _schedule(opt, steps)
    ckpt, log = Checkpoint(work, "video_vae"), Log(work, "video_vae")
    step = ckpt.load(model=vae, opt=opt, sched=sched)
    pool = video_pool(seed, pool_clips(step, pool_size))
    frozen = work / "video_encoder.safetensors"
    while step < steps:
        if step >= ENCODER_STEPS and not frozen.is_file():
            save_file({k: v.contiguous() for k, v in vae.state_dict().items() if k.startswith(ENCODER_KEYS)}, str(frozen))
        if len(pool) < pool_clips(step, pool_size):   # widens at SHARP_FROM (a run resumed past it: at load)
            pool = video_pool(seed, pool_clips(step, pool_size))
        train_encoder = step < ENCODER_STEPS
        x, z, w = _video_batch(pool, rng_for(seed, step), batch, video_window(step),
                               solid_weight=48.0 if step >= SOLID_WEIGHT_FROM else 0.0,
                               impact_weight=IMPACT_WEIGHT if step >= SHARP_FROM else 0.0)
        x = x.contiguous(memory_format=torch.channels_last_3d)
        err = decode_train(vae, z) - x
        loss_dec = (w * (err.abs() + err.square())).mean()
        loss_enc = (encode_train(vae, x) - z).square().mean() if train_encoder else torch.zeros(())
        loss = loss_dec + loss_enc
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()   # (frozen encoder: no gradient, AdamW leaves it alone with weight_decay 0)
        sched.step()
        step += 1
        if step % log_every == 0 or step == steps:
            log(stage="video_vae", step=step, decoder=loss_dec.item(), l1=err.abs().mean().item(),
                encoder=loss_enc.item())
        ckpt.maybe_save(step, force=step == steps, model=vae, opt=opt, sched=sched)
    return vae.eval().requires_grad_(False)


def _stft_loss(rec: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    total = 0.0
    for n in (128, 512, 2048):
        win = torch.hann_window(n)
        a = torch.stft(rec, n, n // 4, window=win, return_complex=True).abs()
        b = torch.stft(ref, n, n // 4, window=win, return_complex=True).abs()
        total = total + (torch.log(a + 1e-4) - torch.log(b + 1e-4)).abs().mean() + 4.0 * (a - b).abs().mean()
    return total


def audio_pool(first_seed: int, count: int):
    """(waveform [N], designed latent [16, T], impact frames) per rendered clip."""
    out = []
    for clip in render_pool(first_seed, count):
        frames = [int(t * clip.sample_rate) // L.HOP for t in clip.impacts_s]
        out.append((torch.from_numpy(clip.audio), torch.from_numpy(L.clip_audio_latent(clip)), frames))
    return out


def _audio_batch(pool, rng, batch: int):
    xs, zs = [], []
    for _ in range(batch):
        audio, z, frames = pool[rng.integers(len(pool))]
        j = frames[rng.integers(len(frames))] - int(rng.integers(1, 15))
        j = min(max(j, 0), audio.shape[0] // L.HOP - AUDIO_FRAMES)
        xs.append(audio[j * L.HOP:(j + AUDIO_FRAMES) * L.HOP])
        zs.append(z[:, j:j + AUDIO_FRAMES])
    return torch.stack(xs)[:, None], torch.stack(zs)


def train_audio_vae(cfg, work, steps: int, seed: int, mean, std, pool_size: int = 96, batch: int = 6,
                    lr: float = 3e-3, log_every: int = 10) -> AudioVAE:
    """The latent is the designed one standardised with (mean, std): no rescaling needed afterwards."""
    torch.manual_seed(seed + 1)
    vae = AudioVAE(cfg).train().requires_grad_(True)
    opt = _optimiser(vae.parameters(), lr)
    sched = _schedule(opt, steps)
    ckpt, log = Checkpoint(work, "audio_vae"), Log(work, "audio_vae")
    step = ckpt.load(model=vae, opt=opt, sched=sched)
    mean, std = (torch.as_tensor(np.asarray(v), dtype=torch.float32)[:, None] for v in (mean, std))
    pool = [(a, (z - mean) / std, f) for a, z, f in audio_pool(seed + 50_000, pool_size)]
    d = cfg.latent_dim
    while step < steps:
        x, z = _audio_batch(pool, rng_for(seed + 1, step), batch)
        rec = vae.decoder(vae.post_quant_conv(z))
        l1 = (rec - x).abs().mean()
        # spectral terms dominate: a plain waveform L1 on sparse impacts rewards silence
        loss_dec = 0.5 * l1 + _stft_loss(rec[:, 0], x[:, 0])
        loss_enc = (vae.quant_conv(vae.encoder(x))[:, :d] - z).square().mean()
        loss = loss_dec + loss_enc
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        if step % log_every == 0 or step == steps:
            log(stage="audio_vae", step=step, decoder=loss_dec.item(), l1=l1.item(), encoder=loss_enc.item())
        ckpt.maybe_save(step, force=step == steps, model=vae, opt=opt, sched=sched)
    return vae.eval().requires_grad_(False)


def latent_stats(latents: list) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean/std over [C, ...] arrays."""
    flat = np.concatenate([z.reshape(z.shape[0], -1) for z in latents], axis=1)
    return flat.mean(axis=1), np.maximum(flat.std(axis=1), 1e-2)

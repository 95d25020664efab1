"""The toy MOVA: every component of the released architecture at a size 2 CPU cores can train.

Video VAE: Wan 2.1 layout (z_dim 16, stride 4x8x8) with base_dim 8 and one residual block per level.
Audio VAE: DAC continuous VAE, hop 960 at 48 kHz (rates 2,3,4,5,8), 16 latent channels.
Text encoder: 2-layer umT5 (d_model 32), frozen at a seeded random init, with a sentencepiece model
trained on the toy captions. Towers: video 128-wide x 4 layers (both experts), audio 64-wide x 4
layers, Bridge on every shared layer with aligned RoPE (audio_fps 50, video 24 fps).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ...models.config import (AudioVAEConfig, BridgeConfig, DiTConfig, MovaConfig, SchedulerConfig,
                              TextEncoderConfig, VideoVAEConfig)

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "embedded" / "mova-toy"          # the committed default (nodes/model_files.py)
WORK_DIR = ROOT / ".toy-train"                       # checkpoints and caches (not committed)
SEED = 20260122

TEXT_DIM = 32
AUDIO_LATENT = 16
NEGATIVE_PROMPT = "static, blurry, subtitles, worst quality, low quality, distorted sound, noise"

VIDEO_VAE = VideoVAEConfig(z_dim=16, base_dim=8, dim_mult=(1, 2, 4, 4), num_res_blocks=1,
                           temporal_downsample=(False, True, True))
AUDIO_VAE = AudioVAEConfig(encoder_dim=4, encoder_rates=(2, 3, 4, 5, 8), latent_dim=AUDIO_LATENT,
                           decoder_dim=128, decoder_rates=(8, 5, 4, 3, 2), sample_rate=48000)
VIDEO_DIT = DiTConfig(kind="video", dim=128, ffn_dim=320, num_heads=4, num_layers=4, in_dim=36, out_dim=16,
                      patch_size=(1, 2, 2), text_dim=TEXT_DIM, freq_dim=64, eps=1e-6)
AUDIO_DIT = DiTConfig(kind="audio", dim=64, ffn_dim=160, num_heads=2, num_layers=4, in_dim=AUDIO_LATENT,
                      out_dim=AUDIO_LATENT, patch_size=(1,), text_dim=TEXT_DIM, freq_dim=64, eps=1e-6,
                      vae_type="dac")
BRIDGE = BridgeConfig(visual_layers=4, audio_layers=4, visual_hidden_dim=128, audio_hidden_dim=64,
                      audio_fps=50.0, head_dim=16, interaction_strategy="full", apply_cross_rope=True)
# vocab_size is set from the trained tokenizer (see text.py); this is the upper bound used for training it.
TEXT_ENCODER = TextEncoderConfig(d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4, vocab_size=160)
SCHEDULER = SchedulerConfig(shift=5.0, extra_one_step=True)
# The sampler's audio_shift for this model (the shipped workflows and eval_sync use it): the audio stays
# noisier than the video, so its onsets follow the picture through the Bridge (docs/toy-model.md).
AUDIO_SHIFT = 50.0


def mova_config(video_vae: VideoVAEConfig = VIDEO_VAE, text_encoder: TextEncoderConfig = TEXT_ENCODER) -> MovaConfig:
    return MovaConfig(video_dit=VIDEO_DIT, audio_dit=AUDIO_DIT, bridge=BRIDGE, audio_vae=AUDIO_VAE,
                      video_vae=video_vae, text_encoder=text_encoder, scheduler=SCHEDULER, boundary_ratio=0.9)


def with_latent_stats(cfg: VideoVAEConfig, mean, std) -> VideoVAEConfig:
    return dataclasses.replace(cfg, latents_mean=tuple(float(m) for m in mean),
                               latents_std=tuple(float(s) for s in std))

"""Video -> audio, audio -> video and extending a clip window by window, on top of the sampler's given
condition (given.py). Sampling itself is a callback, `sample(geometry, y, given) -> (video, audio)`
latents, so the nodes keep their model loading, LoRA and progress, and scripts call the sampler plainly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ...common.errors import InputError
from .conditioning import TEMPORAL_STRIDE, audio_latent_length, audio_num_samples, first_frame_y
from .given import GivenLatents
from .media import FittedVideo, fit_audio, fit_frames, window_frames


@dataclass(frozen=True)
class Geometry:
    width: int
    height: int
    frames: int
    fps: float


def check_codecs(config, video_vae=None, audio_vae=None) -> None:
    """The VAEs must be the model's family: Wan video VAE with its z_dim, DAC audio VAE with its latent width."""
    if video_vae is not None:
        z = getattr(getattr(video_vae, "config", None), "z_dim", None)
        if not hasattr(video_vae, "encode") or z != config.video_vae.z_dim:
            raise InputError(f"the video VAE has {z} latent channels but this MOVA model's video tower takes "
                             f"{config.video_vae.z_dim}: use the Wan 2.1 video VAE of the same MOVA folder.")
    if audio_vae is not None:
        d = getattr(audio_vae, "latent_dim", None)
        if not hasattr(audio_vae, "encode") or d != config.audio_dit.in_dim:
            raise InputError(f"the audio VAE has {d} latent channels but this MOVA model's audio tower takes "
                             f"{config.audio_dit.in_dim}: use the DAC audio VAE of the same MOVA folder.")


def encode_video(video_vae, fitted: FittedVideo) -> torch.Tensor:
    with torch.no_grad():
        return video_vae.encode(fitted.clip).float()


def video_to_audio(config, video_vae, audio_vae, frames: torch.Tensor, fps: float, sample: Callable,
                   width: int = 0, height: int = 0, mode: str = "clean", first_frame: bool = False):
    """(waveform [1, 1, n] trimmed to the input's duration, FittedVideo). The frames are encoded and held
    given while the audio is sampled. first_frame: y from the clip's first frame, else the T2VA white frame."""
    check_codecs(config, video_vae, audio_vae)
    fitted = fit_frames(frames, fps, width, height)
    latent = encode_video(video_vae, fitted)
    geo = Geometry(fitted.width, fitted.height, fitted.frames, fitted.fps)
    image = (fitted.clip[:, :, 0] + 1) / 2 if first_frame else None
    y = first_frame_y(video_vae, geo.width, geo.height, geo.frames, image)
    _, audio = sample(geo, y, GivenLatents(video=latent, mode=mode))
    wave = audio_vae.decode(audio)
    return wave[..., :round(fitted.seconds * audio_vae.sample_rate)].float().cpu(), fitted


def audio_to_video(config, video_vae, audio_vae, audio: dict, width: int, height: int, fps: float,
                   sample: Callable, image: Optional[torch.Tensor] = None, mode: str = "clean"):
    """(pixels [3, F, H, W] in [-1, 1] covering the audio's duration, notes). The audio is mixed to mono,
    resampled to the VAE's rate, encoded and held given while the video is sampled."""
    check_codecs(config, video_vae, audio_vae)
    if not isinstance(audio, dict) or not torch.is_tensor(audio.get("waveform")):
        raise InputError("audio must be ComfyUI AUDIO (Load Audio); got something else.")
    seconds = audio["waveform"].shape[-1] / max(1, int(audio.get("sample_rate", 0)) or 1)
    frames = window_frames(seconds, fps, "audio")
    notes = []
    wave = fit_audio(audio, audio_vae.sample_rate, frames, fps, notes)
    with torch.no_grad():
        latent = audio_vae.encode(wave).float()
    length = audio_latent_length(frames, fps, audio_vae.sample_rate, audio_vae.hop_length)
    latent = latent[..., :length]
    geo = Geometry(width, height, frames, fps)
    y = first_frame_y(video_vae, width, height, frames, image)
    video, _ = sample(geo, y, GivenLatents(audio=latent, mode=mode))
    with torch.no_grad():
        pixels = video_vae.decode(video)[0].float().cpu()
    keep = min(frames, max(1, math.ceil(seconds * fps - 1e-6)))
    return pixels[:, :keep], notes


# ------------------------------------------------------------------------------------------ extending
@dataclass(frozen=True)
class ExtendPlan:
    """How window k+1 overlaps window k: it starts `start` frames after window k did; its first
    `video_given` latent frames are window k's last ones, its first `audio_given` audio latent frames
    window k's from `audio_offset` on; `overlap_frames` pixel frames and `overlap_samples` samples shared."""
    start: int
    video_given: int
    audio_offset: int
    audio_given: int
    overlap_frames: int
    overlap_samples: int
    audio_start_samples: int


def extend_plan(frames: int, fps: float, sample_rate: int, hop: int, overlap: int = 3) -> ExtendPlan:
    """overlap: latent frames of the previous window kept (each = 4 pixel frames)."""
    latent_frames = (frames - 1) // TEMPORAL_STRIDE + 1
    if not 1 <= overlap <= latent_frames - 2:
        raise InputError(f"overlap must be 1 to {latent_frames - 2} latent frames for a {frames}-frame window "
                         f"(each 4 frames), got {overlap}; the new window needs room for new frames.")
    start = TEMPORAL_STRIDE * (latent_frames - 1 - overlap)
    start_samples = audio_num_samples(start, fps, sample_rate)
    offset = round(start_samples / hop)   # exact when start / fps is a multiple of hop / sample_rate
    length = audio_latent_length(frames, fps, sample_rate, hop)
    return ExtendPlan(start=start, video_given=overlap + 1, audio_offset=offset,
                      audio_given=max(1, length - offset - 1), overlap_frames=frames - start,
                      overlap_samples=audio_num_samples(frames, fps, sample_rate) - start_samples,
                      audio_start_samples=start_samples)


def extend_given(plan: ExtendPlan, video: torch.Tensor, audio: torch.Tensor, frames: int, fps: float,
                 sample_rate: int, hop: int) -> GivenLatents:
    """The next window's given prefix from the previous window's latents: latent frame 0 (one pixel frame)
    takes the latent frame that ends on that pixel frame, latent frames 1..overlap are copied."""
    t = video.shape[2]
    first = t - plan.video_given
    prefix_v = video[:, :, first:]                            # [B, 16, overlap + 1, h, w]
    length = audio_latent_length(frames, fps, sample_rate, hop)
    prefix_a = audio[:, :, plan.audio_offset:plan.audio_offset + plan.audio_given]
    pad_v = torch.zeros_like(video[:, :, :t - plan.video_given])
    pad_a = torch.zeros(audio.shape[0], audio.shape[1], length - prefix_a.shape[2], dtype=audio.dtype,
                        device=audio.device)
    return GivenLatents(video=torch.cat([prefix_v, pad_v], 2), audio=torch.cat([prefix_a, pad_a], 2),
                        mode="noised", video_frames=plan.video_given, audio_frames=prefix_a.shape[2])


def join(plan: ExtendPlan, frames_so_far: torch.Tensor, wave_so_far: torch.Tensor, new_frames: torch.Tensor,
         new_wave: torch.Tensor):
    """Appends a window: frames [F, ...] (the previous frames kept through the overlap), waveforms
    [..., N] with a linear crossfade over the overlap's samples."""
    frames = torch.cat([frames_so_far, new_frames[plan.overlap_frames:]])
    o = min(plan.overlap_samples, wave_so_far.shape[-1], new_wave.shape[-1])
    fade = torch.linspace(0.0, 1.0, o, dtype=new_wave.dtype)
    seam = wave_so_far[..., -o:] * (1 - fade) + new_wave[..., :o] * fade
    wave = torch.cat([wave_so_far[..., :-o], seam, new_wave[..., o:]], dim=-1)
    return frames, wave

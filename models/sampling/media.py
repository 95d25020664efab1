"""Given media onto the model's grid: frames (size multiple of 16, 1 + 4k frames, the model's fps) and
audio (mono, the audio VAE's rate, the clip's length). Every adaptation is reported in `notes`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ...common.errors import InputError
from .conditioning import SPATIAL_MULTIPLE, TEMPORAL_STRIDE, audio_num_samples, fit_image

MODEL_FPS = 24.0          # MOVA was trained at 24 fps
MAX_FRAMES = 193          # the released window: 8 s at 24 fps
SILENCE = 1e-4            # peak below this: no sound to follow


@dataclass
class FittedVideo:
    clip: torch.Tensor        # [1, 3, frames, height, width] in [-1, 1]
    width: int
    height: int
    frames: int               # 1 + 4k, the model's frames at `fps`
    fps: float
    seconds: float            # the input's duration (outputs are trimmed to it)
    notes: list = field(default_factory=list)


def grid_size(width: int, height: int) -> tuple:
    """The largest multiples of 16 not above the input's size (at least 16)."""
    return (max(SPATIAL_MULTIPLE, width // SPATIAL_MULTIPLE * SPATIAL_MULTIPLE),
            max(SPATIAL_MULTIPLE, height // SPATIAL_MULTIPLE * SPATIAL_MULTIPLE))


def window_frames(seconds: float, fps: float, what: str, max_frames: int = MAX_FRAMES) -> int:
    """The fewest 1 + 4k frames that cover `seconds`; longer than the window is refused."""
    need = max(1, math.ceil(seconds * fps - 1e-6))
    frames = 1 + TEMPORAL_STRIDE * math.ceil((need - 1) / TEMPORAL_STRIDE)
    if frames > max_frames:
        raise InputError(f"the {what} lasts {seconds:.2f} s = {frames} frames at {fps:g} fps, longer than the "
                         f"model's window of {max_frames} frames ({max_frames / fps:.2f} s). Cut it into windows "
                         "(e.g. core Trim Video / Trim Audio) or make longer clips with MOVA Extend / MOVA Long Clip.")
    return frames


def fit_frames(frames: torch.Tensor, fps: float, width: int = 0, height: int = 0, model_fps: float = MODEL_FPS,
               max_frames: int = MAX_FRAMES) -> FittedVideo:
    """IMAGE frames [F, H, W, 3] in 0..1 at `fps` -> the model's clip. width/height 0: the input's size
    rounded down to multiples of 16. Scale to cover + centre crop; frame rate resampled to model_fps
    (nearest earlier frame); the frame count padded with the last frame to 1 + 4k."""
    if not torch.is_tensor(frames) or frames.ndim != 4 or frames.shape[-1] != 3:
        found = list(frames.shape) if torch.is_tensor(frames) else type(frames).__name__
        raise InputError(f"frames must be an IMAGE batch [frames, height, width, 3], got {found}; connect "
                         "Get Video Components (core) or a video loader's IMAGE output.")
    if not fps > 0:
        raise InputError(f"fps must be positive, got {fps}; use the frame rate of the loaded video.")
    n, h0, w0 = frames.shape[0], frames.shape[1], frames.shape[2]
    if n < 2:
        raise InputError(f"got {n} frame: a video needs at least 2 frames to be given a soundtrack; for a still "
                         "image use MOVA Empty Latent / First Frame and MOVA Sampler.")
    notes = []
    seconds = n / fps
    if width <= 0 or height <= 0:
        width, height = grid_size(w0, h0)
    if width % SPATIAL_MULTIPLE or height % SPATIAL_MULTIPLE:
        raise InputError(f"width and height must be multiples of {SPATIAL_MULTIPLE} (or 0: from the frames), "
                         f"got {width}x{height}.")
    if (width, height) != (w0, h0):
        notes.append(f"resized {w0}x{h0} -> {width}x{height} (scale to cover, centre crop)")
    index = torch.arange(n)
    if abs(fps - model_fps) > 1e-6:
        count = max(2, round(n * model_fps / fps))
        index = torch.clamp((torch.arange(count) * fps / model_fps).floor().long(), max=n - 1)
        notes.append(f"frame rate {fps:g} -> {model_fps:g} fps ({n} -> {count} frames, nearest earlier frame)")
    target = window_frames(seconds, model_fps, "video", max_frames)
    if target > len(index):
        notes.append(f"{len(index)} frames padded to {target} (1 + 4k) with the last frame; the audio is trimmed "
                     f"to the input's {seconds:.3f} s")
        index = torch.cat([index, index[-1:].expand(target - len(index))])
    elif target < len(index):
        notes.append(f"{len(index)} frames trimmed to {target} (1 + 4k)")
        index = index[:target]
    picked = frames[index].movedim(-1, 1)                          # [F, 3, H, W]
    clip = torch.cat([fit_image(picked[i:i + 16], width, height) for i in range(0, target, 16)])
    return FittedVideo(clip.movedim(0, 1)[None], width, height, target, model_fps, seconds, notes)


def fit_audio(audio: dict, sample_rate: int, frames: int, fps: float, notes: list) -> torch.Tensor:
    """ComfyUI AUDIO {"waveform": [B, C, N], "sample_rate"} -> mono [1, 1, n] at `sample_rate`, trimmed or
    padded with silence to the clip's int(sample_rate * frames / fps) samples."""
    if not isinstance(audio, dict) or not torch.is_tensor(audio.get("waveform")) or "sample_rate" not in audio:
        raise InputError("audio must be ComfyUI AUDIO (a dict with 'waveform' [batch, channels, samples] and "
                         "'sample_rate'); connect Load Audio or Get Video Components.")
    wave, rate = audio["waveform"].float(), int(audio["sample_rate"])
    if wave.ndim == 2:
        wave = wave[None]
    if wave.ndim != 3 or wave.shape[-1] == 0:
        raise InputError(f"the audio is empty (waveform shape {list(audio['waveform'].shape)}); load a sound "
                         "with at least one sample.")
    if wave.shape[0] != 1:
        raise InputError(f"the audio holds a batch of {wave.shape[0]} sounds; give one (one clip at a time).")
    if rate <= 0:
        raise InputError(f"the audio's sample rate must be positive, got {rate}.")
    if wave.shape[1] > 1:
        notes.append(f"{wave.shape[1]} channels mixed to mono")
        wave = wave.mean(dim=1, keepdim=True)
    if rate != sample_rate:
        import torchaudio.functional as AF
        notes.append(f"resampled {rate} -> {sample_rate} Hz")
        wave = AF.resample(wave, rate, sample_rate)
    if wave.abs().max() < SILENCE:
        raise InputError(f"the audio is silent (peak {float(wave.abs().max()):.1e}): there is no sound for the "
                         "video to follow. Give a sound, or use MOVA Sampler for text-to-video+audio.")
    n = audio_num_samples(frames, fps, sample_rate)
    if wave.shape[-1] < n:
        notes.append(f"audio padded with {(n - wave.shape[-1]) / sample_rate:.3f} s of silence to {frames} frames")
        wave = torch.nn.functional.pad(wave, (0, n - wave.shape[-1]))
    elif wave.shape[-1] > n:
        wave = wave[..., :n]
    return wave

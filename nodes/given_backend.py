"""Node-side glue for video -> audio, audio -> video and extending (nodes/given.py, nodes/extend.py):
ComfyUI type conversions and the sampling callback the tasks in models/sampling/tasks.py call.
The callback prepares the model exactly as backend.sample does (ComfyUI memory, LoRA stack, checks)."""
from __future__ import annotations

import logging
from dataclasses import replace

import torch

from ..common.errors import InputError
from ..models.sampling import conditioning as cond_mod
from ..models.sampling import tasks
from . import backend
from .types import AVLatent

log = logging.getLogger("mova")


def sample_fn(handle, positive, negative, settings, guidance=None, on_step=None, should_stop=None):
    """tasks' `sample(geometry, y, given) -> (video, audio)` through the loaded model handle."""
    def sample(geo, y, given):
        latent = AVLatent(width=geo.width, height=geo.height, frames=geo.frames, fps=geo.fps, y=y)
        out = sample_given(handle, positive, negative, latent, replace(settings, video_fps=geo.fps), given,
                           guidance, on_step, should_stop)
        return out.video, out.audio
    return sample


def sample_given(handle, positive, negative, latent: AVLatent, settings, given, guidance=None, on_step=None,
                 should_stop=None) -> AVLatent:
    """backend.sample with a given condition (one preparation and one generate for every task)."""
    return backend.sample(handle, positive, negative, latent, settings, guidance=guidance, on_step=on_step,
                          should_stop=should_stop, given=given)


def log_notes(node: str, notes: list) -> None:
    for note in notes:
        log.info("%s: %s", node, note)


def frames_out(pixels: torch.Tensor) -> torch.Tensor:
    """[3, F, H, W] in [-1, 1] -> IMAGE [F, H, W, 3] in 0..1."""
    return ((pixels.movedim(0, -1) + 1) / 2).clamp(0, 1).float().cpu()


def audio_out(wave: torch.Tensor, sample_rate: int) -> dict:
    return {"waveform": wave.reshape(1, 1, -1).float().cpu(), "sample_rate": int(sample_rate)}


def video_to_audio(handle, positive, negative, video_vae, audio_vae, images, fps, settings, mode, width, height,
                   guidance=None, on_step=None, should_stop=None):
    sample = sample_fn(handle, positive, negative, settings, guidance, on_step, should_stop)
    wave, fitted = tasks.video_to_audio(handle.generator.config, video_vae, audio_vae, images, fps, sample,
                                        width, height, mode)
    log_notes("MOVA Video to Audio", fitted.notes)
    return audio_out(wave, audio_vae.sample_rate)


def audio_to_video(handle, positive, negative, video_vae, audio_vae, audio, width, height, fps, settings, mode,
                   image=None, guidance=None, on_step=None, should_stop=None):
    cond_mod.check_geometry(width, height, 5, fps)
    sample = sample_fn(handle, positive, negative, settings, guidance, on_step, should_stop)
    pixels = None if image is None else image[:1].movedim(-1, 1)
    out, notes = tasks.audio_to_video(handle.generator.config, video_vae, audio_vae, audio, width, height, fps,
                                      sample, pixels, mode)
    log_notes("MOVA Audio to Video", notes)
    return frames_out(out)


# ------------------------------------------------------------------------------------------ extending
def _clip_so_far(video_vae, audio_vae, latent: AVLatent):
    """(IMAGE frames, waveform [1, 1, N]) of everything before this window's successor."""
    if "clip_frames" in latent.extra:
        return latent.extra["clip_frames"], latent.extra["clip_wave"]
    return backend.decode_video(video_vae, latent), backend.decode_audio(audio_vae, latent)["waveform"]


def extend(handle, positive, negative, video_vae, audio_vae, latent: AVLatent, settings, overlap: int,
           last_frame_image: bool = False, guidance=None, on_step=None, should_stop=None) -> AVLatent:
    """The next window of a sampled clip: its first latent frames and audio latents given from `latent`,
    joined to the clip so far (audio crossfaded over the overlap)."""
    if latent.video is None or latent.audio is None:
        raise InputError("MOVA Extend needs a sampled MOVA_LATENT (from MOVA Sampler or another MOVA Extend), "
                         "not an empty latent.")
    tasks.check_codecs(handle.generator.config, video_vae, audio_vae)
    if latent.video.shape[0] != 1:
        raise InputError(f"MOVA Extend continues one clip; this latent holds a batch of {latent.video.shape[0]}.")
    sr, hop = audio_vae.sample_rate, audio_vae.hop_length
    plan = tasks.extend_plan(latent.frames, latent.fps, sr, hop, overlap)
    frames, wave = _clip_so_far(video_vae, audio_vae, latent)
    given = tasks.extend_given(plan, latent.video, latent.audio, latent.frames, latent.fps, sr, hop)
    y = latent.y
    if last_frame_image:   # image-to-video from the frame the new window starts on
        start = frames[len(frames) - plan.overlap_frames]
        y = cond_mod.first_frame_y(video_vae, latent.width, latent.height, latent.frames, start.movedim(-1, 0)[None])
    elif latent.has_image:   # the first window's own image does not start this one: the T2VA frame
        y = cond_mod.first_frame_y(video_vae, latent.width, latent.height, latent.frames)
    window = sample_given(handle, positive, negative, replace(latent, y=y, has_image=last_frame_image, extra={}),
                          settings, given, guidance, on_step, should_stop)
    new_frames = backend.decode_video(video_vae, window)
    new_wave = backend.decode_audio(audio_vae, window)["waveform"]
    frames, wave = tasks.join(plan, frames, wave, new_frames, new_wave)
    log.info("MOVA Extend: window of %d frames, %d kept from the previous one; clip now %d frames (%.2f s)",
             latent.frames, plan.overlap_frames, len(frames), len(frames) / latent.fps)
    return replace(window, extra={"clip_frames": frames, "clip_wave": wave})


def clip_outputs(audio_vae, latent: AVLatent, video_vae=None):
    """(IMAGE, AUDIO) of the whole clip a latent ends (decoded when it is a single window)."""
    frames, wave = _clip_so_far(video_vae, audio_vae, latent)
    return frames, audio_out(wave, audio_vae.sample_rate)

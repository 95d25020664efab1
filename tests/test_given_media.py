"""Given media onto the model's grid (models/sampling/media.py) and the extend plan / join (tasks.py)."""
import math

import pytest
import torch

from mova_pack.common.errors import InputError
from mova_pack.models.config import PRESETS
from mova_pack.models.sampling import media, tasks
from mova_pack.models.sampling.conditioning import audio_latent_length


def _frames(n, h=70, w=100):
    x = torch.linspace(0, 1, n)[:, None, None, None]
    return x.expand(n, h, w, 3).clone()


def test_fit_frames_resizes_resamples_and_pads_and_says_so():
    fitted = media.fit_frames(_frames(45), fps=30.0)      # 1.5 s at 30 fps, 100x70
    assert (fitted.width, fitted.height, fitted.fps) == (96, 64, 24.0)
    assert fitted.frames == 37 and fitted.clip.shape == (1, 3, 37, 64, 96)   # 36 frames at 24 fps -> 1 + 4k
    assert fitted.seconds == pytest.approx(1.5)
    text = " | ".join(fitted.notes)
    assert "100x70 -> 96x64" in text and "30 -> 24 fps" in text and "padded to 37" in text
    assert fitted.clip.min() >= -1 and fitted.clip.max() <= 1
    # frame 0 of the input is black, the last white; the padded tail repeats the last kept frame
    assert torch.equal(fitted.clip[0, :, -1], fitted.clip[0, :, -2])


def test_fit_frames_on_grid_keeps_the_pixels():
    frames = torch.rand(49, 64, 64, 3)
    fitted = media.fit_frames(frames, fps=24.0)
    assert fitted.notes == [] and fitted.frames == 49
    assert torch.allclose(fitted.clip[0].movedim(0, -1), frames * 2 - 1, atol=1e-6)


@pytest.mark.parametrize("frames, fps, words", [
    (_frames(1), 24.0, ["at least 2 frames", "First Frame"]),
    (_frames(24 * 9), 24.0, ["9.00 s", "193", "MOVA Extend"]),
    (torch.zeros(10, 64, 64), 24.0, ["IMAGE", "[10, 64, 64]"]),
    (_frames(10), 0.0, ["fps must be positive"]),
])
def test_fit_frames_refuses_bad_input(frames, fps, words):
    with pytest.raises(InputError) as err:
        media.fit_frames(frames, fps)
    for word in words:
        assert word in str(err.value)


def test_fit_audio_mixes_stereo_44k_to_mono_48k_and_pads():
    t = torch.arange(44100) / 44100
    wave = torch.stack([torch.sin(2 * math.pi * 440 * t), torch.zeros_like(t)])[None]   # [1, 2, 44100]
    notes = []
    out = media.fit_audio({"waveform": wave, "sample_rate": 44100}, 48000, frames=25, fps=24.0, notes=notes)
    assert out.shape == (1, 1, int(48000 * 25 / 24))
    assert "2 channels mixed to mono" in notes and "resampled 44100 -> 48000 Hz" in notes
    assert any("padded" in n for n in notes)
    assert float(out[..., :48000].abs().max()) == pytest.approx(0.5, abs=0.02)   # the mean of the channels
    assert float(out[..., 48100:].abs().max()) == 0.0


@pytest.mark.parametrize("audio, words", [
    ({"waveform": torch.zeros(1, 1, 0), "sample_rate": 48000}, ["empty"]),
    ({"waveform": torch.zeros(1, 1, 48000), "sample_rate": 48000}, ["silent"]),
    ({"waveform": torch.ones(2, 1, 48000) * 0.1, "sample_rate": 48000}, ["batch of 2"]),
    ({"samples": torch.ones(1, 1, 10)}, ["ComfyUI AUDIO"]),
])
def test_fit_audio_refuses_bad_input(audio, words):
    with pytest.raises(InputError) as err:
        media.fit_audio(audio, 48000, 25, 24.0, [])
    for word in words:
        assert word in str(err.value)


def test_window_frames_cover_the_duration():
    assert media.window_frames(49 / 24, 24.0, "audio") == 49
    assert media.window_frames(1.0, 24.0, "audio") == 25
    assert media.window_frames(8.0, 24.0, "audio") == 193


def test_extend_plan_aligns_video_and_audio_latents():
    plan = tasks.extend_plan(49, 24.0, 48000, 960, overlap=3)
    assert (plan.start, plan.video_given, plan.overlap_frames) == (36, 4, 13)
    assert plan.audio_start_samples == 72000 and plan.audio_offset == 75       # 1.5 s = 75 latents exactly
    assert plan.overlap_samples == int(48000 * 49 / 24) - 72000
    assert plan.audio_given == audio_latent_length(49, 24.0) - 75 - 1
    with pytest.raises(InputError, match="overlap must be 1 to 11"):
        tasks.extend_plan(49, 24.0, 48000, 960, overlap=12)


def test_extend_given_copies_the_previous_windows_tail():
    plan = tasks.extend_plan(49, 24.0, 48000, 960, overlap=3)
    video = torch.arange(13.0)[None, None, :, None, None].expand(1, 16, 13, 8, 8).clone()
    audio = torch.arange(103.0)[None, None].expand(1, 16, 103).clone()
    given = tasks.extend_given(plan, video, audio, 49, 24.0, 48000, 960)
    assert given.mode == "noised" and given.video_frames == 4
    assert given.video[0, 0, :4, 0, 0].tolist() == [9.0, 10.0, 11.0, 12.0]
    assert given.audio_frames == plan.audio_given and given.audio[0, 0, 0] == 75.0
    assert given.audio.shape == audio.shape and given.video.shape == video.shape


def test_join_keeps_the_previous_frames_and_crossfades_the_audio():
    plan = tasks.extend_plan(49, 24.0, 48000, 960, overlap=3)
    n = int(48000 * 49 / 24)
    prev_f, new_f = torch.zeros(49, 4, 4, 3), torch.ones(49, 4, 4, 3)
    prev_a, new_a = torch.full((1, 1, n), 0.2), torch.full((1, 1, n), 0.6)
    frames, wave = tasks.join(plan, prev_f, prev_a, new_f, new_a)
    assert frames.shape[0] == 49 + 36 and frames[:49].eq(0).all() and frames[49:].eq(1).all()
    assert wave.shape[-1] == n + 72000
    seam = wave[0, 0, n - plan.overlap_samples:n]
    assert seam[0] == pytest.approx(0.2) and seam[-1] == pytest.approx(0.6)
    assert (seam[1:] - seam[:-1]).min() >= 0                      # a monotone fade, no jump
    assert wave[0, 0, :n - plan.overlap_samples].eq(0.2).all() and wave[0, 0, n:].eq(0.6).all()


def test_codecs_of_another_family_are_refused():
    cfg = PRESETS["mova-360p"]

    class VAE:
        def encode(self, x):
            return x

    wrong_video = VAE()
    wrong_video.config = type("C", (), {"z_dim": 48})()      # Wan 2.2's VAE
    with pytest.raises(InputError, match="48 latent channels.*16"):
        tasks.check_codecs(cfg, video_vae=wrong_video)
    wrong_audio = VAE()
    wrong_audio.latent_dim = 64
    with pytest.raises(InputError, match="64 latent channels.*128"):
        tasks.check_codecs(cfg, audio_vae=wrong_audio)

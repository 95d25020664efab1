"""Sampling previews (models/sampling/preview.py): projection facts, shapes, and what the pictures show."""
import numpy as np
import pytest
import torch

from mova_pack.models.sampling import preview
from mova_pack.common.errors import InputError


def test_projection_matches_comfyui_style_linear_map():
    torch.manual_seed(0)
    lat = torch.randn(1, 16, 3, 5, 7)
    frames = preview.video_latent_to_frames(lat)
    assert frames.shape == (3, 5, 7, 3) and frames.dtype == np.uint8
    # Independent computation the way ComfyUI's Latent2RGBPreviewer does it (F.linear on channels-last).
    w = torch.tensor(preview.WAN21_LATENT_RGB_FACTORS).T
    b = torch.tensor(preview.WAN21_LATENT_RGB_BIAS)
    ref = torch.nn.functional.linear(lat[0].movedim(0, -1), w, b)
    ref = (((ref + 1) / 2).clamp(0, 1) * 255).numpy()
    assert np.abs(frames.astype(np.float32) - ref).max() <= 1.0


def test_one_channel_gives_its_colour():
    lat = np.zeros((16, 1, 2, 2), np.float32)
    lat[14] = 1.0                              # channel 14 is strongly warm-grey in Wan 2.1
    rgb = preview.video_latent_to_frames(lat)[0, 0, 0].astype(int)
    expected = (preview.WAN21_LATENT_RGB_FACTORS[14] + preview.WAN21_LATENT_RGB_BIAS + 1) / 2 * 255
    assert np.abs(rgb - expected).max() <= 1
    zero = preview.video_latent_to_frames(np.zeros((16, 1, 2, 2), np.float32))[0, 0, 0].astype(int)
    assert not np.array_equal(rgb, zero)


def test_max_frames_keeps_first_and_last():
    lat = np.zeros((16, 9, 2, 2), np.float32)
    lat[6, 8] = -3.0                           # only the last latent frame differs
    frames = preview.video_latent_to_frames(lat, max_frames=3)
    assert frames.shape[0] == 3
    assert np.array_equal(frames[0], frames[1]) and not np.array_equal(frames[1], frames[2])


@pytest.mark.parametrize("shape", [(36, 2, 4, 4), (128, 50), (16, 4, 4)])
def test_wrong_latent_shapes_are_refused(shape):
    with pytest.raises(InputError, match="expected a latent"):
        preview.video_latent_to_frames(np.zeros(shape, np.float32))


def test_waveform_envelope_follows_amplitude():
    t = np.arange(48000) / 48000
    sine = 0.5 * np.sin(2 * np.pi * 220 * t)
    img = np.asarray(preview.waveform_image(sine[None, None], width=100, height=65))
    lit = img[:, :, 1] > 150                   # trace pixels are bright green
    rows = np.where(lit.any(axis=1))[0]
    assert rows.min() == pytest.approx(16, abs=1) and rows.max() == pytest.approx(48, abs=1)
    silent = np.asarray(preview.waveform_image(np.zeros(1000), width=100, height=65))
    assert (silent[:, :, 1] > 150).sum(axis=0).max() == 1   # a single line at the centre


def test_audio_latent_image_shows_where_activity_is():
    lat = np.zeros((128, 100), np.float32)
    lat[:, 50:] = np.random.default_rng(0).normal(size=(128, 50)) * np.linspace(0, 1, 50)
    img = np.asarray(preview.audio_latent_image(lat, height=32, width=100))
    assert img.shape == (32, 100, 3)
    assert img[:, :50].mean() < 5 < img[:, 75:].mean()


def test_sampling_preview_stacks_video_over_audio():
    img = preview.sampling_preview(torch.randn(1, 16, 5, 6, 8), torch.randn(1, 128, 40), max_frames=4,
                                   audio_height=10)
    strip_w = 4 * 8 + 3 * 2
    assert img.size == (strip_w, 6 + 2 + 10) and img.mode == "RGB"
    assert preview.sampling_preview(audio_latent=np.ones((128, 20))).size == (20, 48)
    with pytest.raises(InputError):
        preview.sampling_preview()

"""Latent shapes, the audio length rule and the first-frame `y` (mask layout of the official pipeline)."""
import pytest
import torch

import conftest  # noqa: F401
from mova_pack.models.sampling.conditioning import (audio_latent_length, build_y, check_y, first_frame_mask, first_frame_y,
                                           fit_image, latent_geometry, latent_shapes, white_frame)
from mova_pack.models.config import PRESETS
from mova_pack.common.errors import InputError


def test_released_defaults():
    s = latent_geometry(640, 352, 193, 24.0)
    assert s.video == (1, 16, 49, 44, 80) and s.audio == (1, 128, 403) and s.audio_samples == 386000
    assert latent_geometry(1280, 720, 97, 24.0).video == (1, 16, 25, 90, 160)
    assert latent_shapes(PRESETS["mova-720p"], 1280, 720, 97, 24.0) == ((1, 16, 25, 90, 160), (1, 128, 203))
    assert audio_latent_length(97, 24.0) == (int(48000 * 97 / 24) - 1) // 960 + 1 == 203
    assert audio_latent_length(81, 16.0) == 254


@pytest.mark.parametrize("w, h, f, words", [(650, 352, 193, "multiples of 16.*656x352"),
                                            (640, 352, 192, "4k\\+1.*193"), (0, 352, 5, "positive")])
def test_bad_sizes_say_what_to_do(w, h, f, words):
    with pytest.raises(InputError, match=words):
        latent_geometry(w, h, f)


def _official_mask(num_frames, h, w, last=False):
    msk = torch.ones(1, 1, num_frames, h, w)
    msk[:, :, 1:num_frames - 1 if last else num_frames] = 0
    first = torch.repeat_interleave(msk[:, :, 0:1], dim=2, repeats=4)
    msk = torch.concat([first, msk[:, :, 1:]], dim=2)
    return msk.view(1, -1, 4, h, w).transpose(1, 2)


@pytest.mark.parametrize("frames, last", [(9, False), (17, True), (1, False)])
def test_mask_matches_official_layout(frames, last):
    t = (frames - 1) // 4 + 1
    assert torch.equal(first_frame_mask(1, t, 3, 5, last_frame=last), _official_mask(frames, 3, 5, last))


def test_build_y_and_check():
    lat = torch.randn(1, 16, 3, 4, 6)
    y = build_y(lat)
    assert y.shape == (1, 20, 3, 4, 6) and torch.equal(y[:, 4:], lat)
    assert y[:, :4, 0].eq(1).all() and y[:, :4, 1:].eq(0).all()
    check_y(y, (1, 16, 3, 4, 6))
    with pytest.raises(InputError, match="same width/height/frames"):
        check_y(y, (1, 16, 5, 4, 6))
    with pytest.raises(InputError, match="16, T, h, w"):
        build_y(torch.randn(16, 3, 4, 6))
    assert white_frame(32, 16).eq(1).all() and white_frame(32, 16).shape == (1, 3, 16, 32)


def test_fit_image_covers_and_crops():
    img = torch.zeros(1, 3, 100, 300)
    img[..., 100:200] = 1.0  # a white vertical band in the middle third
    out = fit_image(img, 64, 32)
    assert out.shape == (1, 3, 32, 64) and out.min() >= -1 and out.max() <= 1
    assert out[..., 32].mean() > 0.9 and out[..., 0].mean() < -0.9
    with pytest.raises(InputError, match="RGB"):
        fit_image(torch.zeros(1, 4, 8, 8), 16, 16)


def test_first_frame_y_encodes_full_clip():
    """With the real video VAE class (random weights): y = mask + encode([image, zeros...])."""
    from mova_pack.models.codecs import video_vae as vae_mod
    from mova_pack.models.config import VideoVAEConfig
    torch.manual_seed(0)
    vae = vae_mod.WanVideoVAE(VideoVAEConfig(base_dim=8)).eval()
    y = first_frame_y(vae, 32, 16, 5)
    assert y.shape == (1, 20, 2, 2, 4)
    clip = torch.zeros(1, 3, 5, 16, 32)
    clip[:, :, 0] = 1.0
    assert torch.allclose(y[:, 4:], vae.encode(clip), atol=1e-6)
    assert y[:, :4, 0].eq(1).all() and y[:, :4, 1].eq(0).all()

"""Latent shapes, the audio length rule and the first-frame `y` (mask layout of the official pipeline)."""
import pytest
import torch

import conftest  # noqa: F401
from mova_pack.models.conditioning import (audio_latent_length, build_y, check_y, first_frame_mask,
                                           latent_shapes, white_frame)
from mova_pack.models.errors import InputError


def test_released_defaults():
    s = latent_shapes(640, 352, 193, 24.0)
    assert s.video == (1, 16, 49, 44, 80) and s.audio == (1, 128, 403) and s.audio_samples == 386000
    assert latent_shapes(1280, 720, 97, 24.0).video == (1, 16, 25, 90, 160)
    assert audio_latent_length(97, 24.0) == (int(48000 * 97 / 24) - 1) // 960 + 1 == 203
    assert audio_latent_length(81, 16.0) == 254


@pytest.mark.parametrize("w, h, f, words", [(650, 352, 193, "multiples of 16.*656x352"),
                                            (640, 352, 192, "4k\\+1.*193"), (0, 352, 5, "positive")])
def test_bad_sizes_say_what_to_do(w, h, f, words):
    with pytest.raises(InputError, match=words):
        latent_shapes(w, h, f)


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

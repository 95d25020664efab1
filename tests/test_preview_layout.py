"""The sampler's preview as the node shows it (issue 25): frames large in a grid, the audio a strip."""
import numpy as np
import torch

from mova_pack.models.sampling import preview


def test_frames_grid_scaled_up_over_a_thin_audio_band():
    latent = torch.randn(1, 16, 13, 8, 8)            # the toy's 64x64 clip: 8x8 latent frames
    img = preview.sampling_preview(latent, torch.randn(1, 128, 100), max_frames=4, columns=2,
                                   frame_height=128, audio_height=24)
    assert img.size == (2 * 128 + 2, 2 * 128 + 2 + 2 + 24)
    pixels = np.asarray(img)
    # Whole-factor upscaling keeps each latent pixel a sharp 16x16 block.
    block = pixels[:16, :16].reshape(-1, 3)
    assert (block == block[0]).all()
    # The first frame's top-left equals the unscaled projection of that latent pixel.
    small = preview.video_latent_to_frames(latent, max_frames=4)
    assert np.abs(pixels[0, 0].astype(int) - small[0, 0, 0].astype(int)).max() <= 1


def test_frames_strip_wraps_after_columns():
    frames = np.zeros((3, 4, 5, 3), np.uint8)
    assert preview.frames_strip(frames, gap=1, columns=2).size == (2 * 5 + 1, 2 * 4 + 1)
    assert preview.frames_strip(frames, gap=1).size == (3 * 5 + 2, 4)

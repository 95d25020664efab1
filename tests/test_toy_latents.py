"""The designed latent spaces of the toy codecs (toy/train/latents.py)."""
import numpy as np
import pytest

from mova_pack.toy import scenes
from mova_pack.toy.captions import SOUNDS
from mova_pack.toy.train import latents as L


@pytest.fixture(scope="module")
def clip():
    return scenes.render(scenes.scene_for_seed(123, "green", "square", "metal"))


def _frames(z):
    """Channels 0-3 as one field per pixel frame (the first latent frame holds frame 0 four times)."""
    return [z[0, 0]] + [z[k, t] for t in range(1, z.shape[1]) for k in range(4)]


def test_video_latent_layout(clip):
    z = L.clip_video_latent(clip)
    assert z.shape == (16, 13, 8, 8) and z.dtype == np.float32
    assert all(np.array_equal(z[k, 0], z[0, 0]) for k in range(4))
    np.testing.assert_allclose(z[4:7], (np.asarray(scenes.RGB["green"]) * 2 - 1)[:, None, None, None]
                               * np.ones((1, 13, 8, 8)), rtol=1e-6)
    assert np.array_equal(z[10:14, 3, 2, 5], np.eye(4)[SOUNDS.index("metal")])
    np.testing.assert_allclose(z[15], -clip.scene.size / 5.0, rtol=1e-6)      # square: negative
    ball = scenes.render(scenes.scene_for_seed(123, "green", "ball", "metal"))
    assert (L.clip_video_latent(ball)[15] > 0).all()


def test_position_bumps_pin_the_object_below_the_cell(clip):
    """The bumps peak at the object's cell and give its centre to well under a pixel (what the decoder
    and the towers read); the object in a frame is one bump, so a track cannot jump."""
    times = np.arange(scenes.FRAMES) / scenes.FPS
    centres = L.object_centres(clip.scene, times)
    fields = _frames(L.clip_video_latent(clip))
    checked = 0
    for (x, y), f in zip(centres, fields):
        j, i = np.unravel_index(np.argmax(f), f.shape)
        assert (i, j) == (min(int(x // L.CELL), 7), min(int(y // L.CELL), 7)) or f.max() < 0.8
        if 1 <= i <= 6:     # x from the log-ratio of the two side cells (a Gaussian is log-quadratic)
            est = (i + 0.5) * L.CELL + L.BUMP_PX ** 2 * (np.log(f[j, i + 1]) - np.log(f[j, i - 1])) / (2 * L.CELL)
            assert abs(est - x) < 1e-3
            checked += 1
    assert checked > 30
    assert np.abs(np.diff(centres, axis=0)).max() < L.CELL       # consecutive frames overlap


def test_object_centres_match_the_rendered_object(clip):
    times = np.arange(scenes.FRAMES) / scenes.FPS
    centres = L.object_centres(clip.scene, times)
    masks = L.object_masks(clip.scene, times)
    ys, xs = np.mgrid[0:scenes.HEIGHT, 0:scenes.WIDTH] + 0.5
    w = masks.sum(axis=(1, 2))
    np.testing.assert_allclose((masks * xs).sum(axis=(1, 2)) / w, centres[:, 0], atol=0.05)
    np.testing.assert_allclose((masks * ys).sum(axis=(1, 2)) / w, centres[:, 1], atol=0.05)


def test_video_latent_needs_whole_chunks(clip):
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        L.video_latent(np.zeros((6, 2)), L.clip_background(clip), clip.scene)


def test_audio_latent_marks_each_impact(clip):
    z = L.clip_audio_latent(clip)
    assert z.shape == (16, -(-len(clip.audio) // L.HOP))
    onsets = set(np.nonzero(z[0])[0])
    assert onsets == {int(t * clip.sample_rate / L.HOP) for t in clip.impacts_s}
    assert (z[2 + SOUNDS.index("metal")] > 0).any() and not z[[2 + k for k in range(4) if SOUNDS[k] != "metal"]].any()

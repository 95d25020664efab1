"""The toy video decoder's training batches: frames around impacts weigh more from SHARP_FROM on, and
crops then also centre on where the object hits something."""
import numpy as np
import pytest

from mova_pack.toy.train import configs, vae


def test_impact_closeness_peaks_at_impacts_and_fades_within_a_few_frames():
    c = vae.impact_closeness([0.5, 1.25], frames=49, fps=24.0)      # impacts at frames 12 and 30
    assert c.shape == (49,) and c.dtype == np.float32
    assert c[12] == pytest.approx(1.0) and c[30] == pytest.approx(1.0)
    assert 0.7 < c[11] < 0.9 and 0.7 < c[13] < 0.9                   # one frame away
    assert c[20] < 1e-4 and c[0] < 1e-4 and c[48] < 1e-4            # far from both
    assert not vae.impact_closeness([], frames=49, fps=24.0).any()


@pytest.fixture(scope="module")
def pool():
    return vae.video_pool(configs.SEED, 3)


def test_impact_weighting_scales_whole_frames_near_impacts(pool):
    plain = vae._video_batch(pool, np.random.default_rng(5), 6, window=25, solid_weight=48.0)
    sharp = vae._video_batch(pool, np.random.default_rng(5), 6, window=25, solid_weight=48.0,
                             impact_weight=vae.IMPACT_WEIGHT)
    x0, z0, w0 = plain
    x1, z1, w1 = sharp
    assert x1.shape == x0.shape == (6, 3, 25, 32, 32) and z1.shape == z0.shape == (6, 16, 7, 4, 4)
    ratio = w1 / vae._video_batch(pool, np.random.default_rng(5), 6, window=25, solid_weight=48.0,
                                  impact_weight=1e-9)[2]   # same crops (an impact crop needs a weight), no weighting
    per_frame = ratio.amax(dim=(1, 3, 4))                  # [B, F]
    assert (ratio.amin(dim=(1, 3, 4)) == per_frame).all()  # one factor per frame, not per pixel
    assert per_frame.min() >= 1.0 and 1.0 + 0.9 * vae.IMPACT_WEIGHT < per_frame.max() <= 1.0 + vae.IMPACT_WEIGHT
    # (an impact lies at most half a frame from a frame: its closeness is at least 0.95)
    assert (per_frame < 1.01).any()                        # frames away from impacts keep their weight


def test_impact_crops_show_the_object_at_its_impact(pool):
    rng_seeds = range(40)
    hits = 0
    for seed in rng_seeds:
        x, _, w = vae._video_batch(pool, np.random.default_rng(seed), 1, window=25, solid_weight=48.0,
                                   impact_weight=vae.IMPACT_WEIGHT)
        f = int(w[0].amax(dim=(0, 2, 3)).argmax())           # the most weighted frame = the impact frame
        hits += bool((w[0, 0, f] > 40).any())                 # the object's solid pixels are in the crop there
    assert hits >= 30


def test_the_pool_widens_at_the_sharp_phase_and_never_shrinks():
    assert vae.pool_clips(vae.SHARP_FROM - 1, 48) == 48
    assert vae.pool_clips(vae.SHARP_FROM, 48) == vae.SHARP_POOL == 512
    assert vae.pool_clips(vae.SHARP_FROM + 100, 600) == 600     # resumed or not, a larger pool stays

"""Detectors read toy clips back: impact times (video), onsets (audio), AV offsets, colour, sound class.

Checked on exact clips against the physics ground truth, on degraded clips (noise + blur, as generated
output will be), and on deliberately shifted audio so the sync metric is shown to fail when it should.
"""
import numpy as np
import pytest

from mova_pack.common.errors import InputError
from mova_pack.toy import detectors as D
from mova_pack.toy.captions import COLOURS, SHAPES, SOUNDS
from mova_pack.toy.scenes import render, scene_for_seed

FRAME_MS = 1000 / 24


def _clip(i):
    # Round-robin attributes so 32 seeds cover every colour x sound once per shape.
    return render(scene_for_seed(500 + i, COLOURS[i % 4], SHAPES[(i // 16) % 2], SOUNDS[(i // 4) % 4]))


@pytest.fixture(scope="module")
def clips():
    return [_clip(i) for i in range(32)]


def _blur(video, sigma):
    r = int(3 * sigma) + 1
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(video, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
    p = sum(k[i] * p[:, i:i + video.shape[1]] for i in range(2 * r + 1))
    return sum(k[i] * p[:, :, i:i + video.shape[2]] for i in range(2 * r + 1))


def _degrade(clip, seed, video_noise=0.1, blur=1.5, audio_noise=0.01):
    rng = np.random.default_rng(seed)
    v = np.clip(_blur(clip.video, blur) + video_noise * rng.standard_normal(clip.video.shape), 0, 1)
    a = clip.audio + audio_noise * rng.standard_normal(clip.audio.shape)
    return v.astype(np.float32), a.astype(np.float32)


def _score(clips, videos, audios):
    """(share of impacts found in video within one frame, share found in audio within 10 ms,
    false video detections, false audio detections)."""
    total = sum(len(c.impacts_s) for c in clips)
    v_ok = a_ok = v_false = a_false = 0
    for clip, v, a in zip(clips, videos, audios):
        rv = D.sync_offsets(clip.impacts_s, D.detect_video_impacts(v), max_offset_s=0.1)
        ra = D.sync_offsets(clip.impacts_s, D.detect_audio_onsets(a), max_offset_s=0.1)
        v_ok += sum(abs(o) <= FRAME_MS for o in rv.offsets_ms)
        a_ok += sum(abs(o) <= 10.0 for o in ra.offsets_ms)
        v_false += len(rv.unmatched_audio)
        a_false += len(ra.unmatched_audio)
    return v_ok / total, a_ok / total, v_false / total, a_false / total


def test_video_and_audio_times_match_ground_truth(clips):
    v_rate, a_rate, v_false, a_false = _score(clips, [c.video for c in clips], [c.audio for c in clips])
    assert v_rate >= 0.95 and a_rate >= 0.97     # measured: 1.0 and 1.0 on 200 seeds
    assert v_false <= 0.05 and a_false <= 0.05
    # Sub-frame precision, not just "the right frame".
    errs = []
    for c in clips:
        errs += D.sync_offsets(c.impacts_s, D.detect_video_impacts(c.video), 0.1).offsets_ms
    assert np.median(np.abs(errs)) < 5.0


def test_detectors_survive_noise_and_blur(clips):
    pairs = [_degrade(c, i) for i, c in enumerate(clips)]
    v_rate, a_rate, v_false, a_false = _score(clips, [p[0] for p in pairs], [p[1] for p in pairs])
    assert v_rate >= 0.9 and a_rate >= 0.9
    assert v_false <= 0.1 and a_false <= 0.1
    colour = np.mean([D.classify_colour(v) == c.scene.colour for (v, _), c in zip(pairs, clips)])
    sound = np.mean([D.classify_sound(a) == c.scene.sound for (_, a), c in zip(pairs, clips)])
    assert colour >= 0.9 and sound >= 0.9


def test_colour_and_sound_classifiers(clips):
    colour = np.mean([D.classify_colour(c.video) == c.scene.colour for c in clips])
    sound = np.mean([D.classify_sound(c.audio) == c.scene.sound for c in clips])
    assert colour >= 0.95 and sound >= 0.95


def test_sync_metric_sees_a_200ms_shift(clips):
    shift = int(0.2 * 48000)
    offsets, lags, in_sync = [], [], []
    for c in clips[:16]:
        video_t = D.detect_video_impacts(c.video)
        late = np.concatenate([np.zeros(shift, np.float32), c.audio[:-shift]])
        r = D.sync_offsets(video_t, D.detect_audio_onsets(late))
        offsets += r.offsets_ms
        lags.append(r.best_lag_ms)
        in_sync.append(D.sync_offsets(video_t, D.detect_audio_onsets(c.audio)).median_abs_offset_ms)
    assert abs(np.median(offsets) - 200) < 15
    assert abs(np.median(np.abs(offsets)) - 200) < 15
    assert abs(np.median(lags) - 200) < 10
    assert np.median(in_sync) < 10


def test_sync_offsets_matching_rules():
    r = D.sync_offsets([0.5, 1.0, 1.5], [0.52, 1.03, 1.9, 0.1])
    assert r.pairs == [(0.5, 0.52), (1.0, 1.03)]
    assert r.unmatched_video == [1.5] and r.unmatched_audio == [0.1, 1.9]
    assert r.offsets_ms == pytest.approx([20.0, 30.0])
    assert r.median_abs_offset_ms == pytest.approx(25.0)
    assert r.fraction_within(25.0) == pytest.approx(1 / 3)
    # Order is kept: a late onset pairs with its own impact, not with the next one that happens to be nearer.
    r = D.sync_offsets([0.30, 0.45], [0.50, 0.65])
    assert r.offsets_ms == pytest.approx([200.0, 200.0])
    empty = D.sync_offsets([], [0.2])
    assert empty.pairs == [] and np.isnan(empty.median_abs_offset_ms) and np.isnan(empty.best_lag_ms)


def test_no_events_in_static_video_and_noise_only_audio(clips):
    still = np.repeat(clips[0].video[:1], 49, axis=0)
    assert D.detect_video_impacts(still) == []
    noise = 0.01 * np.random.default_rng(0).standard_normal(98000).astype(np.float32)
    assert D.detect_audio_onsets(noise) == []
    assert D.detect_audio_onsets(np.zeros(98000, np.float32)) == []


def test_accepts_torch_and_comfy_layouts_and_rejects_bad_shapes(clips):
    import torch
    c = clips[1]
    assert D.detect_video_impacts(torch.from_numpy(c.video)) == D.detect_video_impacts(c.video)
    assert D.detect_video_impacts((c.video * 255).round().astype(np.uint8)) == pytest.approx(
        D.detect_video_impacts(c.video), abs=0.005)
    comfy_audio = torch.from_numpy(c.audio)[None, None].repeat(1, 2, 1)   # ComfyUI AUDIO [B, C, N]
    assert D.detect_audio_onsets(comfy_audio) == pytest.approx(D.detect_audio_onsets(c.audio), abs=1e-4)
    with pytest.raises(InputError, match="channels-last"):
        D.detect_video_impacts(c.video.transpose(0, 3, 1, 2))
    with pytest.raises(InputError, match="mono audio"):
        D.detect_audio_onsets(np.zeros((2, 2, 2, 100)))


def test_evaluate_clip_reports_everything_and_tolerates_empty_output(clips):
    c = clips[2]
    rep = D.evaluate_clip(c.video, c.audio)
    assert (rep.colour, rep.sound) == (c.scene.colour, c.scene.sound)
    assert rep.sync.median_abs_offset_ms < 10 and not rep.sync.unmatched_video
    big = c.video.repeat(4, axis=1).repeat(4, axis=2)          # detectors do not assume 64x64
    assert D.detect_video_impacts(big) == pytest.approx(c.impacts_s, abs=FRAME_MS / 1000)
    blank = D.evaluate_clip(np.full((49, 64, 64, 3), 0.5, np.float32), np.zeros(98000, np.float32))
    assert blank.video_impacts_s == [] and blank.audio_onsets_s == []
    assert blank.colour is None and blank.sound is None and np.isnan(blank.sync.median_abs_offset_ms)

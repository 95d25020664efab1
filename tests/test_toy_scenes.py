"""The toy clip generator: shapes, determinism, physics-true impact times, sound at impacts, captions."""
import numpy as np
import pytest

from mova_pack.toy import captions, scenes
from mova_pack.toy.captions import COLOURS, EVAL_PROMPTS, SHAPES, SOUNDS, VOCAB
from mova_pack.toy.scenes import render, sample_scene, scene_for_seed, simulate

SEEDS = range(30)


@pytest.fixture(scope="module")
def clips():
    return [render(scene_for_seed(s)) for s in SEEDS]


def test_clip_format(clips):
    for clip in clips:
        assert clip.video.shape == (49, 64, 64, 3) and clip.video.dtype == np.float32
        assert clip.audio.shape == (int(48000 * 49 / 24),) and clip.audio.dtype == np.float32
        assert 0.0 <= clip.video.min() and clip.video.max() <= 1.0
        assert np.abs(clip.audio).max() <= 1.0
        assert clip.fps == 24.0 and clip.sample_rate == 48000
        assert clip.caption == clip.scene.caption
        assert len(clip.impact_kinds) == len(clip.impacts_s)


def test_same_seed_same_clip_other_seed_other_clip():
    a, b, c = render(scene_for_seed(7)), render(scene_for_seed(7)), render(scene_for_seed(8))
    assert np.array_equal(a.video, b.video) and np.array_equal(a.audio, b.audio)
    assert a.impacts_s == b.impacts_s and a.caption == b.caption
    assert not np.array_equal(a.video, c.video)
    assert a.impacts_s != c.impacts_s


def test_impacts_are_frequent_separated_and_inside_the_clip(clips):
    counts = [len(c.impacts_s) for c in clips]
    assert min(counts) >= 2 and np.mean(counts) >= 3
    for clip in clips:
        t = np.array(clip.impacts_s)
        assert np.all(np.diff(t) >= scenes.MIN_GAP_S)
        assert t[0] >= scenes.EDGE_MARGIN_S and t[-1] <= scenes.VIDEO_END_S - scenes.EDGE_MARGIN_S
    kinds = {k for c in clips for k in c.impact_kinds}
    assert kinds == {"floor", "wall"}
    # Start conditions really vary between seeds.
    assert len({round(c.scene.h0, 3) for c in clips}) == len(clips)


def test_impacts_are_where_the_object_touches_floor_or_wall(clips):
    for clip in clips:
        sc = clip.scene
        motion = simulate(sc)
        x, h = motion.at(np.array(clip.impacts_s))
        for kind, xi, hi in zip(clip.impact_kinds, x, h):
            if kind == "floor":
                assert abs(hi) < 1e-6
            else:
                assert min(abs(xi - sc.size), abs(xi - (64 - sc.size))) < 1e-6
        # Between impacts the object never sinks into the floor or leaves the frame sideways.
        xs, hs = motion.at(np.linspace(0, 2.04, 2000))
        assert hs.min() > -1e-6 and xs.min() >= sc.size - 1e-6 and xs.max() <= 64 - sc.size + 1e-6


def test_object_drawn_at_simulated_position(clips):
    clip = clips[0]
    sc = clip.scene
    x, h = simulate(sc).at(np.arange(49) / 24)
    cy = scenes.FLOOR_TOP - sc.size - h
    bg = np.median(clip.video, axis=0)
    for f in (0, 20, 40):
        diff = np.linalg.norm(clip.video[f] - bg, axis=-1)
        rows, cols = np.nonzero(diff > 0.3)
        assert abs(cols.mean() + 0.5 - x[f]) < 0.7 and abs(rows.mean() + 0.5 - cy[f]) < 0.7


def test_sound_starts_at_each_impact_and_not_before(clips):
    sr = 48000
    for clip in clips:
        a = clip.audio.astype(np.float64)
        first = int(clip.impacts_s[0] * sr)
        quiet = np.sqrt(np.mean(a[: first - 10] ** 2))
        assert quiet < 0.005  # only faint room noise before the first impact
        for t in clip.impacts_s:
            n = int(np.ceil(t * sr))
            before = np.abs(a[n - 48:n]).max()        # the millisecond before
            after = np.abs(a[n:n + 480]).max()        # the 10 ms after
            assert after > 0.1
            if before < 0.02:   # not inside the ring of an earlier hit
                assert after > 10 * before


def test_forced_attributes_and_caption():
    rng = np.random.default_rng(0)
    for colour in COLOURS:
        for sound in SOUNDS:
            sc = sample_scene(rng, colour=colour, shape="square", sound=sound)
            assert (sc.colour, sc.shape, sc.sound) == (colour, "square", sound)
            assert captions.parse_caption(sc.caption) == (colour, "square", sound)


def test_caption_set_vocabulary_and_parsing():
    caps = captions.all_captions()
    assert len(caps) == len(COLOURS) * len(SHAPES) * len(SOUNDS) * len(captions.TEMPLATES)
    assert len(set(caps)) == len(caps)
    for cap in caps:
        assert set(captions.words(cap)) <= set(VOCAB)
        colour, shape, sound = captions.parse_caption(cap)
        assert None not in (colour, shape, sound)
    assert captions.parse_caption("a purple cat") == (None, None, None)
    longest = max(len(captions.words(c)) for c in caps)
    assert longest <= 16   # the default word_ids length holds every caption
    ids = captions.word_ids("a purple ball", length=5)
    assert ids == [captions._WORD_ID["a"], captions.UNK_ID, captions._WORD_ID["ball"], 0, 0]
    assert len(set(tuple(captions.word_ids(c)) for c in caps)) == len(caps)
    with pytest.raises(ValueError, match="colour"):
        captions.make_caption("purple", "ball", "wood")


def test_eval_prompts_cover_everything():
    assert len(EVAL_PROMPTS) >= 16
    assert {p.colour for p in EVAL_PROMPTS} == set(COLOURS)
    assert {p.sound for p in EVAL_PROMPTS} == set(SOUNDS)
    assert {p.shape for p in EVAL_PROMPTS} == set(SHAPES)
    assert {(p.colour, p.sound) for p in EVAL_PROMPTS} == {(c, k) for c in COLOURS for k in SOUNDS}
    assert len({p.seed for p in EVAL_PROMPTS}) == len(EVAL_PROMPTS)
    for p in EVAL_PROMPTS:
        assert captions.parse_caption(p.prompt) == (p.colour, p.shape, p.sound)
        sc = scene_for_seed(p.seed, p.colour, p.shape, p.sound)   # a ground-truth scene for the pair
        assert (sc.colour, sc.shape, sc.sound) == (p.colour, p.shape, p.sound)


def test_preview_mp4_has_h264_video_and_aac_audio(tmp_path):
    import av   # pinned in requirements-dev.txt: a missing one is an error, not a skip
    scenes.main(["--out", str(tmp_path), "--n", "1", "--seed", "3", "--scale", "2"])
    path = tmp_path / "toy_0003.mp4"
    with av.open(str(path)) as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        assert v.codec_context.name == "h264" and (v.width, v.height) == (128, 128)
        assert a.codec_context.name == "aac" and a.sample_rate == 48000
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 49
    clip = render(scene_for_seed(3))
    decoded = np.stack(frames)[:, ::2, ::2].astype(np.float32) / 255
    assert np.abs(decoded - clip.video).mean() < 0.03
    assert (tmp_path / "toy_0003.json").exists()

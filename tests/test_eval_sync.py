"""scripts/eval_sync.py: its scoring on ground-truth clips, the bridge-off guidance, and a fast end-to-end
run on the committed toy model whose JSON has the documented keys."""
import json
import sys

import numpy as np
import pytest
import torch

from mova_pack.toy import scenes
from mova_pack.toy.captions import EVAL_PROMPTS
from mova_pack.toy.train.configs import AUDIO_SHIFT, ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import eval_sync  # noqa: E402


def test_score_on_ground_truth_clips_is_near_perfect():
    prompts = eval_sync.eval_prompts(3)
    clips = [scenes.render(scenes.scene_for_seed(p.seed, p.colour, p.shape, p.sound)) for p in prompts]
    s = eval_sync.score([(c.video, c.audio) for c in clips], prompts)
    assert s["sync"]["median_abs_offset_ms"] <= 10.0
    assert s["sync"]["matched_pairs"] >= 2 * len(prompts)
    assert s["adherence"] == {"colour": 1.0, "sound": 1.0}


def test_score_sees_a_shifted_soundtrack():
    p = eval_sync.eval_prompts(1)
    c = scenes.render(scenes.scene_for_seed(p[0].seed, p[0].colour, p[0].shape, p[0].sound))
    late = np.concatenate([np.zeros(4800, np.float32), c.audio[:-4800]])   # 100 ms late
    s = eval_sync.score([(c.video, late)], p)
    assert 80.0 <= s["sync"]["median_abs_offset_ms"] <= 120.0


def test_silence_and_an_empty_picture_score_as_misses():
    p = eval_sync.eval_prompts(1)
    video = np.full((49, 64, 64, 3), 0.5, np.float32)
    audio = np.zeros(98000, np.float32)
    s = eval_sync.score([(video, audio)], p)
    assert s["sync"]["median_abs_offset_ms"] is None and s["adherence"] == {"colour": 0.0, "sound": 0.0}


def test_bridge_off_plans_scale_zero_passes():
    g = eval_sync.BridgeOff(5.0, 5.0)
    passes = g.plan(0, 999.0)
    assert [p.text for p in passes] == ["positive", "negative"]
    assert all(p.a2v_scale == 0 and p.v2a_scale == 0 for p in passes)
    v = torch.ones(1, 2)
    out = g.combine(0, [(v * 2, v * 2), (v, v)])
    assert torch.equal(out[0], v * 6)   # neg + 5 (pos - neg)


def test_eval_prompts_cycle_with_new_seeds():
    ps = eval_sync.eval_prompts(20)
    assert ps[:16] == list(EVAL_PROMPTS)
    assert ps[16].prompt == ps[0].prompt and ps[16].seed != ps[0].seed
    assert len({(p.prompt, p.seed) for p in ps}) == 20


def test_end_to_end_fast_run_writes_the_keys(tmp_path):
    out = tmp_path / "sync.json"
    assert eval_sync.main(["--json", str(out), "--clips", "2", "--steps", "2", "--fast"]) == 0
    d = json.loads(out.read_text())
    assert set(d["sync"]["median_abs_offset_ms"]) == {"bridge_on", "bridge_off"}
    assert set(d["adherence"]) == {"colour", "sound"}
    assert "interval_5_95" in d["sync"]
    for label in ("bridge_on", "bridge_off"):
        row = d["rows"][label]
        assert "error" not in row, row.get("error")
        assert set(row["sync"]) >= {"median_abs_offset_ms", "within_40ms", "matched_pairs"}
        assert len(row["clips"]) == 2 and 0.0 <= row["adherence"]["colour"] <= 1.0
        assert 0.0 <= row["motion"]["object_visible"] <= 1.0 and row["motion"]["track_jumps_per_clip"] >= 0


def test_bootstrap_interval_brackets_the_figures_and_pairs_the_clips():
    on = [{"offsets_ms": [10.0 + i, -(12.0 + i)]} for i in range(16)]
    off = [{"offsets_ms": [90.0 + 2 * i]} for i in range(16)]
    iv = eval_sync.bootstrap_interval(on, off)
    assert iv == eval_sync.bootstrap_interval(on, off)                  # seeded
    lo, hi = iv["bridge_on"]
    assert 10 < lo < 17.5 < hi < 26
    assert iv["bridge_off"][0] < 105 < iv["bridge_off"][1]
    assert 90 / 27 < iv["bridge_gain"][0] < iv["bridge_gain"][1] < 122 / 10
    same = eval_sync.bootstrap_interval(on, on)                          # paired draws: ratio exactly 1
    assert same["bridge_gain"] == [1.0, 1.0]


def test_motion_counts_a_teleporting_object_and_not_a_bouncing_one():
    p = eval_sync.eval_prompts(1)[0]
    clip = scenes.render(scenes.scene_for_seed(p.seed, p.colour, p.shape, p.sound))
    assert eval_sync.motion(clip.video) == (1.0, 0)
    jumpy = clip.video.copy()
    jumpy[20:30] = clip.video[::-1][20:30]          # ten frames from the other end of the clip
    seen, jumps = eval_sync.motion(jumpy)
    assert seen == 1.0 and jumps >= 1
    blank = np.repeat(clip.video[:1] * 0 + np.median(clip.video, axis=0)[None], len(clip.video), axis=0)
    assert eval_sync.motion(blank)[0] == 0.0


def test_video_given_feeds_every_forward_the_noised_true_video(monkeypatch):
    from mova_pack.models.sampling import sampler as sampler_mod
    schedule = sampler_mod.make_schedule("mova", 3)
    true_v, noise = torch.randn(1, 16, 2, 2, 2), torch.randn(1, 16, 2, 2, 2)
    seen = []
    monkeypatch.setattr(sampler_mod, "run_forwards",
                        lambda g, e, passes, video, *rest, **kw: seen.append((video, kw)) or ["out"])
    given = eval_sync.VideoGiven(sampler_mod.TextCFG(5.0, 5.0), true_v, noise, schedule)
    for i in range(3):
        assert [p.text for p in given.plan(i, float(schedule.timesteps[i]))] == ["positive", "negative"]
        audio_t = torch.tensor([990.0 - i])             # the audio on its own schedule: passed through
        assert given.run_forwards(None, None, [], torch.zeros_like(true_v), None, None, {}, None, 24.0,
                                  audio_timestep=audio_t) == ["out"]
        s = schedule.sigma_from[i]
        assert torch.equal(seen[-1][0], (1 - s) * true_v + s * noise) and seen[-1][1]["audio_timestep"] is audio_t


def test_clean_video_given_runs_the_video_at_t0_and_the_audio_at_the_step(monkeypatch):
    from types import SimpleNamespace
    from mova_pack.models.sampling import sampler as sampler_mod
    calls = []
    monkeypatch.setattr(eval_sync, "joint_forward", lambda *a, **k: calls.append((a, k)) or "out")
    gen = SimpleNamespace(expert=lambda low: "low" if low else "high", audio="A", bridge="B")
    true_v = torch.randn(1, 16, 2, 2, 2)
    given = eval_sync.VideoGiven(sampler_mod.TextCFG(5.0, 5.0), true_v, torch.randn_like(true_v),
                                 sampler_mod.make_schedule("mova", 3), clean=True)
    passes = given.plan(0, 1000.0)
    t = torch.tensor([1000.0])
    out = given.run_forwards(gen, "high", passes, None, "audio", t, {"positive": 1, "negative": 2}, "y", 24.0)
    assert out == ["out", "out"]
    for (args, kw), ctx in zip(calls, (1, 2)):
        assert args[:5] == ("low", "A", "B", true_v, "audio") and torch.equal(args[5], torch.zeros(1))
        assert args[6] == ctx and torch.equal(kw["audio_timestep"], t)
    calls.clear()                                   # with the audio on its own schedule: its own t
    audio_t = torch.tensor([997.0])
    given.run_forwards(gen, "high", passes, None, "audio", t, {"positive": 1, "negative": 2}, "y", 24.0,
                       audio_timestep=audio_t)
    assert all(kw["audio_timestep"] is audio_t and torch.equal(args[5], torch.zeros(1)) for args, kw in calls)


def test_designed_latents_through_the_decoders_keep_the_timing():
    """The floor for generated clips: the eval clips' designed latents decoded by the committed toy."""
    toy = eval_sync.Toy(eval_sync.MODEL_DIR)
    prompts = eval_sync.eval_prompts(2)
    rows = eval_sync.references(toy, prompts)
    floor = rows["reference_decoders"]
    assert floor["sync"]["matched_pairs"] >= 0.6 * rows["reference_ground_truth"]["sync"]["matched_pairs"]
    assert floor["sync"]["median_abs_offset_ms"] <= 80.0
    assert floor["adherence"] == {"colour": 1.0, "sound": 1.0} and floor["motion"]["object_visible"] == 1.0


def test_full_run_has_the_bridge_alone_and_reference_rows(tmp_path):
    out = tmp_path / "full.json"
    assert eval_sync.main(["--json", str(out), "--clips", "1", "--steps", "2", "--sweep", "", "--quant", ""]) == 0
    rows = json.loads(out.read_text())["rows"]
    given = {f"audio_given_{c}video{s}_{b}" for c, s in (("", ""), ("clean_", ""), ("", "_same_shift"))
             for b in ("on", "off")}
    assert set(rows) == {"bridge_on", "bridge_off", "same_shift_on", "same_shift_off", "reference_ground_truth",
                         "reference_decoders", "reference_vae_roundtrip"} | given
    assert rows["bridge_on"]["audio_shift"] == AUDIO_SHIFT and rows["same_shift_on"]["audio_shift"] is None
    assert rows["audio_given_video_same_shift_on"]["audio_shift"] is None
    for label in given:
        # the picture is the rendered clip: found in every frame, never jumping
        assert rows[label]["motion"] == {"object_visible": 1.0, "track_jumps_per_clip": 0.0}
        assert rows[label]["clips"][0]["video_impacts_s"] == rows["reference_ground_truth"]["clips"][0]["video_impacts_s"]


def test_detail_clips_keep_the_headline_on_all_clips_and_the_rest_on_the_first(tmp_path):
    out = tmp_path / "detail.json"
    assert eval_sync.main(["--json", str(out), "--clips", "2", "--detail-clips", "1", "--steps", "2",
                           "--sweep", "1", "--quant", ""]) == 0
    d = json.loads(out.read_text())
    rows = d["rows"]
    assert (d["clips"], d["detail_clips"]) == (2, 1)
    assert len(rows["bridge_on"]["clips"]) == len(rows["bridge_off"]["clips"]) == 2
    for label in set(rows) - {"bridge_on", "bridge_off"}:
        assert len(rows[label]["clips"]) == 1, label
    # the detail rows are the headline's own first clip, scored alone
    assert rows["detail_bridge_on"]["clips"] == rows["bridge_on"]["clips"][:1]
    assert rows["detail_bridge_off"]["clips"] == rows["bridge_off"]["clips"][:1]
    assert rows["guidance_bridge_1"]["same_as"] == "detail_bridge_on"
    assert d["sync"]["median_abs_offset_ms"]["bridge_on"] == rows["bridge_on"]["sync"]["median_abs_offset_ms"]


@pytest.mark.parametrize("bad", [["--clips", "0"], ["--steps", "0"], ["--clips", "2", "--detail-clips", "3"],
                                 ["--detail-clips", "0"]])
def test_rejects_bad_counts(tmp_path, bad):
    with pytest.raises(SystemExit):
        eval_sync.main(["--json", str(tmp_path / "x.json"), *bad])

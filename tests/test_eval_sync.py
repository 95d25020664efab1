"""scripts/eval_sync.py: its scoring on ground-truth clips, the bridge-off guidance, and a fast end-to-end
run on the committed toy model whose JSON has the documented keys."""
import json
import sys

import numpy as np
import pytest
import torch

from mova_pack.toy import scenes
from mova_pack.toy.captions import EVAL_PROMPTS
from mova_pack.toy.train.configs import ROOT

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
    for label in ("bridge_on", "bridge_off"):
        row = d["rows"][label]
        assert "error" not in row, row.get("error")
        assert set(row["sync"]) >= {"median_abs_offset_ms", "within_40ms", "matched_pairs"}
        assert len(row["clips"]) == 2 and 0.0 <= row["adherence"]["colour"] <= 1.0


@pytest.mark.parametrize("bad", [["--clips", "0"], ["--steps", "0"]])
def test_rejects_bad_counts(tmp_path, bad):
    with pytest.raises(SystemExit):
        eval_sync.main(["--json", str(tmp_path / "x.json"), *bad])

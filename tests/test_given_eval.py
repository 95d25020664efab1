"""scripts/eval_given.py through eval_sync --given-only: the rows exist with their figures (1 clip, 1 step)."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import eval_given  # noqa: E402
import eval_sync  # noqa: E402


def test_given_only_run_writes_the_v2a_and_extend_rows(tmp_path):
    out = tmp_path / "given.json"
    assert eval_sync.main(["--json", str(out), "--clips", "1", "--steps", "1", "--given-only",
                           "--given-rows", "v2a,extend", "--windows", "2"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {"v2a_encoded_on", "v2a_encoded_off", "v2a_designed_on", "v2a_designed_off",
            "v2a_designed_noised_on", "extend_2"} <= set(rows)
    assert "a2v_encoded" not in rows
    assert rows["v2a_designed_off"]["same_as"] == "v2a_encoded_off"
    ext = rows["extend_2"]
    assert len(ext["per_window"]) == 2 and ext["seam"]["seams"] == 1
    assert ext["cut_between_unrelated_clips"]["seams"] == 1
    assert ext["joined"]["motion"]["object_visible"] is not None


def test_seam_measures_a_jump_and_a_level_step():
    import numpy as np
    frames = np.zeros((20, 32, 32, 3), np.float32) + 0.8
    for i in range(20):                     # a red square moving 1 px per frame, then 10 px at frame 10
        x = 4 + i + (9 if i >= 10 else 0)
        frames[i, 12:18, x:x + 6] = (1, 0, 0)
    wave = np.concatenate([np.full(4800, 0.1), np.full(4800, 0.4)])
    s = eval_given._seam(frames, wave, 10, 4800)
    assert 9 <= s["jump_px"] <= 11 and s["typical_step_px"] < 2
    assert abs(s["level_step_db"] - 20 * np.log10(4)) < 0.1

"""scripts/gpu_check.py on the tiny config (what CI runs; on a CUDA machine it runs at the released size):
both template settings go through every stage and report figures beside the planner's."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_every_stage_on_the_tiny_config(tmp_path):
    out = tmp_path / "check.json"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--tiny", "--out",
                          str(tmp_path / "folder"), "--json", str(out), "--width", "64", "--height", "64",
                          "--frames", "9", "--steps", "2"], capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["tiny"]
    for name in ("default", "low_vram"):
        setting = result[name]
        assert "error" not in setting, setting
        for stage in ("text_encode", "load", "first_frame_latent", "denoise", "decode"):
            assert setting[stage]["seconds"] >= 0 and "error" not in setting[stage], (name, stage)
        assert len(setting["denoise"]["seconds_per_step"]) == 2
        assert setting["decode"]["finite"] and setting["decode"]["frames"][2] == 9
        assert set(setting["planner_gb"]) == {"denoise", "text encode", "decode"}
    assert result["low_vram"]["settings"] == {"quantization": "fp8_e4m3fn", "offload": "disk", "resident_layers": 1,
                                              "dtype": "fp32"}

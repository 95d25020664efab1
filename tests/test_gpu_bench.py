"""scripts/gpu_bench.py runs its tiny config on the CPU: every case isolated, JSON after each case,
missing packages reported as not available, the budget respected."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = "env,micro_linear,micro_attention,resident,attention_timed,attention_sage,cache,fp8_dequant,fp8_fast_reference_row,nonsense_never_runs"


def _run(tmp_path, cases, *extra):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "scripts/gpu_bench.py", "--json", str(out), "--tiny", "--cases", cases,
                          *extra], cwd=ROOT, capture_output=True, text=True, timeout=600)
    return run, out


def test_tiny_run_on_cpu(tmp_path):
    run, out = _run(tmp_path, CASES.replace(",nonsense_never_runs", ""))
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    cases = result["cases"]
    assert result["device"] == "cpu" and result["size"] == "tiny"
    assert cases["env"]["packages"]["sageattention"] in ("available", "not available")
    assert cases["resident"]["s"] > 0 and cases["resident"]["rel_err_vs_resident"] < 1e-2
    assert cases["attention_sage"].startswith("not available: tensors are on cpu")
    assert "only sdpa can run here" in " ".join(cases["attention_timed"]["attention"])
    lin = cases["micro_linear"]["64->64"]
    assert lin["fp8_triton_row"].startswith("not available") and lin["fp8_reference_row"]["rel_err_vs_bf16"] < 0.06
    assert 0 < cases["fp8_dequant"]["rel_err_vs_resident"] < 0.06
    assert cases["cache"]["decision_ms_per_step"] > 0


def test_unknown_case_is_refused_and_budget_skips(tmp_path):
    run, _ = _run(tmp_path, CASES)
    assert run.returncode == 2 and "unknown case(s) ['nonsense_never_runs']" in run.stderr
    run, out = _run(tmp_path, "env,resident", "--budget-s", "0")
    assert run.returncode == 0, run.stderr[-3000:]
    cases = json.loads(out.read_text())["cases"]
    assert all(v.startswith("skipped: budget") for v in cases.values())

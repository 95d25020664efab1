"""Run the whole test suite: unit, real-ComfyUI and browser tests, each in its own pytest process.

Why two processes: tests/comfy/ imports ComfyUI into the process (its top-level `nodes`, `utils`,
`server`, … modules and its global torch/logging state), and ComfyUI imports the pack under its own
module name; keeping that apart from the unit tests (which import the pack as `mova_pack`) avoids two
copies of every module meeting in one process. Browser tests run apart because Playwright's sync API
leaves an event loop running in its thread. Every test file under tests/ runs in exactly one part.
Prints pytest's own summary for each part, then one combined line, and fails if either part failed
or if no test ran at all.

Honest counts: MOVA_STRICT_SKIPS=1 turns every skip into a failure (tests/conftest.py; only reasons
starting "optional:" stay skips), so a missing browser or dependency cannot pass as "1 skipped"; a
part that collects nothing fails unless pytest arguments (-k …) filter it; the closing line counts
test cases that ran, per part.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["-p", "no:cacheprovider", "--timeout=1200", "-rfE"]
PARTS = [
    ("unit", ["tests", "--ignore=tests/comfy", "--ignore=tests/browser"]),
    ("comfyui", ["tests/comfy"]),
    # Playwright's sync API leaves an event loop running in the test thread: keep it apart too.
    ("browser", ["tests/browser"]),
]


def counts(xml_path: Path) -> dict:
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if not xml_path.exists():
        return total
    root = ET.parse(xml_path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    for suite in suites:
        for key in total:
            total[key] += int(suite.get(key, 0))
    return total


def main(extra: list[str]) -> int:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", MOVA_STRICT_SKIPS="1")
    failed_parts, summary, per_part = [], {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}, []
    with tempfile.TemporaryDirectory() as tmp:
        for name, paths in PARTS:
            xml = Path(tmp) / f"{name}.xml"
            cmd = [sys.executable, "-m", "pytest", *paths, *COMMON, f"--junitxml={xml}", *extra]
            print(f"\n=== {name} tests: {' '.join(cmd[1:])}", flush=True)
            code = subprocess.call(cmd, cwd=ROOT, env=env)
            # 5 = nothing collected: fine when arguments filter the part (-k …), a failure otherwise
            if code not in (0, 5) or (code == 5 and not extra):
                failed_parts.append(f"{name} (pytest exit {code})")
            part = counts(xml)
            ran = part["tests"] - part["skipped"]
            per_part.append(f"{name} {ran - part['failures'] - part['errors']}/{ran}")
            for key, value in part.items():
                summary[key] += value
    failed = summary["failures"] + summary["errors"]
    passed = summary["tests"] - failed - summary["skipped"]
    if failed_parts:
        print("failed parts: " + ", ".join(failed_parts))
    if summary["tests"] == 0:
        print("no test ran")
        return 1
    print(f"total: {passed} passed, {failed} failed, {summary['skipped']} skipped (optional) "
          f"[passed/ran: {', '.join(per_part)}]")
    return 1 if failed_parts or failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

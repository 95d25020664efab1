"""Makes the repo importable as the package `mova_pack` without running the ComfyUI entry point
(the same shim the scripts use: scripts/_pack.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import _pack  # noqa: E402,F401  (registers `mova_pack`)

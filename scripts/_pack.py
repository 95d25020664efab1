"""Lets scripts import the repo as the package `mova_pack` (same trick as tests/conftest.py)."""
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if "mova_pack" not in sys.modules:
    pkg = types.ModuleType("mova_pack")
    pkg.__path__ = [str(ROOT)]
    pkg.__file__ = str(ROOT / "__init__.py")
    sys.modules["mova_pack"] = pkg

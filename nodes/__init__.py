"""ComfyUI nodes of the MOVA pack (V3 API: declarative schemas, explicit input order).

Every module in this package that defines `NODES` is registered; a new node file (guidance, LoRA, …)
only needs to define `NODES`. Inputs are append-only: a new input goes last and is optional, so saved
workflows keep loading (tests/comfy/test_comfy_compat.py checks this against recorded schemas).
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path

from comfy_api.latest import ComfyExtension, io

from . import model_files

CORE_MODULES = ("loaders", "conditioning", "sampling", "decode")
log = logging.getLogger("mova")


def node_list() -> list[type[io.ComfyNode]]:
    model_files.register_folders()
    from . import routes   # the pack's HTTP routes (/mova/estimate, /mova/models), registered once
    routes.register_with_running_server()
    here = Path(__file__).parent
    names = list(CORE_MODULES) + sorted(
        p.stem for p in here.glob("*.py") if not p.stem.startswith("_") and p.stem not in CORE_MODULES)
    found = []
    for name in names:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except Exception:
            if name in CORE_MODULES:
                raise
            # An optional feature (guidance, LoRA, download, …) must not take the core nodes down
            # with it; the tests fail on this line in the log.
            log.exception("MOVA: failed to load node module nodes/%s.py; its nodes are missing", name)
            continue
        found += list(getattr(module, "NODES", []))
    return found


class MovaExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return node_list()

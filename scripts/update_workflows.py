"""Regenerate what the shipped workflows (workflows/*.json) derive from the pack's code.

- `properties.models` of every loader node: the real MOVA files it reads, as ComfyUI's frontend wants
  them ({name, url, directory}), from runtime/hub.py (`loader_model_entries`).
- Layout: nodes pushed down (never sideways) until no two overlap, with room for the title bar, using
  the sizes saved in the file (they hold the size the frontend draws, info widgets included).

    python scripts/update_workflows.py           # rewrite workflows/*.json in place
    python scripts/update_workflows.py --check   # exit 1 and name the files that are out of date

Everything else in a workflow (widgets, links, the description note) is written by hand in the editor.
Files keep ComfyUI's own JSON layout (indent 1, ASCII escapes) so diffs stay small.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _pack  # noqa: F401  (registers mova_pack)
from mova_pack.runtime import hub

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
TITLE_HEIGHT = 30     # LiteGraph draws the title above node.pos
GAP = 20              # free space between a node and the title bar of the one below


def with_model_entries(ui: dict) -> dict:
    for node in ui["nodes"]:
        entries = hub.loader_model_entries(node["type"])
        if entries:
            node.setdefault("properties", {})["models"] = entries
    return ui


def _overlap_x(a: dict, b: dict) -> bool:
    return a["pos"][0] < b["pos"][0] + b["size"][0] and b["pos"][0] < a["pos"][0] + a["size"][0]


def without_overlaps(ui: dict) -> dict:
    """Top to bottom: a node starts below every node already placed that shares its columns."""
    placed = []
    for node in sorted(ui["nodes"], key=lambda n: (n["pos"][1], n["pos"][0])):
        top = node["pos"][1]
        for other in placed:
            if _overlap_x(node, other):
                top = max(top, other["pos"][1] + other["size"][1] + GAP + TITLE_HEIGHT)
        node["pos"] = [node["pos"][0], top]
        placed.append(node)
    return ui


def render(ui: dict) -> str:
    return json.dumps(ui, indent=1, ensure_ascii=True) + "\n"


def updated(text: str) -> str:
    return render(without_overlaps(with_model_entries(json.loads(text))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report files that are out of date")
    args = parser.parse_args(argv)
    stale = []
    for path in sorted(WORKFLOWS.glob("*.json")):
        text = path.read_text()
        new = updated(text)
        if new != text:
            stale.append(path.name)
            if not args.check:
                path.write_text(new)
    verb = "out of date" if args.check else "updated"
    print(f"{verb}: {', '.join(stale)}" if stale else "workflows are up to date")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())

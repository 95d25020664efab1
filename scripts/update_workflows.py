"""Regenerate what the shipped workflows (workflows/*.json) derive from the pack's code.

- `properties.models` of every loader node: the real MOVA files it reads, as ComfyUI's frontend wants
  them ({name, url, directory}), from runtime/hub.py (`loader_model_entries`).
- Frame rate: every CreateVideo that plays MOVA Decode Video's frames gets its `fps` linked from the
  decoder's `fps` output (the latent's own rate), so the video cannot be set to another speed.
- Prompt colours: "Positive prompt" / "Negative prompt" nodes green / red, as core templates have them.
- Layout (workflows with `extra.mova_layout == "columns"`): one column per step, each step a group —
  Load models | Prompt, Size & length | Sample | Decode & save — the description note under the
  loaders, and a saved view (`extra.ds`) that shows the whole graph clear of the top bar and sidebar.
- Then nodes pushed down (never sideways) until no two overlap, with room for the title bar, using
  the sizes saved in the file (they hold the size the frontend draws after a run: info widgets, the
  sampler's preview and SaveVideo's player included; tests/browser/test_canvas_layout.py checks them).
- Real-model variants (REAL_MODEL_VARIANTS): written whole from their toy template — every MOVA folder
  entry switched to the release, the released sampling settings, its own note and save prefix, and a
  top-level `models` list (the entries the frontend's Missing Models dialog reads at load time).

    python scripts/update_workflows.py           # rewrite workflows/*.json in place
    python scripts/update_workflows.py --check   # exit 1 and name the files that are out of date

Everything else in a workflow (widgets, links, the description note) is written by hand in the editor.
Files keep ComfyUI's own JSON layout (indent 1, ASCII escapes) so diffs stay small.
"""
from __future__ import annotations

import argparse
import json
import sys
import uuid
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


POSITIVE, NEGATIVE = ("#232", "#353"), ("#322", "#533")     # core templates' prompt colours
GROUP_COLOR = "#3f789e"                                     # core templates' group colour
GROUP_TITLE, GROUP_PAD, COLUMN_GAP = 38, 12, 70
# (group title, node types in order) per column; a column may hold two groups, one above the other.
COLUMNS = [
    # MOVA LoRA last: its report grows the node while it runs, into the free space below the column
    [("Load models", ["MOVAModelLoader", "MOVAModelLoaderFiles", "MOVATextEncoderLoader",
                      "MOVAVideoVAELoader", "MOVAAudioVAELoader", "MOVALora"])],
    [("Prompt", ["MOVATextEncode"]), ("Size & length", ["MOVALatent", "LoadImage"])],
    [("Sample", ["MOVABridgeGuidance", "MOVASampler"])],
    [("Decode & save", ["MOVADecodeVideo", "MOVADecodeAudio", "CreateVideo", "SaveVideo"])],
]
NOTES = ("MarkdownNote", "Note")
VIEW = (70, 150, 1560, 960)
MIN_SCALE = 0.62     # screen box a 1600x1000 window leaves for the graph (sidebar, top bar)


def with_fps_links(ui: dict) -> dict:
    nodes = {n["id"]: n for n in ui["nodes"]}
    links = ui["links"]
    for video in (n for n in ui["nodes"] if n["type"] == "CreateVideo"):
        inputs = video.setdefault("inputs", [])
        images = next((i for i in inputs if i["name"] == "images" and i.get("link") is not None), None)
        source = next((lk for lk in links if images and lk[0] == images["link"]), None)
        if not source or nodes[source[1]]["type"] != "MOVADecodeVideo" or source[2] != 0:
            continue
        fps = next((i for i in inputs if i["name"] == "fps"), None)
        if fps and fps.get("link") is not None:
            continue
        decoder = nodes[source[1]]
        outputs = decoder.setdefault("outputs", [])
        if len(outputs) < 2:
            outputs.append({"name": "fps", "type": "FLOAT", "links": []})
        link_id = max([lk[0] for lk in links] + [ui.get("last_link_id", 0)]) + 1
        if fps is None:
            fps = {"name": "fps", "type": "FLOAT", "widget": {"name": "fps"}}
            inputs.append(fps)
        fps["link"] = link_id
        outputs[1].setdefault("links", []).append(link_id)
        outputs[1]["slot_index"] = 1
        links.append([link_id, decoder["id"], 1, video["id"], inputs.index(fps), "FLOAT"])
        ui["last_link_id"] = link_id
    return ui


def with_prompt_colours(ui: dict) -> dict:
    for node in ui["nodes"]:
        title = (node.get("title") or "").lower()
        colours = POSITIVE if "positive" in title else NEGATIVE if "negative" in title else None
        if node["type"] == "MOVATextEncode" and colours:
            node["color"], node["bgcolor"] = colours
    return ui


def _box(nodes: list) -> list:
    x0 = min(n["pos"][0] for n in nodes) - GROUP_PAD
    y0 = min(n["pos"][1] for n in nodes) - TITLE_HEIGHT - GROUP_TITLE
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes) + GROUP_PAD
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes) + GROUP_PAD
    return [x0, y0, x1 - x0, y1 - y0]


def laid_out(ui: dict) -> dict:
    """Columns of steps, each a group; notes below the first column; a view that fits it all."""
    if ui.get("extra", {}).get("mova_layout") != "columns":
        return ui
    left, groups, bottoms_at = 20, [], []
    for column in COLUMNS:
        top, members = 40 + GROUP_TITLE, []
        for title, types in column:
            nodes = [n for t in types for n in ui["nodes"] if n["type"] == t]
            nodes.sort(key=lambda n: (types.index(n["type"]), "negative" in (n.get("title") or "").lower(), n["id"]))
            if not nodes:
                continue
            for node in nodes:
                node["pos"] = [left + GROUP_PAD, top]
                top += node["size"][1] + TITLE_HEIGHT + GAP
            groups.append((title, nodes))
            members += nodes
            top += GROUP_TITLE + GROUP_PAD
        if members:
            bottoms_at.append((left, max(n["pos"][1] + n["size"][1] for n in members)))
            left += max(n["size"][0] for n in members) + 2 * GROUP_PAD + COLUMN_GAP
    # Notes go under the column that ends highest among those with room for the note's width before
    # the next column (the nodes above do not grow past their saved size).
    notes = [n for n in ui["nodes"] if n["type"] in NOTES]
    wide = max((n["size"][0] for n in notes), default=0)
    room = [(x, bottom) for i, (x, bottom) in enumerate(bottoms_at)
            if i + 1 == len(bottoms_at) or bottoms_at[i + 1][0] - x - GROUP_PAD >= wide]
    column_x, top = min(room or bottoms_at, key=lambda c: c[1]) if bottoms_at else (20, 0)
    top += GROUP_PAD + TITLE_HEIGHT + 2 * GAP
    for note in notes:
        note["pos"] = [column_x + GROUP_PAD, top]
        top += note["size"][1] + TITLE_HEIGHT + GAP
    ui["groups"] = [{"id": i + 1, "title": title, "bounding": _box(nodes), "color": GROUP_COLOR,
                     "font_size": 24, "flags": {}} for i, (title, nodes) in enumerate(groups)]
    boxes = [g["bounding"] for g in ui["groups"]] + [[n["pos"][0], n["pos"][1] - TITLE_HEIGHT, n["size"][0],
                                                      n["size"][1] + TITLE_HEIGHT] for n in ui["nodes"]]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
    # Nodes 2.0 (Vue nodes) opens a classic graph scaled up 1.2x; fitting that fully would zoom the
    # classic canvas below its level of detail (0.57: titles and widgets no longer drawn). So: the
    # whole graph in the classic canvas, at a zoom where it is drawn in full; in Nodes 2.0 it opens at
    # the same top-left corner, clear of sidebar and top bar, and may run past the bottom right.
    scale = round(max(MIN_SCALE, min(1.0, (VIEW[2] - VIEW[0]) / (x1 - x0), (VIEW[3] - VIEW[1]) / (y1 - y0))), 3)
    ui["extra"]["ds"] = {"scale": scale, "offset": [round(VIEW[0] / scale - x0, 1), round(VIEW[1] / scale - y0, 1)]}
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


# Released settings (../shared/spec/mova.md §4.1, inference_single.py): 640×352, 193 frames at 24 fps,
# 50 steps, shift 5.0 for both towers (audio_shift 0 = the same as shift), text CFG 5.0.
RELEASED_LATENT = [640, 352, 193, 24.0]
RELEASED_SAMPLER = {"steps": 50, "shift": 5.0, "boundary": 0.9, "video_cfg": 5.0, "audio_cfg": 5.0,
                    "schedule": "mova", "audio_shift": 0.0}
SAMPLER_WIDGETS = ["seed", "control_after_generate", "steps", "shift", "boundary", "video_cfg", "audio_cfg",
                   "schedule", "audio_shift"]
REAL_MODEL_NOTE = """## MOVA: text \u2192 video + audio (MOVA-360p, released settings)

Needs the released **MOVA-360p** weights in `ComfyUI/models/mova/MOVA-360p/`; without them the run stops at the loaders with what to do. Opening this template lists the missing files (Missing Models dialog). To fetch the whole folder (configs and tokenizer too) add **MOVA Download Models** (MOVA/loaders), variant MOVA-360p, confirm on, and run it once \u2014 or download https://huggingface.co/OpenMOSS-Team/MOVA-360p into that folder \u2014 then press R.

Settings as released: 640\u00d7352, 193 frames at 24 fps (8.04 s), 50 steps, shift 5 for video and audio (audio_shift 0 = the same), text CFG 5.0. The loader's estimate says what this needs (about 70 GB of VRAM in bf16, 39 GB with fp8_e4m3fn, 12 GB with offload cpu and 0 resident layers); set quantization / offload on the loader to fit your GPU.

Output: `output/video/` mp4 (h264 + aac, 48 kHz)."""
# Room for the estimate's "MOVA-360p not found in models/mova — run MOVA Download Models" line (two
# wrapped lines in a 330 px loader), shown until the files are there: the layout then leaves it free.
MISSING_FILES_LINES_PX = 2 * 15 + 6
# name -> (toy template it is written from, MOVA release it loads, note, SaveVideo prefix)
REAL_MODEL_VARIANTS = {
    "text_to_video_audio_mova360p.json": ("text_to_video_audio.json", "MOVA-360p", REAL_MODEL_NOTE,
                                          "video/MOVA_360p_t2va"),
}


def real_model_variant(toy: dict, name: str) -> dict:
    """The toy template switched to a released model with the released settings (a new graph id)."""
    _source, release, note, prefix = REAL_MODEL_VARIANTS[name]
    ui = json.loads(json.dumps(toy))
    ui["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"mova-pack/workflows/{name}"))
    for node in ui["nodes"]:
        values = node.get("widgets_values")
        if node["type"] in hub.LOADER_COMPONENTS:       # 'mova-toy' / 'mova-toy/<component>' entries
            head, slash, tail = values[0].partition("/")
            values[0] = release + slash + tail
            if node["type"] == "MOVAModelLoader":
                node["size"] = [node["size"][0], node["size"][1] + MISSING_FILES_LINES_PX]
        elif node["type"] == "MOVALatent":
            values[:4] = RELEASED_LATENT
        elif node["type"] == "MOVASampler":
            for key, value in RELEASED_SAMPLER.items():
                values[SAMPLER_WIDGETS.index(key)] = value
        elif node["type"] == "SaveVideo":
            values[0] = prefix
        elif node["type"] in NOTES:
            values[0] = note
    # Read by the frontend on load: files not in models/mova open the Missing Models dialog.
    ui["models"] = [e for t in hub.LOADER_COMPONENTS for e in hub.loader_model_entries(t, release)]
    ui.setdefault("extra", {})["mova_requires"] = release
    return ui


def render(ui: dict) -> str:
    return json.dumps(ui, indent=1, ensure_ascii=True) + "\n"


def updated(text: str) -> str:
    ui = with_prompt_colours(with_fps_links(with_model_entries(json.loads(text))))
    return render(without_overlaps(laid_out(ui)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report files that are out of date")
    args = parser.parse_args(argv)
    stale = []
    derived = {name: render(real_model_variant(json.loads(updated((WORKFLOWS / source).read_text())), name))
               for name, (source, *_rest) in REAL_MODEL_VARIANTS.items()}
    for path in sorted(set(WORKFLOWS.glob("*.json")) | {WORKFLOWS / name for name in derived}):
        text = path.read_text() if path.is_file() else ""
        new = updated(derived.get(path.name, text))
        if new != text:
            stale.append(path.name)
            if not args.check:
                path.write_text(new)
    verb = "out of date" if args.check else "updated"
    print(f"{verb}: {', '.join(stale)}" if stale else "workflows are up to date")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())

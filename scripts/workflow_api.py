"""Convert a UI-format workflow (what the ComfyUI frontend saves) into the API format /prompt takes.

The frontend does this in `graphToPrompt`; this is the same mapping for the graphs we ship, written
from its rules (frontend 1.32):
- widget inputs are matched to `widgets_values` *by position*, in the node's `input_order`
  (required, then optional); links are the entries of `links` that end in the node;
- an INT input gets one extra "control after generate" value right after it when its spec says
  `control_after_generate`, or, when the spec does not say, when it is named `seed`/`noise_seed`;
  a COMBO gets one only when its spec says so;
- a file-upload combo (`image_upload` …) may be followed by the upload button's value ("image");
- values missing at the end (a workflow saved before an input was appended) take the input's
  default, as the frontend does when it loads an old graph;
- `Note`/`MarkdownNote` are dropped, `Reroute` is followed, `PrimitiveNode` values are inlined,
  muted nodes (mode 2) are dropped. Bypass (mode 4) and subgraphs are refused, not guessed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
UPLOAD_BUTTON_VALUES = {"image", "video", "audio"}
FRONTEND_ONLY = {"Note", "MarkdownNote"}
MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4


class WorkflowError(ValueError):
    """The UI workflow cannot be converted (unknown node type, unsupported feature, bad link)."""


def _links(ui: dict) -> dict:
    out = {}
    for link in ui.get("links", []):
        if isinstance(link, dict):
            lid, src, src_slot, dst, dst_slot = (link["id"], link["origin_id"], link["origin_slot"],
                                                 link["target_id"], link["target_slot"])
        else:
            lid, src, src_slot, dst, dst_slot = link[:5]
        out[lid] = (src, src_slot, dst, dst_slot)
    return out


def _is_widget(spec: list) -> bool:
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if opts.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _has_control_widget(name: str, spec: list) -> bool:
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if kind == "INT":
        flag = opts.get("control_after_generate")
        return bool(flag) if flag is not None else name in ("seed", "noise_seed")
    if isinstance(kind, list) or kind == "COMBO":
        return bool(opts.get("control_after_generate"))
    return False


def _default(spec: list):
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in opts:
        return opts["default"]
    options = kind if isinstance(kind, list) else opts.get("options")
    if options:
        return options[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind)


def widget_inputs(info: dict) -> list[tuple[str, list, bool]]:
    """(name, spec, required) of every widget input of a node, in the frontend's order."""
    out = []
    order = info.get("input_order") or {k: list(v) for k, v in info["input"].items()}
    for category in ("required", "optional"):
        for name in order.get(category, []):
            spec = info["input"][category][name]
            if _is_widget(spec):
                out.append((name, spec, category == "required"))
    return out


def map_widgets(node: dict, info: dict) -> dict:
    """Map a node's `widgets_values` onto its widget input names."""
    values = node.get("widgets_values") or []
    widgets = widget_inputs(info)
    if isinstance(values, dict):  # name-keyed (some packs / newer frontends)
        return {name: values.get(name, _default(spec)) for name, spec, _ in widgets}
    out, i = {}, 0
    for name, spec, required in widgets:
        if i < len(values):
            out[name] = values[i]
            i += 1
            if _has_control_widget(name, spec):
                i += 1
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if any(opts.get(f) for f in UPLOAD_FLAGS) and i < len(values) and values[i] in UPLOAD_BUTTON_VALUES:
                i += 1
        else:
            default = _default(spec)
            if default is not None or required:
                out[name] = default
    if i < len(values):
        raise WorkflowError(f"node {node['id']} ({node['type']}): {len(values)} widget values but only "
                            f"{i} are used by its inputs {[w[0] for w in widgets]}; the node changed "
                            "incompatibly (an input was removed or reordered)")
    return out


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """`object_info`: {node_type: /object_info entry} for at least every node type in the graph."""
    if ui.get("definitions", {}).get("subgraphs"):
        raise WorkflowError("subgraphs are not supported by this converter")
    nodes = {n["id"]: n for n in ui["nodes"]}
    links = _links(ui)

    def resolve(link_id):
        """Follow a link back through Reroutes; returns [node_id, slot] or ("value", v)."""
        src, slot, _dst, _ = links[link_id]
        origin = nodes.get(src)
        if origin is None:
            raise WorkflowError(f"link {link_id} starts at missing node {src}")
        if origin["type"] == "Reroute":
            upstream = (origin.get("inputs") or [{}])[0].get("link")
            if upstream is None:
                raise WorkflowError(f"Reroute {src} has no input")
            return resolve(upstream)
        if origin["type"] == "PrimitiveNode":
            return ("value", (origin.get("widgets_values") or [None])[0])
        return [str(src), slot]

    prompt = {}
    for nid, node in nodes.items():
        kind = node["type"]
        if kind in FRONTEND_ONLY or kind in ("Reroute", "PrimitiveNode"):
            continue
        mode = node.get("mode", MODE_ALWAYS)
        if mode == MODE_NEVER:
            continue
        if mode == MODE_BYPASS:
            raise WorkflowError(f"node {nid} ({kind}) is bypassed; bypass is not supported here")
        if kind not in object_info:
            raise WorkflowError(f"node {nid}: type {kind!r} is not installed (missing custom node pack?)")
        inputs = map_widgets(node, object_info[kind])
        for inp in node.get("inputs") or []:
            if inp.get("link") is None:
                continue
            target = resolve(inp["link"])
            inputs[inp["name"]] = target[1] if isinstance(target, tuple) else target
        entry = {"class_type": kind, "inputs": inputs}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        prompt[str(nid)] = entry
    return prompt


def main(argv=None) -> int:
    """python scripts/workflow_api.py WORKFLOW.json OBJECT_INFO.json  -> API JSON on stdout."""
    argv = argv if argv is not None else sys.argv[1:]
    ui = json.loads(Path(argv[0]).read_text())
    info = json.loads(Path(argv[1]).read_text())
    json.dump(ui_to_api(ui, info), sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The UI -> API converter (scripts/workflow_api.py) on hand-written graphs with known answers."""
import pytest

import workflow_api
from workflow_api import WorkflowError, ui_to_api

INFO = {
    "Loader": {"input": {"required": {"name": [["a.safetensors", "b.safetensors"], {}]}},
               "input_order": {"required": ["name"]}, "output": ["MODEL"]},
    "Sampler": {
        "input": {"required": {"model": ["MODEL", {}], "seed": ["INT", {"default": 0}],
                               "steps": ["INT", {"default": 20}], "cfg": ["FLOAT", {"default": 5.0}],
                               "mode": ["COMBO", {"options": ["x", "y"]}]},
                  "optional": {"extra": ["FLOAT", {"default": 1.5}], "guide": ["GUIDE", {}]}},
        "input_order": {"required": ["model", "seed", "steps", "cfg", "mode"], "optional": ["extra", "guide"]},
        "output": ["LATENT"]},
    "Noise": {"input": {"required": {"value": ["INT", {"default": 3, "control_after_generate": True}],
                                     "count": ["INT", {"default": 1, "control_after_generate": False}],
                                     "seed": ["INT", {"forceInput": True}]}},
              "input_order": {"required": ["value", "count", "seed"]}, "output": ["INT"]},
    "LoadImage": {"input": {"required": {"image": [["cat.png"], {"image_upload": True}]}},
                  "input_order": {"required": ["image"]}, "output": ["IMAGE", "MASK"]},
}


def node(nid, kind, widgets=(), inputs=(), mode=0, **kw):
    return {"id": nid, "type": kind, "mode": mode, "widgets_values": list(widgets),
            "inputs": [{"name": n, "type": "X", "link": l} for n, l in inputs], **kw}


def graph(nodes, links):
    return {"nodes": nodes, "links": links, "version": 0.4}


def test_positional_widgets_seed_control_and_links():
    ui = graph([node(1, "Loader", ["b.safetensors"]),
                node(2, "Sampler", [42, "randomize", 8, 4.5, "y", 2.0], [("model", 7)])],
               [[7, 1, 0, 2, 0, "MODEL"]])
    api = ui_to_api(ui, INFO)
    assert api["1"] == {"class_type": "Loader", "inputs": {"name": "b.safetensors"}}
    assert api["2"]["inputs"] == {"model": ["1", 0], "seed": 42, "steps": 8, "cfg": 4.5, "mode": "y",
                                  "extra": 2.0}


def test_old_workflow_missing_appended_values_take_defaults():
    ui = graph([node(1, "Loader", ["a.safetensors"]),
                node(2, "Sampler", [1, "fixed", 8, 4.5, "x"], [("model", 3)])], [[3, 1, 0, 2, 0, "MODEL"]])
    assert ui_to_api(ui, INFO)["2"]["inputs"]["extra"] == 1.5


def test_explicit_control_flags_and_force_input():
    ui = graph([node(5, "Noise", [9, "fixed", 2])], [])
    assert ui_to_api(ui, INFO)["5"]["inputs"] == {"value": 9, "count": 2}


def test_upload_button_value_is_skipped_when_present():
    for widgets in (["cat.png", "image"], ["cat.png"]):
        assert ui_to_api(graph([node(4, "LoadImage", widgets)], []), INFO)["4"]["inputs"] == {"image": "cat.png"}


def test_reroute_primitive_note_and_muted_nodes():
    ui = graph([node(1, "Loader", ["a.safetensors"]),
                node(9, "Reroute", [], [("", 10)]),
                node(11, "PrimitiveNode", [77]),
                node(12, "Note", ["hello"]),
                node(13, "Loader", ["a.safetensors"], mode=2),
                node(2, "Sampler", [0, "fixed", 8, 4.5, "x"], [("model", 11), ("seed", 12)])],
               [[10, 1, 0, 9, 0, "MODEL"], [11, 9, 0, 2, 0, "MODEL"], [12, 11, 0, 2, 1, "INT"]])
    api = ui_to_api(ui, INFO)
    assert set(api) == {"1", "2"}
    assert api["2"]["inputs"]["model"] == ["1", 0] and api["2"]["inputs"]["seed"] == 77


def test_dict_links_and_named_widgets():
    ui = {"nodes": [node(1, "Loader", ["a.safetensors"]),
                    {"id": 2, "type": "Sampler", "mode": 0, "widgets_values": {"seed": 5, "steps": 3},
                     "inputs": [{"name": "model", "link": 4}]}],
          "links": [{"id": 4, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0}]}
    inputs = ui_to_api(ui, INFO)["2"]["inputs"]
    assert inputs["seed"] == 5 and inputs["steps"] == 3 and inputs["cfg"] == 5.0 and inputs["model"] == ["1", 0]


@pytest.mark.parametrize("bad, message", [
    (graph([node(1, "Loader", ["a.safetensors", "extra"])], []), "widget values"),
    (graph([node(1, "Unknown", [])], []), "not installed"),
    (graph([node(1, "Loader", ["a.safetensors"], mode=4)], []), "bypass"),
])
def test_refuses_what_it_cannot_map(bad, message):
    with pytest.raises(WorkflowError, match=message):
        ui_to_api(bad, INFO)


def test_widget_order_helper_skips_sockets():
    names = [w[0] for w in workflow_api.widget_inputs(INFO["Sampler"])]
    assert names == ["seed", "steps", "cfg", "mode", "extra"]

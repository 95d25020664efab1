"""Saved workflows keep loading: node inputs only ever grow at the end, and what grows is optional."""
import json
from pathlib import Path

import pytest

RECORD = json.loads((Path(__file__).parent / "fixtures" / "node_inputs_v1.json").read_text())
NODES = sorted(k for k in RECORD if not k.startswith("_"))


@pytest.mark.parametrize("node_id", NODES)
def test_inputs_are_append_only_and_new_ones_optional(comfy, node_id):
    assert node_id in comfy.nodes.NODE_CLASS_MAPPINGS, f"{node_id} was removed: saved workflows would break"
    order = comfy.object_info(node_id)["input_order"]
    old = RECORD[node_id]
    assert order.get("required", []) == old["required"], (
        f"{node_id}: required inputs changed from {old['required']} to {order.get('required')}; "
        "a new input must be optional and appended")
    optional = order.get("optional", [])
    assert optional[:len(old["optional"])] == old["optional"], f"{node_id}: optional inputs reordered"

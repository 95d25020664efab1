"""Every MOVA node checks its own float and dropdown inputs (ComfyUI 0.3.75 lets NaN through min/max and
never checks V3 dropdowns sent through the API), through the one helper in nodes/validation.py."""
import importlib
import math

import pytest


def _mova_nodes(comfy):
    return {k: v for k, v in comfy.nodes.NODE_CLASS_MAPPINGS.items()
            if k.startswith("MOVA") and not k.startswith("MOVATest")}


def _validation(cls):
    return importlib.import_module(cls.__module__.rsplit(".", 1)[0] + ".validation")


def test_every_float_and_dropdown_of_every_mova_node_is_declared_in_validate_inputs(comfy):
    from comfy_api.latest import io
    missing = {}
    for name, cls in _mova_nodes(comfy).items():
        needs = {i.id for i in cls.define_schema().inputs if isinstance(i, (io.Float.Input, io.Combo.Input))}
        unchecked = needs - _validation(cls).declared_inputs(cls) if needs else set()
        if unchecked:
            missing[name] = sorted(unchecked)
    assert not missing, f"inputs no validate_inputs checks (NaN / out-of-list values would get through): {missing}"


@pytest.mark.parametrize("node, inputs, words", [
    ("MOVASampler", {"video_cfg": math.nan}, "video_cfg: nan is not a finite number"),
    ("MOVASampler", {"schedule": "karras"}, "schedule: 'karras' is not one of the choices"),
    ("MOVASampler", {"steps": "abc"}, "steps: expected a whole number"),
    ("MOVALatent", {"width": 100, "height": 64, "frames": 49, "fps": 24.0}, "multiples of 16"),
    ("MOVALora", {"strength_bridge": -math.inf}, "strength_bridge: -inf is not a finite number"),
    ("MOVAModelLoader", {"quantization": "../../x"}, "quantization: '../../x' is not one of the choices"),
])
def test_the_message_names_the_node_input_and_fix(comfy, node, inputs, words):
    cls = comfy.nodes.NODE_CLASS_MAPPINGS[node]
    result = cls.validate_inputs(**inputs)
    assert isinstance(result, str)
    assert result.startswith(cls.define_schema().display_name + ": ") and words in result, result


def test_good_values_pass(comfy):
    nodes = comfy.nodes.NODE_CLASS_MAPPINGS
    assert nodes["MOVASampler"].validate_inputs(seed=0, steps=12, shift=5.0, boundary=0.9, video_cfg=5.0,
                                                audio_cfg=5.0, schedule="mova", audio_shift=50.0) is True
    assert nodes["MOVALatent"].validate_inputs(width=64, height=64, frames=49, fps=24.0) is True
    assert nodes["MOVALatent"].validate_inputs(width=None, height=64, frames=49, fps=24.0) is True   # linked

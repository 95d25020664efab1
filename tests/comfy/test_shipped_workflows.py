"""What the shipped workflows set up inside the real ComfyUI, beyond running to an mp4 (that is
test_comfy_nodes.py::test_shipped_workflow_runs_and_writes_mp4, which runs every workflows/*.json)."""
from conftest import WORKFLOWS, load_workflow

LOW_VRAM = WORKFLOWS / "low_vram_text_to_video_audio.json"


def test_every_shipped_workflow_is_run_by_the_mp4_test():
    import test_comfy_nodes
    assert LOW_VRAM in test_comfy_nodes.SHIPPED
    import test_given_workflows
    given = [WORKFLOWS / name for name in test_given_workflows.GIVEN]
    import test_toy_to_real_model
    assert test_comfy_nodes.REAL_MODEL == [test_toy_to_real_model.REAL_TEMPLATE]
    assert sorted(test_comfy_nodes.SHIPPED + given + test_comfy_nodes.REAL_MODEL) == sorted(WORKFLOWS.glob("*.json"))


def test_low_vram_workflow_loads_a_quantized_model_streamed_from_disk(comfy):
    prompt = comfy.convert(load_workflow(LOW_VRAM))
    loader_id = next(k for k, v in prompt.items() if v["class_type"] == "MOVAModelLoader")
    result = comfy.run(prompt, outputs=[loader_id], fresh=True)
    assert result.success, result.execution_error()
    handle = result.values[loader_id][0][0]
    assert (handle.options.quantization, handle.options.offload, handle.options.resident_layers) == \
        ("fp8_e4m3fn", "disk", 1)
    # Layers stream through the offload engine from files on disk, and the Linear layers are fp8.
    assert handle.engine is not None and handle.engine.settings.storage == "disk"
    assert handle.engine.settings.resident_units == 1
    kinds = {type(m).__name__ for m in handle.generator.modules()}
    assert "FP8Linear" in kinds, sorted(kinds)


def test_shipped_workflows_sample_the_embedded_toy_with_its_audio_shift(comfy):
    """Every shipped graph loads the embedded toy and gives its audio the toy's own shift (the audio follows
    the picture's timing); the released behaviour is audio_shift 0, the node's default."""
    import importlib

    import pytest
    root = comfy.nodes.NODE_CLASS_MAPPINGS["MOVASampler"].__module__.rsplit(".", 2)[0]
    AUDIO_SHIFT = importlib.import_module(f"{root}.toy.train.configs").AUDIO_SHIFT   # the pack as ComfyUI loaded it
    assert comfy.object_info("MOVASampler")["input"]["optional"]["audio_shift"][1]["default"] == 0.0
    for path in sorted(WORKFLOWS.glob("*.json")):
        if "mova_requires" in load_workflow(path).get("extra", {}):
            continue        # the real-model variant: released settings (tests/test_workflows.py)
        prompt = comfy.convert(load_workflow(path))
        kinds = {v["class_type"]: v["inputs"] for v in prompt.values()}
        assert kinds["MOVAModelLoader"]["model"] == "mova-toy", path.name
        shifts = [v["inputs"]["audio_shift"] for v in prompt.values() if "audio_shift" in v["inputs"]]
        assert shifts and shifts == pytest.approx([AUDIO_SHIFT] * len(shifts)), path.name   # every sampling node

"""What the shipped workflows set up inside the real ComfyUI, beyond running to an mp4 (that is
test_comfy_nodes.py::test_shipped_workflow_runs_and_writes_mp4, which runs every workflows/*.json)."""
from conftest import WORKFLOWS, load_workflow

LOW_VRAM = WORKFLOWS / "low_vram_text_to_video_audio.json"


def test_every_shipped_workflow_is_run_by_the_mp4_test():
    import test_comfy_nodes
    assert LOW_VRAM in test_comfy_nodes.SHIPPED
    assert sorted(test_comfy_nodes.SHIPPED) == sorted(WORKFLOWS.glob("*.json"))


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

"""MOVA Speed inside the real ComfyUI: between loader and sampler, its attention choice on the node."""
from conftest import WORKFLOWS, load_workflow


def test_speed_node_runs_and_shows_the_attention_choice(comfy):
    prompt = comfy.convert(load_workflow(WORKFLOWS / "text_to_video_audio.json"))
    loader = next(k for k, v in prompt.items() if v["class_type"] == "MOVAModelLoader")
    sampler = next(k for k, v in prompt.items() if v["class_type"] == "MOVASampler")
    prompt["900"] = {"class_type": "MOVASpeed", "inputs": {"model": [loader, 0], "attention": "sdpa",
                                                          "compile_elementwise": False, "fp8_fast_matmul": False}}
    prompt[sampler]["inputs"].update(model=["900", 0], seed=13, steps=2)
    result = comfy.run(prompt, outputs=[sampler])
    assert result.success, result.execution_error()
    texts = [t for n, t in comfy.stub.progress_text if n == "900"]
    assert texts == ["attention: sdpa (requested)"]
    bad = comfy.nodes.NODE_CLASS_MAPPINGS["MOVASpeed"].validate_inputs(attention="xformers")
    assert bad is not True and "is not one of the choices" in str(bad)

"""MOVA Decode Video's optional `tiling` widget in the real ComfyUI: appended last with a tooltip,
absent (a workflow saved before it) = auto, tiled frames within 1e-2 of untiled ones."""
import pytest

from conftest import WORKFLOWS, load_workflow


@pytest.fixture(scope="module")
def ready(comfy):
    return comfy


def test_tiling_is_an_optional_combo_appended_last(ready):
    info = ready.object_info("MOVADecodeVideo")
    assert info["input_order"]["required"] == ["video_vae", "latent"]
    assert info["input_order"]["optional"] == ["tiling"]
    options, extra = info["input"]["optional"]["tiling"][:2] if isinstance(
        info["input"]["optional"]["tiling"][0], list) else (info["input"]["optional"]["tiling"][1]["options"],
                                                           info["input"]["optional"]["tiling"][1])
    assert list(options) == ["auto", "off", "256", "384", "512"]
    assert extra.get("default") == "auto" and "tile" in extra.get("tooltip", "")


def test_tiled_decode_through_the_node_matches_untiled(ready):
    prompt = ready.convert(load_workflow(WORKFLOWS / "text_to_video_audio.json"))
    node = lambda t: next(k for k, v in prompt.items() if v["class_type"] == t)  # noqa: E731
    prompt[node("MOVALatent")]["inputs"].update(width=384, height=192, frames=5)
    prompt[node("MOVASampler")]["inputs"].update(steps=1, seed=3)
    decode = node("MOVADecodeVideo")
    images = {}
    for tiling in (None, "off", "256"):
        if tiling is None:
            prompt[decode]["inputs"].pop("tiling", None)      # as saved before the widget existed
        else:
            prompt[decode]["inputs"]["tiling"] = tiling
        result = ready.run(prompt, outputs=[decode])
        assert result.success, result.execution_error()
        images[tiling] = result.values[decode][0][0]
    assert images["off"].shape == (5, 192, 384, 3) and images["off"].device.type == "cpu"
    assert (images[None] == images["off"]).all()                # auto on CPU: whole frames
    assert (images["256"] - images["off"]).abs().max().item() <= 1e-2

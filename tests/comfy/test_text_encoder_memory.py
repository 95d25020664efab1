"""The umT5 text encoder under ComfyUI's model management: MOVA Text Encode registers it (ComfyUI
can unload it: free_memory / "free model and node cache"), encoding again loads it back and gives
the same context; sampling releases text encoders that sit on a compute device."""
import pytest

from conftest import WORKFLOWS, load_workflow


@pytest.fixture(scope="module")
def ready(comfy):
    return comfy


def _text_patchers(mm):
    return [lm.model for lm in mm.current_loaded_models if type(lm.model).__name__ == "MovaTextPatcher"]


def test_text_encoder_is_managed_by_comfy(ready):
    import comfy.model_management as mm
    import torch

    prompt = ready.convert(load_workflow(WORKFLOWS / "text_to_video_audio.json"))
    loader = next(k for k, v in prompt.items() if v["class_type"] == "MOVATextEncoderLoader")
    encode = next(k for k, v in prompt.items() if v["class_type"] == "MOVATextEncode")
    prompt[encode]["inputs"]["text"] = "a lighthouse in a storm, waves and wind"
    result = ready.run(prompt, outputs=[loader, encode])
    assert result.success, result.execution_error()
    encoder = result.values[loader][0][0]
    context = result.values[encode][0][0].context
    managed = [p for p in _text_patchers(mm) if p.model is encoder]
    assert len(managed) == 1 and managed[0].is_loaded and managed[0].size > 0

    mm.free_memory(1e30, mm.get_torch_device())          # what ComfyUI does under memory pressure
    assert not [p for p in _text_patchers(mm) if p.model is encoder]
    assert not managed[0].is_loaded

    prompt[encode]["inputs"]["text"] = "a lighthouse in a storm, waves and wind "   # not cached: runs again
    again = ready.run(prompt, outputs=[loader, encode])
    assert again.success, again.execution_error()
    assert [p for p in _text_patchers(mm) if p.model is encoder]
    assert torch.equal(again.values[encode][0][0].context, context)   # same prompt after cleaning


def test_release_before_sampling_moves_only_encoders_on_a_compute_device(ready):
    import comfy.model_management as mm
    import torch

    patchers = _text_patchers(mm)
    assert patchers, "the previous test leaves a registered text encoder"
    release = __import__(type(patchers[0]).__module__, fromlist=["release_text_encoders"]).release_text_encoders
    cpu_only = all(p.load_device == p.offload_device for p in patchers)
    released = release()
    if cpu_only:    # on a CPU host load and offload device are one: nothing to move, it stays registered
        assert released == 0 and _text_patchers(mm) == patchers
    else:
        assert released == len(patchers) and not _text_patchers(mm)
        assert all(next(p.model.parameters()).device == torch.device("cpu") for p in patchers)

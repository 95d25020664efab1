"""MOVA Sampler's step_cache input inside the real ComfyUI: skipped steps in the progress text, a
different (cached) result, out-of-range values refused by validation, 0 = the uncached graph."""
import math

import pytest

from conftest import WORKFLOWS, load_workflow


def _prompt(comfy, **inputs):
    prompt = comfy.convert(load_workflow(WORKFLOWS / "text_to_video_audio.json"))
    sampler_id = next(k for k, v in prompt.items() if v["class_type"] == "MOVASampler")
    prompt[sampler_id]["inputs"].update(seed=11, steps=8, **inputs)
    return prompt, sampler_id


def test_step_cache_skips_steps_and_says_so(comfy):
    prompt, sampler_id = _prompt(comfy, step_cache=1.0)
    result = comfy.run(prompt, outputs=[sampler_id])
    assert result.success, result.execution_error()
    texts = [t for n, t in comfy.stub.progress_text if n == sampler_id]
    assert len(texts) == 8 and "step cache: 0 step(s) skipped" in texts[0]
    last = texts[-1]
    skipped = int(last.split("step cache: ")[1].split(" ")[0])
    assert skipped >= 1 and f"{2 * skipped} forwards saved" in last, last
    cached = result.values[sampler_id][0][0]

    prompt, _ = _prompt(comfy, step_cache=0.0)
    plain = comfy.run(prompt, outputs=[sampler_id])
    assert plain.success, plain.execution_error()
    assert not any("step cache" in t for n, t in comfy.stub.progress_text if n == sampler_id)
    reference = plain.values[sampler_id][0][0]
    assert not (cached.video == reference.video).all()   # steps really were reused


@pytest.mark.parametrize("value, words", [(1.5, "above the maximum 1.0"), (-0.1, "below the minimum 0.0"),
                                          (math.nan, "not a finite number")])
def test_out_of_range_threshold_is_refused(comfy, value, words):
    cls = comfy.nodes.NODE_CLASS_MAPPINGS["MOVASampler"]
    result = cls.validate_inputs(step_cache=value)
    text = str(result)   # the message reads once, then points to the first
    assert result is not True and "step_cache" in text and words in text, text

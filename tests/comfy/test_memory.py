"""ComfyUI's memory management drives the MOVA generator (real ComfyUI 0.3.75, CPU: load device ==
offload device): sampling registers it through load_models_gpu, what POST /free does (unload_all_models,
then the executor's cache reset) unloads and lets it go, the next run reloads it with identical output,
and repeated runs do not grow host RAM."""
import ctypes
import ctypes.util
import gc
import weakref

import psutil
import pytest
import torch

from conftest import WORKFLOWS, load_workflow

RUNS = 4
# Private RSS may wobble by allocator caches and ComfyUI's history; a leaked copy of the toy model's
# weights or of a run's latents/frames would be far larger than this.
RSS_TOLERANCE = 24 * 2**20
STEPS = 3   # the workflow's 12 steps change nothing here but the time


@pytest.fixture(scope="module")
def prompt(comfy):
    return comfy.convert(load_workflow(WORKFLOWS / "text_to_video_audio.json"))


def node_id(prompt, class_type):
    return next(k for k, n in prompt.items() if n["class_type"] == class_type)


def run(comfy, prompt, seed, offload="none", resident=40, outputs=("MOVASampler",)):
    p = {k: {**v, "inputs": dict(v["inputs"])} for k, v in prompt.items()}
    p[node_id(p, "MOVASampler")]["inputs"].update(seed=seed, steps=STEPS)
    loader = p[node_id(p, "MOVAModelLoader")]["inputs"]
    loader["offload"], loader["resident_layers"] = offload, resident
    ids = [node_id(p, c) for c in outputs] if outputs else None
    result = comfy.run(p, outputs=ids)
    assert result.success, result.execution_error()
    return [result.values[i][0][0] for i in ids] if ids else result


def free(comfy, reset_cache=True):
    """What the prompt worker does for POST /free {"unload_models": true, "free_memory": true}."""
    import comfy.model_management as mm
    mm.unload_all_models()
    if reset_cache:
        comfy.executor.reset()
    gc.collect()
    mm.soft_empty_cache()


def registered(patcher) -> bool:
    import comfy.model_management as mm
    return any(m.model is patcher for m in mm.current_loaded_models)


def private_rss() -> int:
    """Private resident bytes after handing freed heap back to the OS (glibc keeps freed chunks
    mapped; only memory still referenced should count)."""
    libc = ctypes.util.find_library("c")
    if libc:
        ctypes.CDLL(libc).malloc_trim(0)
    return psutil.Process().memory_full_info().uss


def test_repeated_runs_do_not_grow_host_ram(comfy, prompt):
    free(comfy)
    usage = []
    for seed in range(RUNS):
        run(comfy, prompt, seed, outputs=None)   # whole graph, mp4 written each time
        gc.collect()
        usage.append(private_rss())
    growth = [u - usage[0] for u in usage]
    print("private RSS per run (MB):", [round(u / 2**20, 1) for u in usage])
    assert max(growth[1:]) <= RSS_TOLERANCE, f"host RAM grew by {[g / 2**20 for g in growth]} MB"


@pytest.mark.parametrize("offload,resident", [("none", 40), ("cpu", 1)])
def test_free_unloads_and_next_run_reloads_identically(comfy, prompt, offload, resident):
    free(comfy)
    handle, first = run(comfy, prompt, 7, offload, resident, ("MOVAModelLoader", "MOVASampler"))
    patcher = handle.patcher
    assert patcher is not None and registered(patcher) and patcher.is_loaded
    assert patcher.model is handle.generator and patcher.model_size() > 0
    if offload == "cpu":
        assert handle.engine is not None and patcher.engine is handle.engine
        assert patcher.model_size() < handle.engine.total_bytes()   # only the resident share + one unit
        engine = handle.engine                                        # (CPU: no prefetch stream)
        assert patcher.model_size() == engine.resident_bytes() + max(
            engine.unit_bytes(i) for i in range(engine.num_units) if not engine.is_resident(i))

    # "unload_models" alone: the cached model stays, ComfyUI unloads it; the next sampling loads it again
    free(comfy, reset_cache=False)
    assert not registered(patcher) and not patcher.is_loaded
    if offload == "cpu":   # released: every streamed tensor (stems too) is an empty placeholder
        assert handle.engine.device_bytes() == 0
    run(comfy, prompt, 8, offload, resident)          # a different seed so the sampler re-executes
    again = run(comfy, prompt, 7, offload, resident)[0]
    assert registered(patcher) and patcher.is_loaded
    assert torch.equal(first.video, again.video) and torch.equal(first.audio, again.audio)

    # "free_memory": unloaded, cache dropped, the generator is garbage (no reference kept anywhere)
    generator = weakref.ref(handle.generator)
    del handle, patcher
    free(comfy)
    assert generator() is None, gc.get_referrers(generator())
    handle, third = run(comfy, prompt, 7, offload, resident, ("MOVAModelLoader", "MOVASampler"))
    assert registered(handle.patcher) and handle.patcher.is_loaded
    assert torch.equal(first.video, third.video) and torch.equal(first.audio, third.audio)

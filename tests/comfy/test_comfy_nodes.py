"""The pack inside the real ComfyUI, in-process: registration, every shipped workflow, old workflows,
readable validation/execution errors, progress and interrupt."""
import json
import shutil

import pytest

from conftest import (COMFY_DIR, OLD_WORKFLOWS, WORKFLOWS, check_av_file, embedded_model_name,
                      load_workflow, model_sample_rate, workflow_geometry)

OUR_NODES = ["MOVAModelLoader", "MOVAModelLoaderFiles", "MOVAVideoVAELoader", "MOVAAudioVAELoader",
             "MOVATextEncoderLoader", "MOVATextEncode", "MOVAConditioningFromCLIP", "MOVALatent",
             "MOVASampler", "MOVADecodeVideo", "MOVADecodeAudio"]
# Templates with a given video/audio or several windows have their own checks: test_given_workflows.py.
from test_given_workflows import GIVEN  # noqa: E402
# Real-model variants (extra.mova_requires) need weights this machine lacks: test_toy_to_real_model.py
# checks they validate and stop at their loaders with what to do.
REAL_MODEL = sorted(p for p in WORKFLOWS.glob("*.json") if "mova_requires" in load_workflow(p).get("extra", {}))
SHIPPED = sorted(p for p in WORKFLOWS.glob("*.json") if p.name not in GIVEN and p not in REAL_MODEL)
# Saved before the sampler gained inputs; later fixtures (lora_bridge_guidance: test_guidance_lora.py) run there.
OLD = sorted(p for p in OLD_WORKFLOWS.glob("*.json") if p.stem != "lora_bridge_guidance")


@pytest.fixture(scope="module")
def ready(comfy):
    shutil.copy(COMFY_DIR / "input" / "example.png", comfy.base / "input" / "example.png")
    return comfy


def node_of(prompt: dict, class_type: str) -> dict:
    return next(n for n in prompt.values() if n["class_type"] == class_type)


def test_pack_registers_every_node_with_tooltips_and_category(ready):
    for node_id in OUR_NODES:
        info = ready.object_info(node_id)
        assert info["category"].startswith("MOVA/"), node_id
        for category, inputs in info["input"].items():
            if category == "hidden":
                continue
            for name, spec in inputs.items():
                assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_mova_folder_registered_and_embedded_model_is_the_default(ready):
    paths = ready.folder_paths.get_folder_paths("mova")
    assert paths[0].endswith("models/mova") and any(p.endswith("embedded") for p in paths)
    options = ready.object_info("MOVAModelLoader")["input"]["required"]["model"][1]["options"]
    assert options[0] in ("mova-toy", "mova-toy-random")   # trained toy first, else the random stand-in
    assert embedded_model_name() in options                 # what the shipped workflows select
    vae_options = ready.object_info("MOVAVideoVAELoader")["input"]["required"]["vae"][1]["options"]
    assert vae_options[0] == f"{options[0]}/video_vae"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_workflow_runs_and_writes_mp4(ready, path):
    ui = load_workflow(path)
    # A fresh executor: whatever this graph does to the models it loads (a LoRA merged into the
    # weights, …) stays in its own cache instead of the shared one later tests reuse.
    result = ready.run(ready.convert(ui), fresh=True)
    assert result.valid, result.node_errors
    assert result.success, result.execution_error()
    videos = [f for f in result.files() if f["filename"].endswith(".mp4")]
    assert len(videos) == 1
    check_av_file(ready.output_path(videos[0]), ui, model_sample_rate(embedded_model_name()))


@pytest.mark.parametrize("path", OLD, ids=[p.stem for p in OLD])
def test_workflow_saved_before_inputs_were_appended_still_runs(ready, path):
    ui = load_workflow(path)
    sampler = next(n for n in ui["nodes"] if n["type"] == "MOVASampler")
    info = ready.object_info("MOVASampler")
    # The fixture really is older: the sampler has gained inputs since it was saved.
    current_inputs = info["input_order"]["required"] + info["input_order"].get("optional", [])
    saved_inputs = [i["name"] for i in sampler["inputs"]]
    assert "guidance" in current_inputs and "guidance" not in saved_inputs
    assert "audio_shift" in current_inputs and "audio_shift" not in saved_inputs
    assert len(sampler["widgets_values"]) < 1 + len([n for n in current_inputs if n in
                                                     ("seed", "steps", "shift", "boundary", "video_cfg",
                                                      "audio_cfg", "schedule")])
    prompt = ready.convert(ui)
    assert node_of(prompt, "MOVASampler")["inputs"]["schedule"] == "mova"   # appended input -> default
    assert node_of(prompt, "MOVASampler")["inputs"].get("audio_shift", 0.0) == 0.0   # default: same as shift
    result = ready.run(prompt, fresh=True)
    assert result.valid, result.node_errors
    assert result.success, result.execution_error()
    assert [f for f in result.files() if f["filename"].endswith(".mp4")]


def _t2va(ready) -> dict:
    return ready.convert(load_workflow(WORKFLOWS / "text_to_video_audio.json"))


@pytest.mark.parametrize("field, value, words", [
    ("width", 72, ["16", "72"]),
    ("height", 40, ["16", "40"]),
    ("frames", 50, ["4", "50"]),
    ("frames", 0, ["minimum"]),
])
def test_bad_geometry_is_a_readable_validation_error(ready, field, value, words):
    prompt = _t2va(ready)
    node_of(prompt, "MOVALatent")["inputs"][field] = value
    result = ready.run(prompt)
    assert not result.valid
    text = json.dumps(result.node_errors)
    for word in words:
        assert word in text, text


def test_missing_model_is_a_validation_error(ready):
    prompt = _t2va(ready)
    node_of(prompt, "MOVAModelLoader")["inputs"]["model"] = "MOVA-360p-not-downloaded"
    result = ready.run(prompt)
    assert not result.valid
    text = json.dumps(result.node_errors)
    assert "MOVA-360p-not-downloaded" in text and "not one of the choices" in text and "models/mova" in text


def test_wrong_file_is_a_readable_execution_error(ready):
    """A file from another model where the video VAE should be: the message names what was expected."""
    import torch
    from safetensors.torch import save_file
    vae_dir = ready.base / "models" / "vae"
    vae_dir.mkdir(parents=True, exist_ok=True)
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4)},
              str(vae_dir / "sdxl_vae_by_mistake.safetensors"))
    prompt = _t2va(ready)
    node_of(prompt, "MOVAVideoVAELoader")["inputs"]["vae"] = "sdxl_vae_by_mistake.safetensors"
    result = ready.run(prompt)
    assert result.valid, result.node_errors
    assert not result.success
    error = result.execution_error()
    assert error["node_type"] == "MOVAVideoVAELoader"
    assert "errors." in error["exception_type"]   # a MovaError subclass, not a crash deep in torch
    assert "video" in error["exception_message"].lower()


def test_progress_reports_every_step_and_interrupt_stops_between_steps(ready):
    prompt = _t2va(ready)
    sampler_id = next(k for k, v in prompt.items() if v["class_type"] == "MOVASampler")
    node_of(prompt, "MOVASampler")["inputs"].update(seed=7, steps=4)   # new seed: nothing cached
    result = ready.run(prompt, outputs=[sampler_id])
    assert result.success, result.execution_error()
    progress = [d for e, d in ready.stub.messages if e == "progress" and d["node"] == sampler_id]
    assert [p["value"] for p in progress] == [1, 2, 3, 4]
    assert all(p["preview"] is not None and p["preview"][0] == "JPEG" for p in progress)
    assert all(p["max"] == 4 for p in progress)
    texts = [t for n, t in ready.stub.progress_text if n == sampler_id]
    assert texts and texts[0].startswith("step 1/4") and "expert" in texts[0]

    import nodes
    ready.interrupt_at_progress = (sampler_id, 2)
    node_of(prompt, "MOVASampler")["inputs"]["seed"] = 8
    try:
        result = ready.run(prompt, outputs=[sampler_id])
    finally:
        ready.interrupt_at_progress = None
        nodes.interrupt_processing(False)
    assert not result.success
    assert any(e == "execution_interrupted" for e, _ in result.messages)
    done = [d["value"] for e, d in ready.stub.messages if e == "progress" and d["node"] == sampler_id]
    assert max(done) == 2


def test_conditioning_from_core_clip_text_encode_is_accepted(ready):
    """Core CONDITIONING (as CLIPTextEncode with umT5 returns it) becomes a 512-token MOVA context."""
    import torch
    cls = ready.nodes.NODE_CLASS_MAPPINGS["MOVAConditioningFromCLIP"]
    out = cls.execute(conditioning=[[torch.ones(1, 7, 4096), {"pooled_output": None}]])
    context = out.args[0].context
    assert tuple(context.shape) == (1, 512, 4096)
    assert torch.all(context[:, :7] == 1) and torch.all(context[:, 7:] == 0)


def _sampled(ready, prompt, **loader):
    if loader:
        node_of(prompt, "MOVAModelLoader")["inputs"].update(loader)
    sampler_id = next(k for k, v in prompt.items() if v["class_type"] == "MOVASampler")
    node_of(prompt, "MOVASampler")["inputs"].update(steps=3, seed=5)
    result = ready.run(prompt, outputs=[sampler_id])
    assert result.success, result.execution_error()
    latent = result.values[sampler_id][0][0]
    return latent.video, latent.audio


def test_loader_memory_options_run_through_the_kernels(ready):
    """Streaming (cpu / disk) gives the resident result exactly; quantized modes stay close."""
    import torch
    base_v, base_a = _sampled(ready, _t2va(ready))
    for offload in ("cpu", "disk"):
        v, a = _sampled(ready, _t2va(ready), offload=offload, resident_layers=1)
        assert torch.equal(v, base_v) and torch.equal(a, base_a), offload
    for mode in ("fp8_e4m3fn", "int8"):
        v, a = _sampled(ready, _t2va(ready), quantization=mode)
        assert torch.isfinite(v).all() and not torch.equal(v, base_v), mode
        assert (v - base_v).norm() / base_v.norm() < 0.2, mode


def test_disk_streaming_with_on_the_fly_quantization_uses_a_cached_quantized_copy(ready):
    """quantization + offload=disk: the first load writes a quantized copy to ComfyUI's temp folder and
    streams it; output equals the same quantization with offload=cpu bit for bit; a second load (other
    resident_layers, so the loader runs again) reuses the copy instead of writing it again."""
    import torch
    from pathlib import Path
    cache = Path(ready.folder_paths.get_temp_directory()) / "mova_quant"
    shutil.rmtree(cache, ignore_errors=True)
    ref_v, ref_a = _sampled(ready, _t2va(ready), quantization="fp8_e4m3fn", offload="cpu", resident_layers=1)
    v, a = _sampled(ready, _t2va(ready), quantization="fp8_e4m3fn", offload="disk", resident_layers=1)
    assert torch.equal(v, ref_v) and torch.equal(a, ref_a)
    written = sorted(cache.glob("*/*/*.safetensors"))   # <key>/<component>/ shards
    assert {p.parent.name for p in written} == {"video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"}
    assert not list(cache.rglob("*.partial"))
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in written}
    v2, a2 = _sampled(ready, _t2va(ready), quantization="fp8_e4m3fn", offload="disk", resident_layers=2)
    assert torch.equal(v2, ref_v) and torch.equal(a2, ref_a)
    assert sorted(cache.glob("*/*/*.safetensors")) == written
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in written} == stamps


def test_text_encoder_of_another_model_is_a_readable_error(ready):
    """Core CONDITIONING 4096 wide (real umT5) with the tiny embedded model: refused with the reason."""
    import sys
    import torch
    wide = ready.nodes.NODE_CLASS_MAPPINGS["MOVAConditioningFromCLIP"].execute(
        conditioning=[[torch.zeros(1, 5, 4096), {}]]).args[0]
    prompt = _t2va(ready)
    loader_id = next(k for k, v in prompt.items() if v["class_type"] == "MOVAModelLoader")
    model = ready.run(prompt, outputs=[loader_id]).values[loader_id][0][0]
    # the backend module of the pack as ComfyUI imported it (not a second copy)
    backend = sys.modules[ready.nodes.NODE_CLASS_MAPPINGS["MOVASampler"].__module__.rsplit(".", 1)[0] + ".backend"]
    with pytest.raises(Exception, match="do not belong together") as err:
        backend.sample(model, wide, wide, latent=None, settings=None)
    assert type(err.value).__name__ == "InputError"


def test_single_file_loader_reads_files_from_diffusion_models(ready):
    """Single files in models/diffusion_models/ (each beside its config.json) give the same model."""
    import torch
    from conftest import ROOT
    src = ROOT / "embedded" / embedded_model_name()
    dst = ready.base / "models" / "diffusion_models" / "mova-tiny"
    names = {}
    for component in ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"):
        shutil.copytree(src / component, dst / component, dirs_exist_ok=True)
        names[component] = f"mova-tiny/{component}/diffusion_pytorch_model.safetensors"
    base_v, base_a = _sampled(ready, _t2va(ready))
    prompt = _t2va(ready)
    loader_id = next(k for k, v in prompt.items() if v["class_type"] == "MOVAModelLoader")
    prompt[loader_id] = {"class_type": "MOVAModelLoaderFiles", "inputs": {
        "video_high_noise": names["video_dit"], "video_low_noise": names["video_dit_2"],
        "audio": names["audio_dit"], "bridge": names["dual_tower_bridge"], "preset": "mova-360p",
        "dtype": "auto", "quantization": "none", "offload": "none", "resident_layers": 40}}
    v, a = _sampled(ready, prompt)
    assert torch.equal(v, base_v) and torch.equal(a, base_a)

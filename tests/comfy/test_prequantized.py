"""Pre-quantized files (scripts/quantize.py's format) through both loader nodes, with offload none, cpu
and disk, in the real ComfyUI: each generates, and equals quantizing the plain files while loading.
Mixed folders load; a damaged or mismatched quantized file is a readable error naming the fix."""
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, WORKFLOWS, embedded_model_name, load_workflow

COMPONENTS = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge")
SLOTS = {"video_dit": "video_high_noise", "video_dit_2": "video_low_noise", "audio_dit": "audio",
         "dual_tower_bridge": "bridge"}


def _quantize(src, dest, mode, component):
    """The user's command: scripts/quantize.py."""
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "quantize.py"), str(src), str(dest), "--mode", mode,
                          "--component", component], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr


@pytest.fixture(scope="module")
def quantized(comfy):
    """models/mova/toy-<mode>/ (a MOVA folder whose towers are pre-quantized) and the same towers as
    single files in models/diffusion_models/toy-<mode>/ for fp8 and nf4."""
    src = ROOT / "embedded" / embedded_model_name()
    made = {}
    for mode in ("fp8_e4m3fn", "nf4"):
        folder = comfy.base / "models" / "mova" / f"toy-{mode}"
        shutil.copytree(src, folder, dirs_exist_ok=True)
        singles = comfy.base / "models" / "diffusion_models" / f"toy-{mode}"
        for c in COMPONENTS:
            for f in (folder / c).glob("*.safetensors*"):
                f.unlink()
            _quantize(src / c, folder / c / "diffusion_pytorch_model.safetensors", mode, c)
            (singles / c).mkdir(parents=True, exist_ok=True)
            shutil.copy(folder / c / "diffusion_pytorch_model.safetensors", singles / c / "diffusion_pytorch_model.safetensors")
            shutil.copy(folder / c / "config.json", singles / c / "config.json")
        made[mode] = (folder.name, {c: f"toy-{mode}/{c}/diffusion_pytorch_model.safetensors" for c in COMPONENTS})
    return made


def _prompt(comfy):
    return comfy.convert(load_workflow(WORKFLOWS / "text_to_video_audio.json"))


def _loader(prompt):
    return next(k for k, v in prompt.items() if v["class_type"] in ("MOVAModelLoader", "MOVAModelLoaderFiles"))


def _sample(comfy, prompt, **loader):
    prompt[_loader(prompt)]["inputs"].update(loader)
    sampler = next(k for k, v in prompt.items() if v["class_type"] == "MOVASampler")
    prompt[sampler]["inputs"].update(steps=3, seed=5)
    result = comfy.run(prompt, outputs=[sampler])
    return result, (result.values[sampler][0][0] if result.success else None)


@pytest.mark.parametrize("mode", ["fp8_e4m3fn", "nf4"])
def test_prequantized_files_load_through_both_loaders_with_every_offload(comfy, quantized, mode):
    import torch
    _, ref = _sample(comfy, _prompt(comfy), quantization=mode, offload="none")   # quantized while reading
    assert ref is not None and torch.isfinite(ref.video).all()
    folder, files = quantized[mode]
    for offload in ("none", "cpu", "disk"):
        result, latent = _sample(comfy, _prompt(comfy), model=folder, quantization="none", offload=offload,
                                 resident_layers=1)
        assert result.success, (offload, result.execution_error())
        assert torch.equal(latent.video, ref.video) and torch.equal(latent.audio, ref.audio), offload
        prompt = _prompt(comfy)
        inputs = prompt[_loader(prompt)]["inputs"]
        prompt[_loader(prompt)] = {"class_type": "MOVAModelLoaderFiles", "inputs": {
            **{SLOTS[c]: files[c] for c in COMPONENTS}, "preset": "mova-360p", "dtype": inputs["dtype"],
            "quantization": "none", "offload": offload, "resident_layers": 1}}
        result, latent = _sample(comfy, prompt)
        assert result.success, (offload, result.execution_error())
        assert torch.equal(latent.video, ref.video) and torch.equal(latent.audio, ref.audio), offload


def test_mixed_folder_and_damaged_quantized_files(comfy, quantized):
    """One tower pre-quantized, the others plain: loads (with on-the-fly fp8 for the rest). A quantized
    file with a scale removed, or put in another tower's slot, is refused naming what to do."""
    import torch
    from safetensors.torch import load_file, save_file
    src = ROOT / "embedded" / embedded_model_name()
    mixed = comfy.base / "models" / "mova" / "toy-mixed"
    shutil.copytree(src, mixed, dirs_exist_ok=True)
    fp8_folder = comfy.base / "models" / "mova" / quantized["fp8_e4m3fn"][0]
    for f in (mixed / "audio_dit").glob("*.safetensors*"):
        f.unlink()
    shutil.copy(fp8_folder / "audio_dit" / "diffusion_pytorch_model.safetensors", mixed / "audio_dit")
    result, latent = _sample(comfy, _prompt(comfy), model="toy-mixed", quantization="fp8_e4m3fn", offload="disk",
                             resident_layers=1)
    assert result.success, result.execution_error()
    assert torch.isfinite(latent.video).all()

    damaged = comfy.base / "models" / "mova" / "toy-damaged"
    shutil.copytree(fp8_folder, damaged, dirs_exist_ok=True)
    path = damaged / "audio_dit" / "diffusion_pytorch_model.safetensors"
    from safetensors import safe_open
    with safe_open(str(path), "pt") as h:
        meta = h.metadata()
    state = load_file(path)
    state.pop(next(k for k in sorted(state) if k.endswith(".weight_scale")))
    save_file(state, str(path), metadata=meta)
    result, _ = _sample(comfy, _prompt(comfy), model="toy-damaged")
    message = str(result.execution_error())
    assert not result.success and "weight_scale" in message and "scripts/quantize.py" in message, message

    swapped = comfy.base / "models" / "mova" / "toy-swapped"
    shutil.copytree(fp8_folder, swapped, dirs_exist_ok=True)
    shutil.copy(fp8_folder / "video_dit" / "diffusion_pytorch_model.safetensors",
                swapped / "audio_dit" / "diffusion_pytorch_model.safetensors")
    result, _ = _sample(comfy, _prompt(comfy), model="toy-swapped")
    message = str(result.execution_error())
    assert not result.success and "video_dit" in message and "audio_dit" in message, message

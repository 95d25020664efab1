"""The load path keeps the planner's promise from the first byte: in a fresh process per combination
(scripts/load_probe.py), peak private host RAM while loading stays within the planner's figure + 5 % and
never exceeds the steady state plus the largest single tensor (+ 5 % of it); a bad request is refused
before any tensor is read."""
import dataclasses
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench import mid_config, probe_load, save_mova_folder  # noqa: E402

from mova_pack.common.errors import CheckpointError, InputError  # noqa: E402
from mova_pack.runtime.loading import LoadSettings, load  # noqa: E402
from mova_pack.runtime.offload import OffloadSettings  # noqa: E402


def small_config():
    """The bench's mid config narrowed to ~185 MB of bf16 weights: same depth (so the same number of
    tensors as the released model), 40 video / 30 audio blocks, Bridge on 30 layers."""
    r = mid_config()

    def narrow(c, dim):
        ffn = round(dim * c.ffn_dim / c.dim / 64) * 64
        return dataclasses.replace(c, dim=dim, ffn_dim=ffn, num_heads=dim // (c.dim // c.num_heads), text_dim=1024)
    return dataclasses.replace(r, video_dit=narrow(r.video_dit, 256), audio_dit=narrow(r.audio_dit, 128),
                               bridge=dataclasses.replace(r.bridge, visual_hidden_dim=256, audio_hidden_dim=128))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("load") / "mova"
    save_mova_folder(small_config(), path)
    return path


@pytest.mark.parametrize("quant,offload", [("none", "none"), ("none", "disk"), ("fp8_e4m3fn", "cpu"),
                                           ("fp8_e4m3fn", "disk"), ("nf4", "cpu")])
def test_peak_ram_while_loading_keeps_the_planners_promise(folder, tmp_path, quant, offload):
    probe = probe_load(folder, quant, offload, tmp_path / "cache", threads=1)
    plan = probe["planner"]
    assert probe["peak_private"] <= 1.05 * plan["peak_host_bytes"], probe
    assert probe["peak_private"] <= probe["steady_private"] + 1.05 * plan["largest_tensor_bytes"], probe
    if offload == "disk":   # streamed: far below the weights (before: every weight was read first)
        bf16_bytes = sum(f.stat().st_size for f in folder.glob("*/*.safetensors"))
        assert probe["steady_private"] < 0.15 * bf16_bytes, probe


def test_too_little_ram_is_refused_before_reading_naming_a_combination_that_fits(folder):
    plan_bytes = 185e6
    with pytest.raises(InputError) as err:
        load(folder, settings=LoadSettings(dtype=torch.bfloat16, available_ram=int(0.5 * plan_bytes)))
    text = str(err.value)
    assert "GB of RAM" in text and "offload" in text and "Pick quantization" in text, text


def test_a_shard_missing_or_a_foreign_file_is_named_before_reading(folder, tmp_path):
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    bridge = broken / "dual_tower_bridge" / "diffusion_pytorch_model.safetensors"
    shutil.copy(broken / "audio_dit" / "diffusion_pytorch_model.safetensors", bridge)
    with pytest.raises(CheckpointError, match="dual_tower_bridge") as err:
        load(broken, settings=LoadSettings(dtype=torch.bfloat16,
                                           offload=OffloadSettings(storage="disk")))
    assert "missing" in str(err.value)


FAILING_LOAD = r"""
import gc, json, sys
sys.path.insert(0, sys.argv[2]); import _pack
import torch
import mova_pack.runtime.placement as placement
from mova_pack.kernels.memstat import private_rss
from mova_pack.runtime.loading import LoadSettings, load
real = placement.load_component
def failing(module, files, name, *args, **kwargs):
    if name == "dual_tower_bridge":
        raise OSError("read error on the last tower")
    return real(module, files, name, *args, **kwargs)
placement.load_component = failing
load(sys.argv[1], settings=LoadSettings(dtype=torch.bfloat16, device="meta"))   # module objects, not counted
gc.collect()
before = private_rss()
try:
    load(sys.argv[1], settings=LoadSettings(dtype=torch.bfloat16, available_ram=0))
except OSError as exc:
    error = exc            # kept alive, as ComfyUI keeps the error it reports
gc.collect()
print(json.dumps({"retained": private_rss() - before, "error": str(error)}))
"""


def test_a_failure_while_reading_leaves_nothing_loaded(folder):
    """A read that fails on the last tower (after both experts and the audio tower were read): the towers
    already read are released, even while the error (and its traceback) is still held."""
    import json
    import os
    import subprocess
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}   # freed memory returns to the OS at once
    run = subprocess.run([sys.executable, "-c", FAILING_LOAD, str(folder), str(ROOT / "scripts")], env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    bf16_bytes = sum(f.stat().st_size for f in folder.glob("*/*.safetensors"))
    assert "read error" in result["error"]
    # the towers' module objects (~10 MB, meta tensors) stay while the traceback holds them; the weights
    # read before the error (both experts and the audio tower, ~85 %) must not
    assert result["retained"] < 0.1 * bf16_bytes, result


def test_a_prequantized_file_of_another_version_or_tower_is_refused(folder, tmp_path):
    import shutil
    from mova_pack.kernels.quant import QuantSettings
    from mova_pack.kernels.quant_io import quantize_file
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    target = other / "audio_dit" / "diffusion_pytorch_model.safetensors"
    quantize_file([folder / "audio_dit" / "diffusion_pytorch_model.safetensors"], target,
                  QuantSettings(mode="fp8_e4m3fn"), "audio_dit", extra_meta={"mova_quant_version": "9"})
    with pytest.raises(CheckpointError, match="version '9'.*scripts/quantize.py"):
        load(other, settings=LoadSettings(dtype=torch.bfloat16, device="meta"))
    quantize_file([folder / "audio_dit" / "diffusion_pytorch_model.safetensors"], target,
                  QuantSettings(mode="fp8_e4m3fn"), "dual_tower_bridge")
    with pytest.raises(CheckpointError, match="quantized dual_tower_bridge file, loaded as audio_dit"):
        load(other, settings=LoadSettings(dtype=torch.bfloat16, device="meta"))

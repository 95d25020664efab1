"""Checkpoint reading: round trip through the released folder layout, shards, single files, and the
errors users meet (truncated file, missing shard, wrong component, other model, prefixes, pickles)."""
import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from parity_utils import TINY, seed_params, tiny_inputs
from mova_pack.common.checkpoint import read_header
from mova_pack.models.config import MovaConfig
from mova_pack.common.errors import CheckpointError, ConfigError, MovaError
from mova_pack.models.net.generator import build_generator, save_generator
from mova_pack.runtime.loading import load_generator
from mova_pack.models.net.joint import joint_forward

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mova")
    gen = build_generator("tiny", dtype=torch.bfloat16)
    for i, m in enumerate((gen.video_high, gen.video_low, gen.audio, gen.bridge)):
        seed_params(m, 200 + i)
    save_generator(gen, folder, max_shard_bytes=60_000)  # video experts (~170 kB bf16) get 3+ shards
    return gen, folder


def test_folder_layout_and_round_trip(saved):
    gen, folder = saved
    names = sorted(p.name for p in (folder / "video_dit").iterdir())
    assert "diffusion_pytorch_model.safetensors.index.json" in names and "config.json" in names
    assert sum(n.endswith(".safetensors") for n in names) >= 3
    assert (folder / "dual_tower_bridge" / "config.json").is_file()
    assert json.loads((folder / "model_index.json").read_text())["boundary_ratio"] == 0.9
    back = load_generator(folder, dtype=torch.bfloat16)
    assert back.config == gen.config
    for (k, a), (k2, b) in zip(sorted(gen.state_dict().items()), sorted(back.state_dict().items())):
        assert k == k2 and torch.equal(a, b), k
    assert not any(p.is_meta for p in back.parameters()) and not any(p.requires_grad for p in back.parameters())
    assert back.bridge.rotary.inv_freq.device.type == "cpu"
    v, y, a, ctx = tiny_inputs(seed=1, frames=2, h=4, w=4)
    with torch.no_grad():
        out = joint_forward(back.video_high, back.audio, back.bridge, v, a, 500.0, ctx, y=y)
        exp = joint_forward(gen.video_high, gen.audio, gen.bridge, v, a, 500.0, ctx, y=y)
    assert torch.equal(out[0], exp[0]) and torch.equal(out[1], exp[1])


def test_dtype_conversion_on_load(saved):
    _, folder = saved
    back = load_generator(folder, dtype=torch.float32)
    assert back.dtype == torch.float32 and back.video_low.blocks[0].ffn[0].weight.dtype == torch.float32


def test_meta_load_checks_the_files_without_reading_a_tensor(saved, tmp_path, monkeypatch):
    """device="meta" (the loader's path for quantized disk streaming): keys and shapes are validated
    from the headers, the towers stay on meta in the asked dtype, no tensor is read."""
    import safetensors
    _, folder = saved
    monkeypatch.setattr(safetensors, "safe_open", lambda *a, **k: pytest.fail("a tensor was read"))
    meta = load_generator(folder, dtype=torch.bfloat16, device="meta")
    assert all(p.is_meta for p in meta.parameters()) and meta.dtype == torch.bfloat16
    bridge_file = tmp_path / "bridge.safetensors"
    monkeypatch.undo()
    sd = {}
    for f in (folder / "dual_tower_bridge").glob("*.safetensors"):
        sd.update(load_file(str(f)))
    save_file(sd, str(bridge_file))
    with pytest.raises(CheckpointError, match="^audio_dit: missing"):
        load_generator(files={"audio_dit": bridge_file, "dual_tower_bridge": folder / "dual_tower_bridge",
                              "video_dit": folder / "video_dit"}, config="tiny", device="meta")


def test_single_files_need_a_config(saved, tmp_path):
    _, folder = saved
    files = {}
    for name in ("audio_dit", "dual_tower_bridge", "video_dit_2"):
        sd = {}
        for f in sorted((folder / name).glob("*.safetensors")):
            sd.update(load_file(str(f)))
        files[name] = tmp_path / f"{name}.safetensors"
        save_file(sd, str(files[name]))
    with pytest.raises(ConfigError, match="mova-360p"):
        load_generator(files=files)
    gen = load_generator(files=files, config="tiny", dtype=torch.bfloat16)
    assert gen.video_high is None and gen.expert(False) is gen.video_low
    with pytest.raises(ConfigError, match="unknown preset"):
        load_generator(files=files, config="mova-999p")


def test_truncated_file(saved, tmp_path):
    _, folder = saved
    data = sorted((folder / "audio_dit").glob("*.safetensors"))[0].read_bytes()
    bad = tmp_path / "audio.safetensors"
    bad.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="truncated.*download"):
        read_header(bad)
    with pytest.raises(CheckpointError, match="truncated"):
        load_generator(files={"audio_dit": bad, "dual_tower_bridge": folder / "dual_tower_bridge",
                              "video_dit": folder / "video_dit"}, config="tiny", dtype=torch.bfloat16)


def test_missing_shard(saved, tmp_path):
    _, folder = saved
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    shard = sorted((copy / "video_dit_2").glob("*-00002-of-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CheckpointError, match=r"video_dit_2: 1 of \d+ shards .* missing: " + shard.name):
        load_generator(copy)


def test_wrong_component_in_slot(saved, tmp_path):
    _, folder = saved
    slots = {"dual_tower_bridge": folder / "dual_tower_bridge", "video_dit": folder / "video_dit"}
    with pytest.raises(ConfigError, match="audio_dit.*DualTowerConditionalBridge"):
        load_generator(files={"audio_dit": folder / "dual_tower_bridge", **slots})
    bridge_file = tmp_path / "bridge.safetensors"
    sd = {}
    for f in (folder / "dual_tower_bridge").glob("*.safetensors"):
        sd.update(load_file(str(f)))
    save_file(sd, str(bridge_file))
    with pytest.raises(CheckpointError) as err:
        load_generator(files={"audio_dit": bridge_file, **slots}, config="tiny", dtype=torch.bfloat16)
    msg = str(err.value)
    assert msg.startswith("audio_dit: missing") and "dual_tower_bridge file" in msg


def test_shape_mismatch_message(saved, tmp_path):
    other = dataclasses.replace(TINY.video_dit, dim=96, num_heads=3)
    gen = build_generator(MovaConfig(video_dit=other, audio_dit=TINY.audio_dit,
                                     bridge=dataclasses.replace(TINY.bridge, visual_hidden_dim=96)))
    path = tmp_path / "video.safetensors"
    save_file({k: v.contiguous() for k, v in gen.video_high.state_dict().items()}, str(path))
    _, folder = saved
    with pytest.raises(CheckpointError) as err:
        load_generator(files={"video_dit": path, "audio_dit": folder / "audio_dit",
                              "dual_tower_bridge": folder / "dual_tower_bridge"}, config="tiny")
    msg = str(err.value)
    assert "video_dit: shape mismatch in" in msg and "expected [64" in msg and "found [96" in msg
    assert "width 96" in msg


def test_missing_keys_and_prefix(saved, tmp_path):
    gen, folder = saved
    sd = {k: v.contiguous() for k, v in gen.audio.state_dict().items()}
    prefixed = tmp_path / "prefixed.safetensors"
    save_file({"model.diffusion_model." + k: v for k, v in sd.items()}, str(prefixed))
    back = load_generator(files={"audio_dit": prefixed, "dual_tower_bridge": folder / "dual_tower_bridge",
                                 "video_dit": folder / "video_dit"}, config="tiny", dtype=torch.bfloat16)
    assert torch.equal(back.audio.blocks[3].ffn[2].weight, gen.audio.blocks[3].ffn[2].weight)
    cut = tmp_path / "cut.safetensors"
    save_file({k: v for k, v in sd.items() if not k.startswith("blocks.3.")}, str(cut))
    with pytest.raises(CheckpointError, match=r"audio_dit: missing 27 of [\d,]+ keys: blocks\.3\."):
        load_generator(files={"audio_dit": cut, "dual_tower_bridge": folder / "dual_tower_bridge",
                              "video_dit": folder / "video_dit"}, config="tiny")


def test_pickles_and_missing_paths_refused(tmp_path):
    pt = tmp_path / "w.pt"
    pt.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="safetensors only"):
        load_generator(files={"audio_dit": pt, "dual_tower_bridge": pt, "video_dit": pt}, config="tiny")
    with pytest.raises(CheckpointError, match="not found"):
        load_generator(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no audio_dit"):
        load_generator(tmp_path)
    assert issubclass(CheckpointError, MovaError)

"""The same graph in two fresh real ComfyUI servers gives bit-identical tensors: sampled latents, decoded
frames (IMAGE) and waveform (AUDIO), for the low-VRAM workflow (fp8, offload disk, 1 resident layer,
the quantized copy written to a fresh temp folder each time) and the plain text-to-video workflow, and
offload disk equals offload cpu.

Why tensors and not the mp4: SaveVideo's libx264 encode (PyAV 18.1, x264 core 165) is not repeatable
on the toy's 64x64 frames. The same yuv420p input gives a different h264 stream in many encodes (decoded
frames up to ~38/255 apart), even with threads=1 in an idle process; with x264's mbtree=0 or bframes=0,
or at 128x128 and up, it repeats. So a probe node (written here into a temp custom_nodes/, never
shipped) records the float tensors inside the server, before any encoding.
"""
from __future__ import annotations

import hashlib
import json

import pytest
from safetensors.torch import load_file

from conftest import PACK_NAME, ROOT, WORKFLOWS, _require_comfy, comfy_host, load_workflow, workflow_api

LOW_VRAM = WORKFLOWS / "low_vram_text_to_video_audio.json"
PLAIN = WORKFLOWS / "text_to_video_audio.json"
PROBE = "MOVATestTensorProbe"

PROBE_SOURCE = '''
import torch
from safetensors.torch import save_file


class AnyType(str):
    def __ne__(self, other):
        return False


class MOVATestTensorProbe:
    """Writes the float tensors of its input (MOVA_LATENT, IMAGE or AUDIO) to a safetensors file."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (AnyType("*"),), "path": ("STRING", {"default": ""})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "run"
    CATEGORY = "testing"

    def run(self, value, path):
        if torch.is_tensor(value):
            tensors = {"tensor": value}
        elif isinstance(value, dict):
            tensors = {k: v for k, v in value.items() if torch.is_tensor(v)}
        else:
            tensors = {k: getattr(value, k) for k in ("video", "audio", "y") if torch.is_tensor(getattr(value, k, None))}
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, path)
        return {}


NODE_CLASS_MAPPINGS = {"MOVATestTensorProbe": MOVATestTensorProbe}
'''


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A ComfyUI base directory with the pack and the probe node (the pack's models: its embedded/)."""
    _require_comfy()
    base = tmp_path_factory.mktemp("determinism-base")
    nodes = base / "custom_nodes"
    (nodes / "mova_test_probe").mkdir(parents=True)
    (nodes / PACK_NAME).symlink_to(ROOT, target_is_directory=True)
    (nodes / "mova_test_probe" / "__init__.py").write_text(PROBE_SOURCE)
    return base


def probed_prompt(host, workflow, out_dir, tag: str, offload: str | None = None) -> dict:
    """The shipped graph as the frontend would queue it (mp4 written as usual), plus probes on the
    sampler's latent and both decoders' outputs."""
    prompt = workflow_api.ui_to_api(load_workflow(workflow), host.get_json("/object_info"))
    ids = {v["class_type"]: k for k, v in prompt.items()}
    if offload is not None:
        prompt[ids["MOVAModelLoader"]]["inputs"]["offload"] = offload
    for i, (node, what) in enumerate((("MOVASampler", "latent"), ("MOVADecodeVideo", "images"),
                                      ("MOVADecodeAudio", "audio"))):
        prompt[f"probe{i}"] = {"class_type": PROBE, "inputs": {
            "value": [ids[node], 0], "path": str(out_dir / f"{tag}.{what}.safetensors")}}
    return prompt


def run_fresh_server(base, tmp, name: str, runs: list[tuple[str, object, str | None]]) -> dict:
    """Start a server, queue `runs` (tag, workflow, offload) one after another, stop it; tag -> tensors."""
    out = tmp / name
    out.mkdir()
    host = comfy_host.ComfyHost(base_dir=base, output_dir=out / "output", log_path=out / "comfyui.log")
    with host:
        for tag, workflow, offload in runs:
            entry = host.run(probed_prompt(host, workflow, out, tag, offload), timeout=1200)
            assert comfy_host.output_files(entry), f"{tag}: no mp4 was written"
    tensors = {}
    for tag, _, _ in runs:
        for what in ("latent", "images", "audio"):
            for key, t in load_file(str(out / f"{tag}.{what}.safetensors")).items():
                tensors[f"{tag}:{what}.{key}"] = t
    return tensors


def digest(t) -> str:
    return hashlib.sha256(t.float().numpy().tobytes()).hexdigest()[:16]


def assert_bitwise_equal(a: dict, b: dict, tag_a: str, tag_b: str) -> None:
    keys = sorted(k.split(":", 1)[1] for k in a if k.startswith(tag_a + ":"))
    assert keys and {"latent.video", "latent.audio", "images.tensor", "audio.waveform"} <= set(keys), keys
    diffs = {}
    for key in keys:
        x, y = a[f"{tag_a}:{key}"], b[f"{tag_b}:{key}"]
        assert x.shape == y.shape and x.dtype == y.dtype, (key, x.shape, y.shape)
        if not bool((x == y).all()):
            diffs[key] = {"max_abs": float((x.float() - y.float()).abs().max()),
                          "differing": float((x != y).float().mean()), "digests": (digest(x), digest(y))}
    assert not diffs, f"{tag_a} vs {tag_b} differ:\n{json.dumps(diffs, indent=1)}"


def test_two_fresh_servers_give_bit_identical_latents_frames_and_audio(base_dir, tmp_path):
    # Each graph runs once as the first prompt of a fresh server and once after another graph.
    first = run_fresh_server(base_dir, tmp_path, "server1", [("low_vram", LOW_VRAM, None), ("plain", PLAIN, None)])
    second = run_fresh_server(base_dir, tmp_path, "server2", [("plain", PLAIN, None), ("low_vram", LOW_VRAM, None),
                                                             ("low_vram_cpu", LOW_VRAM, "cpu")])
    assert_bitwise_equal(first, second, "low_vram", "low_vram")
    assert_bitwise_equal(first, second, "plain", "plain")
    # Streaming the quantized copy from disk computes exactly what streaming from host RAM does.
    assert_bitwise_equal(second, second, "low_vram", "low_vram_cpu")
    # The probes saw real content (a constant or empty output would also compare equal).
    assert first["low_vram:images.tensor"].shape[0] > 5 and float(first["low_vram:images.tensor"].std()) > 0.01

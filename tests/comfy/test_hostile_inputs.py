"""A catalogue of hostile-but-fair inputs against the real ComfyUI 0.3.75 server with the pack: crafted
files, pickles, path escapes, numbers (NaN, ±inf, huge, negative, wrong type), dropdown values outside
their lists, route abuse, black-holed and offline downloads.

Each case asserts that
- the answer names the node and says what to do, with no raw exception class of torch / safetensors /
  json (and never torch's "weights_only=False" advice, never the whole hostile value echoed back);
- no output file and no model file was written (nor a pickle's payload run);
- the server then serves the good graph bit-identically to its baseline (sampled latents, decoded frames
  and waveform recorded by a probe node inside the server). After a case that ran code (a loader that
  refused a file, a download) ComfyUI's caches are emptied first, so every model is loaded again from
  disk and everything recomputed; after a case refused at validation (nothing ran) the good graph is
  served from the cache, and one fresh recomputation closes the catalogue.

The server runs from a temp base folder whose models/ holds the hostile files; HF_ENDPOINT points at a
loopback socket that accepts connections and never answers (closed later: then it is "offline").
"""
from __future__ import annotations

import json
import socket
import struct
import time
import urllib.parse
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import PACK_NAME, ROOT, WORKFLOWS, _require_comfy, comfy_host, load_workflow, workflow_api
from test_server_determinism import PROBE, PROBE_SOURCE

PLAIN = WORKFLOWS / "text_to_video_audio.json"
MARKER = "pickle-payload-ran"
# What must never reach a user: raw exception classes of the libraries we call, torch's unsafe advice.
RAW = ("SafetensorError", "JSONDecodeError", "UnpicklingError", "TypeError", "KeyError", "AttributeError",
       "OverflowError", "IndexError", "Traceback", "weights_only=False", "\x1b[")
OUR_ERRORS = ("CheckpointError", "ConfigError", "InputError", "DownloadError", "LoraMismatchError")
LONG = "z" * 5000


class Payload:
    """A pickle that would create MARKER next to the file it is in, if anything ever unpickled it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def _header_only(path: Path, header) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


def _mova_folder(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    return folder


def _copy_component(name: str, folder: Path, component: str) -> Path:
    src = ROOT / "embedded" / "mova-toy" / component
    dst = folder / component
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def make_hostile_models(models: Path) -> None:
    """Hostile files in the server's model folders (they show up in the dropdowns)."""
    for sub in ("vae", "text_encoders", "diffusion_models", "loras", "mova"):
        (models / sub).mkdir(parents=True, exist_ok=True)
    vae, te, loras, mova = models / "vae", models / "text_encoders", models / "loras", models / "mova"
    (vae / "zero.safetensors").write_bytes(b"")
    (vae / "garbage.safetensors").write_bytes(bytes(range(256)) * 8)
    _header_only(vae / "table.safetensors", ["not", "a", "tensor", "table"])
    _header_only(vae / "truncated.safetensors", {"w": {"dtype": "F32", "shape": [1024], "data_offsets": [0, 4096]}})
    save_file({"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3), "post_quant_conv.weight": torch.zeros(4, 4, 1, 1),
               "decoder.up_blocks.0.resnets.0.conv1.weight": torch.zeros(8, 8, 3, 3)}, str(vae / "sdxl_vae.safetensors"))
    (vae / "\x1b[31mred\x1b[0m.safetensors").write_bytes(b"\x00" * 3)
    (te / "zero.safetensors").write_bytes(b"")
    (te / "garbage.safetensors").write_bytes(b"<html>Please log in</html>" * 20)
    (loras / "garbage.safetensors").write_bytes(b"\x00\xff" * 100)
    torch.save({"w": torch.zeros(1), "x": Payload(loras / MARKER)}, loras / "evil.pt")

    # a pre-quantized (fp8) expert with one scale tensor missing, next to the toy's other towers
    from mova_pack.kernels.quant import QuantSettings
    from mova_pack.kernels.quant_io import quantize_file
    from safetensors import safe_open
    dm, toy = models / "diffusion_models", ROOT / "embedded" / "mova-toy"
    quantize_file(toy / "video_dit" / "diffusion_pytorch_model.safetensors", dm / "fp8_no_scale.safetensors",
                  QuantSettings(mode="fp8_e4m3fn"), "video_dit")
    with safe_open(str(dm / "fp8_no_scale.safetensors"), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    dropped = sorted(k for k in tensors if k.endswith(".weight_scale"))[0]
    save_file({k: v for k, v in tensors.items() if k != dropped}, str(dm / "fp8_no_scale.safetensors"), metadata=meta)
    for component in ("video_dit_2", "audio_dit", "dual_tower_bridge"):
        (dm / f"toy_{component}.safetensors").write_bytes((toy / component / "diffusion_pytorch_model.safetensors").read_bytes())

    evil = _mova_folder(mova, "evil-pth")
    (evil / "video_vae").mkdir()
    torch.save({"w": torch.zeros(1), "x": Payload(evil / MARKER)}, evil / "video_vae" / "evil.pth")
    badjson = _mova_folder(mova, "bad-json")
    _copy_component("mova-toy", badjson, "video_vae")
    (badjson / "video_vae" / "config.json").write_text("{'z_dim': 16,")          # not JSON
    badaudio = _mova_folder(mova, "bad-audio")
    cfg = _copy_component("mova-toy", badaudio, "audio_vae") / "config.json"
    cfg.write_text(json.dumps(dict(json.loads(cfg.read_text()), sample_rate=0)))
    neg = _mova_folder(mova, "negative-layers")
    for component in ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"):
        _copy_component("mova-toy", neg, component)
    cfg = neg / "video_dit" / "config.json"
    cfg.write_text(json.dumps(dict(json.loads(cfg.read_text()), num_layers=-1)))


def snapshot(*folders: Path) -> dict:
    return {str(p): p.stat().st_size for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def black_hole():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)                      # the kernel accepts connections; nobody ever answers them
    yield s
    s.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, black_hole):
    _require_comfy()
    base = tmp_path_factory.mktemp("hostile-base")
    nodes = base / "custom_nodes"
    (nodes / "mova_test_probe").mkdir(parents=True)
    (nodes / PACK_NAME).symlink_to(ROOT, target_is_directory=True)
    (nodes / "mova_test_probe" / "__init__.py").write_text(PROBE_SOURCE)
    make_hostile_models(base / "models")
    import os
    old = os.environ.get("HF_ENDPOINT")
    os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{black_hole.getsockname()[1]}"
    host = comfy_host.ComfyHost(base_dir=base, output_dir=base / "output", input_dir=base / "input",
                                log_path=base / "comfyui.log")
    (base / "input").mkdir()
    try:
        host.start(timeout=600)        # a loaded shared machine can take minutes to import everything
    finally:
        os.environ.pop("HF_ENDPOINT") if old is None else os.environ.__setitem__("HF_ENDPOINT", old)
    host.base = base
    host.probes = tmp_path_factory.mktemp("probes")
    yield host
    host.stop()


def good_prompt(server, tag: str) -> dict:
    """The shipped text-to-video+audio graph without its mp4 output, probes on latent, frames and audio."""
    if not hasattr(server, "object_info"):
        server.object_info = server.get_json("/object_info")
    prompt = workflow_api.ui_to_api(load_workflow(PLAIN), server.object_info)
    prompt = {k: v for k, v in prompt.items() if v["class_type"] not in ("CreateVideo", "SaveVideo")}
    ids = {v["class_type"]: k for k, v in prompt.items()}
    # A short clip (17 frames, 3 steps) keeps ~60 fresh runs affordable on two shared CPU cores.
    prompt[ids["MOVALatent"]]["inputs"]["frames"] = 17
    prompt[ids["MOVASampler"]]["inputs"]["steps"] = 3
    for i, (node, what) in enumerate((("MOVASampler", "latent"), ("MOVADecodeVideo", "images"),
                                      ("MOVADecodeAudio", "audio"))):
        prompt[f"probe{i}"] = {"class_type": PROBE, "inputs": {
            "value": [ids[node], 0], "path": str(server.probes / f"{tag}.{what}.safetensors")}}
    return prompt


def run_good(server, tag: str, fresh: bool = True) -> dict:
    if fresh:
        status, _ = server._request("/free", data=json.dumps({"free_memory": True, "unload_models": True}).encode())
        assert status == 200
        time.sleep(1.0)                # the prompt worker empties its caches on the flag
    server.run(good_prompt(server, tag), timeout=600)
    return {f"{what}.{k}": v for what in ("latent", "images", "audio")
            for k, v in load_file(str(server.probes / f"{tag}.{what}.safetensors")).items()}


@pytest.fixture(scope="module")
def baseline(server):
    tensors = run_good(server, "baseline")
    assert tensors["images.tensor"].shape[0] > 5 and float(tensors["images.tensor"].std()) > 0.01
    return tensors


def _node(prompt: dict, class_type: str) -> dict:
    return next(v for v in prompt.values() if v["class_type"] == class_type)


def _with(server, class_type: str, **inputs) -> dict:
    prompt = good_prompt(server, "hostile")
    _node(prompt, class_type)["inputs"].update(inputs)
    return prompt


def _lora_prompt(server, **inputs) -> dict:
    """The good graph with a MOVA LoRA node between the loader and the sampler."""
    prompt = good_prompt(server, "hostile")
    loader = next(k for k, v in prompt.items() if v["class_type"] == "MOVAModelLoader")
    prompt["lora"] = {"class_type": "MOVALora", "inputs": {**dict(
        model=[loader, 0], lora="mova-toy-demo-lora.safetensors", strength_video_high=1.0, strength_video_low=1.0,
        strength_audio=1.0, strength_bridge=1.0, video_expert="auto", apply="merge"), **inputs}}
    _node(prompt, "MOVASampler")["inputs"]["model"] = ["lora", 0]
    return prompt


def _guidance_prompt(server, **inputs) -> dict:
    prompt = good_prompt(server, "hostile")
    prompt["guide"] = {"class_type": "MOVABridgeGuidance", "inputs": {**dict(
        video_text_scale=5.0, audio_text_scale=5.0, a2v_bridge_scale=2.0, v2a_bridge_scale=2.0, form="nested",
        bridge_off="both", bridge_start=0.0, bridge_end=1.0, batch_passes=False), **inputs}}
    _node(prompt, "MOVASampler")["inputs"]["guidance"] = ["guide", 0]
    return prompt


def _single_files(server) -> dict:
    """The good graph loading the towers as single files, the high-noise expert a damaged fp8 file."""
    prompt = good_prompt(server, "hostile")
    loader = next(k for k, v in prompt.items() if v["class_type"] == "MOVAModelLoader")
    prompt[loader] = {"class_type": "MOVAModelLoaderFiles", "inputs": dict(
        video_high_noise="fp8_no_scale.safetensors", video_low_noise="toy_video_dit_2.safetensors",
        audio="toy_audio_dit.safetensors", bridge="toy_dual_tower_bridge.safetensors", preset="mova-360p",
        dtype="auto", quantization="none", offload="none", resident_layers=40)}
    return prompt


def _download_prompt(**inputs) -> dict:
    return {"dl": {"class_type": "MOVADownloadModels",
                   "inputs": dict(dict(variant="MOVA-360p", components="configs only (no weights)", confirm=True),
                                  **inputs)}}


# (id, build prompt, node class that must be named, words of the fix, where it fails: "validate" | "run")
PROMPT_CASES = [
    ("sampler-video_cfg-nan", lambda s: _with(s, "MOVASampler", video_cfg=float("nan")), "MOVASampler",
     "not a finite number", "validate"),
    ("sampler-shift-nan-string", lambda s: _with(s, "MOVASampler", shift="nan"), "MOVASampler",
     "not a finite number", "validate"),
    ("sampler-audio_cfg-inf", lambda s: _with(s, "MOVASampler", audio_cfg=float("inf")), "MOVASampler",
     "not a finite number", "validate"),
    ("sampler-boundary-minus-inf", lambda s: _with(s, "MOVASampler", boundary=float("-inf")), "MOVASampler",
     "not a finite number", "validate"),
    ("sampler-steps-huge", lambda s: _with(s, "MOVASampler", steps=10 ** 12), "MOVASampler",
     "at most 200", "validate"),
    ("sampler-steps-1e999", lambda s: _with(s, "MOVASampler", steps=float("inf")), "MOVASampler",
     "not a finite number", "validate"),
    ("sampler-steps-text", lambda s: _with(s, "MOVASampler", steps="abc"), "MOVASampler",
     "Type a number", "validate"),
    ("sampler-seed-negative", lambda s: _with(s, "MOVASampler", seed=-1), "MOVASampler",
     "at least 0", "validate"),
    ("sampler-schedule-outside-list", lambda s: _with(s, "MOVASampler", schedule="karras"), "MOVASampler",
     "not one of the choices", "validate"),
    ("sampler-audio_shift-huge", lambda s: _with(s, "MOVASampler", audio_shift=1e308), "MOVASampler",
     "at most 500", "validate"),
    ("latent-width-text", lambda s: _with(s, "MOVALatent", width="abc"), "MOVALatent", "Type a number", "validate"),
    ("latent-width-not-16", lambda s: _with(s, "MOVALatent", width=100), "MOVALatent", "multiples of 16",
     "validate"),
    ("latent-frames-not-4k1", lambda s: _with(s, "MOVALatent", frames=50), "MOVALatent", "4k+1", "validate"),
    ("latent-fps-nan", lambda s: _with(s, "MOVALatent", fps=float("nan")), "MOVALatent", "not a finite number",
     "validate"),
    ("latent-fps-zero", lambda s: _with(s, "MOVALatent", fps=0), "MOVALatent", "at least 1", "validate"),
    ("latent-height-huge", lambda s: _with(s, "MOVALatent", height=10 ** 30), "MOVALatent", "at most 4096",
     "validate"),
    ("loader-dtype-float64", lambda s: _with(s, "MOVAModelLoader", dtype="float64"), "MOVAModelLoader",
     "not one of the choices", "validate"),
    ("loader-quantization-path", lambda s: _with(s, "MOVAModelLoader", quantization="../../x"), "MOVAModelLoader",
     "not one of the choices", "validate"),
    ("loader-offload-foo", lambda s: _with(s, "MOVAModelLoader", offload="foo"), "MOVAModelLoader",
     "not one of the choices", "validate"),
    ("loader-resident-negative", lambda s: _with(s, "MOVAModelLoader", resident_layers=-5), "MOVAModelLoader",
     "at least 0", "validate"),
    ("loader-model-path-escape", lambda s: _with(s, "MOVAModelLoader", model="../../../../etc"), "MOVAModelLoader",
     "models/mova", "validate"),
    ("loader-model-absolute", lambda s: _with(s, "MOVAModelLoader", model="/etc"), "MOVAModelLoader",
     "models/mova", "validate"),
    ("loader-model-long-name", lambda s: _with(s, "MOVAModelLoader", model=LONG), "MOVAModelLoader",
     "models/mova", "validate"),
    ("vae-path-escape", lambda s: _with(s, "MOVAVideoVAELoader", vae="../../../etc/passwd"), "MOVAVideoVAELoader",
     "models/vae", "validate"),
    ("vae-dtype-list", lambda s: _with(s, "MOVAVideoVAELoader", dtype={"__value__": ["bf16"]}), "MOVAVideoVAELoader",
     "not one of the choices", "validate"),
    ("text-encoder-missing", lambda s: _with(s, "MOVATextEncoderLoader", text_encoder="nope.safetensors"),
     "MOVATextEncoderLoader", "models/text_encoders", "validate"),
    ("lora-strength-nan", lambda s: _lora_prompt(s, strength_audio=float("nan")), "MOVALora", "not a finite number",
     "validate"),
    ("lora-apply-outside-list", lambda s: _lora_prompt(s, apply="foo"), "MOVALora", "not one of the choices",
     "validate"),
    ("lora-expert-outside-list", lambda s: _lora_prompt(s, video_expert="sideways"), "MOVALora",
     "not one of the choices", "validate"),
    ("lora-path-escape", lambda s: _lora_prompt(s, lora="../../secret.safetensors"), "MOVALora", "models/loras",
     "validate"),
    ("guidance-scale-nan", lambda s: _guidance_prompt(s, a2v_bridge_scale=float("nan")), "MOVABridgeGuidance",
     "not a finite number", "validate"),
    ("guidance-form-outside-list", lambda s: _guidance_prompt(s, form="sideways"), "MOVABridgeGuidance",
     "not one of the choices", "validate"),
    ("guidance-empty-range", lambda s: _guidance_prompt(s, bridge_start=0.9, bridge_end=0.1), "MOVABridgeGuidance",
     "Set start ≤ end", "validate"),
    ("decode-tiling-outside-list", lambda s: _with(s, "MOVADecodeVideo", tiling="999"), "MOVADecodeVideo",
     "not one of the choices", "validate"),
    ("download-components-path", lambda s: _download_prompt(components="../../etc"), "MOVADownloadModels",
     "not one of the choices", "validate"),
    ("download-variant-unknown", lambda s: _download_prompt(variant="MOVA-1080p"), "MOVADownloadModels",
     "not one of the choices", "validate"),
    # files: accepted by validation (they are in the dropdowns), refused by the loader with a named error
    ("vae-zero-bytes", lambda s: _with(s, "MOVAVideoVAELoader", vae="zero.safetensors"), "MOVAVideoVAELoader",
     "re-download", "run"),
    ("vae-garbage", lambda s: _with(s, "MOVAVideoVAELoader", vae="garbage.safetensors"), "MOVAVideoVAELoader",
     "re-download", "run"),
    ("vae-header-not-a-table", lambda s: _with(s, "MOVAVideoVAELoader", vae="table.safetensors"),
     "MOVAVideoVAELoader", "not a tensor table", "run"),
    ("vae-truncated", lambda s: _with(s, "MOVAVideoVAELoader", vae="truncated.safetensors"), "MOVAVideoVAELoader",
     "download again", "run"),
    ("vae-sdxl-keys", lambda s: _with(s, "MOVAVideoVAELoader", vae="sdxl_vae.safetensors"), "MOVAVideoVAELoader",
     "wan_2.1_vae.safetensors", "run"),
    ("vae-colour-codes-in-name", lambda s: _with(s, "MOVAVideoVAELoader", vae="\x1b[31mred\x1b[0m.safetensors"),
     "MOVAVideoVAELoader", "re-download", "run"),
    ("vae-config-not-json", lambda s: _with(s, "MOVAVideoVAELoader", vae="bad-json/video_vae"), "MOVAVideoVAELoader",
     "not valid JSON", "run"),
    ("vae-evil-pth", lambda s: _with(s, "MOVAVideoVAELoader", vae="evil-pth/video_vae"), "MOVAVideoVAELoader",
     "never runs", "run"),
    ("text-encoder-zero-bytes", lambda s: _with(s, "MOVATextEncoderLoader", text_encoder="zero.safetensors"),
     "MOVATextEncoderLoader", "re-download", "run"),
    ("text-encoder-html", lambda s: _with(s, "MOVATextEncoderLoader", text_encoder="garbage.safetensors"),
     "MOVATextEncoderLoader", "HTML", "run"),
    ("audio-vae-sample-rate-zero", lambda s: _with(s, "MOVAAudioVAELoader", vae="bad-audio/audio_vae"),
     "MOVAAudioVAELoader", "sample_rate = 0", "run"),
    ("model-num-layers-negative", lambda s: _with(s, "MOVAModelLoader", model="negative-layers"), "MOVAModelLoader",
     "num_layers = -1", "run"),
    ("lora-garbage", lambda s: _lora_prompt(s, lora="garbage.safetensors"), "MOVALora", "re-download", "run"),
    ("fp8-file-missing-a-scale", lambda s: _single_files(s), "MOVAModelLoaderFiles", "no '.weight_scale'", "run"),
    ("lora-evil-pt", lambda s: _lora_prompt(s, lora="evil.pt"), "MOVALora", "never runs", "run"),
]


def _check_text(text: str, fix: str) -> None:
    assert fix in text, f"the fix {fix!r} is not in the message:\n{text[:1500]}"
    raw = [name for name in RAW if name in text]
    assert not raw, f"raw exception names / advice {raw} in:\n{text[:1500]}"
    assert LONG not in text and LONG[:200] not in text, "the hostile value was echoed back whole"


def outcome(server, prompt: dict) -> tuple[str, str, str]:
    """(where it failed, node class named by ComfyUI, the user-visible text)."""
    status, body = server.post_prompt(prompt)
    errors = body.get("node_errors") or {}
    if status == 400 or errors:     # 200 with node_errors: ComfyUI runs the outputs that did validate
        assert errors, body
        if status == 200:
            server.wait_for(body["prompt_id"], timeout=300)
        node = next(iter(errors.values()))
        return "validate", node["class_type"], json.dumps(errors, ensure_ascii=False)
    assert status == 200, (status, body)
    entry = server.wait_for(body["prompt_id"], timeout=300)
    assert entry["status"]["status_str"] == "error", "the hostile graph ran through"
    error = next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_error")
    assert error["exception_type"].rsplit(".", 1)[-1] in OUR_ERRORS, error["exception_type"]
    return "run", error["node_type"], error["exception_message"]


@pytest.mark.parametrize("case", PROMPT_CASES, ids=[c[0] for c in PROMPT_CASES])
def test_hostile_prompt_gets_a_clear_error_and_the_server_stays_exact(server, baseline, case):
    name, build, node, fix, where = case
    watched = (server.base / "output", server.base / "models")
    before = snapshot(*watched)
    got_where, got_node, text = outcome(server, build(server))
    assert (got_where, got_node) == (where, node), text[:1500]
    _check_text(text, fix)
    if where == "validate":   # the pack's own message names the node (ComfyUI's own errors name the input)
        assert server.get_json(f"/object_info/{node}")[node]["display_name"] in text, text[:1500]
    assert snapshot(*watched) == before, "a file was written or changed"
    assert not list(server.base.rglob(MARKER)), "a pickle's payload ran"
    assert_same(run_good(server, name, fresh=where == "run"), baseline, name)


def assert_same(tensors: dict, baseline: dict, name: str) -> None:
    assert tensors.keys() == baseline.keys()
    for key, ref in baseline.items():
        assert torch.equal(tensors[key], ref), f"after {name}: {key} differs from the baseline"


def test_latent_size_is_one_message(server):
    """ComfyUI files a validate_inputs result once per declared input; it is one message (both sizes,
    one text), identical in every entry, so the page's dedupe (web/mova.js) shows it once."""
    status, body = server.post_prompt(_with(server, "MOVALatent", width=100, height=100))
    assert status == 400
    (entry,) = body["node_errors"].values()
    messages = {e["details"].split(" - ", 1)[1] for e in entry["errors"] if e["type"] == "custom_validation_failed"}
    assert len(messages) == 1, messages
    (message,) = messages
    assert message.count("multiples of 16") == 1 and "100x100" in message and "96x96" in message, message


# ------------------------------------------------------------------------------------------------ routes
def _estimate(server, method: str, payload) -> tuple[int, dict, str]:
    if method == "GET":
        status, raw = server._request("/mova/estimate?" + urllib.parse.urlencode(payload))
    else:
        status, raw = server._request("/mova/estimate", data=payload if isinstance(payload, bytes)
                                      else json.dumps(payload).encode())
    text = raw.decode(errors="replace")
    return status, json.loads(text), text


ROUTE_CASES = [
    ("estimate-model-path-escape", "GET", {"model": "../../../../tmp/x"}, "unknown model"),
    ("estimate-model-absolute", "GET", {"model": str(ROOT / "embedded" / "mova-toy")}, "unknown model"),
    ("estimate-model-long", "GET", {"model": LONG}, "unknown model"),
    ("estimate-width-1e999", "POST", b'{"width": 1e999}', "finite number"),
    ("estimate-height-minus-infinity", "POST", b'{"height": -Infinity}', "finite number"),
    ("estimate-fps-nan", "GET", {"fps": "nan"}, "finite number"),
    ("estimate-dtype-outside-list", "POST", {"dtype": "float64"}, "must be one of"),
    ("estimate-body-not-an-object", "POST", b"[1, 2, 3]", "JSON object"),
    ("estimate-guidance-wrong-type", "POST", {"guidance": "max"}, "must be an object"),
]


@pytest.mark.parametrize("case", ROUTE_CASES, ids=[c[0] for c in ROUTE_CASES])
def test_hostile_estimate_requests_get_a_short_400(server, case):
    _, method, payload, words = case
    status, body, text = _estimate(server, method, payload)
    assert status == 400 and words in body["error"], text[:500]
    assert len(body["error"]) <= 400 and LONG[:100] not in text
    assert not any(name in text for name in RAW)
    status, body, _ = _estimate(server, "GET", {"model": "mova-toy", "width": 64, "height": 64, "frames": 49})
    assert status == 200 and body["model"] == "mova-toy"        # a listed name still works


def test_after_the_catalogue_a_fresh_run_is_still_exact(server, baseline):
    assert_same(run_good(server, "after-catalogue"), baseline, "the whole catalogue")


# --------------------------------------------------------------------------------------------- downloads
def _run_download(server) -> tuple[float, dict]:
    t0 = time.monotonic()
    status, body = server.post_prompt(_download_prompt())
    assert status == 200, body
    entry = server.wait_for(body["prompt_id"], timeout=120)
    return time.monotonic() - t0, entry


def test_black_holed_download_fails_in_seconds_and_writes_nothing(server, baseline):
    before = snapshot(server.base / "models")
    took, entry = _run_download(server)
    error = next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_error")
    assert error["node_type"] == "MOVADownloadModels" and took < 15, (took, error["exception_message"])
    _check_text(error["exception_message"], "did not answer")
    assert "huggingface.co/OpenMOSS-Team/MOVA-360p" in error["exception_message"]
    assert snapshot(server.base / "models") == before
    assert_same(run_good(server, "after-black-hole"), baseline, "black hole")


def test_cancel_during_a_black_holed_download_returns_within_seconds(server):
    status, body = server.post_prompt(_download_prompt())
    assert status == 200
    time.sleep(1.0)
    t0 = time.monotonic()
    status, _ = server._request("/interrupt", data=b"{}")
    assert status == 200
    entry = server.wait_for(body["prompt_id"], timeout=60)
    assert time.monotonic() - t0 < 8, "Cancel waited for the network"
    assert entry["status"]["status_str"] == "error"
    assert not list((server.base / "models" / "mova").glob("MOVA-360p/**/*.json"))


def test_offline_download_says_so(server, black_hole, baseline):
    black_hole.close()                 # now the port refuses connections
    took, entry = _run_download(server)
    error = next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_error")
    assert took < 15
    _check_text(error["exception_message"], "cannot reach the Hugging Face Hub")
    assert_same(run_good(server, "after-offline"), baseline, "offline")


def test_concurrent_prompts_and_fifty_parallel_estimates_all_complete(server):
    """Three new prompts queued at once while 50 /mova/estimate calls run in parallel: every call
    answers, every prompt finishes, and each prompt's latent depends only on its own seed."""
    from concurrent.futures import ThreadPoolExecutor
    prompts = []
    for seed in (11, 12, 11):
        prompt = good_prompt(server, f"concurrent-{len(prompts)}")
        _node(prompt, "MOVASampler")["inputs"]["seed"] = seed
        prompts.append(prompt)
    query = {"model": "mova-toy", "width": 64, "height": 64, "frames": 49}
    with ThreadPoolExecutor(max_workers=16) as pool:
        ids = [server.queue_prompt(p) for p in prompts]
        answers = list(pool.map(lambda _: _estimate(server, "GET", query)[:2], range(50)))
    assert all(status == 200 and body["model"] == "mova-toy" for status, body in answers)
    assert len({json.dumps(body, sort_keys=True) for _, body in answers}) == 1
    for prompt_id in ids:
        assert server.wait_for(prompt_id, timeout=900)["status"]["status_str"] == "success"
    latents = [load_file(str(server.probes / f"concurrent-{i}.latent.safetensors")) for i in range(3)]
    assert torch.equal(latents[0]["video"], latents[2]["video"]) and torch.equal(latents[0]["audio"], latents[2]["audio"])
    assert not torch.equal(latents[0]["video"], latents[1]["video"])

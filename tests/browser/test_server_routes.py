"""The pack's HTTP routes and the download node inside the real ComfyUI server (no browser needed,
no network: the download node runs with confirm off, which must only list files)."""
from __future__ import annotations

import json
import urllib.parse
from pathlib import Path


def test_estimate_route_is_served_under_both_prefixes(server):
    query = urllib.parse.urlencode({"preset": "mova-360p", "quantization": "nf4", "width": 640, "height": 352,
                                    "frames": 97})
    plain = server.get_json(f"/mova/estimate?{query}")
    api = server.get_json(f"/api/mova/estimate?{query}")
    assert plain == api
    assert plain["quantization"] == "nf4" and plain["model"] == "mova-360p" and plain["vram_gb"] > 5
    # This server runs on the CPU: "auto" means fp32, and there is no VRAM to compare with.
    assert plain["dtype"] == "fp32" and plain["device"]["type"] == "cpu" and plain["fits"]["vram"] is None
    assert plain["device"]["host_gb"] > 1


def test_estimate_route_reads_the_embedded_model_folder(server):
    loader = server.get_json("/object_info/MOVAModelLoader")["MOVAModelLoader"]
    spec = loader["input"]["required"]["model"]          # V1: [[options]], V3: ["COMBO", {"options": [...]}]
    embedded = (spec[0] if isinstance(spec[0], list) else spec[1]["options"])[0]
    toy = server.get_json("/mova/estimate?" + urllib.parse.urlencode({"model": embedded, "width": 64, "height": 64,
                                                                      "frames": 49}))
    real = server.get_json("/mova/estimate?preset=mova-360p&width=64&height=64&frames=49")
    assert toy["model"] == embedded
    assert toy["denoise"]["weights_resident"] < real["denoise"]["weights_resident"] / 100   # offload none: weights on the device


def test_bad_estimate_query_is_a_400_with_the_reason(server):
    status, body = server._request("/mova/estimate?frames=lots")
    assert status == 400 and "frames must be a finite number" in json.loads(body)["error"]


def test_models_route_lists_the_released_files(server):
    listing = server.get_json("/mova/models")
    variants = {v["variant"]: v for v in listing["variants"]}
    assert set(variants) == {"MOVA-360p", "MOVA-720p"}
    paths = {f["path"] for f in variants["MOVA-720p"]["files"]}
    assert "video_dit_2/diffusion_pytorch_model-00003-of-00003.safetensors" in paths
    assert "nothing is downloaded automatically" in listing["download"]


def test_download_node_without_confirm_only_lists(server):
    prompt = {"1": {"class_type": "MOVADownloadModels",
                    "inputs": {"variant": "MOVA-360p", "components": "vaes (video_vae, audio_vae)", "confirm": False}}}
    entry = server.run(prompt, timeout=120)
    text = "".join(entry["outputs"]["1"]["text"])
    assert text.startswith("Would download 4 files of OpenMOSS-Team/MOVA-360p into ")
    assert "models/mova/MOVA-360p" in text and "Nothing was downloaded" in text
    # sizes and a total, asked from the Hub (the tests' loopback fake), instead of "size from Hub"
    assert "  missing  audio_vae/diffusion_pytorch_model.safetensors (32 B)" in text.splitlines(), text
    assert "In all 128 B, of which 128 B still to download." in text and "size from Hub" not in text
    target = Path(text.split(" into ", 1)[1].split(":\n", 1)[0])
    assert not list(target.rglob("*.safetensors"))          # nothing written


def test_every_workflow_is_offered_in_the_template_browser(server):
    from browser_env import PACK_NAME, workflow_files
    templates = server.get_json("/api/workflow_templates")
    names = sorted(p.stem for p in workflow_files())
    assert names and sorted(templates.get(PACK_NAME, [])) == names
    for name in names:      # and the frontend can fetch each one
        status, body = server._request(f"/api/workflow_templates/{PACK_NAME}/{urllib.parse.quote(name)}.json")
        assert status == 200 and json.loads(body)["nodes"]

"""nodes/routes.py: the estimate / models logic and its aiohttp handlers on a real loopback server.

nodes/__init__.py needs ComfyUI (comfy_api); routes.py itself does not until `_comfy_host()`. So this
test registers `mova_pack.nodes` as a bare package (like conftest does for `mova_pack`) and imports
only routes.py. The same routes are exercised inside the real ComfyUI by tests/browser/.
"""
import asyncio
import json
import sys
import types
from pathlib import Path

import pytest

from mova_pack.models.sampling.conditioning import nearest_geometry
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mova_pack.models.config import PRESETS

ROOT = Path(__file__).resolve().parents[1]
if "mova_pack.nodes" not in sys.modules:
    _pkg = types.ModuleType("mova_pack.nodes")
    _pkg.__path__ = [str(ROOT / "nodes")]
    sys.modules["mova_pack.nodes"] = _pkg
from mova_pack.nodes import routes  # noqa: E402


def _released_parameters():
    """(all parameters, Linear weights) of the released generator, counted from the modules themselves
    (meta device), not from the planner the estimate uses."""
    import torch
    from mova_pack.models.net.bridge import DualTowerBridge
    from mova_pack.models.net.dit import AudioDiT, VideoDiT
    cfg = PRESETS["mova-360p"]
    with torch.device("meta"):
        towers = [VideoDiT(cfg.video_dit), VideoDiT(cfg.video_dit), AudioDiT(cfg.audio_dit), DualTowerBridge(cfg.bridge)]
    total = sum(p.numel() for m in towers for p in m.parameters())
    from mova_pack.kernels.quant import should_quantize
    linear = sum(x.weight.numel() for m in towers for path, x in m.named_modules() if should_quantize(path, x))
    return total, linear


def test_estimate_weights_match_the_real_model_and_quantization_lowers_them():
    q = {"preset": "mova-360p", "width": 640, "height": 352, "frames": 97, "dtype": "bf16"}
    plain = routes.estimate({**q, "quantization": "none"})
    fp8 = routes.estimate({**q, "quantization": "fp8_e4m3fn"})
    total, linear = _released_parameters()
    # both experts resident: every parameter in bf16 (2 bytes); fp8: the Linear weights the quantizer
    # replaces take 1 byte (plus per-tensor scales), the rest stays bf16
    assert plain["denoise"]["weights_resident"] == pytest.approx(2 * total, rel=1e-6)
    assert fp8["denoise"]["weights_resident"] == pytest.approx(linear + 2 * (total - linear), rel=1e-3)
    assert fp8["vram_gb"] < plain["vram_gb"] - 10           # ~18 GB less weights
    assert fp8["text"].startswith(f"VRAM ≈ {fp8['vram_gb']:.1f} GB · RAM ≈ {fp8['host_gb']:.1f} GB")
    assert "quant fp8_e4m3fn" in fp8["text"] and fp8["seconds"] == pytest.approx(97 / 24, abs=0.01)


def test_offload_trades_vram_for_host_ram_and_sizes_matter():
    q = {"preset": "mova-360p", "dtype": "bf16", "frames": 193}
    none, cpu = routes.estimate({**q, "offload": "none"}), routes.estimate({**q, "offload": "cpu", "resident_layers": 0})
    assert cpu["vram_gb"] < none["vram_gb"] and cpu["host_gb"] > none["host_gb"]
    small = routes.estimate({**q, "frames": 49, "width": 320, "height": 176})
    assert small["vram"]["activations"] < none["vram"]["activations"]


def test_bad_geometry_is_snapped_like_the_widget_does():
    e = routes.estimate({"preset": "tiny", "width": 70, "height": 50, "frames": 50})
    assert (e["width"], e["height"], e["frames"]) == (64, 48, 49)
    assert nearest_geometry(8, 8, 0) == (16, 16, 1)
    assert nearest_geometry(648, 360, 99) == (656, 368, 101)


def test_auto_dtype_depends_on_the_device_and_fit_marks():
    gpu12 = routes.Host(device_type=lambda: "cuda", device_total_bytes=lambda: 12 * 10**9,
                        host_total_bytes=lambda: 64 * 10**9)
    e = routes.estimate({"preset": "mova-360p", "quantization": "nf4"}, gpu12)
    assert e["dtype"] == "bf16" and e["fits"] == {"vram": False, "host": True}
    assert "✗" in e["text"].splitlines()[0] and e["device"]["vram_gb"] == 12.0
    cpu = routes.estimate({"preset": "tiny"}, routes.Host(device_type=lambda: "cpu"))
    assert cpu["dtype"] == "fp32" and cpu["fits"] == {"vram": None, "host": None}


def test_model_folder_config_is_used(tmp_path):
    folder = tmp_path / "my-tiny"
    cfg = PRESETS["tiny"]
    for name, part in (("video_dit", cfg.video_dit), ("audio_dit", cfg.audio_dit), ("dual_tower_bridge", cfg.bridge)):
        (folder / name).mkdir(parents=True)
        (folder / name / "config.json").write_text(json.dumps(part.to_dict()))
    host = routes.Host(find_mova_folder=lambda n: folder if n == "my-tiny" else None,
                       model_names=lambda: ["my-tiny"])
    tiny = routes.estimate({"model": "my-tiny", "width": 64, "height": 64, "frames": 49}, host)
    big = routes.estimate({"preset": "mova-360p", "width": 64, "height": 64, "frames": 49}, host)
    assert tiny["model"] == "my-tiny" and big["model"] == "mova-360p"
    assert tiny["vram_gb"] < big["vram_gb"]
    assert tiny["denoise"]["weights_resident"] < big["denoise"]["weights_resident"] / 1000


@pytest.mark.parametrize("query, message", [
    ({"width": "wide"}, "width must be a finite number"),
    ({"width": float("inf")}, "width must be a finite number"),
    ({"width": 1e999}, "width must be a finite number"),
    ({"fps": "nan"}, "fps must be a finite number"),
    ({"frames": 97.5}, "frames must be a finite number"),
    ({"frames": True}, "frames must be a finite number"),
    ({"dtype": "float64"}, "dtype must be one of"),
    ({"dtype": ["bf16"]}, "dtype must be one of"),
    ({"frames": 100000}, "frames must be between"),
    ({"quantization": "q4"}, "quantization must be one of"),
    ({"offload": "gpu"}, "offload must be one of"),
    ({"preset": "mova-1080p"}, "unknown preset"),
])
def test_bad_queries_raise_clear_errors(query, message):
    with pytest.raises(routes.RequestError, match=message):
        routes.estimate(query)


# The MOVA Bridge Guidance node's widget values as web/mova.js sends them (the node's defaults).
GUIDANCE_NODE = {"video_text_scale": 5.0, "audio_text_scale": 5.0, "a2v_bridge_scale": 2.0, "v2a_bridge_scale": 2.0,
                 "form": "nested", "bridge_off": "both", "bridge_start": 0.0, "bridge_end": 1.0,
                 "batch_passes": False, "audio_negative": False}


def test_guidance_passes_follow_the_sampler_and_the_bridge_guidance_node():
    base = {"preset": "mova-360p", "dtype": "bf16", "steps": 25}
    cases = {
        "no cfg": ({**base, "video_cfg": 1.0, "audio_cfg": 1.0}, 1),
        "released cfg": (base, 2),                                           # sampler defaults 5 / 5
        "neutral bridge": ({**base, "guidance": {**GUIDANCE_NODE, "a2v_bridge_scale": 1.0,
                                                 "v2a_bridge_scale": 1.0}}, 2),
        "bridge guidance": ({**base, "guidance": GUIDANCE_NODE}, 3),
        "separate + audio negative": ({**base, "guidance": {**GUIDANCE_NODE, "bridge_off": "separate",
                                                           "audio_negative": True}}, 5),
    }
    latents = []
    for name, (query, passes) in cases.items():
        e = routes.estimate(query)
        assert e["cfg_passes"] == passes, name
        assert f"{passes} pass" in e["text"].splitlines()[2], e["text"]
        latents.append(e["vram"]["latents"])
    # the sampler holds one velocity per pass: the estimate grows with every pass
    assert latents[0] < latents[1] == latents[2] < latents[3] < latents[4]
    # the bridge range only limits where the third pass runs; the peak is still 3
    partial = routes.estimate({**base, "guidance": {**GUIDANCE_NODE, "bridge_start": 0.5}})
    assert partial["cfg_passes"] == 3
    # an explicit cfg_passes (scripts) wins; an unknown guidance source ({}) means released CFG
    assert routes.estimate({**base, "cfg_passes": 3, "video_cfg": 1.0, "audio_cfg": 1.0})["cfg_passes"] == 3
    assert routes.estimate({**base, "guidance": {}})["cfg_passes"] == 2


def test_batched_guidance_passes_reach_the_planner():
    base = {"preset": "mova-360p", "dtype": "bf16", "width": 640, "height": 352, "frames": 97}
    single = routes.estimate({**base, "guidance": GUIDANCE_NODE})
    batched = routes.estimate({**base, "guidance": {**GUIDANCE_NODE, "batch_passes": True}})
    # nested, bridge off "both": C and B share the Bridge setting -> one forward of 2, A alone
    assert single["guidance"]["per_forward"] == 1 and batched["guidance"]["per_forward"] == 2
    wide = routes.estimate({**base, "guidance": {**GUIDANCE_NODE, "batch_passes": True, "bridge_off": "separate",
                                                 "audio_negative": True}})
    assert wide["guidance"]["per_forward"] == 3 and wide["cfg_passes"] == 5
    assert batched["denoise"]["weights_resident"] == single["denoise"]["weights_resident"]
    assert batched["vram"]["activations"] > single["vram"]["activations"]


@pytest.mark.parametrize("guidance, message", [
    ({"form": "sideways"}, "guidance form must be one of"),
    ({"a2v_bridge_scale": "strong"}, "a2v_bridge_scale must be a number"),
    ({"bridge_start": 0.8, "bridge_end": 0.2}, "bridge step range"),
    ("nested", "guidance must be an object"),
])
def test_bad_guidance_settings_are_clear_errors(guidance, message):
    from mova_pack.common.errors import MovaError
    with pytest.raises(MovaError, match=message):
        routes.estimate({"preset": "tiny", "guidance": guidance})


def test_models_listing_marks_present_files(tmp_path):
    weights = tmp_path / "MOVA-360p" / "audio_vae" / "diffusion_pytorch_model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"x")
    listing = routes.models_listing(routes.Host(mova_roots=lambda: [tmp_path]))
    v360 = next(v for v in listing["variants"] if v["variant"] == "MOVA-360p")
    present = [f["path"] for f in v360["files"] if f["present"]]
    assert present == ["audio_vae/diffusion_pytorch_model.safetensors"] and v360["present"] == 1
    assert all(f["url"].startswith("https://huggingface.co/OpenMOSS-Team/") for f in v360["files"])


def test_http_handlers_on_a_loopback_server():
    async def run():
        table = web.RouteTableDef()
        routes.register_routes(table, routes.Host(device_type=lambda: "cuda"))
        app = web.Application()
        app.add_routes(table)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            r = await client.get("/mova/estimate", params={"preset": "mova-360p", "quantization": "nf4"})
            got = await r.json()
            assert r.status == 200 and got["quantization"] == "nf4" and got["vram_gb"] > 5
            r = await client.post("/mova/estimate", json={"preset": "mova-360p", "quantization": "none"})
            assert r.status == 200 and (await r.json())["vram_gb"] > got["vram_gb"]
            r = await client.post("/mova/estimate", json={"frames": "many"})
            assert r.status == 400 and "frames must be a finite number" in (await r.json())["error"]
            r = await client.post("/mova/estimate", data="not json")
            assert r.status == 400
            r = await client.get("/mova/models")
            assert r.status == 200 and len((await r.json())["variants"]) == 2
    asyncio.run(run())


@pytest.mark.parametrize("model", ["../../../../tmp/x", "/etc", "my-tiny/../my-tiny", "x" * 5000, ["my-tiny"], 7])
def test_model_names_resolve_only_among_the_loader_entries(tmp_path, model):
    looked_up = []
    host = routes.Host(find_mova_folder=lambda n: looked_up.append(n) or tmp_path, model_names=lambda: ["my-tiny"])
    with pytest.raises(routes.RequestError, match="unknown model") as err:
        routes.estimate({"model": model}, host)
    assert looked_up == []                                  # no folder was even looked for
    assert "my-tiny" in str(err.value) and len(str(err.value)) < 200


def test_a_release_not_downloaded_yet_is_estimated_from_its_preset():
    host = routes.Host(model_names=lambda: ["mova-toy"])
    e = routes.estimate({"model": "MOVA-720p", "width": 1280, "height": 720}, host)
    assert e["model"] == "mova-720p"
    with pytest.raises(routes.RequestError, match="unknown model"):
        routes.estimate({"model": "mova-720p/../x"}, host)
    # the loader's line says the files are absent and what to run (issue 25, item 4)
    assert e["missing_files"] == "⚠ MOVA-720p not found in models/mova — run MOVA Download Models"
    assert e["text"].split("\n")[-1] == e["missing_files"] and "`" not in e["text"]


def test_a_listed_folder_without_generator_weights_says_so(tmp_path):
    """A 'configs only' download is listed by the loader; the estimate still plans from its configs and
    names the parts whose weights are absent."""
    folder = tmp_path / "MOVA-360p"
    cfg = PRESETS["tiny"]
    for name, part in (("video_dit", cfg.video_dit), ("audio_dit", cfg.audio_dit), ("dual_tower_bridge", cfg.bridge)):
        (folder / name).mkdir(parents=True)
        (folder / name / "config.json").write_text(json.dumps(part.to_dict()))
    (folder / "audio_dit" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    host = routes.Host(find_mova_folder=lambda n: folder if n == "MOVA-360p" else None,
                       model_names=lambda: ["MOVA-360p"])
    e = routes.estimate({"model": "MOVA-360p", "width": 64, "height": 64, "frames": 9}, host)
    assert e["missing_files"] == "⚠ MOVA-360p: no weights in video_dit, dual_tower_bridge — run MOVA Download Models"
    assert e["text"].endswith(e["missing_files"])
    for part in ("video_dit", "dual_tower_bridge"):
        (folder / part / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    e = routes.estimate({"model": "MOVA-360p", "width": 64, "height": 64, "frames": 9}, host)
    assert e["missing_files"] is None and len(e["text"].split("\n")) == 3


def test_http_errors_are_400_short_and_never_500():
    async def run():
        table = web.RouteTableDef()
        routes.register_routes(table, routes.Host(device_type=lambda: "cuda", model_names=lambda: ["mova-toy"]))
        app = web.Application()
        app.add_routes(table)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            for body in ('{"width": 1e999}', '{"height": -Infinity}', '{"fps": NaN}', '{"model": "%s"}' % ("y" * 5000),
                         '{"guidance": {"form": ["x"]}}', '{"resident_layers": {"a": 1}}', "[1, 2]", "null"):
                r = await client.post("/mova/estimate", data=body, headers={"Content-Type": "application/json"})
                text = await r.text()
                assert r.status == 400, (body[:40], r.status, text)
                assert len(json.loads(text)["error"]) <= 400 and "yyyyyyyyyy" * 10 not in text
            r = await client.get("/mova/estimate", params={"model": "../../../../tmp"})
            assert r.status == 400 and "mova-toy" in (await r.json())["error"]
    asyncio.run(run())

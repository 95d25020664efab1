"""The shipped workflows (workflows/*.json) as files: model entries for the frontend's missing-model
dialog, a description note, a thumbnail for the template browser, and the low-VRAM settings.
They are run in the real ComfyUI by tests/comfy/test_comfy_nodes.py and loaded in the real frontend
by tests/browser/."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mova_pack.runtime import hub

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
MOVA_LOADERS = {"MOVAModelLoader", "MOVAModelLoaderFiles", "MOVATextEncoderLoader", "MOVAVideoVAELoader",
                "MOVAAudioVAELoader"}
NOTES = {"Note", "MarkdownNote"}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_the_four_workflows_of_the_issue_are_shipped():
    assert {p.stem for p in WORKFLOWS} >= {"text_to_video_audio", "first_frame_to_video_audio",
                                           "low_vram_text_to_video_audio", "lora_bridge_guidance"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_loader_carries_the_real_files_from_the_hub_manifest(path):
    loaders = [n for n in load(path)["nodes"] if n["type"] in MOVA_LOADERS]
    assert loaders, f"{path.name} has no MOVA loader"
    for node in loaders:
        expected = hub.loader_model_entries(node["type"])
        assert expected, f"{node['type']} has no component list in runtime/hub.py LOADER_COMPONENTS"
        assert node["properties"].get("models") == expected, (
            f"{path.name} node {node['id']} ({node['type']}): properties.models differ from runtime/hub.py; "
            "run scripts/update_workflows.py")


def test_model_entries_have_the_frontend_format_and_cover_every_weight_file():
    entries = [e for t in hub.LOADER_COMPONENTS for e in hub.loader_model_entries(t)]
    for e in entries:
        assert set(e) == {"name", "url", "directory"} and e["directory"] == "mova"
        assert e["name"].startswith("MOVA-360p/") and e["name"].endswith(".safetensors")
        # the dialog downloads only from these prefixes and suffixes (frontend 1.32 MissingModelsWarning)
        assert e["url"] == f"https://huggingface.co/OpenMOSS-Team/MOVA-360p/resolve/main/{e['name'][10:]}"
    weights = {f"MOVA-360p/{f.path}" for f in hub.manifest("MOVA-360p") if f.path.endswith(".safetensors")}
    assert sorted(e["name"] for e in entries) == sorted(weights)      # every weight file, once
    assert hub.loader_model_entries("MOVASampler") == []


def test_update_script_reports_nothing_to_do():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "update_workflows.py"), "--check"],
                         capture_output=True, text=True, cwd=ROOT / "scripts")
    assert out.returncode == 0, out.stdout + out.stderr


def test_update_script_pushes_overlapping_nodes_down():
    sys.path.insert(0, str(ROOT / "scripts"))
    import update_workflows as uw
    ui = {"nodes": [{"id": 1, "type": "A", "pos": [0, 40], "size": [300, 200]},
                    {"id": 2, "type": "B", "pos": [100, 100], "size": [300, 100]},
                    {"id": 3, "type": "C", "pos": [500, 100], "size": [100, 100]}]}
    out = {n["id"]: n["pos"] for n in uw.without_overlaps(ui)["nodes"]}
    assert out == {1: [0, 40], 2: [100, 40 + 200 + uw.GAP + uw.TITLE_HEIGHT], 3: [500, 100]}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_workflow_has_a_description_note(path):
    notes = [n for n in load(path)["nodes"] if n["type"] in NOTES]
    assert len(notes) == 1, f"{path.name}: expected one description note, found {len(notes)}"
    text = notes[0]["widgets_values"][0]
    assert text.startswith("## MOVA") and len(text) > 150, text
    assert "mova-toy-random" not in text     # the shipped workflows use the trained toy model


REAL_MODEL = [p for p in WORKFLOWS if "mova_requires" in load(p).get("extra", {})]
TOY = [p for p in WORKFLOWS if p not in REAL_MODEL]


@pytest.mark.parametrize("path", TOY, ids=lambda p: p.stem)
def test_every_workflow_has_a_real_thumbnail(path):
    thumb = path.with_suffix(".jpg")      # frontend 1.32: /api/workflow_templates/<pack>/<name>.jpg
    assert thumb.is_file(), f"no thumbnail for {path.name}: run scripts/make_thumbnails.py"
    with Image.open(thumb) as image:
        assert image.format == "JPEG" and image.size == (512, 320)
        pixels = image.convert("RGB")
        grid = pixels.crop((0, 0, 512, 256))
        # 8 frames of a generated clip: not a flat placeholder, and the frames differ from each other
        assert max(hi - lo for lo, hi in grid.getextrema()) > 60
        first, last = grid.crop((0, 0, 128, 128)), grid.crop((384, 128, 512, 256))
        assert first.tobytes() != last.tobytes()
        wave = pixels.crop((0, 256, 512, 320))
        assert max(hi - lo for lo, hi in wave.getextrema()) > 60       # the waveform is drawn


def test_low_vram_workflow_quantizes_and_streams_with_few_resident_layers():
    ui = load(ROOT / "workflows" / "low_vram_text_to_video_audio.json")
    loader = next(n for n in ui["nodes"] if n["type"] == "MOVAModelLoader")
    model, dtype, quantization, offload, resident = loader["widgets_values"]
    assert model == "mova-toy" and quantization in ("fp8_e4m3fn", "nf4")
    assert offload == "disk" and resident <= 2      # streams from the mmap'd files: little host RAM too
    save = next(n for n in ui["nodes"] if n["type"] == "SaveVideo")
    assert save["widgets_values"][0] == "video/MOVA_low_vram"


# ------------------------------------------------------------------ the real-model template (issue 25, item 4)

def test_a_real_model_variant_of_the_main_template_is_shipped_with_the_released_settings():
    assert [p.name for p in REAL_MODEL] == ["text_to_video_audio_mova360p.json"]
    ui, toy = load(REAL_MODEL[0]), load(ROOT / "workflows" / "text_to_video_audio.json")
    assert ui["extra"]["mova_requires"] == "MOVA-360p"
    by_type = {n["type"]: n["widgets_values"] for n in ui["nodes"]}
    assert by_type["MOVAModelLoader"][0] == "MOVA-360p"
    assert [by_type[t][0] for t in ("MOVATextEncoderLoader", "MOVAVideoVAELoader", "MOVAAudioVAELoader")] == \
        ["MOVA-360p/text_encoder", "MOVA-360p/video_vae", "MOVA-360p/audio_vae"]
    # spec §4.1: 640x352, 193 frames at 24 fps, 50 steps, shift 5 for both towers, text CFG 5
    assert by_type["MOVALatent"] == [640, 352, 193, 24.0]
    seed, control, steps, shift, boundary, video_cfg, audio_cfg, schedule, audio_shift = by_type["MOVASampler"]
    assert (steps, shift, boundary, video_cfg, audio_cfg, schedule, audio_shift) == (50, 5.0, 0.9, 5.0, 5.0, "mova", 0.0)
    # the same graph as the toy template otherwise: same nodes, links and prompts
    assert [n["type"] for n in ui["nodes"]] == [n["type"] for n in toy["nodes"]] and ui["links"] == toy["links"]
    assert ui["id"] != toy["id"] and by_type["SaveVideo"][0] != dict(
        (n["type"], n["widgets_values"]) for n in toy["nodes"])["SaveVideo"][0]


def test_the_real_model_template_lists_its_files_at_the_top_level_for_the_missing_models_dialog():
    """frontend 1.32.9 reads a workflow's top-level `models` on load (loader entries only when a widget
    equals the file name, which a folder loader never does): all 13 weight files of MOVA-360p."""
    ui = load(REAL_MODEL[0])
    expected = [e for t in hub.LOADER_COMPONENTS for e in hub.loader_model_entries(t)]
    assert ui["models"] == expected and len(expected) == 13
    assert all("models" not in load(p) for p in TOY)        # the toy templates need nothing


def test_the_real_model_note_says_what_it_needs_without_toy_settings():
    note = next(n for n in load(REAL_MODEL[0])["nodes"] if n["type"] in NOTES)["widgets_values"][0]
    for words in ("ComfyUI/models/mova/MOVA-360p/", "MOVA Download Models", "https://huggingface.co/OpenMOSS-Team/MOVA-360p",
                  "193 frames", "50 steps", "Missing Models"):
        assert words in note, words
    assert "mova-toy" not in note


def test_the_real_model_thumbnail_is_a_generated_card():
    """It cannot run here (no weights): make_thumbnails.py draws what it needs instead of frames."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import make_thumbnails
    path = REAL_MODEL[0]
    card = make_thumbnails.needs_model_card(load(path))
    with Image.open(path.with_suffix(".jpg")) as image:
        assert image.format == "JPEG" and image.size == card.size == (512, 320)
        diff = [abs(a - b) for a, b in zip(image.convert("L").tobytes(), card.convert("L").tobytes())]
        assert sum(diff) / len(diff) < 4          # the committed card is this one (JPEG noise aside)

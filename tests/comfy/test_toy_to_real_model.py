"""From the toy to the real model, inside the real ComfyUI (issue 25, items 4, 5 and 10): the random
stand-in kept out of the dropdowns, errors that name the MOVA-360p folder and how to get it, the
real-model template, sizes in MOVA Download Models' plan, output descriptions, the demo LoRAs kept
out of ComfyUI's global lists."""
import asyncio
import importlib
import json
import shutil
import socket
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import ROOT, WORKFLOWS, load_workflow

sys.path.insert(0, str(ROOT / "tests"))
from fake_hub import FakeHub  # noqa: E402

REAL_TEMPLATE = WORKFLOWS / "text_to_video_audio_mova360p.json"
LOADERS = ("MOVAModelLoader", "MOVATextEncoderLoader", "MOVAVideoVAELoader", "MOVAAudioVAELoader")
RELEASE_PAGE = "https://huggingface.co/OpenMOSS-Team/MOVA-360p"


def pack_module(comfy, name: str):
    """A module of the pack as ComfyUI loaded it (not a second copy)."""
    root = comfy.nodes.NODE_CLASS_MAPPINGS["MOVASampler"].__module__.rsplit(".", 2)[0]
    return importlib.import_module(f"{root}.{name}")


def validate(comfy, prompt: dict):
    """ComfyUI's own validation of a prompt (POST /prompt), without running it."""
    valid, error, _outputs, node_errors = asyncio.run(
        comfy.execution.validate_prompt(str(uuid.uuid4()), json.loads(json.dumps(prompt)), None))
    return valid, error, node_errors


def toy_prompt(comfy, **loader_values) -> tuple[dict, dict]:
    """The main toy template as a prompt, with loader inputs replaced ({class_type: value}); and the
    ids of those loaders."""
    prompt = comfy.convert(load_workflow(WORKFLOWS / "text_to_video_audio.json"))
    ids = {}
    for node_id, node in prompt.items():
        if node["class_type"] in loader_values:
            key = next(iter(k for k in node["inputs"] if k in ("model", "vae", "text_encoder")))
            node["inputs"][key] = loader_values[node["class_type"]]
            ids[node["class_type"]] = node_id
    return prompt, ids


def messages(node_errors: dict, node_id: str) -> str:
    return " ".join(e.get("details", "") + " " + e.get("message", "") for e in node_errors[node_id]["errors"])


@contextmanager
def release_folder(comfy, build):
    """models/mova/MOVA-360p of the test's ComfyUI, made by `build(path)`, removed afterwards."""
    target = Path(comfy.folder_paths.get_folder_paths("mova")[0]) / "MOVA-360p"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        build(target)
        yield target
    finally:
        if target.is_symlink():
            target.unlink()
        else:
            shutil.rmtree(target, ignore_errors=True)


# ------------------------------------------------------------------------------ the random stand-in

def test_the_random_stand_in_is_not_offered_but_a_saved_graph_selecting_it_still_loads(comfy, monkeypatch):
    model_options = comfy.object_info("MOVAModelLoader")["input"]["required"]["model"][1]["options"]
    assert model_options[0] == "mova-toy" and "mova-toy-random" not in model_options
    for node, name in (("MOVAVideoVAELoader", "vae"), ("MOVAAudioVAELoader", "vae"),
                       ("MOVATextEncoderLoader", "text_encoder")):
        options = comfy.object_info(node)["input"]["required"][name][1]["options"]
        assert not [o for o in options if o.startswith("mova-toy-random")], (node, options)
    model_files = pack_module(comfy, "nodes.model_files")
    monkeypatch.setenv("MOVA_LIST_TEST_MODELS", "1")      # for whoever works on the pack
    assert model_files.mova_folders()[:2] == ["mova-toy", "mova-toy-random"]
    monkeypatch.delenv("MOVA_LIST_TEST_MODELS")
    # A graph saved when the stand-in was listed: validates and its loaders run.
    prompt, ids = toy_prompt(comfy, MOVAModelLoader="mova-toy-random", MOVAVideoVAELoader="mova-toy-random/video_vae")
    result = comfy.run(prompt, outputs=list(ids.values()), fresh=True)
    assert result.valid, result.node_errors
    assert result.success, result.execution_error()


# ------------------------------------------------------------------------------ missing real model

def test_real_model_template_without_the_files_stops_at_its_loaders_with_what_to_do(comfy):
    prompt = comfy.convert(load_workflow(REAL_TEMPLATE))
    valid, _error, node_errors = validate(comfy, prompt)
    assert not valid
    loaders = {k for k, v in prompt.items() if v["class_type"] in LOADERS}
    assert set(node_errors) == loaders, node_errors        # nothing else in the graph is wrong
    for node_id in loaders:
        text = messages(node_errors, node_id)
        for words in ("ComfyUI/models/mova/MOVA-360p/", "MOVA Download Models", RELEASE_PAGE):
            assert words in text, (prompt[node_id]["class_type"], text)
        # no Markdown marks (the dialog shows them raw), and never the single-file folders
        assert "`" not in text and "models/text_encoders" not in text and "models/vae" not in text, text


def test_real_model_template_validates_once_a_mova_360p_folder_is_there(comfy):
    """With a folder named MOVA-360p (the toy's files stand in for the released ones) every input of the
    template passes ComfyUI's validation: the released settings are all within the nodes' limits."""
    prompt = comfy.convert(load_workflow(REAL_TEMPLATE))
    toy = ROOT / "embedded" / "mova-toy"
    with release_folder(comfy, lambda target: target.symlink_to(toy, target_is_directory=True)):
        valid, error, node_errors = validate(comfy, prompt)
    assert valid, (error, node_errors)


def _configs_only(target: Path) -> None:
    """What 'configs only (no weights)' leaves: model_index.json and the generator's config files."""
    toy = ROOT / "embedded" / "mova-toy"
    target.mkdir()
    shutil.copy(toy / "model_index.json", target / "model_index.json")
    for part in ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"):
        (target / part).mkdir()
        shutil.copy(toy / part / "config.json", target / part / "config.json")


def test_an_incomplete_release_folder_says_how_to_complete_it(comfy):
    with release_folder(comfy, _configs_only):
        prompt, ids = toy_prompt(comfy, MOVAModelLoader="MOVA-360p", MOVATextEncoderLoader="MOVA-360p/text_encoder")
        valid, _error, node_errors = validate(comfy, prompt)
        encoder = ids["MOVATextEncoderLoader"]
        assert not valid and set(node_errors) == {encoder}, node_errors   # the folder is listed, its encoder not
        text = messages(node_errors, encoder)
        assert "ComfyUI/models/mova/MOVA-360p/ has no text_encoder/ folder" in text and "MOVA Download Models" in text
        assert f"{RELEASE_PAGE}/tree/main/text_encoder" in text and "`" not in text
        prompt, ids = toy_prompt(comfy, MOVAModelLoader="MOVA-360p")
        result = comfy.run(prompt, outputs=[ids["MOVAModelLoader"]], fresh=True)
    assert result.valid and not result.success
    error = result.execution_error()["exception_message"]
    assert "ComfyUI/models/mova/MOVA-360p/" in error and "MOVA Download Models" in error and "`" not in error, error


# ------------------------------------------------------------------------------ MOVA Download Models

def _plan(comfy, components="vaes (video_vae, audio_vae)") -> str:
    prompt = {"1": {"class_type": "MOVADownloadModels",
                    "inputs": {"variant": "MOVA-360p", "components": components, "confirm": False}}}
    result = comfy.run(prompt, fresh=True)
    assert result.success, result.execution_error()
    return "".join(result.outputs["1"]["text"])


def test_download_plan_shows_sizes_from_the_hub_and_a_total(comfy, monkeypatch):
    import huggingface_hub.constants
    hub = pack_module(comfy, "runtime.hub")
    files = {f.path: bytes(1000) for f in hub.manifest("MOVA-360p")}
    files["video_vae/diffusion_pytorch_model.safetensors"] = bytes(2_500_000)
    with FakeHub({hub.REPOS["MOVA-360p"]: files}) as fake:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", fake.endpoint)
        text = _plan(comfy)
        assert not fake.gets()                             # sizes only: nothing downloaded
    lines = text.splitlines()
    assert "  missing  video_vae/diffusion_pytorch_model.safetensors (2.5 MB)" in lines, text
    assert "  missing  audio_vae/config.json (1 kB)" in lines, text
    assert "In all 2.5 MB, of which 2.5 MB still to download." in lines and "size from Hub" not in text


def test_download_plan_offline_lists_the_files_and_says_why_sizes_are_missing(comfy, monkeypatch):
    import huggingface_hub.constants
    with socket.socket() as black_hole:         # accepts connections, never answers
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(16)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{black_hole.getsockname()[1]}")
        t0 = time.monotonic()
        text = _plan(comfy)
    assert time.monotonic() - t0 < 15
    assert text.startswith("Would download 4 files of OpenMOSS-Team/MOVA-360p")
    assert "Sizes not shown: cannot reach the Hugging Face Hub" in text and RELEASE_PAGE in text
    assert text.endswith("Nothing was downloaded. Set confirm to true and run again to download.")


# ------------------------------------------------------------------------------ outputs, LoRA lists

def test_every_mova_node_describes_its_outputs(comfy):
    mova = [k for k, cls in comfy.nodes.NODE_CLASS_MAPPINGS.items()
            if comfy.object_info(k).get("category", "").startswith("MOVA")]
    assert len(mova) >= 14
    for node_type in mova:
        info = comfy.object_info(node_type)
        tips = info.get("output_tooltips") or []
        assert len(tips) == len(info["output"]) and all(isinstance(t, str) and len(t) > 15 for t in tips), \
            (node_type, tips)


def test_demo_loras_are_listed_by_mova_lora_only(comfy):
    folder_paths = comfy.folder_paths
    demo = sorted(p.name for p in (ROOT / "demo_loras").glob("*.safetensors"))
    assert demo == ["mova-toy-demo-lora.safetensors", "mova-toy-trained-demo-lora.safetensors"]
    options = comfy.object_info("MOVALora")["input"]["required"]["lora"][1]["options"]
    assert set(demo) <= set(options)
    # core Load LoRA lists ComfyUI's `loras` paths; the model library lists every model folder's files
    assert not set(demo) & set(comfy.object_info("LoraLoader")["input"]["required"]["lora_name"][0])
    assert not [p for p in folder_paths.get_folder_paths("loras") if Path(p).resolve() == (ROOT / "demo_loras").resolve()]
    for root in folder_paths.get_folder_paths("mova"):
        assert not [p for p in Path(root).rglob("*.safetensors") if "lora" in p.name], root

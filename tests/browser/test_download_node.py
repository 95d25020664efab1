"""MOVA Download Models end to end inside a real ComfyUI whose Hub is the loopback fake
(HF_ENDPOINT -> tests/fake_hub.py): files land in that server's models/mova/<variant>/, verified,
and the downloaded folder then shows up in the MOVA loader's list. Own temp base dir, so the
shared .comfyui/base is never touched; the server is stopped by its PID."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from browser_env import PACK_NAME, ROOT, comfy_host

sys.path.insert(0, str(ROOT / "tests"))
from fake_hub import FakeHub  # noqa: E402

WEIGHTS = bytes(range(256)) * 512


def fake_repo() -> dict:
    sys.path.insert(0, str(ROOT / "scripts"))
    import _pack  # noqa: F401  (registers mova_pack)
    from mova_pack.runtime import hub
    files = {f.path: b'{"_class_name": "x"}' for f in hub.manifest("MOVA-360p", ["model_index", "scheduler", "audio_vae"])}
    files["audio_vae/diffusion_pytorch_model.safetensors"] = WEIGHTS
    return {hub.REPOS["MOVA-360p"]: files}


@pytest.fixture(scope="module")
def hub_server():
    base = Path(tempfile.mkdtemp(prefix="mova-dl-base-"))
    for sub in ("custom_nodes", "models", "input", "output", "temp"):
        (base / sub).mkdir()
    (base / "custom_nodes" / PACK_NAME).symlink_to(ROOT)
    with FakeHub(fake_repo()) as fake:
        old = os.environ.get("HF_ENDPOINT")
        os.environ["HF_ENDPOINT"] = fake.endpoint        # read by huggingface-hub in the server process
        try:
            host = comfy_host.ComfyHost(base_dir=base, log_path=base / "comfyui.log").start()
        finally:
            os.environ.pop("HF_ENDPOINT") if old is None else os.environ.__setitem__("HF_ENDPOINT", old)
        try:
            yield host, fake, base
        finally:
            host.stop()
            (base / "custom_nodes" / PACK_NAME).unlink()     # the link first: never walk into the repo
            shutil.rmtree(base, ignore_errors=True)


def test_download_node_fetches_verifies_and_the_loader_lists_it(hub_server):
    host, fake, base = hub_server
    prompt = {"1": {"class_type": "MOVADownloadModels",
                    "inputs": {"variant": "MOVA-360p", "components": "vaes (video_vae, audio_vae)", "confirm": True}}}
    status, body = host.post_prompt(prompt)
    assert status == 200, body
    entry = host.wait_for(body["prompt_id"], timeout=120)
    text = "".join(entry.get("outputs", {}).get("1", {}).get("text", []))
    # video_vae is not on the fake Hub (required files): the node must fail with the readable reason...
    assert entry["status"]["status_str"] == "error"
    messages = str(entry["status"]["messages"])
    assert "has no file video_vae/config.json" in messages, messages[:2000]
    assert not text
    # ...after having fetched and verified what came before it in the manifest.
    target = base / "models" / "mova" / "MOVA-360p"
    assert (target / "audio_vae" / "diffusion_pytorch_model.safetensors").read_bytes() == WEIGHTS

    prompt["1"]["inputs"]["components"] = "configs only (no weights)"
    entry = host.run(prompt, timeout=120)
    text = "".join(entry["outputs"]["1"]["text"])
    assert "downloaded" in text and "model_index.json" in text and "git sha1" in text
    assert (target / "model_index.json").is_file()
    # every request is for the release's files, but the reachability probe (HEAD on the Hub's root)
    assert all(urlpath == "/" or urlpath.startswith("/OpenMOSS-Team/MOVA-360p/resolve/main/")
               for _, urlpath, _ in fake.requests)

    loader = host.get_json("/object_info/MOVAModelLoader")["MOVAModelLoader"]["input"]["required"]["model"]
    options = loader[0] if isinstance(loader[0], list) else loader[1]["options"]
    assert "MOVA-360p" in options, options

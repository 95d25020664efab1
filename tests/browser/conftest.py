"""Fixtures of the browser tests (helpers live in browser_env.py): the real ComfyUI server started
once per session by scripts/comfy_host.py, one headless system Chromium, a fresh tab per test."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import urllib.parse
from pathlib import Path

import pytest

from browser_env import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, ROOT, Canvas, comfy_host, post_json

sys.path.insert(0, str(ROOT / "tests"))
from fake_hub import FakeHub  # noqa: E402


def released_files_stand_in() -> dict:
    """Every file of both MOVA releases as a few bytes: MOVA Download Models (confirm off) asks the Hub
    for sizes, and the tests' Hub is this loopback fake, never the internet."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import _pack  # noqa: F401  (registers mova_pack)
    from mova_pack.runtime import hub
    return {repo: {f.path: b"{}" * 16 for f in hub.manifest(variant)} for variant, repo in hub.REPOS.items()}


@pytest.fixture(scope="session")
def server():
    """The real ComfyUI with the pack, outputs in a temp folder; stopped (by its PID) at the end.
    MOVA_COMFY_PORT=<port> uses a ComfyUI you already started on 127.0.0.1 instead."""
    if os.environ.get("MOVA_COMFY_PORT"):
        host = comfy_host.ComfyHost(port=int(os.environ["MOVA_COMFY_PORT"]))
        post_json(f"{host.url}/settings/Comfy.TutorialCompleted", True)
        yield host
        return
    out = Path(tempfile.mkdtemp(prefix="mova-browser-out-"))
    host = comfy_host.ComfyHost(output_dir=out, log_path=out / "comfyui.log")
    fake_hub = FakeHub(released_files_stand_in()).__enter__()
    old = os.environ.get("HF_ENDPOINT")
    os.environ["HF_ENDPOINT"] = fake_hub.endpoint        # read by huggingface-hub in the server process
    try:
        host.start()
    finally:
        os.environ.pop("HF_ENDPOINT") if old is None else os.environ.__setitem__("HF_ENDPOINT", old)
    try:
        assert post_json(f"{host.url}/settings/Comfy.TutorialCompleted", True) == 200
        yield host
    finally:
        host.stop()
        fake_hub.__exit__(None, None, None)
        log = host.log_text()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "comfyui.log").write_text(log)
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="session")
def browser_context():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        profile = tempfile.mkdtemp(prefix="mova-chromium-")
        ctx = p.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), headless=True,
                                                   args=CHROMIUM_ARGS, viewport={"width": 1600, "height": 1000})

        def only_loopback(route):
            host = urllib.parse.urlsplit(route.request.url).hostname
            if host == "127.0.0.1" or route.request.url.startswith(("data:", "blob:")):
                route.continue_()
            else:
                route.abort()
        ctx.route("**/*", only_loopback)
        try:
            yield ctx
        finally:
            ctx.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def canvas(server, browser_context):
    page = browser_context.new_page()
    try:
        yield Canvas(page, server).open()
    finally:
        page.close()



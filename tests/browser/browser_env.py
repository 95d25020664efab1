"""Shared helpers of the browser tests: the real ComfyUI server (scripts/comfy_host.py) and its real
frontend in the system Chromium, driven by Playwright's sync API. Never downloads a browser; never
leaves 127.0.0.1.

Skips (with the reason) when /usr/bin/chromium or playwright is missing: run scripts/setup_browser.sh.
Screenshots go to artifacts/browser/ (git-ignored).
"""
from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "artifacts" / "browser"
WORKFLOWS = ROOT / "workflows"
PACK_NAME = "ComfyUI-MOVA"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]   # lets the test press play on the result
# Noise of the stock frontend on a fresh profile, not caused by the pack: the error comfyui-host.md
# lists, "Failed to load resource" lines (each failing request is checked on its own below), the
# blocked call to the comfy.org registry, and 404s for per-user files that do not exist yet.
KNOWN_FRONTEND_ERRORS = ("Cannot read properties of undefined (reading 'id')",
                         "Failed to load resource: the server responded with a status of 404",
                         "https://api.comfy.org/")
KNOWN_MISSING_URLS = ("/userdata", "/user.css")

sys.path.insert(0, str(ROOT / "scripts"))
import comfy_host  # noqa: E402  (stdlib only)



def missing_browser() -> str | None:
    """Why browser tests cannot run here (None when they can). Test modules skip with this reason."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found: run scripts/setup_browser.sh (installs Debian's chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed in the venv: run scripts/setup_browser.sh"
    return None


def post_json(url: str, data) -> int:
    req = urllib.request.Request(url, data=json.dumps(data).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status


class Canvas:
    """One frontend tab: console errors collected, helpers to load graphs and read nodes."""

    def __init__(self, page, server):
        self.page, self.server = page, server
        self.errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}\n{e.stack or ''}"))
        page.on("response", lambda r: r.status >= 400 and self.errors.append(f"HTTP {r.status} {r.url}"))

    def open(self) -> "Canvas":
        self.page.goto(self.server.url + "/")
        self.page.wait_for_function("window.app && window.app.graph && window.app.extensionManager", timeout=60_000)
        self.page.wait_for_function(
            "window.app.extensions && window.app.extensions.some(e => e.name === 'MOVA.Canvas')", timeout=30_000)
        return self

    def unexpected_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed requests, minus the stock frontend's noise."""
        def known(e):
            if e.startswith("HTTP 404 "):
                return any(u in e for u in KNOWN_MISSING_URLS)
            return not e.startswith("HTTP ") and any(k in e for k in KNOWN_FRONTEND_ERRORS)
        return [e for e in self.errors if not known(e)]

    def load(self, workflow: dict) -> None:
        self.page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
        self.page.wait_for_timeout(300)

    def nodes(self) -> list[dict]:
        return self.page.evaluate("""() => window.app.graph._nodes.map(n => ({
            id: n.id, type: n.type, color: n.color, bgcolor: n.bgcolor,
            category: n.constructor?.nodeData?.category ?? null,
            registered: !!window.LiteGraph.registered_node_types[n.type],
            widgets: Object.fromEntries((n.widgets ?? []).map(w => [w.name, w.value])) }))""")

    def widget(self, node_id: int, name: str):
        return self.page.evaluate("([id, name]) => window.app.graph.getNodeById(id).widgets.find(w => w.name === name)?.value",
                                  [node_id, name])

    def set_widget(self, node_id: int, name: str, value) -> None:
        """Change a widget the way a user edit does (setValue -> callbacks, onWidgetChanged)."""
        self.page.evaluate("""([id, name, value]) => {
            const node = window.app.graph.getNodeById(id);
            const w = node.widgets.find(w => w.name === name);
            w.setValue(value, { e: undefined, node, canvas: window.app.canvas });
        }""", [node_id, name, value])

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.evaluate("""async () => {
            try { await window.app.extensionManager.command.execute("Comfy.Canvas.FitView"); } catch (e) {}
            window.app.canvas.setDirty(true, true); window.app.canvas.draw(true, true); }""")
        self.page.wait_for_timeout(400)
        self.page.screenshot(path=str(path))
        return path


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.json"))

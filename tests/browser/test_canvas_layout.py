"""The canvas as artists live in it (issue 25), in BOTH renderers of frontend 1.32: the classic
LiteGraph canvas and "Nodes 2.0" (Vue nodes). Each shipped template is run from the page; after the
run, on the real page: no two nodes overlap (previews and the video player included), no text of the
pack is clipped, and the info lines follow their inputs (also through links). Screenshots of each
template after its run go to artifacts/browser/ (MOVA_SCREENSHOTS=docs also writes docs/screenshots/)."""
from __future__ import annotations

import json
import os

import pytest

from browser_env import ARTIFACTS, ROOT, Canvas, post_json, workflow_files

from browser_env import missing_browser

reason = missing_browser()
if reason:
    pytest.skip(reason, allow_module_level=True)

RENDERERS = ("classic", "vue")
TEMPLATES = [p for p in workflow_files() if json.loads(p.read_text()).get("extra", {}).get("mova_layout")]
DOCS_SHOTS = ROOT / "docs" / "screenshots"

# Every node's box on the page, in screen pixels: the DOM element in Vue nodes, the canvas-drawn box
# (title bar included) in the classic renderer.
BOXES = """() => {
  const vue = !!window.app.ui.settings.getSettingValue('Comfy.VueNodes.Enabled');
  const ds = window.app.canvas.ds;
  const rect = window.app.canvas.canvas.getBoundingClientRect();
  return window.app.graph._nodes.map(n => {
    let b;
    if (vue) { const r = document.querySelector(`[data-node-id="${n.id}"]`).getBoundingClientRect();
               b = [r.left, r.top, r.width, r.height]; }
    else { const g = n.getBounding(); b = [rect.left + (g[0] + ds.offset[0]) * ds.scale,
                                          rect.top + (g[1] + ds.offset[1]) * ds.scale, g[2] * ds.scale, g[3] * ds.scale]; }
    return { id: n.id, title: n.title, type: n.type, box: b }; }); }"""

# Text of the pack (info lines, reports) and the notes / prompts: nothing cut off. Classic nodes also
# must be at least as large as their widgets need (the frontend's own computeSize).
CLIPPED = """() => {
  const cut = [];
  for (const el of document.querySelectorAll('.mova-info')) {
    if (el.offsetParent === null) continue;
    if (el.scrollHeight > el.clientHeight + 2 || el.scrollWidth > el.clientWidth + 2)
      cut.push(['info', el.dataset.movaInfo, el.dataset.movaNode, el.scrollHeight, el.clientHeight, el.innerText.slice(0, 80)]);
  }
  for (const n of window.app.graph._nodes) {
    if (n.type === 'MarkdownNote' || n.type === 'Note') {
      const el = document.querySelector(`[data-node-id="${n.id}"] .comfy-markdown, [data-node-id="${n.id}"] textarea`)
             ?? n.widgets?.[0]?.element;
      const box = el?.querySelector?.('.tiptap, .ProseMirror') ?? el;
      if (box && box.offsetParent !== null && box.scrollHeight > box.clientHeight + 2)
        cut.push(['note', n.title, n.id, box.scrollHeight, box.clientHeight]);
    }
    if (!window.app.ui.settings.getSettingValue('Comfy.VueNodes.Enabled')) {
      const need = n.computeSize();
      if (need[1] > n.size[1] + 2) cut.push(['node', n.title, n.id, need[1], n.size[1]]);
    }
  }
  return cut; }"""


@pytest.fixture(scope="module", params=RENDERERS)
def renderer(request, server, browser_context):
    """A tab of the frontend in one renderer (the server-side setting restored afterwards)."""
    post_json(f"{server.url}/settings/Comfy.VueNodes.Enabled", request.param == "vue")
    page = browser_context.new_page()
    try:
        canvas = Canvas(page, server).open()
        vue = page.evaluate("() => window.app.ui.settings.getSettingValue('Comfy.VueNodes.Enabled')")
        assert vue == (request.param == "vue")
        yield request.param, canvas
    finally:
        page.close()
        post_json(f"{server.url}/settings/Comfy.VueNodes.Enabled", False)


def overlaps(boxes: list[dict]) -> list:
    hits = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            (ax, ay, aw, ah), (bx, by, bw, bh) = a["box"], b["box"]
            if ax < bx + bw - 1 and bx < ax + aw - 1 and ay < by + bh - 1 and by < ay + ah - 1:
                hits.append((a["title"], b["title"]))
    return hits


def run_from_page(canvas: Canvas) -> dict:
    """Queue the loaded graph as the Run button does; wait for the saved video on the canvas."""
    canvas.page.evaluate("(src) => { window.__movaBoxes = src; }", BOXES)
    canvas.page.evaluate("""async () => {
        const api = window.comfyAPI.api.api;
        window.__mova = { errors: [], previews: 0, done: false, overlaps: [], tallest: {} };
        // Nodes grow while the run goes on (previews on the sampler, the player on SaveVideo): look
        // for overlaps all along, not only at the end.
        const boxes = eval(window.__movaBoxes);
        window.__movaPoll = setInterval(() => {
          const all = boxes();
          for (const b of all) window.__mova.tallest[b.type] = Math.max(window.__mova.tallest[b.type] ?? 0,
                                                                        b.box[3] / window.app.canvas.ds.scale);
          for (let i = 0; i < all.length; i++) for (let j = i + 1; j < all.length; j++) {
            const [a, c] = [all[i].box, all[j].box];
            if (a[0] < c[0] + c[2] - 1 && c[0] < a[0] + a[2] - 1 && a[1] < c[1] + c[3] - 1 && c[1] < a[1] + a[3] - 1)
              window.__mova.overlaps.push([all[i].title, all[j].title].join(' / '));
          } }, 250);
        api.addEventListener("execution_error", (e) => window.__mova.errors.push(e.detail));
        api.addEventListener("b_preview_with_metadata", () => window.__mova.previews++);
        api.addEventListener("execution_success", () => { window.__mova.done = true; });
        await window.app.queuePrompt(0, 1); }""")
    canvas.page.wait_for_function(
        """() => window.__mova.errors.length || (window.__mova.done &&
                 [...document.querySelectorAll('video')].some(v => v.readyState >= 1))""",
        timeout=900_000, polling=500)
    canvas.page.wait_for_timeout(1500)        # previews and the player settle their size
    state = canvas.page.evaluate("() => { clearInterval(window.__movaPoll); return window.__mova; }")
    state["overlaps"] = sorted(set(state["overlaps"]))
    assert not state["errors"], json.dumps(state["errors"])[:3000]
    return state


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_template_after_a_full_run_has_no_overlap_and_no_clipped_text(renderer, path):
    name, canvas = renderer
    canvas.errors.clear()
    canvas.load(json.loads(path.read_text()))
    canvas.page.wait_for_function(
        "() => [...document.querySelectorAll('.mova-info')].every(e => !/memory estimate: …/.test(e.innerText))",
        timeout=15_000)
    before = canvas.page.evaluate(BOXES)
    assert not overlaps(before), f"{name} {path.name} as loaded: {overlaps(before)}"
    state = run_from_page(canvas)
    assert state["previews"] >= 1
    after = canvas.page.evaluate(BOXES)
    scale = canvas.page.evaluate("() => window.app.canvas.ds.scale")
    grown = {b["type"]: [round(x / scale) for x in b["box"][2:]] for b in after}
    print(f"\n{name} {path.stem}: node boxes after the run (graph units, title included): {grown}")
    print(f"tallest during the run (graph units, title included): {state['tallest']}")
    assert not state["overlaps"], f"{name} {path.name} during the run: {state['overlaps']}"
    assert not overlaps(after), f"{name} {path.name} after the run: {overlaps(after)}"
    clipped = canvas.page.evaluate(CLIPPED)
    assert not clipped, f"{name} {path.name}: clipped text {clipped}"
    # The saved view shows the whole graph, clear of the sidebar and the top bar.
    canvas.page.evaluate("() => window.app.canvas.setDirty(true, true)")
    shot = f"{name}-{path.stem}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    canvas.page.screenshot(path=str(ARTIFACTS / f"{shot}.png"))
    if os.environ.get("MOVA_SCREENSHOTS") == "docs":
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        canvas.page.screenshot(path=str(DOCS_SHOTS / f"{shot}.jpg"), type="jpeg", quality=82)
    assert not canvas.unexpected_errors(), canvas.unexpected_errors()

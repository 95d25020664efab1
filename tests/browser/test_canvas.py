"""The canvas a creator sees, in the real frontend: workflows load clean, MOVA nodes share a colour,
the memory estimate follows the loader's settings, the latent node snaps sizes and shows seconds,
and the toy workflow's result plays with sound in a <video> on the canvas."""
from __future__ import annotations

import io
import json
import os
import re
import urllib.parse

import pytest

from browser_env import ARTIFACTS, PACK_NAME, ROOT, missing_browser, workflow_files

reason = missing_browser()
if reason:
    pytest.skip(reason, allow_module_level=True)

MOVA_COLOR, MOVA_BGCOLOR = "#1f4e5a", "#163a43"
PROMPT_COLOURS = {"positive": ("#232", "#353"), "negative": ("#322", "#533")}
T2VA = "text_to_video_audio.json"
REAL_MODEL = "text_to_video_audio_mova360p.json"
# The missing-models dialog asks huggingface.co for each file's size; this test browser may not leave 127.0.0.1.
OFFLINE = ("huggingface.co", "Error fetching file size")
GUIDED = "lora_bridge_guidance.json"
OLD_WORKFLOWS = ROOT / "tests" / "fixtures" / "workflows_v1"


def load_workflow(name: str) -> dict:
    return json.loads(next(p for p in workflow_files() if p.name == name).read_text())


def vram_gb(text: str) -> float:
    match = re.match(r"VRAM ≈ ([\d.]+) GB", text or "")
    assert match, f"not an estimate: {text!r}"
    return float(match.group(1))


def wait_estimate(canvas, node_id: int, not_equal: str | None = None) -> str:
    canvas.page.wait_for_function(
        """([id, old]) => { const w = window.app.graph.getNodeById(id).widgets.find(w => w.name === 'memory_estimate');
                            return w && /^(VRAM|memory estimate unavailable)/.test(w.value) && w.value !== old; }""",
        arg=[node_id, not_equal], timeout=15_000)
    return canvas.widget(node_id, "memory_estimate")


def test_extension_is_served_and_registered(canvas, server):
    scripts = [s for s in server.get_json("/extensions") if s.endswith("/mova.js")]
    assert scripts, "web/mova.js is not among the frontend extensions (WEB_DIRECTORY missing?)"
    if not os.environ.get("MOVA_COMFY_PORT"):
        assert scripts == [f"/extensions/{PACK_NAME}/mova.js"]
    assert canvas.page.evaluate("async (url) => (await fetch(url)).status", scripts[0]) == 200
    assert canvas.page.evaluate("() => window.app.extensions.some(e => e.name === 'MOVA.Canvas')")


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.stem)
def test_workflow_loads_without_missing_nodes_or_errors(canvas, path):
    workflow = json.loads(path.read_text())
    canvas.load(workflow)
    nodes = canvas.nodes()
    assert len(nodes) == len(workflow["nodes"])
    missing = sorted({n["type"] for n in nodes if not n["registered"]})
    assert not missing, f"{path.name}: node types unknown to the server: {missing}"
    mova = [n for n in nodes if (n["category"] or "").startswith("MOVA")]
    assert mova, f"{path.name} has no MOVA node"
    # Prompts carry core templates' green / red (saved in the workflow, which wins); the rest MOVA teal.
    titles = {n["id"]: (n.get("title") or "").lower() for n in workflow["nodes"]}
    wanted = {n["id"]: PROMPT_COLOURS["positive"] if "positive" in titles[n["id"]] else PROMPT_COLOURS["negative"]
              if "negative" in titles[n["id"]] else (MOVA_COLOR, MOVA_BGCOLOR) for n in mova}
    off_colour = [(n["type"], n["color"], n["bgcolor"]) for n in mova if (n["color"], n["bgcolor"]) != wanted[n["id"]]]
    assert not off_colour, f"MOVA nodes without their colour: {off_colour}"
    # The graph turns into a prompt, and our display widgets never leak into it.
    prompt = canvas.page.evaluate("async () => (await window.app.graphToPrompt()).output")
    assert {n["type"] for n in mova} <= {v["class_type"] for v in prompt.values()}
    assert not [k for v in prompt.values() for k in v["inputs"] if k in ("memory_estimate", "duration")]
    for loader in (n for n in nodes if n["type"].startswith("MOVAModelLoader")):
        wait_estimate(canvas, loader["id"])
    # Frontend 1.32 offers a node's properties.models only when a widget value equals an entry's name;
    # the MOVA loaders select folders (mova-toy), so the embedded toy opens no missing-models dialog.
    # If a later frontend shows one, it must list our entries and nothing else.
    listed = missing_models_dialog(canvas)
    assert listed is None or set(listed) <= set(model_labels(workflow)), listed
    canvas.screenshot(f"workflow-{path.stem}")
    errors = [e for e in canvas.unexpected_errors() if not ("models" in workflow and any(o in e for o in OFFLINE))]
    assert not errors, f"console errors while loading {path.name}: {errors}"


def model_labels(workflow: dict) -> list[str]:
    """How the frontend's missing-models dialog labels our entries: '<directory> / <name>'."""
    return [f"{m['directory']} / {m['name']}" for n in workflow["nodes"] for m in n.get("properties", {}).get("models", [])]


def missing_models_dialog(canvas) -> list[str] | None:
    """The entries of the open missing-models dialog (None when there is none)."""
    canvas.page.wait_for_timeout(500)
    text = canvas.page.evaluate("""() => {
        const d = document.querySelector('.p-dialog[aria-labelledby="global-missing-models-warning"]');
        return d ? d.innerText : null; }""")
    if text is None:
        return None
    assert "Invalid directory" not in text and "not allowed" not in text and "Only allowed suffixes" not in text, text
    return re.findall(r"^(\S+ / \S+)$", text, flags=re.M)


def test_missing_models_dialog_lists_the_real_files_with_their_downloads(canvas):
    """The same entries given as the workflow's model list (which the frontend always checks): the
    dialog lists every real MOVA weight file in the `mova` folder, each with a usable Download button."""
    workflow = load_workflow(T2VA)
    workflow["models"] = [m for n in workflow["nodes"] for m in n.get("properties", {}).get("models", [])]
    assert len(workflow["models"]) == 13
    canvas.load(workflow)
    canvas.page.wait_for_selector('.p-dialog[aria-labelledby="global-missing-models-warning"]', timeout=15_000)
    listed = missing_models_dialog(canvas)
    assert listed == model_labels(workflow), listed
    buttons = canvas.page.evaluate("""() => [...document.querySelectorAll(
        '.p-dialog[aria-labelledby="global-missing-models-warning"] button')]
        .filter(b => /^Download/.test(b.innerText.trim())).map(b => b.disabled)""")
    assert len(buttons) == 13 and not any(buttons), buttons
    canvas.screenshot("missing-models-dialog")
    assert not [e for e in canvas.unexpected_errors() if not any(o in e for o in OFFLINE)]


def test_every_mova_node_reaches_the_page_with_output_descriptions(canvas):
    """Issue 25, item 10: the frontend takes output tooltips from object_info's output_tooltips."""
    tips = canvas.page.evaluate("""() => Object.entries(window.LiteGraph.registered_node_types)
        .filter(([, t]) => (t.nodeData?.category ?? '').startsWith('MOVA'))
        .map(([type, t]) => [type, t.nodeData.output?.length ?? 0, t.nodeData.output_tooltips ?? []])""")
    assert len(tips) >= 14
    assert not [(t, n, tt) for t, n, tt in tips if len(tt) != n or not all(tt)], tips


def docs_screenshot(canvas, name: str) -> None:
    """With MOVA_SCREENSHOTS=docs, the page as it is now into docs/screenshots/<name>.jpg (docs/web.md)."""
    if os.environ.get("MOVA_SCREENSHOTS") == "docs":
        shots = ROOT / "docs" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        canvas.page.screenshot(path=str(shots / f"{name}.jpg"), type="jpeg", quality=82)


def test_real_model_template_says_what_is_missing_and_what_to_run(canvas):
    """Issue 25, item 4: the MOVA-360p template opens the Missing Models dialog with its 13 weight files,
    the loader's estimate says the folder is absent and what to run, and Run stops at the loaders with
    that text (no Markdown backticks, never pointing at models/vae or models/text_encoders)."""
    workflow = load_workflow(REAL_MODEL)
    canvas.load(workflow)
    canvas.page.wait_for_selector('.p-dialog[aria-labelledby="global-missing-models-warning"]', timeout=15_000)
    assert missing_models_dialog(canvas) == [f"{m['directory']} / {m['name']}" for m in workflow["models"]]
    canvas.screenshot("real-model-missing-models-dialog")
    docs_screenshot(canvas, "real-model-missing-models")
    canvas.page.keyboard.press("Escape")
    loader = next(n for n in canvas.nodes() if n["type"] == "MOVAModelLoader")
    canvas.page.wait_for_function("""id => [...document.querySelectorAll('.mova-info[data-mova-info="memory_estimate"]')]
        .some(e => e.dataset.movaNode === String(id)
                   && e.innerText.includes('MOVA-360p not found in models/mova — run MOVA Download Models'))""",
                                  arg=loader["id"], timeout=15_000)
    errors = canvas.page.evaluate("""async () => { try { await window.app.queuePrompt(0, 1); } catch (e) {}
        await new Promise(r => setTimeout(r, 800));
        return { nodes: window.app.lastNodeErrors,
                 dialogs: [...document.querySelectorAll('.p-dialog')].map(d => d.innerText).join(' | ') }; }""")
    by_type = {workflow_node["type"]: str(workflow_node["id"]) for workflow_node in workflow["nodes"]}
    loaders = ("MOVAModelLoader", "MOVATextEncoderLoader", "MOVAVideoVAELoader", "MOVAAudioVAELoader")
    assert set(errors["nodes"]) == {by_type[t] for t in loaders}, errors["nodes"]
    for node_id, entry in errors["nodes"].items():
        text = " ".join(e["details"] for e in entry["errors"])
        assert len(entry["errors"]) == 1, entry            # one message per problem (web/mova.js dedupe)
        for words in ("ComfyUI/models/mova/MOVA-360p/", "MOVA Download Models", "huggingface.co/OpenMOSS-Team/MOVA-360p"):
            assert words in text, (entry["class_type"], text)
        assert "`" not in text and "models/vae" not in text and "models/text_encoders" not in text, text
    assert "`" not in errors["dialogs"], errors["dialogs"]
    canvas.screenshot("real-model-run-error")
    docs_screenshot(canvas, "real-model-run-error")
    refused = ("HTTP 400 ", "status of 400", "PromptExecutionError")       # the run refused, as it must be
    assert not [e for e in canvas.unexpected_errors() if not any(o in e for o in OFFLINE + refused)]


@pytest.mark.parametrize("path", sorted(OLD_WORKFLOWS.glob("*.json")), ids=lambda p: p.stem)
def test_saved_v1_workflows_still_load(canvas, path):
    workflow = json.loads(path.read_text())
    canvas.load(workflow)
    nodes = canvas.nodes()
    assert len(nodes) == len(workflow["nodes"]) and all(n["registered"] for n in nodes)
    for loader in (n for n in nodes if n["type"].startswith("MOVAModelLoader")):
        assert vram_gb(wait_estimate(canvas, loader["id"])) > 0
    assert not canvas.unexpected_errors(), canvas.unexpected_errors()


def test_template_browser_lists_every_workflow_with_its_thumbnail(canvas):
    thumbnails = {}
    canvas.page.on("response", lambda r: f"/workflow_templates/{PACK_NAME}/" in r.url and r.url.endswith(".jpg")
                   and thumbnails.__setitem__(urllib.parse.unquote(r.url.rsplit("/", 1)[1]),
                                              (r.status, r.headers.get("content-type"))))
    canvas.page.evaluate("async () => { await window.app.extensionManager.command.execute('Comfy.BrowseTemplates'); }")
    canvas.page.get_by_text(PACK_NAME, exact=True).click()
    names = sorted(p.stem for p in workflow_files())
    canvas.page.wait_for_function(
        """(names) => names.every(n => [...document.querySelectorAll('.p-dialog img')]
                                       .some(i => i.alt === n && i.complete && i.naturalWidth > 0))""",
        arg=names, timeout=30_000)
    shown = canvas.page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('.p-dialog img')]
        .map(i => [i.alt, [i.naturalWidth, i.naturalHeight]]))""")
    assert {n: shown.get(n) for n in names} == {n: [512, 320] for n in names}
    assert thumbnails == {f"{n}.jpg": (200, "image/jpeg") for n in names}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    canvas.page.screenshot(path=str(ARTIFACTS / "template-browser.png"))
    assert not canvas.unexpected_errors()


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.stem)
def test_workflow_nodes_do_not_overlap_once_widgets_grow(canvas, path):
    # The info widgets reserve their lines when the node is created (web/mova.js INFO_LINES) and the
    # workflows are laid out with those sizes (scripts/update_workflows.py): nothing grows into a neighbour.
    canvas.load(json.loads(path.read_text()))
    for loader in (n for n in canvas.nodes() if n["type"].startswith("MOVAModelLoader")):
        wait_estimate(canvas, loader["id"])
    overlaps = canvas.page.evaluate("""() => {
        const boxes = window.app.graph._nodes.map(n => { const b = n.getBounding(); return [n.title, b]; });
        const hits = [];
        for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
            const [ta, a] = boxes[i], [tb, b] = boxes[j];
            if (a[0] < b[0] + b[2] && b[0] < a[0] + a[2] && a[1] < b[1] + b[3] && b[1] < a[1] + a[3]) hits.push([ta, tb]);
        }
        return hits; }""")
    assert not overlaps, f"{path.name}: overlapping nodes {overlaps}"


def _add_node(canvas, node_type: str, pos=(40, 700)) -> int:
    return canvas.page.evaluate("""([type, pos]) => {
        const node = window.LiteGraph.createNode(type); node.pos = pos;
        window.app.graph.add(node); return node.id; }""", [node_type, list(pos)])


def test_memory_estimate_follows_quantization(canvas, server):
    canvas.load(load_workflow(T2VA))
    loader = next(n for n in canvas.nodes() if n["type"] == "MOVAModelLoader")
    before = wait_estimate(canvas, loader["id"])
    canvas.set_widget(loader["id"], "quantization", "fp8_e4m3fn")
    after = wait_estimate(canvas, loader["id"], not_equal=before)
    assert "quant fp8_e4m3fn" in after and "quant none" in before

    # The released architecture (single-file loader, preset mova-360p) at 640x352, 97 frames:
    # fp8 weights must take ~18 GB off the peak, and the widget must show what the server computes.
    files_loader = _add_node(canvas, "MOVAModelLoaderFiles")
    latent = next(n for n in canvas.nodes() if n["type"] == "MOVALatent")
    for name, value in (("width", 640), ("height", 352), ("frames", 97)):
        canvas.set_widget(latent["id"], name, value)
    bf16 = wait_estimate(canvas, files_loader, not_equal=None)
    canvas.page.wait_for_function(
        "id => /640×352 · 97 f/.test(window.app.graph.getNodeById(id).widgets.find(w => w.name === 'memory_estimate').value)",
        arg=files_loader, timeout=15_000)
    bf16 = canvas.widget(files_loader, "memory_estimate")
    canvas.set_widget(files_loader, "quantization", "fp8_e4m3fn")
    fp8 = wait_estimate(canvas, files_loader, not_equal=bf16)
    query = {"preset": "mova-360p", "width": 640, "height": 352, "frames": 97, "fps": 24.0,
             "dtype": "auto", "quantization": "fp8_e4m3fn", "offload": "none", "resident_layers": 40, "cfg_passes": 2}
    served = server.get_json("/mova/estimate?" + urllib.parse.urlencode(query))
    assert vram_gb(fp8) == pytest.approx(served["vram_gb"], abs=0.051)
    assert vram_gb(bf16) - vram_gb(fp8) > 10, (bf16, fp8)
    print(f"\nestimate 360p 640x352x97: none -> {bf16.splitlines()[0]} | fp8 -> {fp8.splitlines()[0]}")
    canvas.screenshot("memory-estimate-fp8")
    assert not canvas.unexpected_errors()


def test_memory_estimate_follows_the_guidance_passes(canvas):
    """Passes per step from the Bridge Guidance node feeding the sampler (planned by the server with
    models/sampling/guidance.py), from the sampler's cfg values without it; each pass is one more velocity held."""
    canvas.load(load_workflow(GUIDED))
    nodes = canvas.nodes()
    loader = next(n["id"] for n in nodes if n["type"] == "MOVAModelLoader")
    guidance = next(n["id"] for n in nodes if n["type"] == "MOVABridgeGuidance")
    sampler = next(n["id"] for n in nodes if n["type"] == "MOVASampler")

    def served():
        return canvas.page.evaluate("id => window.app.graph.getNodeById(id).__movaEstimate", loader)

    seen = {}
    text = wait_estimate(canvas, loader)
    steps = [("bridge 2.0 (workflow)", None, 3),
             ("bridge neutral", lambda: [canvas.set_widget(guidance, k, 1.0) for k in ("a2v_bridge_scale", "v2a_bridge_scale")], 2),
             ("separate bridge-off", lambda: [canvas.set_widget(guidance, k, 2.0) for k in ("a2v_bridge_scale", "v2a_bridge_scale")]
              + [canvas.set_widget(guidance, "bridge_off", "separate")], 4),
             ("guidance unlinked, cfg 1", lambda: [canvas.page.evaluate(
                 "id => { const n = window.app.graph.getNodeById(id); n.disconnectInput(n.findInputSlot('guidance')); }", sampler),
                 canvas.set_widget(sampler, "video_cfg", 1.0), canvas.set_widget(sampler, "audio_cfg", 1.0)], 1)]
    for name, change, passes in steps:
        if change:
            change()
            text = wait_estimate(canvas, loader, not_equal=text)
        canvas.page.wait_for_function(
            "([id, n]) => window.app.graph.getNodeById(id).__movaEstimate?.cfg_passes === n", arg=[loader, passes],
            timeout=15_000)
        text = canvas.widget(loader, "memory_estimate")
        assert f"{passes} pass" in text.splitlines()[2], (name, text)
        seen[name] = served()["denoise"]["latents"]
    latents = list(seen.values())
    assert latents[0] > latents[1] and latents[2] > latents[0] and latents[3] < latents[1], seen
    print(f"\nsampler latents held (bytes) by guidance: {seen}")
    canvas.screenshot("memory-estimate-guidance")
    assert not canvas.unexpected_errors()


def test_memory_estimate_shows_per_device_figures_with_multi_gpu(canvas):
    """A MOVA Multi-GPU node put between loader and sampler on the page: the loader's estimate turns
    per device and names the layout; changing the devices or the strategy follows."""
    canvas.load(load_workflow(T2VA))
    nodes = canvas.nodes()
    loader = next(n["id"] for n in nodes if n["type"] == "MOVAModelLoader")
    sampler = next(n["id"] for n in nodes if n["type"] == "MOVASampler")
    text = wait_estimate(canvas, loader)
    assert "/rank" not in text.splitlines()[0] and "/GPU" not in text.splitlines()[0]
    multi = canvas.page.evaluate(
        """([loaderId, samplerId]) => {
             const graph = window.app.graph;
             const node = window.LiteGraph.createNode("MOVAMultiGPU");
             node.pos = [0, -400];
             graph.add(node);
             graph.getNodeById(loaderId).connect(0, node, 0);
             const sampler = graph.getNodeById(samplerId);
             node.connect(0, sampler, sampler.findInputSlot("model"));
             return node.id; }""", [loader, sampler])
    canvas.set_widget(multi, "devices", "cpu,cpu")
    canvas.set_widget(multi, "strategy", "guidance")
    canvas.page.wait_for_function(
        "id => window.app.graph.getNodeById(id).__movaEstimate?.parallel?.layout === 'guidance'", arg=loader,
        timeout=15_000)
    text = canvas.widget(loader, "memory_estimate")
    assert "/rank (2 ranks, guidance ×2)" in text.splitlines()[0], text
    canvas.set_widget(multi, "strategy", "sequence")
    canvas.page.wait_for_function(
        "id => window.app.graph.getNodeById(id).__movaEstimate?.parallel?.layout === 'sequence'", arg=loader,
        timeout=15_000)
    assert "(2 ranks, sequence ×2)" in canvas.widget(loader, "memory_estimate").splitlines()[0]
    canvas.screenshot("memory-estimate-multi-gpu")
    assert not canvas.unexpected_errors()


def test_latent_node_snaps_sizes_and_shows_seconds(canvas):
    workflow = load_workflow(T2VA)
    latent_json = next(n for n in workflow["nodes"] if n["type"] == "MOVALatent")
    latent_json["widgets_values"][:3] = [70, 50, 50]       # an old/hand-edited graph MOVA cannot take
    canvas.load(workflow)
    node = next(n for n in canvas.nodes() if n["type"] == "MOVALatent")
    assert [node["widgets"][k] for k in ("width", "height", "frames")] == [64, 48, 49]
    canvas.set_widget(node["id"], "frames", 98)
    canvas.set_widget(node["id"], "width", 650)
    widgets = next(n for n in canvas.nodes() if n["id"] == node["id"])["widgets"]
    assert (widgets["frames"], widgets["width"]) == (97, 656)
    canvas.set_widget(node["id"], "fps", 24)
    assert canvas.widget(node["id"], "duration").startswith("97 frames = 4.04 s at 24 fps")
    canvas.screenshot("latent-node")


@pytest.fixture(scope="module")
def toy_run(server, browser_context):
    """Queue the toy text→video+audio workflow from the page once; what the page saw afterwards."""
    from browser_env import Canvas
    page = browser_context.new_page()
    canvas = Canvas(page, server).open()
    workflow = load_workflow(T2VA)
    latent = next(n for n in workflow["nodes"] if n["type"] == "MOVALatent")
    canvas.load(workflow)
    with canvas.page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST") as sent:
        canvas.page.evaluate("""async () => {
            const api = window.comfyAPI.api.api;
            window.__mova = { errors: [], previews: 0 };
            api.addEventListener("execution_error", (e) => window.__mova.errors.push(e.detail));
            api.addEventListener("b_preview_with_metadata", () => window.__mova.previews++);
            await window.app.queuePrompt(0, 1); }""")
    assert sent.value.status == 200, f"the server refused the toy workflow: {sent.value.text()[:3000]}"
    # The core SaveVideo preview puts a <video> (controls, not muted) on the node when the run ends.
    canvas.page.wait_for_function(
        """() => window.__mova.errors.length ||
                 [...document.querySelectorAll('video')].some(v => /\\/view\\?.*\\.mp4/.test(decodeURIComponent(v.src)))""",
        timeout=900_000, polling=1000)
    errors = canvas.page.evaluate("() => window.__mova.errors")
    assert not errors, f"the toy workflow failed: {json.dumps(errors)[:3000]}"
    media = canvas.page.evaluate("""async () => {
        const v = [...document.querySelectorAll('video')].find(v => /\\/view\\?.*\\.mp4/.test(decodeURIComponent(v.src)));
        if (v.readyState < 1) await new Promise(r => { v.onloadedmetadata = r; setTimeout(r, 10000); });
        v.muted = false; v.currentTime = 0; await v.play();
        await new Promise(r => setTimeout(r, 1200));
        return { src: v.src, duration: v.duration, time: v.currentTime, muted: v.muted, controls: v.controls,
                 audioBytes: v.webkitAudioDecodedByteCount, videoBytes: v.webkitVideoDecodedByteCount,
                 error: v.error && v.error.code }; }""")
    canvas.screenshot("toy-result-video")
    result = {"media": media, "frames": latent["widgets_values"][2], "fps": latent["widgets_values"][3],
              "previews": canvas.page.evaluate("() => window.__mova.previews"),
              "errors": canvas.unexpected_errors()}
    print(f"\n<video> on canvas: {media}; sampling previews received: {result['previews']}")
    page.close()
    return result


def test_toy_workflow_runs_and_plays_with_sound(toy_run, server):
    media, frames, fps = toy_run["media"], toy_run["frames"], toy_run["fps"]
    assert media["error"] is None
    assert media["duration"] == pytest.approx(frames / fps, abs=0.15)
    assert media["time"] > 0 and media["controls"] and not media["muted"]
    assert media["audioBytes"] > 0, "the video on the canvas has no decodable audio track"
    assert not toy_run["errors"]

    # Cross-check the file itself: an AAC stream lasting about as long as the video.
    import av
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(media["src"]).query)
    data = server.view(query["filename"][0], query.get("subfolder", [""])[0], query["type"][0])
    with av.open(io.BytesIO(data)) as container:
        audio = container.streams.audio[0]
        seconds = float(audio.duration * audio.time_base) if audio.duration else float(container.duration / 1e6)
        assert audio.codec_context.name == "aac" and seconds > 0.5 * frames / fps


def test_sampling_previews_reach_the_page(toy_run):
    # The sampler sends one preview (latent frames + audio band) per step; the toy workflow has 12 steps.
    assert toy_run["previews"] >= 12

// MOVA canvas extension: one colour for MOVA nodes (and one per MOVA link type), a live memory
// estimate on the model loaders, size / length / frame-rate help on the latent node, readable reports
// on MOVA Download Models and MOVA LoRA, one validation message per problem. Served by ComfyUI from
// the pack's WEB_DIRECTORY; works in both renderers (classic LiteGraph canvas and "Nodes 2.0" Vue nodes).
//
// Info lines are DOM widgets (node.addDOMWidget): both renderers show the element itself, so text set
// later is on screen at once (a canvas-drawn widget stays frozen in Vue nodes), it wraps instead of
// being clipped, and details can carry tooltips. Nodes 2.0 can keep a removed node's element on
// screen (see mountInfo); the poll puts the widget's own element back. Everything is recomputed from
// the graph on a short poll as well as on widget callbacks: values reaching a node through links (an
// Int node on width, a primitive, a reroute) change without any callback of ours.
//
// Where the estimate's inputs come from (see docs/web.md):
//   loader widgets   -> model / preset, dtype, quantization, offload, resident_layers
//   latent node      -> width, height, frames, fps (widget or linked value): the MOVALatent feeding the
//                       sampler this loader feeds, also through a LoRA node (else the first MOVALatent)
//   sampler node     -> steps, video_cfg / audio_cfg (released text CFG: 2 passes per step, 1 when both are 1)
//   guidance node    -> the MOVA Bridge Guidance widgets when one feeds the sampler's guidance input
//   multi-GPU node   -> devices, strategy of a MOVA Multi-GPU node between loader and sampler (per-GPU figures)
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const MOVA_COLOR = "#1f4e5a";      // title bar
const MOVA_BGCOLOR = "#163a43";    // body
// One colour per MOVA socket type, so a graph reads by its wires (teal family, distinct hues).
export const LINK_COLORS = {
  MOVA_MODEL: "#5fb8c9", MOVA_TEXT_ENCODER: "#e0b860", MOVA_CONDITIONING: "#f0d890",
  MOVA_VIDEO_VAE: "#e07a8a", MOVA_AUDIO_VAE: "#c08ae0", MOVA_LATENT: "#8ae0a8", MOVA_GUIDANCE: "#e0a070",
};
const LOADERS = new Set(["MOVAModelLoader", "MOVAModelLoaderFiles"]);
const LATENT = "MOVALatent";
const SAMPLER = "MOVASampler";
const GUIDANCE = "MOVABridgeGuidance";
const LORA = "MOVALora";
const DECODE_VIDEO = "MOVADecodeVideo";
const DOWNLOADER = "MOVADownloadModels";
const MULTI_GPU = "MOVAMultiGPU";
const GUIDANCE_KEYS = ["video_text_scale", "audio_text_scale", "a2v_bridge_scale", "v2a_bridge_scale", "form",
                       "bridge_off", "bridge_start", "bridge_end", "batch_passes"];
const LOADER_KEYS = ["model", "preset", "dtype", "quantization", "offload", "resident_layers"];
const ESTIMATE = "memory_estimate";
const DURATION = "duration";
const REPORT = "report";
const DEBOUNCE_MS = 250;
const POLL_MS = 400;
const TOY_MODELS = /^mova-toy/;
const RELEASED = { steps: 50, audio_shift: 0 };   // inference_single.py / the paired scheduler
// Lines reserved for each info widget when the node is created, so text arriving later does not grow
// the node into the one below (the estimate's 4th line, a warning, only appears on real-model graphs).
export const INFO_LINES = { [ESTIMATE]: 3, [DURATION]: 3, [REPORT]: 3 };
const LINE_PX = 15;
const MARGIN = 2;                  // the classic renderer keeps this much around a DOM widget
const OK = "#b8d8e0", WARN = "#e8d48a", BAD = "#ff9a8a", DETAIL = "#8aa4ad";
// Tooltips for the terms the estimate uses (shown on hover in both renderers).
const TERMS = [
  [/peak: \w+/, "The stage with the highest memory use: load (weights), denoise (the sampler's steps) or decode (VAE)."],
  [/\d+ passes?\/step/, "Transformer forwards per sampling step: 2 for text CFG (cond + uncond), 1 without, more with Bridge Guidance. Each pass holds one velocity."],
  [/VRAM ≈/, "GPU memory at the peak stage (✓ fits / ✗ does not fit the GPU ComfyUI uses; no mark on a CPU-only server)."],
  [/RAM ≈/, "Host (CPU) memory at the peak stage: weights kept off the GPU, streaming buffers, the decoded clip."],
  [/quant \S+/, "Weight format of the transformer blocks (fp8 / nf4 / int8 shrink the weights)."],
  [/offload \S+/, "Where weights wait between uses: none (all on the GPU), cpu, or disk (streamed from the file)."],
  [/not found in models\/mova|no weights in/, "The selected model's files are not in ComfyUI/models/mova. Add the MOVA Download Models node (MOVA/loaders), pick the variant, turn confirm on and run it, or download the folder from https://huggingface.co/OpenMOSS-Team/MOVA-360p."],
  [/toy settings/, "audio_shift 50 and 12 steps are tuned for the small embedded toy model; the released MOVA uses 50 steps and audio_shift 0."],
];

// ------------------------------------------------------------------------------------------ helpers
export function snapSize(v) {      // multiples of 16 (ties up, same rule as nodes/routes.py)
  return Math.max(16, Math.round(Number(v) / 16) * 16);
}
export function snapFrames(v) {    // 1 + 4k
  return Math.max(1, Math.round((Number(v) - 1) / 4) * 4 + 1);
}

const widget = (node, name) => node?.widgets?.find((w) => w.name === name);
const getLink = (graph, id) => graph?.links?.[id] ?? graph?.links?.get?.(id);

function chainCallback(w, after) {
  if (!w || w.__movaChained) return;
  const original = w.callback;
  w.callback = function (...args) {
    const result = original?.apply(this, args);
    after(w, ...args);
    return result;
  };
  w.__movaChained = true;
}

function linkedNode(graph, node, inputName) {
  const input = node?.inputs?.find((i) => i.name === inputName);
  const link = input?.link != null ? getLink(graph, input.link) : null;
  const origin = link ? graph.getNodeById(link.origin_id) : null;
  return origin?.type === "Reroute" ? linkedNode(graph, origin, origin.inputs?.[0]?.name) : origin;
}

const isLinked = (node, inputName) => node?.inputs?.some((i) => i.name === inputName && i.link != null);

// A widget's value, or the value of what is linked to that input: a primitive / Int / Float node
// (its first number or text widget); undefined when the source only knows it at run time.
function value(node, name) {
  const graph = node?.graph ?? app.graph;
  if (isLinked(node, name)) {
    const origin = linkedNode(graph, node, name);
    const w = origin?.widgets?.find((x) => ["number", "combo", "text", "toggle", "boolean"].includes(x.type)
                                           || typeof x.value === "number");
    return w ? w.value : undefined;
  }
  return widget(node, name)?.value;
}

function downstream(graph, node) {
  const found = [];
  for (const output of node.outputs ?? []) {
    for (const id of output.links ?? []) {
      const link = getLink(graph, id);
      const target = link && graph.getNodeById(link.target_id);
      if (target) found.push({ node: target, slot: link.target_slot, from: link.origin_slot });
    }
  }
  return found;
}

// The first node of `type` that `node` reaches downstream (through LoRA nodes, reroutes, decoders).
function findDownstream(graph, node, type) {
  const seen = new Set([node.id]);
  let frontier = [node];
  for (let depth = 0; depth < 8 && frontier.length; depth++) {
    const next = frontier.flatMap((n) => downstream(graph, n).map((d) => d.node)).filter((n) => !seen.has(n.id));
    const hit = next.find((n) => n.type === type);
    if (hit) return hit;
    next.forEach((n) => seen.add(n.id));
    frontier = next;
  }
  return null;
}

// ------------------------------------------------------------------------------------- info widget
let styled = false;
function addStyle() {
  if (styled) return;
  styled = true;
  const css = document.createElement("style");
  css.textContent = `
    .mova-info { box-sizing: border-box; width: 100%; padding: 2px 10px; font: 12px/${LINE_PX}px sans-serif;
                 white-space: pre-wrap; overflow-wrap: anywhere; overflow: hidden; pointer-events: auto; }
    .mova-info .mova-detail { font-size: 11px; color: ${DETAIL}; }
    .mova-info details { margin-top: 2px; }
    .mova-info summary { cursor: pointer; color: ${DETAIL}; font-size: 11px; }
    .mova-info details > div { max-height: ${LINE_PX * 12}px; overflow: auto; font-size: 11px; color: ${DETAIL}; }
    .mova-info [title] { text-decoration: underline dotted #5a7a84; text-underline-offset: 2px; }`;
  document.head.appendChild(css);
}

function lineElement(text, colour, detail) {
  const div = document.createElement("div");
  if (detail) div.className = "mova-detail";
  if (colour) div.style.color = colour;
  // Terms with a tooltip become spans carrying it; the rest stays plain text.
  let rest = text;
  while (rest) {
    const hits = TERMS.map(([re, tip]) => [rest.match(re), tip]).filter(([m]) => m);
    if (!hits.length) { div.append(rest); break; }
    const [m, tip] = hits.sort((a, b) => a[0].index - b[0].index)[0];
    div.append(rest.slice(0, m.index));
    const span = document.createElement("span");
    span.textContent = m[0];
    span.title = tip;
    div.append(span);
    rest = rest.slice(m.index + m[0].length);
  }
  return div;
}

// A read-only info block under the node's widgets; never saved in the workflow or sent in a prompt.
// setInfo(node, name, {lines, colours, details}): `lines` always shown, `details` folded (a report's list).
// Nodes 2.0 (frontend 1.32.9) puts a DOM widget's element into the node only when it mounts the
// widget's component (WidgetDOM's onMounted), and keys node components by node id and widgets by
// index + name. A node that replaces a removed one of the same id and type in the same tick
// (graph.clear() restarts ids at 1, then a script adds a node) reuses that component, which goes on
// showing the removed node's element: our text lands in an element nobody sees. Swap ours back in.
function mountInfo(node, w) {
  const el = w.__movaElement;
  el.dataset.movaNode = String(node.id);     // set at creation, the id was still -1 (not in a graph yet)
  if (el.isConnected) return;                // shown (or, classic renderer, off screen: nothing to find)
  const shown = document.querySelectorAll(`[data-node-id="${node.id}"] .mova-info[data-mova-info="${w.name}"]`);
  for (const stale of shown) if (stale !== el && stale.__movaNode !== node) { stale.replaceWith(el); break; }
}

function addInfoWidget(node, name) {
  const existing = widget(node, name);
  if (existing) return existing;
  addStyle();
  const el = document.createElement("div");
  el.className = "mova-info";
  el.dataset.movaInfo = name;
  el.__movaNode = node;
  const state = { text: "", rows: INFO_LINES[name] ?? 1 };
  const w = node.addDOMWidget(name, "mova_info", el, {
    serialize: false, hideOnZoom: false, selectOn: [],
    getValue: () => state.text,
    setValue: () => {},                       // a saved value never comes back into the display
    margin: MARGIN,
    getMinHeight: () => 2 * MARGIN + 4 + LINE_PX * state.rows,
    getMaxHeight: () => 2 * MARGIN + 4 + LINE_PX * state.rows,
  });
  w.serialize = false;
  w.__movaState = state;
  w.__movaElement = el;
  return w;
}

function setInfo(node, name, { lines, colours = [], details = [] }) {
  const w = widget(node, name);
  const el = w?.__movaElement;
  if (!el) return;
  const text = [...lines, ...details].join("\n");
  if (text === w.__movaState.text && el.childElementCount) return;
  w.__movaState.text = text;
  mountInfo(node, w);
  renderInfo(el, node, text, lines, colours, details);
  fitInfo(node, w);
}

function renderInfo(el, node, text, lines, colours, details) {
  const open = el.querySelector("details")?.open ?? false;
  el.replaceChildren(...lines.map((line, i) => lineElement(line, colours[i] ?? (i === 0 ? OK : DETAIL), i > 0)));
  if (details.length) {
    const box = document.createElement("details");
    box.open = open;
    const summary = document.createElement("summary");
    summary.textContent = `details (${details.length} lines)`;
    const body = document.createElement("div");
    body.textContent = details.join("\n");
    box.append(summary, body);
    el.append(box);
  }
  el.dataset.text = text;
  el.dataset.movaNode = String(node.id);
}

// Rows needed at the element's current width (wrapped lines count); the node grows when they exceed
// what was reserved, never shrinks below its saved size.
function fitInfo(node, w) {
  const el = w.__movaElement;
  const state = w.__movaState;
  let rows = INFO_LINES[w.name] ?? 1;
  if (el.isConnected && el.clientWidth > 0) {
    // Summed from the parts: a folded <details> body may still have a layout box in Chromium.
    let height = 0;
    for (const child of el.children) {
      if (child.tagName !== "DETAILS") { height += child.offsetHeight; continue; }
      height += 2 + child.querySelector("summary").offsetHeight + (child.open ? child.querySelector("div").offsetHeight : 0);
    }
    rows = Math.max(rows, Math.ceil(height / LINE_PX));
  } else {
    rows = Math.max(rows, el.childElementCount);
  }
  if (rows === state.rows) return;
  state.rows = rows;
  const size = node.computeSize();
  node.setSize([Math.max(node.size[0], size[0]), Math.max(node.size[1], size[1])]);
  node.setDirtyCanvas?.(true, true);
}

// ------------------------------------------------------------------------------- memory estimate
function estimateQuery(node) {
  const graph = node.graph ?? app.graph;
  const query = {};
  for (const key of LOADER_KEYS) {
    const v = value(node, key);
    if (v !== undefined) query[key] = v;
  }
  const sampler = findDownstream(graph, node, SAMPLER);
  const multiGpu = findDownstream(graph, node, MULTI_GPU);   // per-GPU figures and the layout
  if (multiGpu) {
    for (const key of ["devices", "strategy"]) {
      const v = value(multiGpu, key);
      if (v !== undefined) query[key] = v;
    }
  }
  let latent = sampler ? linkedNode(graph, sampler, "latent") : null;
  if (latent?.type !== LATENT) latent = graph._nodes?.find((n) => n.type === LATENT) ?? null;
  if (latent) {
    for (const key of ["width", "height", "frames", "fps"]) {
      const v = value(latent, key);
      if (v !== undefined) query[key] = v;
    }
  }
  if (sampler) {
    for (const key of ["steps", "video_cfg", "audio_cfg"]) {
      const v = value(sampler, key);
      if (v !== undefined) query[key] = v;
    }
    if (isLinked(sampler, "guidance")) {
      // Settings of the guidance node ({} = an unknown source: the server assumes released CFG).
      const guidance = linkedNode(graph, sampler, "guidance");
      query.guidance = {};
      if (guidance?.type === GUIDANCE) {
        for (const key of GUIDANCE_KEYS) query.guidance[key] = value(guidance, key);
        query.guidance.audio_negative = isLinked(guidance, "audio_negative");
      }
    }
  }
  return { query, sampler };
}

// Settings tuned for the embedded toy, left on a graph that now loads a real model.
function toyWarning(node, sampler) {
  const model = String(value(node, "model") ?? value(node, "preset") ?? "");
  if (!sampler || TOY_MODELS.test(model)) return null;
  const shift = Number(value(sampler, "audio_shift") ?? 0);
  const steps = Number(value(sampler, "steps"));
  const odd = [];
  if (shift !== RELEASED.audio_shift) odd.push(`audio_shift ${shift}`);
  if (steps < 25) odd.push(`${steps} steps`);
  return odd.length ? `⚠ toy settings: ${odd.join(", ")} (released: ${RELEASED.steps} steps, audio_shift 0)` : null;
}

async function refreshEstimate(node) {
  const seq = (node.__movaSeq = (node.__movaSeq ?? 0) + 1);
  const { query, sampler } = estimateQuery(node);
  let lines;
  let colour = OK;
  try {
    const response = await api.fetchApi("/mova/estimate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(query),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ?? `HTTP ${response.status}`);
    lines = String(body.text).split("\n");
    if (body.fits?.vram === false || body.fits?.host === false) colour = BAD;
    node.__movaEstimate = body;
  } catch (err) {
    lines = [`memory estimate unavailable: ${err.message ?? err}`];
    colour = BAD;
  }
  if (seq !== node.__movaSeq) return;        // drop stale answers
  const warning = toyWarning(node, sampler);
  if (warning) lines.push(warning);
  // Warnings (files absent, toy settings) in yellow wherever they fall.
  const colours = lines.map((line, i) => (line.startsWith("⚠") ? WARN : i === 0 ? colour : DETAIL));
  setInfo(node, ESTIMATE, { lines, colours });
}

function scheduleEstimate(node) {
  clearTimeout(node.__movaTimer);
  node.__movaTimer = setTimeout(() => refreshEstimate(node), DEBOUNCE_MS);
}

function setupLoader(node) {
  addInfoWidget(node, ESTIMATE);
  setInfo(node, ESTIMATE, { lines: ["memory estimate: …"] });
  for (const key of LOADER_KEYS) chainCallback(widget(node, key), () => scheduleEstimate(node));
  scheduleEstimate(node);
}

// ------------------------------------------------------------------------------------ latent node
// CreateVideo nodes that play this latent's frames: latent -> sampler -> MOVA Decode Video -> CreateVideo.
function playersOf(graph, latent) {
  const sampler = findDownstream(graph, latent, SAMPLER);
  const decoders = sampler ? downstream(graph, sampler).map((d) => d.node).filter((n) => n.type === DECODE_VIDEO) : [];
  return decoders.flatMap((d) => downstream(graph, d).filter((x) => x.from === 0).map((x) => x.node))
    .filter((n) => n.type === "CreateVideo");
}

function describeDuration(node) {
  const graph = node.graph ?? app.graph;
  const frames = Number(value(node, "frames"));
  const fps = Number(value(node, "fps"));
  const w = Number(value(node, "width"));
  const h = Number(value(node, "height"));
  if (!(frames > 0 && fps > 0 && w > 0 && h > 0)) {
    setInfo(node, DURATION, { lines: ["size or length comes from a link: known when the graph runs"] });
    return;
  }
  const seconds = frames / fps;
  const lines = [`${frames} frames = ${seconds.toFixed(2)} s at ${fps} fps (audio ${seconds.toFixed(2)} s)`,
                 `${w}×${h} px → latent ${Math.floor(w / 8)}×${Math.floor(h / 8)} × ${(frames - 1) / 4 + 1} frames`];
  const colours = [OK, DETAIL];
  // Frame rate set twice: CreateVideo's own fps widget disagreeing with this one shortens the video
  // (played faster) while the audio keeps its length, and the mp4 drops what runs past the video.
  const mismatched = playersOf(graph, node).filter((n) => !isLinked(n, "fps") && Number(value(n, "fps")) !== fps);
  if (mismatched.length) {
    const other = Number(value(mismatched[0], "fps"));
    lines.push(`⚠ CreateVideo plays at ${other} fps: ${(frames / other).toFixed(2)} s of video, audio cut. ` +
               "Link MOVA Decode Video's fps output to its fps.");
    colours.push(BAD);
  }
  setInfo(node, DURATION, { lines, colours });
}

// Snap a widget to what MOVA takes; returns the old value when it had to change.
function snapWidget(node, name, snap) {
  const w = widget(node, name);
  if (!w || typeof w.value !== "number") return null;
  const snapped = snap(w.value);
  if (snapped === w.value) return null;
  const old = w.value;
  w.value = snapped;
  return old;
}

function snapLatent(node, names) {
  const changed = [];
  for (const name of names) {
    const old = snapWidget(node, name, name === "frames" ? snapFrames : snapSize);
    if (old !== null) changed.push(`${name} ${old}→${widget(node, name)?.value}`);
  }
  return changed;
}

function setupLatent(node) {
  addInfoWidget(node, DURATION);
  for (const name of ["width", "height", "frames", "fps"]) {
    chainCallback(widget(node, name), () => {
      if (name !== "fps") snapLatent(node, [name]);
      describeDuration(node);
      scheduleAllEstimates(node.graph);
    });
  }
  describeDuration(node);
}

// -------------------------------------------------------------------------------------- reports
// "Would download 29 files … into …:" + one line per file -> counts first, the list folded.
// Indented lines are the per-file list (folded); other lines (a closing "Nothing was downloaded…")
// stay in view.
function reportParts(text) {
  const [head, ...rest] = String(text).split("\n");
  const listed = rest.filter((l) => /^\s+\S/.test(l));
  const items = listed.length ? listed : rest.filter((l) => l.trim());     // no list: fold all but the head
  const notes = listed.length ? rest.filter((l) => l.trim() && !/^\s/.test(l)) : [];
  const counts = {};
  for (const line of items) {
    const word = line.trim().split(/\s+/)[0];
    if (/^[a-z]+$/.test(word)) counts[word] = (counts[word] ?? 0) + 1;
  }
  const summary = Object.entries(counts).filter(([, n]) => n > 1 || items.length < 8).map(([k, n]) => `${n} ${k}`);
  const lines = [head];
  if (listed.length && summary.length && items.length > 3) lines.push(summary.join(" · "));   // "29 missing"
  if (items.length <= 3) return { lines: [head, ...items.map((l) => l.trim()), ...notes], details: [] };
  return { lines: [...lines, ...notes], details: items.map((l) => l.trim()) };
}

function showReport(node, text, colour) {
  if (!text) return;
  const { lines, details } = reportParts(text);
  setInfo(node, REPORT, { lines, details, colours: [colour] });
}

// ------------------------------------------------------------------------------------ refreshing
function refreshNode(node) {
  if (node.type === LATENT) describeDuration(node);
  if (LOADERS.has(node.type)) {
    const { query } = estimateQuery(node);
    const key = JSON.stringify([query, toyWarning(node, findDownstream(node.graph ?? app.graph, node, SAMPLER))]);
    if (key !== node.__movaQueryKey) {
      node.__movaQueryKey = key;
      scheduleEstimate(node);
    }
  }
  for (const w of node.widgets ?? []) {
    if (!w.__movaElement) continue;
    mountInfo(node, w);
    fitInfo(node, w);
  }
}

function scheduleAllEstimates(graph) {
  for (const n of (graph ?? app.graph)?._nodes ?? []) if (LOADERS.has(n.type)) scheduleEstimate(n);
}

// ------------------------------------------------------------------ one validation message a problem
// ComfyUI 0.3.75 repeats a failed validate_inputs message once per input the function takes
// (execution.py: one custom_validation_failed per input). Keep one per message, on the input the
// message is about: the input it starts with, else the first one it names, else the first.
export function dedupeNodeErrors(nodeErrors) {
  for (const entry of Object.values(nodeErrors ?? {})) {
    if (!Array.isArray(entry?.errors)) continue;
    const groups = new Map();
    const kept = [];
    for (const error of entry.errors) {
      if (error.type !== "custom_validation_failed") { kept.push(error); continue; }
      const message = String(error.details ?? "").replace(/^[^-]*? - /, "");
      if (!groups.has(message)) { groups.set(message, []); kept.push(message); }
      groups.get(message).push(error);
    }
    entry.errors = kept.map((item) => {
      if (typeof item !== "string") return item;
      const group = groups.get(item);
      const names = group.map((e) => e.extra_info?.input_name);
      const starts = names.find((n) => n && new RegExp(`^${n}\\b`).test(item));
      const named = names.filter((n) => n && new RegExp(`\\b${n}\\b`).test(item))
        .sort((a, b) => item.search(new RegExp(`\\b${a}\\b`)) - item.search(new RegExp(`\\b${b}\\b`)))[0];
      return group[names.indexOf(starts ?? named ?? names[0])] ?? group[0];
    });
  }
  return nodeErrors;
}

function wrapQueuePrompt() {
  if (api.__movaWrapped) return;
  api.__movaWrapped = true;
  const original = api.queuePrompt.bind(api);
  api.queuePrompt = async function (...args) {
    try {
      return await original(...args);
    } catch (err) {
      dedupeNodeErrors(err?.response?.node_errors);
      throw err;
    }
  };
}

// Link and slot colours. The frontend's palette sets every known type to "" (its default) whenever a
// palette loads, after extensions are set up, so this is re-applied on the poll when it was reset.
// Vue nodes read the CSS variable the palette also writes.
function applyLinkColours() {
  const canvas = app.canvas;
  const LGraphCanvas = window.LGraphCanvas ?? canvas?.constructor;
  for (const [type, colour] of Object.entries(LINK_COLORS)) {
    if (canvas?.default_connection_color_byType && canvas.default_connection_color_byType[type] !== colour) {
      canvas.default_connection_color_byType[type] = colour;
      canvas.setDirty?.(true, true);
    }
    if (LGraphCanvas?.link_type_colors) LGraphCanvas.link_type_colors[type] = colour;
    const style = document.body?.style;
    if (style && style.getPropertyValue(`--color-datatype-${type}`) !== colour) {
      style.setProperty(`--color-datatype-${type}`, colour);
    }
  }
}

// ----------------------------------------------------------------------------------- registration
app.registerExtension({
  name: "MOVA.Canvas",

  async setup() {
    applyLinkColours();
    wrapQueuePrompt();
    // LoRA reports arrive as progress text; show them in the node's own wrapped, folded report.
    api.addEventListener("progress_text", (event) => {
      const { nodeId, text } = event.detail ?? {};
      const node = app.graph?.getNodeById?.(Number(nodeId) || nodeId);
      if (node?.type !== LORA) return;
      showReport(node, text, OK);
      // The frontend's own two-line text preview (added by the same event) would repeat it, clipped.
      setTimeout(() => {
        const i = node.widgets?.findIndex((w) => w.name === "$$node-text-preview") ?? -1;
        if (i > -1) { node.widgets[i].onRemove?.(); node.widgets.splice(i, 1); node.setDirtyCanvas?.(true, true); }
      }, 0);
    });
    setInterval(() => {
      applyLinkColours();
      for (const node of app.graph?._nodes ?? []) {
        if (node.__movaSetUp) refreshNode(node);
      }
    }, POLL_MS);
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!String(nodeData.category ?? "").startsWith("MOVA")) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      this.color = MOVA_COLOR;
      this.bgcolor = MOVA_BGCOLOR;
      this.__movaSetUp = true;
      if (LOADERS.has(nodeData.name)) setupLoader(this);
      if (nodeData.name === LATENT) setupLatent(this);
      if (nodeData.name === DOWNLOADER) {
        addInfoWidget(this, REPORT);
        setInfo(this, REPORT, { lines: ["Run with confirm off to see what would be downloaded."] });
      }
      if (nodeData.name === LORA) {
        addInfoWidget(this, REPORT);
        setInfo(this, REPORT, { lines: ["Run to see which keys the LoRA reaches."], colours: [DETAIL] });
      }
      if (nodeData.name === SAMPLER) {
        for (const name of ["steps", "video_cfg", "audio_cfg", "audio_shift"]) {
          chainCallback(widget(this, name), () => scheduleAllEstimates(this.graph));
        }
      }
      if (nodeData.name === GUIDANCE) {
        for (const name of GUIDANCE_KEYS) chainCallback(widget(this, name), () => scheduleAllEstimates(this.graph));
      }
      return result;
    };
    if (nodeData.name === DOWNLOADER) {
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        const text = [].concat(message?.text ?? []).join("\n");
        showReport(this, text, /Would download/.test(text) ? WARN : "#9ee0a8");
      };
    }
    const onConnectionsChange = nodeType.prototype.onConnectionsChange;
    nodeType.prototype.onConnectionsChange = function () {
      const result = onConnectionsChange?.apply(this, arguments);
      if (this.graph) scheduleAllEstimates(this.graph);
      return result;
    };
  },

  // After a workflow loads: values saved by older graphs may be ones MOVA cannot take.
  loadedGraphNode(node) {
    if (node.type === LATENT) {
      const changed = snapLatent(node, ["width", "height", "frames"]);
      if (changed.length) {
        console.warn(`[MOVA] ${node.title}: snapped ${changed.join(", ")} (sizes must be multiples of 16, frames 4k+1)`);
      }
      describeDuration(node);
    }
    if (LOADERS.has(node.type)) scheduleEstimate(node);
  },
});

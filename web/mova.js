// MOVA canvas extension: one colour for MOVA nodes, a live memory estimate on the model loaders,
// and size / length help on the latent node. Served by ComfyUI from the pack's WEB_DIRECTORY.
//
// Where the estimate's inputs come from (see docs/web.md):
//   loader widgets   -> model / preset, dtype, quantization, offload, resident_layers
//   latent node      -> width, height, frames, fps: the MOVALatent feeding the sampler this loader
//                       feeds, also through a LoRA node (else the first MOVALatent, else 360p defaults)
//   sampler node     -> steps, video_cfg / audio_cfg (released text CFG: 2 passes per step, 1 when both are 1)
//   guidance node    -> the MOVA Bridge Guidance widgets when one feeds the sampler's guidance input;
//                       the server plans the passes with models/sampling/guidance.py (the code the sampler runs)
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const MOVA_COLOR = "#1f4e5a";      // title bar
const MOVA_BGCOLOR = "#163a43";    // body
const LOADERS = new Set(["MOVAModelLoader", "MOVAModelLoaderFiles"]);
const LATENT = "MOVALatent";
const SAMPLER = "MOVASampler";
const GUIDANCE = "MOVABridgeGuidance";
const GUIDANCE_KEYS = ["video_text_scale", "audio_text_scale", "a2v_bridge_scale", "v2a_bridge_scale", "form",
                       "bridge_off", "bridge_start", "bridge_end", "batch_passes"];
const LOADER_KEYS = ["model", "preset", "dtype", "quantization", "offload", "resident_layers"];
const ESTIMATE = "memory_estimate";
const DURATION = "duration";
const DOWNLOADER = "MOVADownloadModels";
const REPORT = "report";
const DEBOUNCE_MS = 250;
// Lines reserved for each info widget: the node gets its final height when it is created, so text
// arriving later never grows it into the node below (saved layouts stay as they were drawn).
const INFO_LINES = { [ESTIMATE]: 3, [DURATION]: 2, [REPORT]: 1 };

// ------------------------------------------------------------------------------------------ helpers
export function snapSize(v) {      // multiples of 16 (ties up, same rule as nodes/routes.py)
  return Math.max(16, Math.round(Number(v) / 16) * 16);
}
export function snapFrames(v) {    // 1 + 4k
  return Math.max(1, Math.round((Number(v) - 1) / 4) * 4 + 1);
}

const widget = (node, name) => node?.widgets?.find((w) => w.name === name);
const value = (node, name) => widget(node, name)?.value;

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

// A read-only, multi-line text drawn on the node; never saved in the workflow or sent in a prompt.
function addInfoWidget(node, name) {
  const existing = widget(node, name);
  if (existing) return existing;
  const info = {
    name,
    type: "mova_info",
    value: "",
    colour: "#b8d8e0",
    serialize: false,
    options: { serialize: false },
    draw(ctx, _node, width, y) {
      const lines = String(this.value || "").split("\n");
      ctx.save();
      ctx.font = "12px sans-serif";
      ctx.textAlign = "left";
      lines.forEach((line, i) => {       // first line is the answer, the rest smaller details
        ctx.font = i === 0 ? "12px sans-serif" : "11px sans-serif";
        ctx.fillStyle = i === 0 ? this.colour : "#8aa4ad";
        ctx.fillText(line, 15, y + 15 + i * 15, width - 30);
      });
      ctx.restore();
    },
    computeSize(width) {
      const lines = String(this.value || "").split("\n").length;
      return [width, 8 + 15 * Math.max(INFO_LINES[name] ?? 1, lines)];
    },
  };
  return node.addCustomWidget(info) ?? info;
}

function setInfo(node, name, text, colour) {
  const w = widget(node, name);
  if (!w) return;
  w.value = text;
  if (colour) w.colour = colour;
  const size = node.computeSize();
  node.setSize([Math.max(node.size[0], size[0]), Math.max(node.size[1], size[1])]);
  node.setDirtyCanvas?.(true, true);
}

function linkedNode(graph, node, inputName) {
  const input = node.inputs?.find((i) => i.name === inputName);
  const link = input?.link != null ? graph.links?.[input.link] ?? graph.links?.get?.(input.link) : null;
  const origin = link ? graph.getNodeById(link.origin_id) : null;
  return origin?.type === "Reroute" ? linkedNode(graph, origin, origin.inputs?.[0]?.name) : origin;
}

const isLinked = (node, inputName) => node?.inputs?.some((i) => i.name === inputName && i.link != null);

function downstream(graph, node) {
  const found = [];
  for (const output of node.outputs ?? []) {
    for (const id of output.links ?? []) {
      const link = graph.links?.[id] ?? graph.links?.get?.(id);
      const target = link && graph.getNodeById(link.target_id);
      if (target) found.push(target);
    }
  }
  return found;
}

// The sampler the loader's model reaches, also through nodes in between (MOVA LoRA, reroutes).
function findSampler(graph, node) {
  const seen = new Set([node.id]);
  let frontier = [node];
  for (let depth = 0; depth < 8 && frontier.length; depth++) {
    const next = frontier.flatMap((n) => downstream(graph, n)).filter((n) => !seen.has(n.id));
    const sampler = next.find((n) => n.type === SAMPLER);
    if (sampler) return sampler;
    next.forEach((n) => seen.add(n.id));
    frontier = next;
  }
  return null;
}

// ------------------------------------------------------------------------------- memory estimate
function estimateQuery(node) {
  const graph = node.graph ?? app.graph;
  const query = {};
  for (const key of LOADER_KEYS) {
    const v = value(node, key);
    if (v !== undefined) query[key] = v;
  }
  const sampler = findSampler(graph, node);
  let latent = sampler ? linkedNode(graph, sampler, "latent") : null;
  if (latent?.type !== LATENT) latent = graph._nodes?.find((n) => n.type === LATENT) ?? null;
  if (latent) {
    for (const key of ["width", "height", "frames", "fps"]) query[key] = value(latent, key);
  }
  if (sampler) {
    for (const key of ["steps", "video_cfg", "audio_cfg"]) query[key] = value(sampler, key);
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
  return query;
}

async function refreshEstimate(node) {
  const seq = (node.__movaSeq = (node.__movaSeq ?? 0) + 1);
  const query = estimateQuery(node);
  let text;
  let colour = "#b8d8e0";
  try {
    const response = await api.fetchApi("/mova/estimate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(query),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ?? `HTTP ${response.status}`);
    text = body.text;
    if (body.fits?.vram === false || body.fits?.host === false) colour = "#ff9a8a";
    node.__movaEstimate = body;
  } catch (err) {
    text = `memory estimate unavailable: ${err.message ?? err}`;
    colour = "#ff9a8a";
  }
  if (seq === node.__movaSeq) setInfo(node, ESTIMATE, text, colour);   // drop stale answers
}

function scheduleEstimate(node) {
  clearTimeout(node.__movaTimer);
  node.__movaTimer = setTimeout(() => refreshEstimate(node), DEBOUNCE_MS);
}

function scheduleAllEstimates(graph) {
  for (const n of (graph ?? app.graph)?._nodes ?? []) if (LOADERS.has(n.type)) scheduleEstimate(n);
}

function setupLoader(node) {
  addInfoWidget(node, ESTIMATE);
  setInfo(node, ESTIMATE, "memory estimate: …");
  for (const key of LOADER_KEYS) chainCallback(widget(node, key), () => scheduleEstimate(node));
  scheduleEstimate(node);
}

// ------------------------------------------------------------------------------------ latent node
function describeDuration(node) {
  const frames = Number(value(node, "frames"));
  const fps = Number(value(node, "fps"));
  const w = value(node, "width");
  const h = value(node, "height");
  if (!(frames > 0 && fps > 0)) return;
  const seconds = frames / fps;
  setInfo(node, DURATION, `${frames} frames = ${seconds.toFixed(2)} s at ${fps} fps (audio ${seconds.toFixed(2)} s)\n` +
    `${w}×${h} px → latent ${Math.floor(w / 8)}×${Math.floor(h / 8)} × ${(frames - 1) / 4 + 1} frames`);
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
    if (old !== null) changed.push(`${name} ${old}→${value(node, name)}`);
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

// ----------------------------------------------------------------------------------- registration
app.registerExtension({
  name: "MOVA.Canvas",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!String(nodeData.category ?? "").startsWith("MOVA")) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      this.color = MOVA_COLOR;
      this.bgcolor = MOVA_BGCOLOR;
      if (LOADERS.has(nodeData.name)) setupLoader(this);
      if (nodeData.name === LATENT) setupLatent(this);
      if (nodeData.name === DOWNLOADER) {
        addInfoWidget(this, REPORT);
        setInfo(this, REPORT, "Run with confirm off to see what would be downloaded.");
      }
      if (nodeData.name === SAMPLER) {
        for (const name of ["steps", "video_cfg", "audio_cfg"]) {
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
        if (text) setInfo(this, REPORT, text, /Would download/.test(text) ? "#e8d48a" : "#9ee0a8");
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

"""HTTP routes the pack adds to ComfyUI's server, used by the frontend extension (web/mova.js).

GET|POST /mova/estimate   peak VRAM / host RAM of one generation (runtime/planner.py) for the
                          settings on the canvas: model (folder name) or preset, width, height,
                          frames, fps, dtype, quantization, offload, resident_layers, and the
                          guidance passes: `guidance` (the MOVA Bridge Guidance node's widget values,
                          POST only) or the sampler's `video_cfg` / `audio_cfg`, `steps`; or an
                          explicit `cfg_passes` (wins when given). With a MOVA Multi-GPU node:
                          `devices` (its text, "0,1" / "cpu,cpu", or a count) and `strategy`; the
                          figures are then per GPU and `parallel` tells the layout.
GET      /mova/models     the real MOVA files (runtime/hub.py manifest) and whether each is present.

ComfyUI also serves every route under /api/ (the frontend's `api.fetchApi` uses that prefix).
The request logic is plain functions over dicts so tests run it without ComfyUI; `register_routes`
is the only part that touches the server, and ComfyUI modules are imported only there.
"""
from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional


from ..runtime import parallel_plan, planner
from ..runtime.loading import dtype_name
from ..runtime.offload import OffloadSettings
from ..runtime import hub
from ..models.config import PRESETS, load_mova_config
from ..models.net.generator import COMPONENTS
from ..models.sampling.conditioning import nearest_geometry
from ..common.errors import MovaError
from ..common.files import clean
from . import options
from ..models.sampling.guidance import GuidanceSettings, passes_needed
from ..models.sampling.sampler import TextCFG

log = logging.getLogger(__name__)
GB = 1e9
QUANT_TO_PLANNER = {"none": "bf16", "fp8_e4m3fn": "fp8_e4m3fn", "nf4": "nf4", "int8": "int8"}
OFFLOAD_TO_STORAGE = {"cpu": "cpu_pinned", "disk": "disk"}
DEFAULTS = {"width": 640, "height": 352, "frames": 97, "fps": 24.0, "dtype": "auto", "quantization": "none",
            "offload": "none", "resident_layers": 40, "cfg_passes": 2, "steps": 50,
            "video_cfg": 5.0, "audio_cfg": 5.0}
MAX_PASSES = 8      # the planner never asks for more than 5 (nested, separate bridge-off, audio negative)
ECHO = 60           # at most this many characters of a request value go back in an error message


def _echo(value) -> str:
    return clean(repr(value), ECHO)


class RequestError(MovaError):
    """A query the estimate cannot answer (bad number, unknown option or model)."""


@dataclass(frozen=True)
class Host:
    """What the routes need from the running ComfyUI (injected, so tests need no ComfyUI)."""
    find_mova_folder: Callable[[str], Optional[Path]] = lambda name: None
    model_names: Callable[[], list] = lambda: []     # the MOVA Model Loader's entries: the only names resolved
    mova_roots: Callable[[], list] = lambda: []
    device_type: Callable[[], str] = lambda: "cuda"
    device_total_bytes: Callable[[], Optional[int]] = lambda: None   # VRAM of this machine's GPU
    host_total_bytes: Callable[[], Optional[int]] = lambda: None


def _number(query: dict, key: str, kind, low, high):
    raw = query.get(key, DEFAULTS[key])
    try:
        if isinstance(raw, bool):
            raise ValueError
        number = float(raw)          # 1e999, "inf", "nan" and 5,000-digit strings all end here
        if not math.isfinite(number) or (kind is int and number != int(number)):
            raise ValueError
        value = float(number) if kind is float else int(number)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(f"{key} must be a finite number between {low} and {high}, got {_echo(raw)}") from None
    if not low <= value <= high:
        raise RequestError(f"{key} must be between {low} and {high}, got {_echo(value)}")
    return value


def _choice(query: dict, key: str, options) -> str:
    value = query.get(key, DEFAULTS[key])
    if not isinstance(value, str) or value not in options:
        raise RequestError(f"{key} must be one of {', '.join(options)}, got {_echo(value)}")
    return value


def _config(query: dict, host: Host):
    """The architecture to plan for: a MOVA Model Loader entry's config.json files, else a preset.
    Names are resolved only among the loader's entries (never as a path), so no other folder is read
    and an answer never tells whether some folder exists."""
    model = query.get("model")
    if model:
        names = list(host.model_names())
        if isinstance(model, str) and model not in names and model.lower() in PRESETS and model in hub.REPOS:
            # a release not downloaded yet: its architecture, and the line saying the files are absent
            return PRESETS[model.lower()], model.lower(), f"⚠ {model} not found in models/mova — run MOVA Download Models"
        if not isinstance(model, str) or model not in names:
            shown = ", ".join(names[:10]) + (" …" if len(names) > 10 else "")
            raise RequestError(f"unknown model {_echo(model)}; the MOVA Model Loader lists: {shown or 'none'}")
        folder = host.find_mova_folder(model)
        if folder is None:
            raise RequestError(f"model {_echo(model)} is listed but its folder is gone; refresh the node list")
        return load_mova_config(folder), model, missing_weights_text(model, folder)
    preset = query.get("preset") or "mova-360p"
    if not isinstance(preset, str) or preset not in PRESETS:
        raise RequestError(f"unknown preset {_echo(preset)}; presets: {', '.join(PRESETS)}")
    return PRESETS[preset], preset, None


def missing_weights_text(name: str, folder: Path) -> Optional[str]:
    """A warning line when a listed MOVA folder lacks the generator's weights (e.g. a 'configs only'
    download): the estimate is still computed from its config files."""
    def has_weights(part):
        return (folder / part).is_dir() and any((folder / part).glob("*.safetensors"))
    parts = list(COMPONENTS)   # the generator's folders, as the loader reads them: two experts first
    experts = [part for part in parts[:2] if (folder / part).is_dir()] or ["video_dit"]
    missing = [part for part in experts + parts[2:] if not has_weights(part)]
    if not missing:
        return None
    return f"⚠ {name}: no weights in {', '.join(missing)} — run MOVA Download Models"


def guidance_passes(query: dict) -> dict:
    """Joint forwards per sampling step the sampler will run (the peak over the steps), and the
    largest number of them batched into one forward (`batch_passes`), for the graph's guidance:
    the MOVA Bridge Guidance settings in `query["guidance"]` when the sampler has a guidance input,
    else the sampler's released text CFG from `video_cfg` / `audio_cfg` (2 passes, 1 when both are 1).
    Planned by models/sampling/guidance.py / models/sampling/sampler.py, the code the sampler runs."""
    steps = _number(query, "steps", int, 1, 10000)
    raw = query.get("guidance")
    if raw is None:
        cfg = TextCFG(_number(query, "video_cfg", float, 0.0, 100.0), _number(query, "audio_cfg", float, 0.0, 100.0))
        n = len(cfg.plan(0, 1000.0))
        return {"source": "sampler cfg", "per_step": n, "per_forward": 1, "batched": False}
    if not isinstance(raw, dict):
        raise RequestError(f"guidance must be an object of MOVA Bridge Guidance widget values, got {_echo(raw)}")
    settings = GuidanceSettings.from_widgets(raw)   # bad values raise InputError (a MovaError: HTTP 400)
    per_step, per_forward = passes_needed(settings, steps, audio_negative=bool(raw.get("audio_negative")))
    return {"source": "bridge guidance", "per_step": per_step, "per_forward": per_forward,
            "batched": settings.batch_passes}


def _plan(config, width, height, frames, fps, dtype, quant, settings, passes: dict, device: str, layout=None):
    """planner.plan_memory with the guidance passes: the sampler holds one velocity per pass, and
    passes batched into one forward scale its activations. With a multi-GPU `layout`, one GPU's
    figures: its share of the video tokens, and at most the passes its pass group runs batched."""
    per_forward, sequence_ranks = passes["per_forward"], 1
    if layout is not None:
        per_forward = min(per_forward, layout.forwards_per_rank(passes["per_step"]))
        sequence_ranks = layout.sequence_ranks
    return planner.plan_memory(config, width, height, frames, fps=fps, dtype=dtype, quant=quant, offload=settings,
                               cfg_passes=passes["per_step"], passes_per_forward=per_forward,
                               device="cpu" if device == "cpu" else "cuda", sequence_ranks=sequence_ranks)


def multi_gpu(query: dict, passes: dict, config):
    """(layout, device kind) for the MOVA Multi-GPU node's `devices` / `strategy`, or (None, None)
    when the graph has none. An impossible layout is an InputError naming what would work."""
    devices = query.get("devices")
    if devices is None or devices == "":
        return None, None
    strategy = query.get("strategy", "auto")
    if not isinstance(strategy, str) or strategy not in parallel_plan.STRATEGIES:
        raise RequestError(f"strategy must be one of {', '.join(parallel_plan.STRATEGIES)}, got {_echo(strategy)}")
    count, kind = parallel_plan.parse_devices(devices)
    return parallel_plan.choose_layout(count, strategy, passes["per_step"], config.video_dit.num_heads), kind


def estimate(query: dict, host: Host = Host()) -> dict:
    """The planner's answer for one set of canvas settings, plus a one-line text for the widget."""
    config, source, files_warning = _config(query, host)
    width, height, frames = nearest_geometry(_number(query, "width", int, 16, 8192),
                                          _number(query, "height", int, 16, 8192),
                                          _number(query, "frames", int, 1, 4097))
    fps = _number(query, "fps", float, 1.0, 240.0)
    quantization = _choice(query, "quantization", options.QUANTIZATION)
    offload = _choice(query, "offload", options.OFFLOAD)
    dtype = _choice(query, "dtype", options.DTYPES)
    resident = _number(query, "resident_layers", int, -1, 4096)
    if query.get("cfg_passes") is not None:
        passes = {"source": "cfg_passes", "per_step": _number(query, "cfg_passes", int, 1, MAX_PASSES),
                  "per_forward": 1, "batched": False}
    else:
        passes = guidance_passes(query)
    layout, rank_device = multi_gpu(query, passes, config)
    device_type = rank_device or host.device_type()     # "cpu,cpu" ranks plan for the CPU
    if dtype == "auto":   # the loader's rule (runtime/loading.resolve_dtype)
        dtype = dtype_name("auto", device_type)
    settings = None if offload == "none" else OffloadSettings(resident_units=resident,
                                                              storage=OFFLOAD_TO_STORAGE[offload])
    plan = _plan(config, width, height, frames, fps, dtype, QUANT_TO_PLANNER[quantization], settings, passes,
                 device_type, layout)
    out = plan.as_dict()
    out.update(model=source, width=width, height=height, frames=frames, fps=fps, dtype=dtype,
               quantization=quantization, offload=offload, seconds=round(frames / fps, 2),
               cfg_passes=passes["per_step"], guidance=passes,
               denoise=dict(plan.stages.get("denoise", {})))   # the stage guidance changes, peak or not
    device_total, host_total = host.device_total_bytes(), host.host_total_bytes()
    out["device"] = {"type": host.device_type(),
                     "vram_gb": round(device_total / GB, 1) if device_total else None,
                     "host_gb": round(host_total / GB, 1) if host_total else None}
    host_needed = plan.host_bytes
    out["parallel"] = None
    if layout is not None:   # VRAM figures are one GPU's (rank 0, which also encodes and decodes)
        host_needed = parallel_plan.machine_host_bytes(plan, layout.ranks)
        out["host_gb"] = round(host_needed / GB, 2)
        out["parallel"] = {"devices": layout.ranks, "device_type": rank_device,
                           "strategy": query.get("strategy", "auto"), "layout": layout.strategy,
                           "pass_groups": layout.pass_groups, "sequence_ranks": layout.sequence_ranks,
                           "reason": layout.reason, "vram_per_device": True,
                           "host_gb_rank0": round(plan.host_bytes / GB, 2)}
    out["fits"] = {"vram": plan.vram_bytes <= device_total if device_total and rank_device != "cpu" else None,
                   "host": host_needed <= host_total if host_total else None}
    out["missing_files"] = files_warning
    out["text"] = estimate_text(out)
    return out


def estimate_text(e: dict) -> str:
    """Three short lines that fit a default-width node, e.g.
    'VRAM ≈ 24.1 GB · RAM ≈ 24.1 GB' / '640×352 · 97 f = 4.04 s · bf16 · peak: denoise' /
    'quant fp8_e4m3fn · offload none · 2 passes/step · mova-360p'. ✓ / ✗: fits this machine (when known)."""
    def mark(fits):
        return "" if fits is None else (" ✓" if fits else " ✗")
    return "\n".join([
        f"VRAM ≈ {e['vram_gb']:.1f} GB{_per_device(e)}{mark(e['fits']['vram'])} · "
        f"RAM ≈ {e['host_gb']:.1f} GB{mark(e['fits']['host'])}",
        f"{e['width']}×{e['height']} · {e['frames']} f = {e['seconds']:g} s · {e['dtype']} · peak: {e['stage']}",
        f"quant {e['quantization']} · offload {e['offload']} · {_passes_text(e['cfg_passes'])} · {e['model']}"]
        + ([e["missing_files"]] if e.get("missing_files") else []))


def _per_device(e: dict) -> str:
    """'' on one device; '/GPU (2 GPUs, sequence ×2)' or '/GPU (4 GPUs, 2 pass groups × 2)' with several."""
    p = e.get("parallel")
    if not p or p["devices"] == 1:
        return "" if not p else f" ({'1 CPU rank' if p['device_type'] == 'cpu' else '1 GPU'})"
    unit = "rank" if p["device_type"] == "cpu" else "GPU"
    split = {"sequence": f"sequence ×{p['sequence_ranks']}", "guidance": f"guidance ×{p['pass_groups']}",
             "both": f"{p['pass_groups']} pass groups × {p['sequence_ranks']}"}[p["layout"]]
    return f"/{unit} ({p['devices']} {unit}s, {split})"


def _passes_text(n: int) -> str:
    return "1 pass/step" if n == 1 else f"{n} passes/step"


def models_listing(host: Host = Host()) -> dict:
    """Every known released file, its URL, and whether it is already in a `mova` model folder."""
    roots = [Path(r) for r in host.mova_roots()]
    variants = []
    for variant, repo in hub.REPOS.items():
        files = []
        for f in hub.manifest(variant):
            present = [str(r / variant / f.path) for r in roots if (r / variant / f.path).is_file()]
            files.append({"path": f.path, "component": f.component, "size": f.size, "required": f.required,
                          "url": hub.file_url(variant, f.path), "present": bool(present),
                          "local": present[0] if present else None})
        variants.append({"variant": variant, "repo": repo, "folder": f"models/mova/{variant}",
                         "files": files, "present": sum(x["present"] for x in files)})
    return {"variants": variants,
            "download": "Use the 'MOVA Download Models' node (confirm = true) or huggingface-cli; "
                        "nothing is downloaded automatically."}


def _comfy_host() -> Host:
    """Host functions backed by the running ComfyUI (imported lazily: only inside ComfyUI)."""
    import comfy.model_management as mm
    import folder_paths
    import psutil

    from . import model_files

    def find(name):
        model_files.register_folders()      # idempotent; the `mova` key may not exist yet
        if name not in model_files.mova_folders(include_test_models=True):
            return None
        try:
            return model_files.mova_folder_path(name)
        except MovaError:
            return None

    def names():   # the test-only stand-in too: a saved graph that selects it still gets an estimate
        model_files.register_folders()
        return model_files.mova_folders(include_test_models=True)

    def roots():
        model_files.register_folders()
        return folder_paths.get_folder_paths(model_files.FOLDER)

    def vram():
        dev = mm.get_torch_device()
        return mm.get_total_memory(dev) if dev.type == "cuda" else None

    return Host(find_mova_folder=find,
                model_names=names,
                mova_roots=roots,
                device_type=lambda: mm.get_torch_device().type,
                device_total_bytes=vram,
                host_total_bytes=lambda: psutil.virtual_memory().total)


def register_routes(routes=None, host: Optional[Host] = None) -> None:
    """Add the routes to `routes` (default: ComfyUI's `PromptServer.instance.routes`). Call once,
    while the pack loads (before ComfyUI adds its route table to the app)."""
    from aiohttp import web
    if routes is None:
        import server
        routes = server.PromptServer.instance.routes
    host = host or _comfy_host()

    def answer(fn, query):
        try:
            return web.json_response(fn(query))
        except MovaError as err:
            return web.json_response({"error": clean(err, 400)}, status=400)
        except Exception:   # a request we did not foresee: 400, a short message, the traceback in the log
            log.exception("MOVA estimate failed for a request")
            return web.json_response({"error": "these settings cannot be estimated; check the numbers and "
                                               "choices (see the ComfyUI log for details)"}, status=400)

    @routes.get("/mova/estimate")
    async def get_estimate(request):
        return answer(lambda q: estimate(q, host), dict(request.query))

    @routes.post("/mova/estimate")
    async def post_estimate(request):
        try:
            query = await request.json()
        except ValueError:
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        if not isinstance(query, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        return answer(lambda q: estimate(q, host), query)

    @routes.get("/mova/models")
    async def get_models(request):
        return answer(lambda q: models_listing(host), {})


def register_with_running_server() -> bool:
    """Register once with ComfyUI's PromptServer if this process has one (no-op in tests and
    in-process runs). Called explicitly by nodes/__init__.node_list() while ComfyUI loads the pack,
    which is before ComfyUI adds its route table to the web app."""
    server = sys.modules.get("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None or getattr(instance, "_mova_routes_registered", False):
        return False
    register_routes(instance.routes)
    instance._mova_routes_registered = True
    return True

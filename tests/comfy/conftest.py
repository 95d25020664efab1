"""Fixtures that run the pack inside the real ComfyUI 0.3.75 (never a mock of it).

- `comfy`: ComfyUI imported into this process once per session, the pack loaded by ComfyUI's own
  custom-node loader (from a temp custom_nodes/ holding a link to this checkout), folder_paths pointed
  at temp dirs. `comfy.run(api_prompt)` validates and executes a prompt like the server would.
- `comfy_server`: the real server (scripts/comfy_host.py) started on a free loopback port.

Tests that exercise nodes go through these, never `import mova_pack.nodes` (ComfyUI imports the pack
under its own module name; a second copy would not share classes or globals).
These tests run in their own pytest process (see Makefile / scripts/run_tests.py): ComfyUI's
top-level modules (`nodes`, `utils`, `server`, …) and its global state stay out of the unit tests.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMFY_DIR = ROOT / ".comfyui" / "ComfyUI"
PACK_NAME = "ComfyUI-MOVA"
WORKFLOWS = ROOT / "workflows"
OLD_WORKFLOWS = ROOT / "tests" / "fixtures" / "workflows_v1"
sys.path.insert(0, str(ROOT / "scripts"))

import comfy_host  # noqa: E402  (scripts/, stdlib only)
import workflow_api  # noqa: E402


def _require_comfy():
    if not (COMFY_DIR / "main.py").exists():
        pytest.fail(f"no ComfyUI at {COMFY_DIR}: run `make setup` first", pytrace=False)
    if not (ROOT / "embedded" / "mova-toy").is_dir():
        pytest.fail("embedded/mova-toy (the committed toy model) is missing: restore it with git", pytrace=False)
    if not (ROOT / "embedded" / "mova-toy-random" / "EMBEDDED_OK").is_file():   # what set-up writes
        import subprocess
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_embedded.py")], check=True)


class ServerStub:
    """What PromptExecutor needs from the server; records every message it is sent."""

    def __init__(self):
        from aiohttp import web
        self.routes = web.RouteTableDef()   # packs add HTTP routes at import; nothing serves them here
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata = {}
        self.messages: list[tuple[str, object]] = []
        self.progress_text: list[tuple[str, str]] = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def send_progress_text(self, text, node_id, sid=None):
        self.progress_text.append((node_id, text))

    def queue_updated(self):
        pass


@dataclass
class RunResult:
    valid: bool
    success: bool
    error: dict | None = None
    node_errors: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)
    values: dict = field(default_factory=dict)

    def files(self) -> list[dict]:
        return comfy_host.output_files({"outputs": self.outputs})

    def execution_error(self) -> dict | None:
        return next((d for e, d in self.messages if e == "execution_error"), None)


class InProcessComfy:
    def __init__(self, base: Path):
        _require_comfy()
        sys.path.insert(0, str(COMFY_DIR))
        from comfy.cli_args import args
        args.cpu = True
        args.disable_api_nodes = True
        args.base_directory = str(base)
        import utils.extra_config  # noqa: F401  (must claim `utils` before comfy/utils.py does)
        import utils.install_util  # noqa: F401
        import folder_paths
        for name in ("output", "input", "temp", "custom_nodes", "models"):
            (base / name).mkdir(parents=True, exist_ok=True)
        folder_paths.set_output_directory(str(base / "output"))
        folder_paths.set_input_directory(str(base / "input"))
        folder_paths.set_temp_directory(str(base / "temp"))
        link = base / "custom_nodes" / PACK_NAME
        if not link.exists():
            link.symlink_to(ROOT, target_is_directory=True)
        folder_paths.folder_names_and_paths["custom_nodes"] = ([str(base / "custom_nodes")], set())
        import comfy.utils
        import comfy.model_management
        import execution
        import nodes
        import server
        self.folder_paths, self.nodes, self.execution = folder_paths, nodes, execution
        self.base = base
        self.stub = ServerStub()
        server.PromptServer.instance = self.stub

        self.interrupt_at_progress = None   # (node_id, value): press "cancel" right after that update

        def progress_hook(value, total, preview, prompt_id=None, node_id=None):
            # like main.py's hook: an interrupt raises at the next progress update
            comfy.model_management.throw_exception_if_processing_interrupted()
            self.stub.send_sync("progress", {"value": value, "max": total, "node": node_id, "preview": preview})
            if self.interrupt_at_progress == (node_id, value):
                nodes.interrupt_processing(True)
        comfy.utils.set_progress_bar_global_hook(progress_hook)

        records = []
        handler = logging.Handler()
        handler.emit = lambda r: records.append(r.getMessage())
        logging.getLogger().addHandler(handler)
        try:
            asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
        finally:
            logging.getLogger().removeHandler(handler)
        self.import_log = "\n".join(records)
        if ("MOVASampler" not in nodes.NODE_CLASS_MAPPINGS or "IMPORT FAILED" in self.import_log
                or "failed to load node module" in self.import_log):
            pytest.fail("ComfyUI did not load the pack:\n" + self.import_log[-6000:], pytrace=False)
        self.executor = self.new_executor()

    def new_executor(self):
        ex = self.execution
        return ex.PromptExecutor(self.stub, cache_type=ex.CacheType.CLASSIC,
                                 cache_args={"lru": 0, "ram": 0})

    def object_info(self, node_type: str) -> dict:
        cls = self.nodes.NODE_CLASS_MAPPINGS[node_type]
        if hasattr(cls, "GET_NODE_INFO_V1"):
            info = cls.GET_NODE_INFO_V1()
        else:
            types = cls.INPUT_TYPES()
            info = {"input": types, "input_order": {k: list(v) for k, v in types.items()},
                    "output": list(cls.RETURN_TYPES)}
        return json.loads(json.dumps(info, default=str))

    def convert(self, ui: dict) -> dict:
        kinds = {n["type"] for n in ui["nodes"]} & set(self.nodes.NODE_CLASS_MAPPINGS)
        return workflow_api.ui_to_api(ui, {k: self.object_info(k) for k in kinds})

    def run(self, prompt: dict, fresh: bool = False, outputs: list | None = None) -> RunResult:
        """Validate like POST /prompt, then execute like the prompt worker. `outputs`: run only up to
        these node ids instead of the graph's output nodes (e.g. just the sampler)."""
        prompt = json.loads(json.dumps(prompt))
        prompt_id = str(uuid.uuid4())
        valid, error, graph_outputs, node_errors = asyncio.run(
            self.execution.validate_prompt(prompt_id, prompt, None))
        if not valid:
            return RunResult(valid=False, success=False, error=error, node_errors=node_errors)
        executor = self.new_executor() if fresh else self.executor
        self.stub.messages.clear()
        self.stub.progress_text.clear()
        executor.execute(prompt, prompt_id, {"client_id": "tests"}, outputs or graph_outputs)
        values = {}
        for node_id in outputs or []:   # what the requested nodes returned (from the executor's cache)
            entry = executor.caches.outputs.get(node_id)
            values[node_id] = entry.outputs if entry is not None else None
        return RunResult(valid=True, success=executor.success,
                         outputs=executor.history_result.get("outputs", {}) if executor.success else {},
                         messages=list(executor.status_messages), values=values)

    def output_path(self, file: dict) -> Path:
        return Path(self.folder_paths.get_output_directory()) / file.get("subfolder", "") / file["filename"]


@pytest.fixture(scope="session")
def comfy(tmp_path_factory) -> InProcessComfy:
    import torch
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return InProcessComfy(tmp_path_factory.mktemp("comfy-base"))


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """The real ComfyUI server on a free loopback port, with temp output/input dirs."""
    _require_comfy()
    tmp = tmp_path_factory.mktemp("comfy-server")
    host = comfy_host.ComfyHost(output_dir=tmp / "output", input_dir=tmp / "input",
                                log_path=tmp / "comfyui.log")
    (tmp / "input").mkdir(exist_ok=True)
    host.start()
    yield host
    host.stop()


def load_workflow(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def probe_media(path) -> dict:
    """Streams of a media file as read by `av` (what ComfyUI itself uses)."""
    import av
    out = {"video": [], "audio": []}
    with av.open(str(path)) as container:
        for stream in container.streams:
            duration = float(stream.duration * stream.time_base) if stream.duration else None
            if stream.type == "video":
                frames = stream.frames or sum(1 for _ in container.decode(stream))
                out["video"].append({"codec": stream.codec_context.name, "frames": frames,
                                     "fps": float(stream.average_rate), "duration": duration,
                                     "width": stream.codec_context.width, "height": stream.codec_context.height})
        container.seek(0)
        for stream in container.streams.audio:
            samples = sum(f.samples for f in container.decode(stream))
            out["audio"].append({"codec": stream.codec_context.name, "sample_rate": stream.codec_context.sample_rate,
                                 "samples": samples, "seconds": samples / stream.codec_context.sample_rate,
                                 "channels": stream.codec_context.channels})
    return out


def embedded_model_name() -> str:
    """The model the shipped workflows use (first MOVAModelLoader widget)."""
    ui = load_workflow(WORKFLOWS / "text_to_video_audio.json")
    return next(n for n in ui["nodes"] if n["type"] == "MOVAModelLoader")["widgets_values"][0]


def workflow_geometry(ui: dict) -> tuple[int, int, int, float]:
    w, h, frames, fps = next(n for n in ui["nodes"] if n["type"] == "MOVALatent")["widgets_values"][:4]
    return w, h, frames, fps


def model_sample_rate(name: str) -> int:
    cfg = json.loads((ROOT / "embedded" / name / "audio_vae" / "config.json").read_text())
    return int(cfg.get("sample_rate", 48000))


def check_av_file(path, ui: dict, sample_rate: int) -> dict:
    """One h264 video stream and one aac audio stream at `sample_rate`, both ≈ frames/fps long."""
    w, h, frames, fps = workflow_geometry(ui)
    info = probe_media(path)
    assert len(info["video"]) == 1 and len(info["audio"]) == 1, info
    video, audio = info["video"][0], info["audio"][0]
    assert video["codec"] == "h264" and (video["width"], video["height"]) == (w, h), info
    assert video["frames"] == frames, info
    assert abs(video["frames"] / video["fps"] - frames / fps) < 1e-3, info
    assert audio["codec"] == "aac" and audio["sample_rate"] == sample_rate, info
    # aac frames are 1024 samples: allow one frame of padding either way.
    assert abs(audio["seconds"] - frames / fps) <= 1024 / sample_rate + 1e-3, info
    return info

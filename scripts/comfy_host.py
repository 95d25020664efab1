"""Start and stop the real ComfyUI (in .comfyui/) headless on loopback, and talk to its HTTP API.

Used by `make demo` (scripts/demo.py) and by the HTTP tests (tests/comfy/). Only the standard
library, so it runs before anything else is importable.

    python scripts/comfy_host.py check      # start, wait until our nodes are served, stop
    python scripts/comfy_host.py serve      # start and keep serving until Ctrl-C
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMFY_DIR = ROOT / ".comfyui" / "ComfyUI"
BASE_DIR = ROOT / ".comfyui" / "base"
PACK_NAME = "ComfyUI-MOVA"
READY_NODE = "MOVASampler"  # a node of ours: served only once the pack imported


class HostError(RuntimeError):
    """The server did not start, died, or a prompt did not finish as expected."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_python() -> str:
    venv_python = ROOT / ".venv" / "bin" / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


class ComfyHost:
    """One ComfyUI server process that this object started (and alone stops)."""

    def __init__(self, base_dir: Path = BASE_DIR, output_dir: Path | None = None,
                 input_dir: Path | None = None, port: int | None = None,
                 log_path: Path | None = None, python: str | None = None,
                 extra_args: tuple[str, ...] = ()):
        self.base_dir = Path(base_dir)
        self.output_dir = Path(output_dir) if output_dir else None
        self.input_dir = Path(input_dir) if input_dir else None
        self.port = port or free_port()
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="comfyui-", suffix=".log")[1])
        self.python = python or default_python()
        self.extra_args = tuple(extra_args)
        self.proc: subprocess.Popen | None = None
        self.client_id = str(uuid.uuid4())

    # ---------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [self.python, str(COMFY_DIR / "main.py"), "--cpu", "--listen", "127.0.0.1",
               "--port", str(self.port), "--base-directory", str(self.base_dir),
               "--disable-auto-launch", "--database-url", "sqlite:///:memory:", "--disable-api-nodes"]
        if self.output_dir:
            cmd += ["--output-directory", str(self.output_dir)]
        if self.input_dir:
            cmd += ["--input-directory", str(self.input_dir)]
        return cmd + list(self.extra_args)

    def start(self, timeout: float = 180.0) -> "ComfyHost":
        if not (COMFY_DIR / "main.py").exists():
            raise HostError(f"no ComfyUI at {COMFY_DIR}: run `make setup` (scripts/setup.sh) first")
        link = self.base_dir / "custom_nodes" / PACK_NAME
        if not link.exists():
            raise HostError(f"the pack is not linked at {link}: run `make setup` first")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command(), cwd=str(COMFY_DIR), stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        log.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HostError(f"ComfyUI exited with code {self.proc.returncode} while starting\n{self.log_tail()}")
            try:
                self.get_json(f"/object_info/{READY_NODE}", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        else:
            raise HostError(f"ComfyUI not ready after {timeout:.0f} s\n{self.log_tail()}")
        info = self.get_json(f"/object_info/{READY_NODE}")
        failed = [line for line in self.log_text().splitlines()
                  if "IMPORT FAILED" in line or "failed to load node module" in line]
        if failed or READY_NODE not in info:
            raise HostError("a custom node pack failed to import:\n" + "\n".join(failed) + "\n" + self.log_tail())

    def stop(self) -> None:
        """Stop the process this object started (by its PID), nothing else."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=20)

    def __enter__(self) -> "ComfyHost":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # ---------------------------------------------------------------- HTTP API
    def _request(self, path: str, data: bytes | None = None, timeout: float = 30.0) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=data,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def get_json(self, path: str, timeout: float = 30.0):
        status, body = self._request(path, timeout=timeout)
        if status != 200:
            raise HostError(f"GET {path} -> {status}: {body[:500]!r}")
        return json.loads(body)

    def post_prompt(self, prompt: dict) -> tuple[int, dict]:
        """POST /prompt; returns (HTTP status, JSON body) — 400 carries node_errors on bad input."""
        payload = json.dumps({"prompt": prompt, "client_id": self.client_id}).encode()
        status, body = self._request("/prompt", data=payload)
        return status, json.loads(body)

    def queue_prompt(self, prompt: dict) -> str:
        status, body = self.post_prompt(prompt)
        if status != 200:
            raise HostError(f"prompt refused ({status}): {json.dumps(body, indent=1)[:3000]}")
        return body["prompt_id"]

    def wait_for(self, prompt_id: str, timeout: float = 600.0) -> dict:
        """Poll /history until the prompt finished; returns its history entry (success or error)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise HostError(f"ComfyUI died while running the prompt\n{self.log_tail()}")
            history = self.get_json(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(0.5)
        raise HostError(f"prompt {prompt_id} did not finish within {timeout:.0f} s\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float = 600.0) -> dict:
        """Queue a prompt and wait for it to succeed; returns the history entry."""
        entry = self.wait_for(self.queue_prompt(prompt), timeout)
        if entry["status"]["status_str"] != "success":
            raise HostError(f"prompt failed: {json.dumps(entry['status'], indent=1)[:4000]}")
        return entry

    def view(self, filename: str, subfolder: str = "", type_: str = "output") -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type_})
        status, body = self._request(f"/view?{query}")
        if status != 200:
            raise HostError(f"GET /view {filename} -> {status}")
        return body


def output_files(entry: dict) -> list[dict]:
    """Every file a finished prompt reported (images/videos/audio), as {filename, subfolder, type}."""
    files = []
    for node_output in entry.get("outputs", {}).values():
        for items in node_output.values():
            if isinstance(items, list):
                files += [i for i in items if isinstance(i, dict) and "filename" in i]
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["check", "serve"])
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    host = ComfyHost(port=args.port)
    t0 = time.monotonic()
    with host:
        print(f"ComfyUI ready at {host.url} in {time.monotonic() - t0:.1f} s (pid {host.proc.pid}, log {host.log_path})")
        if args.action == "serve":
            try:
                host.proc.wait()
            except KeyboardInterrupt:
                pass
    print("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

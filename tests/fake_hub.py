"""A tiny stand-in for the Hugging Face Hub on 127.0.0.1: the `resolve` endpoint that
`hf_hub_download` uses (HEAD for metadata, GET with Range for resumable downloads), and the
`paths-info` endpoint `HfApi.get_paths_info` uses (POST: the listed files' sizes).

Weight files (.safetensors) behave like LFS files (ETag = sha256 of the content), others like git
files (ETag = git blob sha1). Every request is recorded so tests can see what the client did.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from urllib.parse import parse_qs
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def etag_for(path: str, data: bytes) -> str:
    if path.endswith(".safetensors"):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """files: {"org/name": {"path/in/repo": bytes}}. Start with `with FakeHub(files) as hub:`."""

    def __init__(self, files: dict):
        self.files = files
        self.requests: list = []           # (method, path, range header or None)
        self.drop_once: set = set()        # repo paths whose first GET is cut off half-way
        self.corrupt: set = set()          # repo paths served with content not matching their ETag
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):   # keep pytest output clean
                pass

            def _lookup(self):
                m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", self.path.split("?")[0])
                if not m:
                    return None, None
                repo, _rev, path = m.groups()
                if repo not in hub.files:
                    return "repo", None
                return path, hub.files[repo].get(path)

            def _not_found(self, code: str):
                self.send_response(404)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _serve(self, with_body: bool):
                rng = self.headers.get("Range")
                hub.requests.append((self.command, self.path, rng))
                path, data = self._lookup()
                if path == "repo":
                    return self._not_found("RepoNotFound")
                if data is None:
                    return self._not_found("EntryNotFound")
                etag = etag_for(path, data)
                body = data
                if path in hub.corrupt:
                    body = bytes([data[0] ^ 0xFF]) + data[1:]
                start = 0
                if rng and with_body:
                    start = int(re.match(r"bytes=(\d+)-", rng).group(1))
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{etag}"')
                self.send_header("Content-Length", str(len(body) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                if not with_body:
                    return
                if path in hub.drop_once and not start:
                    hub.drop_once.discard(path)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body[start:])

            def do_HEAD(self):
                self._serve(with_body=False)

            def do_GET(self):
                self._serve(with_body=True)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                hub.requests.append(("POST", self.path, None))
                m = re.match(r"^/api/models/([^/]+/[^/]+)/paths-info/([^/?]+)", self.path)
                if not m or m.group(1) not in hub.files:
                    return self._not_found("RepoNotFound")
                files = hub.files[m.group(1)]
                listed = []
                for path in form.get("paths", []):
                    if path in files:
                        data = files[path]
                        entry = {"type": "file", "path": path, "size": len(data), "oid": etag_for(path + ".git", data)}
                        if path.endswith(".safetensors"):
                            entry["lfs"] = {"oid": etag_for(path, data), "size": len(data), "pointerSize": 134}
                        listed.append(entry)
                body = json.dumps(listed).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def gets(self) -> list:
        return [r for r in self.requests if r[0] == "GET"]

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

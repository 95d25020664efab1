"""Explicit, verified downloads of the released MOVA files from the Hugging Face Hub.

Nothing here runs on import and nothing downloads unless `download(..., confirm=True)` is called.
Files land only under `target_dir`, which must lie inside one of the `allowed_roots` the caller
passes (the ComfyUI model folders). Each file is fetched as `<name>.part` (resumed with HTTP Range on
the next attempt or run) and renamed once verified. Timeouts are short and attempts bounded; the
caller's `should_stop` is honoured between files and chunks. Each file is verified after download:
- size: against the size given in spec §1-§7 where known, else against the size the Hub reports;
- hash: against a sha256 in the manifest where known (none are published in the spec), else against
  the Hub's ETag when it is a content hash (sha256 for LFS weight files, git blob sha1 for small
  files). With neither, only the size is checked and the report says so.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from ..common.errors import MovaError

REPOS = {"MOVA-360p": "OpenMOSS-Team/MOVA-360p", "MOVA-720p": "OpenMOSS-Team/MOVA-720p"}
COMPONENTS = ("model_index", "scheduler", "tokenizer", "text_encoder", "video_dit", "video_dit_2",
              "audio_dit", "dual_tower_bridge", "audio_vae", "video_vae")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")


class DownloadError(MovaError):
    """A download could not start, failed, or produced a file that does not verify."""


@dataclass(frozen=True)
class HubFile:
    """One file of a MOVA repository."""
    component: str
    path: str                      # inside the repo = inside the local MOVA folder
    size: Optional[int] = None     # bytes, where the spec states it exactly
    sha256: Optional[str] = None   # none published yet
    required: bool = True          # False: the name follows a convention, not the spec; 404 -> skipped


def _sharded(component: str, stem: str, shards: int, index: str) -> list:
    files = [HubFile(component, f"{component}/config.json")]
    files += [HubFile(component, f"{component}/{stem}-{i:05d}-of-{shards:05d}.safetensors")
              for i in range(1, shards + 1)]
    return files + [HubFile(component, f"{component}/{index}", required=False)]


def _single(component: str, size: Optional[int] = None) -> list:
    return [HubFile(component, f"{component}/config.json"),
            HubFile(component, f"{component}/diffusion_pytorch_model.safetensors", size=size)]


def manifest(variant: str, components: Optional[Iterable[str]] = None) -> tuple:
    """The files of `variant` ("MOVA-360p" | "MOVA-720p"), optionally only some components."""
    if variant not in REPOS:
        raise DownloadError(f"unknown MOVA variant {variant!r}; expected one of {', '.join(REPOS)}.")
    wanted = tuple(components) if components is not None else COMPONENTS
    unknown = [c for c in wanted if c not in COMPONENTS]
    if unknown:
        raise DownloadError(f"unknown component(s) {', '.join(unknown)}; expected some of {', '.join(COMPONENTS)}.")
    # Exact sizes are only known for the 720p copies (spec §1.3, §1.6); 360p sizes come from the Hub.
    known = variant == "MOVA-720p"
    files = [HubFile("model_index", "model_index.json"),
             HubFile("scheduler", "scheduler/scheduler_config.json")]
    files += [HubFile("tokenizer", f"tokenizer/{name}", required=False)   # T5TokenizerFast save names
              for name in ("special_tokens_map.json", "spiece.model", "tokenizer.json", "tokenizer_config.json")]
    files += _sharded("text_encoder", "model", 3, "model.safetensors.index.json")
    for expert in ("video_dit", "video_dit_2"):
        files += _sharded(expert, "diffusion_pytorch_model", 3, "diffusion_pytorch_model.safetensors.index.json")
    files += _single("audio_dit", 2_838_470_672 if known else None)
    files += _single("dual_tower_bridge")
    files += _single("audio_vae", 743_102_794 if known else None)
    files += _single("video_vae")
    return tuple(f for f in files if f.component in wanted)


def file_url(variant: str, path: str, revision: str = "main", endpoint: Optional[str] = None) -> str:
    base = (endpoint or "https://huggingface.co").rstrip("/")
    return f"{base}/{REPOS[variant]}/resolve/{revision}/{path}"


def frontend_model_entries(variant: str, directory: str, components: Optional[Iterable[str]] = None) -> list:
    """`properties.models` entries ({name, url, directory}) for a loader node, so ComfyUI's
    missing-model dialog can offer the weight files. `name` is relative to the model folder."""
    return [{"name": f"{variant}/{f.path}", "url": file_url(variant, f.path), "directory": directory}
            for f in manifest(variant, components) if f.path.endswith(".safetensors")]


# What each loader node of the pack reads from a MOVA folder (for its `properties.models` entries).
LOADER_COMPONENTS = {
    "MOVAModelLoader": ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"),
    "MOVATextEncoderLoader": ("text_encoder",),
    "MOVAVideoVAELoader": ("video_vae",),
    "MOVAAudioVAELoader": ("audio_vae",),
}
WORKFLOW_VARIANT = "MOVA-360p"     # the real model the shipped workflows point users to
MODEL_DIRECTORY = "mova"           # ComfyUI model folder key (nodes/model_files.py registers it)


def loader_model_entries(node_type: str, variant: str = WORKFLOW_VARIANT) -> list:
    """`properties.models` of a loader node in the shipped workflows ([] for other node types)."""
    components = LOADER_COMPONENTS.get(node_type)
    return frontend_model_entries(variant, MODEL_DIRECTORY, components) if components else []


def check_target(target_dir, allowed_roots: Sequence) -> Path:
    """The resolved target folder, or DownloadError if it is not inside an allowed root."""
    if not allowed_roots:
        raise DownloadError("no allowed download roots were given; refusing to write anywhere. "
                            "Pass the ComfyUI model folders as allowed roots.")
    target = Path(target_dir).expanduser().resolve()
    roots = [Path(r).expanduser().resolve() for r in allowed_roots]
    if not any(target == r or target.is_relative_to(r) for r in roots):
        raise DownloadError(f"refusing to download into {target}: it is not inside the allowed model "
                            f"folders ({', '.join(map(str, roots))}). Choose a folder under one of them.")
    return target


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file (the Hub's ETag for files not stored in LFS)."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class FileResult:
    path: str                 # inside the MOVA folder
    status: str               # "downloaded" | "present" | "skipped (not on the Hub)"
    size: int
    check: str                # what was verified: "sha256", "git sha1", "size only", "-"


@dataclass(frozen=True)
class DownloadReport:
    variant: str
    target_dir: str
    files: tuple

    def summary(self) -> str:
        lines = [f"MOVA {self.variant} -> {self.target_dir}"]
        lines += [f"  {r.status:<10} {r.size / 1e9:8.3f} GB  verified: {r.check:<9} {r.path}" for r in self.files]
        return "\n".join(lines)


def verify_file(local: Path, expected_size: Optional[int], sha256: Optional[str], etag: Optional[str]) -> str:
    """Check size and the best available hash; returns what was checked, raises on mismatch."""
    size = local.stat().st_size
    if expected_size is not None and size != expected_size:
        raise DownloadError(f"{local}: size {size} B, expected {expected_size} B. The file is truncated "
                            f"or not the released one; delete it and download again.")
    want, kind = sha256, "sha256"
    if want is None and etag and _SHA256.match(etag):
        want = etag
    elif want is None and etag and _GIT_SHA1.match(etag):
        want, kind = etag, "git sha1"
    if want is None:
        return "size only"
    got = file_sha256(local) if kind == "sha256" else git_blob_sha1(local)
    if got != want:
        raise DownloadError(f"{local}: {kind} {got} does not match the expected {want}. The file is "
                            f"corrupted or was changed; delete it and download again.")
    return kind


CONNECT_TIMEOUT = 5.0      # s: a host that does not accept a connection in this long is unreachable
READ_TIMEOUT = 10.0        # s: no byte for this long = the server stopped answering (retry, then fail)
PROBE_TIMEOUT = 5.0        # s: the first request's answer (a black hole fails here, and Cancel waits no longer)
CHUNK = 1 << 16            # bytes per read: the interrupt check runs between chunks
RETRY_PAUSE = 1.0          # s between attempts


def _offline_error(variant: str, endpoint: str, exc: BaseException) -> DownloadError:
    return DownloadError(
        f"cannot reach the Hugging Face Hub at {endpoint} to download {REPOS[variant]} "
        f"({_reason(exc)}). Check the network/proxy (HF_ENDPOINT, HTTPS_PROXY), or download "
        f"the files by hand from https://huggingface.co/{REPOS[variant]} into the MOVA model folder.")


def _reason(exc: BaseException) -> str:
    import requests
    if isinstance(exc, requests.ConnectTimeout):
        return f"no connection within {CONNECT_TIMEOUT:g} s"
    if isinstance(exc, requests.ReadTimeout):
        return "the server accepted the connection but did not answer in time"
    if isinstance(exc, requests.ConnectionError):
        return "connection refused or dropped"
    return type(exc).__name__


def _stop_check(should_stop: Optional[Callable[[], bool]]) -> None:
    """`should_stop()` raises (ComfyUI's interrupt) or returns True: either way the download stops
    here, between files or chunks; a partial file stays as `<name>.part` for the next run."""
    if should_stop is not None and should_stop():
        raise DownloadError("download stopped on request; run it again to resume (partial files are kept "
                            "as .part and never used as weights).")


def _probe(variant: str, endpoint: str) -> None:
    """One short HTTP request to the Hub (through any proxy requests is configured for): fails in
    seconds when the host is down or accepts connections and never answers."""
    import requests
    try:
        requests.head(endpoint + "/", timeout=(CONNECT_TIMEOUT, PROBE_TIMEOUT), allow_redirects=False).close()
    except requests.RequestException as exc:
        raise _offline_error(variant, endpoint, exc) from None


def urlsplit_host(url: str) -> str:
    from urllib.parse import urlsplit
    return urlsplit(url).netloc


def _part(local: Path) -> Path:
    return local.with_name(local.name + ".part")


def _transfer(url: str, local: Path, expected: Optional[int], headers: dict, should_stop) -> None:
    """GET `url` into `<local>.part` (resuming with HTTP Range from what is there), chunk by chunk with
    the stop check in between; the caller verifies and renames it."""
    import requests
    part = _part(local)
    part.parent.mkdir(parents=True, exist_ok=True)
    start = part.stat().st_size if part.is_file() else 0
    if expected is not None and start > expected:
        part.unlink()
        start = 0
    if expected is not None and start == expected:
        return
    ask = dict(headers, **({"Range": f"bytes={start}-"} if start else {}))
    with requests.get(url, headers=ask, stream=True, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)) as resp:
        if start and resp.status_code == 200:      # the server ignored the range: start over
            start = 0
        resp.raise_for_status()
        with open(part, "ab" if start else "wb") as fh:
            for chunk in resp.iter_content(CHUNK):
                _stop_check(should_stop)
                fh.write(chunk)


def download(variant: str, target_dir, allowed_roots: Sequence, *, confirm: bool,
             components: Optional[Iterable[str]] = None, revision: str = "main",
             endpoint: Optional[str] = None, token=None, verify_hashes: bool = True, attempts: int = 3,
             on_file: Optional[Callable[[int, int, str], None]] = None,
             should_stop: Optional[Callable[[], bool]] = None) -> DownloadReport:
    """Download (or resume) the files of `variant` into `target_dir` (the MOVA folder: it will hold
    model_index.json, video_dit/, ...). `confirm` must be True: this function is the only place the
    pack downloads anything, and only because the user asked. `on_file(i, n, path)` reports progress;
    `should_stop()` is checked between files and between chunks (ComfyUI's Cancel).
    Each file is written as `<name>.part` and renamed only once its size and hash check out, so an
    interrupted or failed download never leaves a file that looks complete."""
    if not confirm:
        raise DownloadError("download not confirmed: set confirm=True to download the MOVA files "
                            "(tens of GB); nothing was downloaded.")
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError,
                                        LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError)
    from huggingface_hub.utils import build_hf_headers
    import requests

    attempts = max(1, min(int(attempts), 5))
    target = check_target(target_dir, allowed_roots)
    files = manifest(variant, components)
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    repo = REPOS[variant]
    _stop_check(should_stop)
    _probe(variant, endpoint)
    network = (requests.ConnectionError, requests.Timeout, OfflineModeIsEnabled, LocalEntryNotFoundError)
    results = []
    for i, f in enumerate(files):
        _stop_check(should_stop)
        if on_file:
            on_file(i, len(files), f.path)
        local = target / f.path
        if not local.resolve().is_relative_to(target):
            raise DownloadError(f"manifest path {f.path!r} leaves {target}; refusing.")
        url = hf_hub_url(repo, f.path, revision=revision, endpoint=endpoint)
        try:
            meta = get_hf_file_metadata(url, token=token, endpoint=endpoint,
                                        timeout=CONNECT_TIMEOUT + READ_TIMEOUT)
        except network as exc:
            raise _offline_error(variant, endpoint, exc) from None
        except EntryNotFoundError:
            if f.required:
                raise DownloadError(f"{repo} has no file {f.path} at revision {revision!r}; the repository "
                                    f"layout changed. Report it, or fetch the folder by hand.") from None
            results.append(FileResult(f.path, "skipped (not on the Hub)", 0, "-"))
            continue
        except GatedRepoError:
            raise DownloadError(f"{repo} needs you to accept its terms on huggingface.co and a token "
                                f"(HF_TOKEN) to download.") from None
        except RepositoryNotFoundError:
            raise DownloadError(f"repository {repo} (revision {revision!r}) was not found at {endpoint}.") from None
        expected = f.size if f.size is not None else meta.size
        if f.size is not None and meta.size is not None and meta.size != f.size:
            raise DownloadError(f"the Hub reports {meta.size} B for {repo}/{f.path}, the released file has "
                                f"{f.size} B: the repository changed. Pin a revision or report it.")
        etag = meta.etag if verify_hashes else None
        sha = f.sha256 if verify_hashes else None
        if local.is_file() and expected is not None and local.stat().st_size == expected:
            check = verify_file(local, expected, sha, etag)
            results.append(FileResult(f.path, "present", expected, check))
            continue
        source = meta.location or url
        headers = build_hf_headers(token=token)
        if urlsplit_host(source) != urlsplit_host(url):   # a CDN redirect never gets the token
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        for attempt in range(1, attempts + 1):
            try:   # a broken transfer leaves `.part`, which the next attempt resumes (HTTP Range)
                _transfer(source, local, expected, headers, should_stop)
                break
            except (requests.RequestException, HfHubHTTPError, OSError) as exc:
                if attempt == attempts:
                    raise DownloadError(f"downloading {repo}/{f.path} failed after {attempts} attempt(s) "
                                        f"({_reason(exc)}). Run the download again: it resumes where it "
                                        "stopped.") from None
                _stop_check(should_stop)
                time.sleep(RETRY_PAUSE)
        part = _part(local)
        try:
            check = verify_file(part, expected, sha, etag)
        except DownloadError:
            part.unlink(missing_ok=True)      # wrong bytes: nothing to resume from
            raise
        os.replace(part, local)
        results.append(FileResult(f.path, "downloaded", local.stat().st_size, check))
    return DownloadReport(variant, str(target), tuple(results))


def hub_sizes(variant: str, components: Optional[Iterable[str]] = None, revision: str = "main",
              endpoint: Optional[str] = None, token=None) -> dict:
    """{path: bytes} of the manifest's files as the Hub lists them (one paths-info request; files the
    repository does not hold are absent). DownloadError when the Hub cannot be reached or refuses."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError)
    import requests

    files = manifest(variant, components)
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    _probe(variant, endpoint)      # a host that is down fails here within seconds
    repo = REPOS[variant]
    try:
        infos = HfApi(endpoint=endpoint, token=token).get_paths_info(repo, [f.path for f in files],
                                                                     revision=revision)
    except (requests.ConnectionError, requests.Timeout, OfflineModeIsEnabled) as exc:
        raise _offline_error(variant, endpoint, exc) from None
    except GatedRepoError:
        raise DownloadError(f"{repo} needs you to accept its terms on huggingface.co and a token "
                            f"(HF_TOKEN) to list its files.") from None
    except RepositoryNotFoundError:
        raise DownloadError(f"repository {repo} (revision {revision!r}) was not found at {endpoint}.") from None
    except HfHubHTTPError as exc:
        raise DownloadError(f"the Hub at {endpoint} did not list the files of {repo} ({_reason(exc)}).") from None
    return {info.path: int(info.size) for info in infos if getattr(info, "size", None) is not None}


def size_text(size: Optional[int]) -> str:
    """Bytes as people read them: 9.87 GB, 2.4 MB, 12 kB, 310 B."""
    if size is None:
        return "size unknown"
    if size >= 1e9:
        return f"{size / 1e9:.2f} GB"
    if size >= 1e6:
        return f"{size / 1e6:.1f} MB"
    return f"{round(size / 1e3)} kB" if size >= 1e3 else f"{size} B"


def plan(variant: str, target_dir, allowed_roots: Sequence, components: Optional[Iterable[str]] = None,
         sizes: Optional[dict] = None, sizes_unavailable: Optional[str] = None) -> str:
    """What `download` would fetch and where. `sizes` ({path: bytes}, from `hub_sizes`) adds each
    file's size and the totals; without them the spec's sizes where known and `sizes_unavailable`
    (why the Hub was not asked or could not answer) instead of a total. No network access here."""
    target = check_target(target_dir, allowed_roots)
    files = manifest(variant, components)
    lines = [f"Would download {len(files)} files of {REPOS[variant]} into {target}:"]
    total = missing = 0
    unknown = False
    for f in files:
        have = (target / f.path).is_file()
        size = f.size if f.size is not None else (sizes or {}).get(f.path)
        if sizes is not None and size is None and not f.required:
            note = "not on the Hub, skipped"
        else:
            note = size_text(size)
            unknown |= size is None
            total += size or 0
            missing += 0 if have else size or 0
        lines.append(f"  {'present ' if have else 'missing '} {f.path} ({note})")
    if sizes is not None:
        lines.append(f"In all {size_text(total)}, of which {size_text(missing)} still to download"
                     + (" (some sizes unknown)." if unknown else "."))
    elif sizes_unavailable:
        lines.append(f"Sizes not shown: {sizes_unavailable}")
    lines.append("Nothing was downloaded. Set confirm to true and run again to download.")
    return "\n".join(lines)

"""runtime/hub.py against a fake Hub on 127.0.0.1 (tests/fake_hub.py) — never the internet."""
import hashlib
import socket

import pytest

from fake_hub import FakeHub
from mova_pack.runtime import hub
from mova_pack.runtime.hub import DownloadError

REPO = hub.REPOS["MOVA-360p"]
WEIGHTS = bytes(range(256)) * 4000                     # ~1 MB, stands in for a safetensors file


def repo_files(skip=()):
    files = {f.path: f"{{\"file\": \"{f.path}\"}}".encode() for f in hub.manifest("MOVA-360p")}
    files["audio_vae/diffusion_pytorch_model.safetensors"] = WEIGHTS
    return {p: d for p, d in files.items() if p not in skip}


@pytest.fixture
def roots(tmp_path):
    models = tmp_path / "models"
    (models / "mova").mkdir(parents=True)
    return models, models / "mova" / "MOVA-360p"


def test_downloads_verifies_and_skips_unknown_optional_names(roots):
    models, target = roots
    with FakeHub({REPO: repo_files(skip={"tokenizer/spiece.model"})}) as fake:
        report = hub.download("MOVA-360p", target, [models], confirm=True, endpoint=fake.endpoint,
                              components=["model_index", "tokenizer", "audio_vae"])
    by_path = {r.path: r for r in report.files}
    weights = by_path["audio_vae/diffusion_pytorch_model.safetensors"]
    assert weights.status == "downloaded" and weights.check == "sha256" and weights.size == len(WEIGHTS)
    assert (target / weights.path).read_bytes() == WEIGHTS
    assert by_path["model_index.json"].check == "git sha1"
    assert by_path["tokenizer/spiece.model"].status.startswith("skipped")
    assert not (target / "tokenizer/spiece.model").exists()
    assert "audio_vae/config.json" in report.summary()


@pytest.mark.parametrize("attempts", [3, 1])
def test_interrupted_download_resumes_with_a_range_request(roots, attempts, monkeypatch):
    import huggingface_hub.constants
    # Small read chunks, so the half-sent file leaves a partial file behind (real files are GBs).
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 1 << 16)
    models, target = roots
    path = "audio_vae/diffusion_pytorch_model.safetensors"
    with FakeHub({REPO: repo_files()}) as fake:
        fake.drop_once.add(path)
        if attempts == 1:       # the first run fails and says so; running again resumes
            with pytest.raises(DownloadError, match="resumes where it stopped"):
                hub.download("MOVA-360p", target, [models], confirm=True, endpoint=fake.endpoint,
                             components=["audio_vae"], attempts=1)
            assert not (target / path).exists()
        hub.download("MOVA-360p", target, [models], confirm=True, endpoint=fake.endpoint,
                     components=["audio_vae"], attempts=attempts)
    ranges = [rng for method, p, rng in fake.gets() if p.endswith(path) and rng]
    partial = (len(WEIGHTS) // 2) // (1 << 16) * (1 << 16)    # whole chunks written before the cut
    assert ranges == [f"bytes={partial}-"] and partial > 0
    assert hashlib.sha256((target / path).read_bytes()).hexdigest() == hashlib.sha256(WEIGHTS).hexdigest()


def test_second_run_finds_files_present_without_downloading(roots):
    models, target = roots
    with FakeHub({REPO: repo_files()}) as fake:
        hub.download("MOVA-360p", target, [models], confirm=True, endpoint=fake.endpoint, components=["audio_vae"])
        n_gets = len(fake.gets())
        report = hub.download("MOVA-360p", target, [models], confirm=True, endpoint=fake.endpoint,
                              components=["audio_vae"])
        assert len(fake.gets()) == n_gets
    assert {r.status for r in report.files} == {"present"}


def test_content_not_matching_the_hub_hash_is_rejected(roots):
    models, target = roots
    with FakeHub({REPO: repo_files()}) as fake:
        fake.corrupt.add("audio_vae/diffusion_pytorch_model.safetensors")
        with pytest.raises(DownloadError, match="sha256 .* does not match"):
            hub.download("MOVA-360p", target, [models], confirm=True, endpoint=fake.endpoint,
                         components=["audio_vae"])


def test_size_differing_from_the_spec_is_rejected(tmp_path):
    # 720p audio_vae is 743,102,794 B per the spec; a Hub serving something else must be refused.
    repo720 = hub.REPOS["MOVA-720p"]
    files = {f.path: b"{}" for f in hub.manifest("MOVA-720p", ["audio_vae"])}
    with FakeHub({repo720: files}) as fake:
        with pytest.raises(DownloadError, match="743102794 B"):
            hub.download("MOVA-720p", tmp_path / "m" / "x", [tmp_path / "m"], confirm=True,
                         endpoint=fake.endpoint, components=["audio_vae"])
        assert not [r for r in fake.gets() if r[1].endswith(".safetensors")]


def test_missing_required_file_says_layout_changed(roots):
    models, target = roots
    with FakeHub({REPO: repo_files(skip={"audio_vae/config.json"})}) as fake:
        with pytest.raises(DownloadError, match="has no file audio_vae/config.json"):
            hub.download("MOVA-360p", target, [models], confirm=True, endpoint=fake.endpoint,
                         components=["audio_vae"])


def test_offline_gives_a_clear_error_and_writes_nothing(roots):
    models, target = roots
    with socket.socket() as s:                       # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(DownloadError, match="cannot reach the Hugging Face Hub") as err:
        hub.download("MOVA-360p", target, [models], confirm=True, endpoint=dead, components=["audio_vae"])
    assert "huggingface.co/OpenMOSS-Team/MOVA-360p" in str(err.value)
    assert not target.exists() or not any(target.rglob("*.safetensors"))


def test_never_downloads_without_confirm(roots):
    models, target = roots
    with FakeHub({REPO: repo_files()}) as fake:
        with pytest.raises(DownloadError, match="not confirmed"):
            hub.download("MOVA-360p", target, [models], confirm=False, endpoint=fake.endpoint)
        assert fake.requests == []
    text = hub.plan("MOVA-360p", target, [models], components=["audio_vae"])
    assert "missing  audio_vae/diffusion_pytorch_model.safetensors" in text and "Nothing was downloaded" in text


def test_plan_shows_each_size_from_the_hub_and_the_totals(roots):
    """confirm off: one paths-info request for the sizes, nothing downloaded (issue 25, item 5)."""
    models, target = roots
    (target / "audio_vae").mkdir(parents=True)
    (target / "audio_vae" / "config.json").write_bytes(repo_files()["audio_vae/config.json"])
    with FakeHub({REPO: repo_files(skip={"tokenizer/spiece.model"})}) as fake:
        sizes = hub.hub_sizes("MOVA-360p", ["tokenizer", "audio_vae"], endpoint=fake.endpoint)
        assert fake.gets() == [] and [r[0] for r in fake.requests] == ["HEAD", "POST"]   # probe + one listing
    config = len(repo_files()["audio_vae/config.json"])
    assert sizes["audio_vae/diffusion_pytorch_model.safetensors"] == len(WEIGHTS)
    assert "tokenizer/spiece.model" not in sizes
    text = hub.plan("MOVA-360p", target, [models], components=["tokenizer", "audio_vae"], sizes=sizes)
    lines = text.splitlines()
    assert "  missing  audio_vae/diffusion_pytorch_model.safetensors (1.0 MB)" in lines
    assert f"  present  audio_vae/config.json ({config} B)" in lines
    assert "  missing  tokenizer/spiece.model (not on the Hub, skipped)" in lines
    total = sum(sizes.values())
    assert f"In all {hub.size_text(total)}, of which {hub.size_text(total - config)} still to download." in lines
    assert "size from Hub" not in text and not any((target / "audio_vae").glob("*.safetensors"))
    assert hub.size_text(9_876_543_210) == "9.88 GB" and hub.size_text(2_400_000) == "2.4 MB"


def test_plan_offline_says_why_sizes_are_missing(roots, black_hole):
    models, target = roots
    with pytest.raises(DownloadError, match="cannot reach the Hugging Face Hub") as err:
        hub.hub_sizes("MOVA-360p", ["audio_vae"], endpoint=black_hole)
    text = hub.plan("MOVA-360p", target, [models], components=["audio_vae"], sizes_unavailable=str(err.value))
    assert "Sizes not shown: cannot reach the Hugging Face Hub" in text and "Nothing was downloaded" in text


@pytest.mark.parametrize("where", ["outside", "dotdot", "no_roots"])
def test_refuses_targets_outside_the_allowed_roots(tmp_path, where):
    models = tmp_path / "models"
    models.mkdir()
    target = {"outside": tmp_path / "elsewhere", "dotdot": models / ".." / "escape"}.get(where, models / "x")
    allowed = [] if where == "no_roots" else [models]
    with pytest.raises(DownloadError, match="refusing|no allowed download roots"):
        hub.download("MOVA-360p", target, allowed, confirm=True, endpoint="http://127.0.0.1:9")
    assert not target.exists()


def test_manifest_and_frontend_entries():
    files = hub.manifest("MOVA-720p")
    paths = {f.path for f in files}
    assert "video_dit_2/diffusion_pytorch_model-00003-of-00003.safetensors" in paths
    assert "text_encoder/model-00001-of-00003.safetensors" in paths
    sizes = {f.path: f.size for f in files if f.size}
    assert sizes == {"audio_dit/diffusion_pytorch_model.safetensors": 2_838_470_672,
                     "audio_vae/diffusion_pytorch_model.safetensors": 743_102_794}
    entries = hub.frontend_model_entries("MOVA-360p", "mova", ["audio_dit"])
    assert entries == [{"name": "MOVA-360p/audio_dit/diffusion_pytorch_model.safetensors",
                        "url": "https://huggingface.co/OpenMOSS-Team/MOVA-360p/resolve/main/audio_dit/"
                               "diffusion_pytorch_model.safetensors",
                        "directory": "mova"}]
    with pytest.raises(DownloadError, match="unknown MOVA variant"):
        hub.manifest("MOVA-1080p")
    with pytest.raises(DownloadError, match="unknown component"):
        hub.manifest("MOVA-360p", ["vae"])


@pytest.fixture
def black_hole():
    """A loopback port that accepts connections (the kernel completes the handshake) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def test_black_holed_hub_fails_within_seconds_and_writes_nothing(roots, black_hole):
    import time
    models, target = roots
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="accepted the connection but did not answer") as err:
        hub.download("MOVA-360p", target, [models], confirm=True, endpoint=black_hole, components=["audio_vae"])
    took = time.monotonic() - t0
    assert took < hub.CONNECT_TIMEOUT + hub.PROBE_TIMEOUT + 1, took
    assert "huggingface.co/OpenMOSS-Team/MOVA-360p" in str(err.value)
    assert not target.exists() or not any(p.is_file() for p in target.rglob("*"))


def test_stop_between_chunks_keeps_only_a_part_file_and_the_next_run_resumes(roots):
    models, target = roots
    path = "audio_vae/diffusion_pytorch_model.safetensors"
    calls = []

    def stop_after_a_few_chunks():
        calls.append(1)
        return len(calls) > 6            # the file checks + a few chunks of the weights, then "Cancel"
    with FakeHub({REPO: repo_files()}) as fake:
        with pytest.raises(DownloadError, match="stopped on request"):
            hub.download("MOVA-360p", target, [models], confirm=True, endpoint=fake.endpoint,
                         components=["audio_vae"], should_stop=stop_after_a_few_chunks)
        part = target / (path + ".part")
        assert not (target / path).exists()                     # nothing that looks complete
        assert part.is_file() and 0 < part.stat().st_size < len(WEIGHTS)
        kept = part.stat().st_size
        report = hub.download("MOVA-360p", target, [models], confirm=True, endpoint=fake.endpoint,
                              components=["audio_vae"])
    assert [rng for m, p, rng in fake.gets() if p.endswith(path) and rng] == [f"bytes={kept}-"]
    assert (target / path).read_bytes() == WEIGHTS and not part.exists()
    assert {r.path: r.status for r in report.files} == {"audio_vae/config.json": "present", path: "downloaded"}


def test_a_stop_that_raises_propagates_before_any_request(roots, black_hole):
    class Interrupted(Exception):
        pass

    def comfy_cancel():
        raise Interrupted()
    models, target = roots
    with pytest.raises(Interrupted):
        hub.download("MOVA-360p", target, [models], confirm=True, endpoint=black_hole, components=["audio_vae"],
                     should_stop=comfy_cancel)

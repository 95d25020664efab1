"""Multi-GPU sessions on CPU (issue 28): this process is rank 0, worker processes (scripts/mova_worker.py)
the others, gloo. Outputs equal one process; failures name the rank, stop the others, leave no orphans."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

import parallel_ranks
from mova_pack.common.errors import InputError, SamplingStopped
from mova_pack.models.net.generator import save_generator
from mova_pack.models.sampling import conditioning as cond
from mova_pack.models.sampling.generate import generate
from mova_pack.models.sampling.guidance import DualGuidance, GuidanceSettings
from mova_pack.models.sampling.sampler import SamplerSettings
from mova_pack.runtime import multigpu
from mova_pack.runtime.loading import load, settings_from_options

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = {"dtype": "fp32", "quantization": "none", "offload": "none", "resident_layers": 40}
WIDTH, HEIGHT, FRAMES, FPS = 80, 48, 9, 24.0      # latent 3 x 6 x 10: 45 video tokens (padded on 2 ranks)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mova_tiny4")
    save_generator(parallel_ranks.seeded_generator(heads=4), folder)
    return folder


@pytest.fixture(scope="module")
def generator(model_folder):
    settings = settings_from_options("fp32", "none", "none", 40, "cpu")
    return load(folder=model_folder, settings=settings).generator


def _request(gen, steps=3, **guidance):
    g = torch.Generator().manual_seed(11)
    text_dim = gen.config.video_dit.text_dim
    video_shape, _ = cond.latent_shapes(gen.config, WIDTH, HEIGHT, FRAMES, FPS)
    guide = DualGuidance(GuidanceSettings(video_text_scale=4.0, audio_text_scale=3.0, a2v_scale=2.0,
                                          v2a_scale=1.5, **guidance))
    return dict(positive=torch.randn(1, 7, text_dim, generator=g), negative=torch.randn(1, 7, text_dim, generator=g),
                y=torch.randn(1, 20, *video_shape[2:], generator=g), width=WIDTH, height=HEIGHT, frames=FRAMES,
                fps=FPS, settings=SamplerSettings(steps=steps, seed=5, video_fps=FPS), guidance=guide)


def _session(folder, devices=("cpu", "cpu"), strategy="auto", **kw):
    settings = multigpu.MultiGPUSettings(devices=devices, strategy=strategy, timeout_s=120, **kw)
    return multigpu.RankSession(settings, {"folder": str(folder), "options": OPTIONS}).start()


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def _worker_children():
    """mova_worker.py processes this test process started and that still run (orphans if any remain)."""
    return [c for c in psutil.Process().children(recursive=True)
            if c.status() != psutil.STATUS_ZOMBIE and any("mova_worker.py" in a for a in c.cmdline())]


def _alive(pids):
    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("strategy", ["sequence", "guidance"])
def test_two_ranks_equal_one_process(model_folder, generator, strategy):
    reference = generate(generator, **_request(generator))
    session = _session(model_folder, strategy=strategy)
    try:
        steps = []
        video, audio = session.sample(generator, _request(generator), on_step=steps.append)
        assert [s.index for s in steps] == [0, 1, 2]          # progress on rank 0 as on one device
        assert _rel(video, reference[0]) <= 1e-5 and _rel(audio, reference[1]) <= 1e-5
        again = session.sample(generator, _request(generator))  # the session serves a second run
        assert _rel(again[0], reference[0]) <= 1e-5
    finally:
        pids = session.worker_pids
        session.stop()
    assert not _alive(pids)


def test_interrupt_stops_every_rank_and_the_session_goes_on(model_folder, generator):
    session = _session(model_folder, strategy="sequence")
    try:
        calls = []

        def should_stop():   # ComfyUI's interrupt raises from here, at step 2
            calls.append(1)
            if len(calls) == 2:
                raise SamplingStopped("interrupted by the user")
            return False
        with pytest.raises(SamplingStopped):
            session.sample(generator, _request(generator), should_stop=should_stop)
        assert session.alive and all(p.poll() is None for p in session.procs.values())
        video, _ = session.sample(generator, _request(generator, steps=2))   # next run on the same workers
        assert torch.isfinite(video).all()
    finally:
        session.stop()


def test_worker_killed_mid_run_names_the_rank_and_leaves_no_orphans(model_folder, generator):
    session = _session(model_folder, devices=("cpu", "cpu", "cpu"), strategy="guidance")
    pids = session.worker_pids

    def kill_rank_2(info):
        if info.index == 0:
            os.kill(session.procs[2].pid, signal.SIGKILL)
    with pytest.raises(multigpu.WorkerFailed, match=r"rank 2 \(cpu\).*SIGKILL.*next run starts a fresh"):
        session.sample(generator, _request(generator, steps=3), on_step=kill_rank_2)
    time.sleep(0.5)
    assert not _alive(pids) and not session.alive and not _worker_children()
    fresh = _session(model_folder, strategy="sequence")      # the next run starts fresh
    try:
        video, _ = fresh.sample(generator, _request(generator, steps=2))
        assert torch.isfinite(video).all()
    finally:
        fresh.stop()


def test_worker_that_cannot_load_is_reported(tmp_path, generator):
    (tmp_path / "empty").mkdir()
    with pytest.raises(multigpu.WorkerFailed, match=r"rank 1 failed to load the model: .*"):
        _session(tmp_path / "empty")
    assert not torch.distributed.is_initialized() and not _worker_children()


def test_bad_settings_are_clear_errors():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(InputError, match=r"port \d+ is in use.*port 0"):
            multigpu.check_port(busy.getsockname()[1], "127.0.0.1")
    with pytest.raises(InputError, match=r"name GPU 3 but this machine has 2 CUDA devices"):
        multigpu.device_names("0,3", cuda_count=2)
    with pytest.raises(InputError, match=r"must be the device ComfyUI runs the model on"):
        multigpu.check_first_device(multigpu.MultiGPUSettings(devices=("cuda:1", "cuda:0")), torch.device("cuda:0"))
    assert multigpu.device_names("cpu, cpu") == ("cpu", "cpu")
    assert multigpu.device_names("0,cuda:1", cuda_count=2) == ("cuda:0", "cuda:1")


def test_remote_rank_over_env_rendezvous(model_folder, generator):
    """A second machine's rank, started by hand with env:// variables (here on the same machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="1", WORLD_SIZE="2")
    worker = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "mova_worker.py"), "--device", "cpu"], env=env)
    try:
        session = _session(model_folder, devices=("cpu",), remote_ranks=1, port=port, strategy="sequence")
        try:
            reference = generate(generator, **_request(generator, steps=2))
            video, audio = session.sample(generator, _request(generator, steps=2))
            assert _rel(video, reference[0]) <= 1e-5 and _rel(audio, reference[1]) <= 1e-5
        finally:
            session.stop()
        assert worker.wait(timeout=20) == 0          # the "stop" command ends the remote rank cleanly
    finally:
        if worker.poll() is None:
            worker.kill()


def test_ranks_load_quantized_and_streamed_like_rank_0(model_folder, tmp_path):
    """Each worker loads through the same path with the loader's options: fp8 + layers streamed from
    disk (quantized copy in the cache folder) gives the result of one process loaded the same way."""
    options = dict(OPTIONS, dtype="bf16", quantization="fp8_e4m3fn", offload="disk", resident_layers=1)
    settings = settings_from_options("bf16", "fp8_e4m3fn", "disk", 1, "cpu", tmp_path / "cache")
    gen = load(folder=model_folder, settings=settings)
    reference = generate(gen.generator, **_request(gen.generator, steps=2))
    session = multigpu.RankSession(
        multigpu.MultiGPUSettings(devices=("cpu", "cpu"), strategy="guidance", timeout_s=120),
        {"folder": str(model_folder), "options": options, "cache_dir": str(tmp_path / "cache")}).start()
    try:
        video, audio = session.sample(gen.generator, _request(gen.generator, steps=2))
    finally:
        session.stop()
    assert gen.engine is not None
    assert _rel(video, reference[0]) <= 1e-5 and _rel(audio, reference[1]) <= 1e-5

"""MOVA Multi-GPU inside the real ComfyUI (issue 28): the shipped toy workflow on 2 CPU ranks gives the
latents and mp4 frames of 1 rank; bad settings are refused at validation; freeing the model stops the
workers; older graphs without the node are unchanged (the node is only inserted)."""
import av
import numpy as np
import psutil
import pytest
import torch

from conftest import WORKFLOWS, load_workflow


def _pack_multigpu():
    """runtime/multigpu as ComfyUI imported it (under the custom node folder's name, not mova_pack)."""
    import sys
    return next(m for name, m in sys.modules.items()
                if name.endswith(".runtime.multigpu") and not name.startswith("mova_pack"))


def _prompt(comfy, multi_gpu: dict | None):
    prompt = comfy.convert(load_workflow(WORKFLOWS / "text_to_video_audio.json"))
    loader = next(k for k, v in prompt.items() if v["class_type"] == "MOVAModelLoader")
    sampler = next(k for k, v in prompt.items() if v["class_type"] == "MOVASampler")
    prompt[sampler]["inputs"].update(seed=21, steps=3)
    if multi_gpu is not None:
        prompt["950"] = {"class_type": "MOVAMultiGPU", "inputs": dict({"model": [loader, 0]}, **multi_gpu)}
        prompt[sampler]["inputs"]["model"] = ["950", 0]
    return prompt, sampler


def _frames(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.float32)


def _mp4(comfy, result):
    return next(comfy.output_path(f) for f in result.files() if f["filename"].endswith(".mp4"))


def test_two_cpu_ranks_give_the_frames_of_one(comfy):
    one, sampler = _prompt(comfy, None)
    single = comfy.run(one, outputs=None)
    assert single.success, single.execution_error()
    single_latent = comfy.run(one, outputs=[sampler]).values[sampler][0][0]

    two, sampler = _prompt(comfy, {"devices": "cpu,cpu", "strategy": "sequence", "port": 0})
    multi = comfy.run(two)
    assert multi.success, multi.execution_error()
    texts = [t for n, t in comfy.stub.progress_text if n == "950"]
    assert texts and texts[0].startswith("2 ranks: cpu, cpu · sequence")
    steps = [d["value"] for e, d in comfy.stub.messages if e == "progress" and d["node"] == sampler]
    assert steps[-1] == 3                                   # the progress bar ran on rank 0
    multigpu = _pack_multigpu()
    session = multigpu.current_session()
    assert session is not None and session.alive
    pids = session.worker_pids

    multi_latent = comfy.run(two, outputs=[sampler]).values[sampler][0][0]
    for a, b in ((multi_latent.video, single_latent.video), (multi_latent.audio, single_latent.audio)):
        assert ((a - b).norm() / b.norm()).item() <= 1e-5
    # same clip: libx264 is not bit-repeatable run to run, so decoded frames within a small tolerance
    f1, f2 = _frames(_mp4(comfy, single)), _frames(_mp4(comfy, multi))
    assert f1.shape == f2.shape
    assert np.abs(f1 - f2).mean() <= 1.0, np.abs(f1 - f2).mean()

    # ComfyUI's "free model and node cache": the workers stop
    import comfy.model_management as mm
    mm.unload_all_models()
    assert multigpu.current_session() is None
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("inputs,expected", [
    ({"devices": "0,1,2,3,4,5,6,7,8,9"}, "CUDA device"),
    ({"devices": "cpu,0"}, "mix CUDA indices and 'cpu'"),
    ({"strategy": "ring"}, "is not one of the choices"),
    ({"port": 70000}, "above the maximum"),
])
def test_bad_settings_refused_at_validation(comfy, inputs, expected):
    prompt, _ = _prompt(comfy, dict({"devices": "cpu,cpu", "strategy": "auto", "port": 0}, **inputs))
    result = comfy.run(prompt)
    assert not result.valid
    assert expected in str(result.node_errors.get("950"))


def test_heads_the_ranks_cannot_split_are_a_clear_run_error(comfy):
    """The toy's video tower has 4 heads: 3 sequence ranks cannot split them (refused before any worker)."""
    multigpu = _pack_multigpu()
    prompt, _ = _prompt(comfy, {"devices": "cpu,cpu,cpu", "strategy": "sequence", "port": 0})
    result = comfy.run(prompt)
    assert not result.success
    message = result.execution_error()["exception_message"]
    assert "3 devices cannot run strategy 'sequence'" in message, message
    session = multigpu.current_session()
    if session is not None:
        multigpu.stop_session()
    assert torch.distributed.is_initialized() is False


def test_cancel_stops_every_rank_and_the_workers_serve_the_next_run(comfy):
    multigpu = _pack_multigpu()
    prompt, sampler = _prompt(comfy, {"devices": "cpu,cpu", "strategy": "sequence", "port": 0})
    comfy.interrupt_at_progress = (sampler, 1)
    try:
        cancelled = comfy.run(prompt, outputs=[sampler])
    finally:
        comfy.interrupt_at_progress = None
    assert not cancelled.success
    assert any(e == "execution_interrupted" for e, _ in cancelled.messages)
    session = multigpu.current_session()
    assert session is not None and session.alive
    pids = session.worker_pids
    again = comfy.run(prompt, outputs=[sampler])
    assert again.success, again.execution_error()
    assert multigpu.current_session().worker_pids == pids        # the same workers ran it
    multigpu.stop_session()


def test_a_worker_dying_mid_run_fails_the_run_and_the_next_run_starts_fresh(comfy):
    import os
    import signal
    import threading
    import time
    multigpu = _pack_multigpu()
    prompt, sampler = _prompt(comfy, {"devices": "cpu,cpu", "strategy": "guidance", "port": 0})
    killed = []

    def kill_rank_1_after_the_first_step():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not killed:
            session = multigpu.current_session()
            stepped = any(e == "progress" and d.get("node") == sampler for e, d in list(comfy.stub.messages))
            if session is not None and session.alive and stepped:
                killed.append(session.procs[1].pid)
                os.kill(killed[0], signal.SIGKILL)
            time.sleep(0.05)
    watcher = threading.Thread(target=kill_rank_1_after_the_first_step, daemon=True)
    watcher.start()
    failed = comfy.run(prompt, outputs=[sampler])
    watcher.join(timeout=5)
    assert killed and not failed.success
    message = failed.execution_error()["exception_message"]
    assert "rank 1 (cpu)" in message and "SIGKILL" in message and "next run starts a fresh" in message, message
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE
    fresh = comfy.run(prompt, outputs=[sampler])                  # ComfyUI kept serving
    assert fresh.success, fresh.execution_error()
    assert killed[0] not in multigpu.current_session().worker_pids
    multigpu.stop_session()

"""Soak the real ComfyUI server with the pack: host RAM over repeated runs, and how many sampler steps
run after Cancel. Prints one JSON object (the figures in docs/bad-input.md come from it).

    .venv/bin/python scripts/server_soak.py [--runs 20] [--steps 3] [--frames 17]

- leak: the shipped text-to-video+audio graph (mp4 output removed; short clip) run `--runs` times with a
  new seed each time (sampler and decoders recompute; loaders stay cached, as for a user), the server
  process's private RSS (USS) read after each run; growth is measured from the second run (the first
  one allocates the working set).
- interrupt: a 12-step run; POST /interrupt right after the sampler reports step 2 (websocket progress);
  the figure is how many steps completed after that.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import comfy_host  # noqa: E402
import workflow_api  # noqa: E402

PLAIN = ROOT / "workflows" / "text_to_video_audio.json"


def graph(host, seed: int, steps: int, frames: int) -> dict:
    prompt = workflow_api.ui_to_api(json.loads(PLAIN.read_text()), host.object_info)
    prompt = {k: v for k, v in prompt.items() if v["class_type"] not in ("CreateVideo", "SaveVideo")}
    ids = {v["class_type"]: k for k, v in prompt.items()}
    prompt[ids["MOVASampler"]]["inputs"].update(seed=seed, steps=steps)
    prompt[ids["MOVALatent"]]["inputs"]["frames"] = frames
    prompt["preview"] = {"class_type": "PreviewAudio", "inputs": {"audio": [ids["MOVADecodeAudio"], 0]}}
    return prompt


def uss(pid: int) -> int:
    return psutil.Process(pid).memory_full_info().uss


def leak(host, runs: int, steps: int, frames: int) -> dict:
    usage = []
    for i in range(runs):
        host.run(graph(host, 1000 + i, steps, frames), timeout=900)
        usage.append(uss(host.proc.pid))
    base = usage[1] if runs > 1 else usage[0]
    return {"runs": runs, "uss_mb": [round(u / 2**20, 1) for u in usage],
            "growth_pct_from_run_2": round(100.0 * (max(usage[1:]) - base) / base, 2) if runs > 1 else 0.0}


async def interrupt(host, steps: int, frames: int, at_step: int = 2) -> dict:
    import aiohttp
    prompt = graph(host, 4242, steps, frames)
    sampler = next(k for k, v in prompt.items() if v["class_type"] == "MOVASampler")
    seen, interrupted_at, t_interrupt, t_done = [], None, None, None
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{host.url}/ws?clientId={host.client_id}") as ws:
            prompt_id = host.queue_prompt(prompt)
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                event = json.loads(msg.data)
                data = event.get("data", {})
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                if event["type"] == "progress" and data.get("node") == sampler:
                    seen.append(data["value"])
                    if data["value"] == at_step and interrupted_at is None:
                        interrupted_at, t_interrupt = at_step, time.monotonic()
                        await session.post(f"{host.url}/interrupt", json={})
                if event["type"] in ("execution_interrupted", "execution_error", "execution_success"):
                    t_done = time.monotonic()
                    result = event["type"]
                    break
    return {"steps": steps, "interrupted_after_step": interrupted_at, "last_step_reported": max(seen or [0]),
            "steps_after_cancel": max(seen or [0]) - (interrupted_at or 0), "outcome": result,
            "seconds_to_stop": round(t_done - t_interrupt, 2) if t_interrupt else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--frames", type=int, default=17)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        host = comfy_host.ComfyHost(output_dir=tmp / "output", input_dir=tmp / "input", log_path=tmp / "log")
        (tmp / "input").mkdir()
        with host:
            host.object_info = host.get_json("/object_info")
            out = {"leak": leak(host, args.runs, args.steps, args.frames),
                   "interrupt": asyncio.run(interrupt(host, 12, args.frames))}
    print(json.dumps(out, indent=1))
    ok = out["leak"]["growth_pct_from_run_2"] <= 2.0 and out["interrupt"]["steps_after_cancel"] <= 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

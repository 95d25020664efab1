"""`make demo`: start the real ComfyUI headless on loopback, queue workflows/text_to_video_audio.json
over the HTTP API on the embedded default model, wait, print the written .mp4, stop the server."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_host  # noqa: E402
import workflow_api  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workflow", default=str(ROOT / "workflows" / "text_to_video_audio.json"))
    parser.add_argument("--prompt", default=None, help="replace the positive prompt of the workflow")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)

    ui = json.loads(Path(args.workflow).read_text())
    t0 = time.monotonic()
    with comfy_host.ComfyHost(log_path=ROOT / ".comfyui" / "demo-server.log") as host:
        print(f"ComfyUI {host.url} ready in {time.monotonic() - t0:.1f} s (pid {host.proc.pid})", flush=True)
        prompt = workflow_api.ui_to_api(ui, host.get_json("/object_info"))
        for node in prompt.values():
            if args.prompt and node.get("_meta", {}).get("title") == "Positive prompt":
                node["inputs"]["text"] = args.prompt
            if args.seed is not None and node["class_type"] == "MOVASampler":
                node["inputs"]["seed"] = args.seed
        t1 = time.monotonic()
        entry = host.run(prompt, timeout=1800)
        videos = [f for f in comfy_host.output_files(entry) if f["filename"].endswith(".mp4")]
        if not videos:
            print("the workflow finished but wrote no .mp4", file=sys.stderr)
            return 1
        out_dir = host.output_dir or (host.base_dir / "output")
        for f in videos:
            print(f"generated in {time.monotonic() - t1:.1f} s: {(out_dir / f['subfolder'] / f['filename']).resolve()}")
    print("server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

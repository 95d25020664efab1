"""Thumbnails of the shipped workflows for ComfyUI's template browser, from real runs.

Each workflows/<name>.json is run as it is (the embedded toy model, its fixed seed) in the real ComfyUI
(scripts/comfy_host.py, CPU, temp folders); the mp4 it saves becomes workflows/<name>.jpg: 8 frames
spread over the clip in a 4×2 grid above the soundtrack's waveform. The frontend (1.32) shows
custom-node templates with the thumbnail `/api/workflow_templates/<pack>/<name>.jpg`, which ComfyUI
serves from the pack's workflows/ folder. Same seed, same tensors (tests/comfy/test_server_determinism.py),
but not always the same JPEG: libx264 (PyAV 18.1, used by core SaveVideo) does not encode 64x64 frames
the same way twice (its lookahead; mbtree=0 or bframes=0 would fix it, SaveVideo exposes neither).

A workflow for a model that is not shipped (`extra.mova_requires`, e.g. MOVA-360p) cannot run here:
its thumbnail is a generated card that says what it needs, not a picture of a run.

    python scripts/make_thumbnails.py                 # every workflow (~20-60 s each on 2 CPU cores)
    python scripts/make_thumbnails.py --only text_to_video_audio
"""
from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import comfy_host
import workflow_api

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
TILE, COLUMNS, ROWS = 128, 4, 2          # 512 px wide: the template card's size class
WAVE_HEIGHT = 64
BACKGROUND, WAVE = (22, 58, 67), (184, 216, 224)   # the pack's node colours (web/mova.js)


def decode(mp4: bytes):
    """(frames [T,H,W,3] uint8, mono audio float32) of an mp4."""
    import av
    with av.open(io.BytesIO(mp4)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(io.BytesIO(mp4)) as container:
        chunks = [f.to_ndarray().astype(np.float32) for f in container.decode(audio=0)]
    audio = np.concatenate([c.reshape(c.shape[0], -1) if c.ndim == 2 else c[None] for c in chunks], axis=1)
    return frames, audio.mean(axis=0)


def waveform(audio: np.ndarray, width: int, height: int) -> Image.Image:
    """Min/max envelope per pixel column, scaled to the loudest sample."""
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    peak = float(np.abs(audio).max()) or 1.0
    mid = height / 2
    for x, column in enumerate(np.array_split(audio, width)):
        if column.size:
            top, bottom = mid - column.max() / peak * (mid - 2), mid - column.min() / peak * (mid - 2)
            draw.line([(x, top), (x, bottom)], fill=WAVE)
    return image


def thumbnail(frames: np.ndarray, audio: np.ndarray) -> Image.Image:
    count = COLUMNS * ROWS
    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    sheet = Image.new("RGB", (COLUMNS * TILE, ROWS * TILE + WAVE_HEIGHT), BACKGROUND)
    for i, index in enumerate(picks):
        tile = Image.fromarray(frames[index]).resize((TILE, TILE), Image.Resampling.NEAREST)
        sheet.paste(tile, ((i % COLUMNS) * TILE, (i // COLUMNS) * TILE))
    sheet.paste(waveform(audio, COLUMNS * TILE, WAVE_HEIGHT), (0, ROWS * TILE))
    return sheet


def needs_model_card(ui: dict) -> Image.Image:
    """The thumbnail of a workflow for a released model: what it needs and where to get it (ASCII
    sizes: Pillow's built-in font has no ×)."""
    release = ui["extra"]["mova_requires"]
    w, h, frames, fps = next(n for n in ui["nodes"] if n["type"] == "MOVALatent")["widgets_values"][:4]
    steps = next(n for n in ui["nodes"] if n["type"] == "MOVASampler")["widgets_values"][2]
    sheet = Image.new("RGB", (COLUMNS * TILE, ROWS * TILE + WAVE_HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    big, small = ImageFont.load_default(size=40), ImageFont.load_default(size=20)
    draw.rectangle([8, 8, sheet.width - 9, sheet.height - 9], outline=WAVE, width=3)
    draw.text((28, 26), release, font=big, fill=(255, 255, 255))
    lines = [f"{w} x {h} · {frames} frames at {fps:g} fps · {steps} steps",
             "Needs the released weights in",
             f"ComfyUI/models/mova/{release}/",
             "Get them: MOVA Download Models (confirm on)",
             f"or huggingface.co/{ui['models'][0]['url'].split('/')[3]}/{release}"]
    for i, line in enumerate(lines):
        draw.text((28, 96 + 38 * i), line, font=small, fill=WAVE if i != 2 else (232, 212, 138))
    return sheet


def run_workflow(host: comfy_host.ComfyHost, ui: dict) -> bytes:
    """The mp4 the workflow saves, run through the server like the frontend would queue it."""
    entry = host.run(workflow_api.ui_to_api(ui, host.get_json("/object_info")), timeout=1800)
    videos = [f for f in comfy_host.output_files(entry) if f["filename"].endswith(".mp4")]
    if len(videos) != 1:
        raise SystemExit(f"expected one mp4 from the workflow, got {videos}")
    return host.view(videos[0]["filename"], videos[0].get("subfolder", ""), videos[0].get("type", "output"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", help="workflow name (without .json); repeatable")
    args = parser.parse_args(argv)
    paths = [p for p in sorted(WORKFLOWS.glob("*.json")) if not args.only or p.stem in args.only]
    if not paths:
        raise SystemExit(f"no workflow matches {args.only}")
    tmp = Path(tempfile.mkdtemp(prefix="mova-thumbs-"))
    try:
        (tmp / "input").mkdir()
        shutil.copy(comfy_host.COMFY_DIR / "input" / "example.png", tmp / "input" / "example.png")
        for media in sorted((WORKFLOWS / "media").glob("*")):     # the templates' own inputs (toy-rendered)
            if media.is_file():
                shutil.copy(media, tmp / "input" / media.name)
        for path in [p for p in paths if "mova_requires" in json.loads(p.read_text()).get("extra", {})]:
            out = path.with_suffix(".jpg")
            needs_model_card(json.loads(path.read_text())).save(out, quality=88, optimize=True)
            print(f"{out.relative_to(ROOT)}: card (needs {json.loads(path.read_text())['extra']['mova_requires']})")
            paths.remove(path)
        for path in paths:      # a fresh server each: no model or cache state carried between graphs
            with comfy_host.ComfyHost(output_dir=tmp / "output", input_dir=tmp / "input",
                                      log_path=tmp / "comfyui.log") as host:
                frames, audio = decode(run_workflow(host, json.loads(path.read_text())))
                out = path.with_suffix(".jpg")
                thumbnail(frames, audio).save(out, quality=88, optimize=True)
                print(f"{out.relative_to(ROOT)}: {len(frames)} frames, {audio.size} audio samples, "
                      f"{out.stat().st_size // 1024} KB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

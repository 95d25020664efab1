"""The first-frame template's input image, rendered by the toy world (issue 25 item 7): frame 0 of a
held-out scene the embedded toy model can continue, with the ball high above the floor so the clip
visibly starts from it (drops, then bounces). Nodes copy workflows/media/* into ComfyUI's input folder.

    python scripts/make_first_frame.py    # writes workflows/media/mova_toy_first_frame.png, prints its caption

Held-out seeds (the toy's training draws seeds from 0 upwards); among SEEDS the scene starting highest.
"""
from __future__ import annotations

import sys
from pathlib import Path

import _pack  # noqa: F401  (registers mova_pack)
import numpy as np
from PIL import Image

from mova_pack.toy import scenes

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "workflows" / "media" / "mova_toy_first_frame.png"
SEEDS = range(9_000_003, 9_000_043)
LOOK = ("yellow", "ball", "metal")     # a metal clang, as the template's prompt says


def main() -> int:
    seed, best = max(((s, scenes.scene_for_seed(s, *LOOK)) for s in SEEDS), key=lambda p: (p[1].h0, -p[0]))
    clip = scenes.render(best)
    frame = (np.clip(clip.video[0], 0, 1) * 255 + 0.5).astype(np.uint8)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(OUT, optimize=True)
    print(f"{OUT.relative_to(ROOT)}: seed {seed}, {frame.shape[1]}x{frame.shape[0]}, "
          f"ball {best.h0:.0f} px above the floor; caption: {clip.caption}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

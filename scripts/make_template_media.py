"""The input clip and sound of the video-to-audio and audio-to-video templates, rendered by the toy world
(held-out seeds: the toy's training draws seeds from 0 upwards, these are far beyond any run's range).

    python scripts/make_template_media.py     # writes workflows/media/mova_toy_clip.mp4, mova_toy_sound.wav

The clip is a 64x64, 49-frame, 24 fps H.264 + AAC mp4 (its own sound is replaced by MOVA Video to
Audio); the sound is 16-bit 48 kHz mono WAV. Nodes copy both into ComfyUI's input folder (nodes/given.py).
"""
from __future__ import annotations

import sys
import wave
from pathlib import Path

import _pack  # noqa: F401  (registers mova_pack)
import numpy as np

from mova_pack.toy import scenes

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT / "workflows" / "media"
CLIP = ("mova_toy_clip.mp4", 9_000_001, "green", "ball", "metal")    # name, seed, colour, shape, sound
SOUND = ("mova_toy_sound.wav", 9_000_002, "red", "square", "drum")


def write_wav(audio: np.ndarray, sample_rate: int, path: Path) -> None:
    pcm = (np.clip(audio, -1, 1) * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())


def main() -> int:
    MEDIA.mkdir(parents=True, exist_ok=True)
    name, seed, colour, shape, sound = CLIP
    scenes.write_mp4(scenes.render(scenes.scene_for_seed(seed, colour, shape, sound)), MEDIA / name, scale=1)
    name, seed, colour, shape, sound = SOUND
    clip = scenes.render(scenes.scene_for_seed(seed, colour, shape, sound))
    write_wav(clip.audio, clip.sample_rate, MEDIA / name)
    for path in sorted(MEDIA.iterdir()):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

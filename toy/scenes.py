"""Seeded toy clips: a coloured ball or square bouncing under gravity, with a sound at every impact.

Video is 49 frames of 64x64 RGB at 24 fps in [0, 1] ([F, H, W, 3] float32); audio is 48 kHz mono in
[-1, 1] of length int(48000 * 49 / 24). Impacts (floor and walls) come from an exact event-driven
simulation, so their times are known below the frame and the sample. Everything derives from the seed.

Units: pixels and seconds. `h` is the height of the object's bottom above the floor's top edge.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .captions import COLOURS, SHAPES, SOUNDS, TEMPLATES, make_caption
from .sounds import mix_impacts

FPS = 24.0
FRAMES = 49
HEIGHT = WIDTH = 64
SAMPLE_RATE = 48000
N_SAMPLES = int(SAMPLE_RATE * FRAMES / FPS)
FLOOR_PX = 6                         # floor band at the bottom; objects land on its top edge
FLOOR_TOP = HEIGHT - FLOOR_PX
VIDEO_END_S = (FRAMES - 1) / FPS     # time of the last frame
EDGE_MARGIN_S = 2.0 / FPS            # no impacts this close to the clip ends (a bounce needs frames both sides)
MIN_GAP_S = 0.15                     # impacts closer than this would blur together for the detectors

RGB = {
    "red": (0.85, 0.15, 0.12),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.15, 0.30, 0.90),
    "yellow": (0.95, 0.85, 0.10),
}
FLOOR_RGB = {  # the surface is visible too, so video and sound agree on what is hit
    "wood": (0.55, 0.36, 0.20),
    "metal": (0.60, 0.62, 0.66),
    "glass": (0.72, 0.86, 0.90),
    "drum": (0.86, 0.78, 0.60),
}


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    sound: str
    seed: int                # textures and sound details
    template: int            # caption wording
    size: float              # radius (ball) or half side (square), px
    x0: float                # centre x at t=0, px
    h0: float                # bottom height above the floor at t=0, px
    vx0: float               # px/s, right is positive
    vy0: float               # px/s, up is positive
    gravity: float           # px/s^2
    restitution: float       # floor bounce speed ratio
    wall_restitution: float
    background: tuple[float, float, float]
    gradient: float          # vertical brightness slope of the background

    @property
    def caption(self) -> str:
        return make_caption(self.colour, self.shape, self.sound, self.template)


@dataclass(frozen=True, eq=False)
class Clip:
    video: np.ndarray        # [F, H, W, 3] float32 in [0, 1]
    audio: np.ndarray        # [N] float32 in [-1, 1]
    impacts_s: list[float]   # exact impact times, seconds, ascending
    caption: str
    fps: float
    sample_rate: int
    impact_kinds: list[str] = field(default_factory=list)  # "floor" | "wall" per impact
    scene: Scene | None = None


@dataclass(frozen=True)
class Motion:
    """Piecewise free flight: segment i starts at t[i] with position (x, h) and velocity (vx, vy)."""

    t: np.ndarray
    x: np.ndarray
    h: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    g: np.ndarray            # 0 once the object rests
    impacts_s: list[float]
    kinds: list[str]
    speeds: list[float]

    def at(self, times) -> tuple[np.ndarray, np.ndarray]:
        """(x, h) at the given times."""
        times = np.asarray(times, dtype=np.float64)
        i = np.clip(np.searchsorted(self.t, times, side="right") - 1, 0, len(self.t) - 1)
        dt = times - self.t[i]
        return self.x[i] + self.vx[i] * dt, self.h[i] + self.vy[i] * dt - 0.5 * self.g[i] * dt * dt


def simulate(scene: Scene, t_end: float = N_SAMPLES / SAMPLE_RATE) -> Motion:
    """Event-driven flight with exact floor and wall collision times up to t_end."""
    lo, hi = scene.size, WIDTH - scene.size
    g = scene.gravity
    t, x, h, vx, vy, gg = 0.0, scene.x0, scene.h0, scene.vx0, scene.vy0, g
    seg = [(t, x, h, vx, vy, gg)]
    impacts, kinds, speeds = [], [], []
    for _ in range(200):
        s_floor = (vy + np.sqrt(vy * vy + 2 * gg * h)) / gg if gg > 0 else np.inf
        s_wall = (hi - x) / vx if vx > 0 else ((lo - x) / vx if vx < 0 else np.inf)
        s = min(s_floor, s_wall)
        if t + s >= t_end:
            break
        t += s
        x, h, vy = x + vx * s, h + vy * s - 0.5 * gg * s * s, vy - gg * s
        hit_floor, hit_wall = s_floor <= s + 1e-12, s_wall <= s + 1e-12
        speed = 0.0
        if hit_floor:
            h, speed = 0.0, -vy
            vy = scene.restitution * speed
            if vy < 5.0:  # too slow to leave the floor again: it rests (and rolls)
                vy, gg = 0.0, 0.0
            impacts.append(t), kinds.append("floor"), speeds.append(speed)
        if hit_wall:
            x = hi if vx > 0 else lo
            if not hit_floor:
                impacts.append(t), kinds.append("wall"), speeds.append(abs(vx))
            vx = -scene.wall_restitution * vx
        seg.append((t, x, h, vx, vy, gg))
    cols = np.array(seg, dtype=np.float64).T
    return Motion(*cols, impacts_s=impacts, kinds=kinds, speeds=speeds)


def _acceptable(scene: Scene, motion: Motion) -> bool:
    imp = np.array(motion.impacts_s)
    if len(imp) < 2 or imp[0] < EDGE_MARGIN_S or imp[-1] > VIDEO_END_S - EDGE_MARGIN_S:
        return False
    if len(imp) > 1 and np.diff(imp).min() < MIN_GAP_S:
        return False
    for kind, speed in zip(motion.kinds, motion.speeds):
        if speed < (60.0 if kind == "floor" else 20.0):  # a visible bounce / reversal
            return False
    # Highest point of each flight stays inside the frame.
    apex = np.where(motion.vy > 0, motion.h + motion.vy ** 2 / (2 * scene.gravity), motion.h)
    return bool(apex.max() <= FLOOR_TOP - 2 * scene.size - 2)


def sample_scene(rng: np.random.Generator, colour: str | None = None, shape: str | None = None,
                 sound: str | None = None) -> Scene:
    """A random scene (rejection-sampled so it has >= 2 well separated, visible impacts)."""
    colour = colour or COLOURS[rng.integers(len(COLOURS))]
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    sound = sound or SOUNDS[rng.integers(len(SOUNDS))]
    seed = int(rng.integers(2 ** 31))
    template = int(rng.integers(len(TEMPLATES)))
    for _ in range(1000):
        size = rng.uniform(3.5, 5.5) if shape == "ball" else rng.uniform(3.5, 5.0)
        g = rng.uniform(260.0, 420.0)
        grey, tint = rng.uniform(0.55, 0.85), rng.uniform(-0.06, 0.06, size=3)
        scene = Scene(
            colour, shape, sound, seed, template, size,
            x0=rng.uniform(size + 2, WIDTH - size - 2),
            h0=rng.uniform(14.0, FLOOR_TOP - 2 * size - 4),
            vx0=rng.choice([-1.0, 1.0]) * rng.uniform(25.0, 70.0),
            vy0=rng.uniform(-30.0, 60.0),
            gravity=g,
            restitution=rng.uniform(0.72, 0.9),
            wall_restitution=rng.uniform(0.8, 0.95),
            background=tuple(float(v) for v in np.clip(grey + tint, 0, 1)),
            gradient=rng.uniform(-0.12, 0.12),
        )
        if _acceptable(scene, simulate(scene)):
            return scene
    raise RuntimeError("toy scene sampler found no acceptable scene in 1000 tries (parameter ranges broken)")


def scene_for_seed(seed: int, colour: str | None = None, shape: str | None = None,
                   sound: str | None = None) -> Scene:
    """The scene of a seed (optionally forcing what the prompt asks for); same seed, same scene."""
    return sample_scene(np.random.default_rng(seed), colour, shape, sound)


def _background(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    rows = (np.arange(HEIGHT) + 0.5) / HEIGHT - 0.5
    bg = np.asarray(scene.background)[None, None, :] * (1.0 + scene.gradient * rows)[:, None, None]
    bg = np.broadcast_to(bg, (HEIGHT, WIDTH, 3)) + 0.008 * rng.standard_normal((HEIGHT, WIDTH, 1))
    floor = np.asarray(FLOOR_RGB[scene.sound]) * (1.0 + 0.04 * rng.standard_normal((FLOOR_PX, WIDTH, 1)))
    if scene.sound == "wood":   # plank seams
        floor[:, (np.arange(WIDTH) + int(rng.integers(16))) % 16 == 0] *= 0.7
    elif scene.sound == "drum":  # rim
        floor[-2:] *= 0.75
    floor[0] = np.minimum(floor[0] * 1.15, 1.0)  # lit top edge marks the surface
    return np.concatenate([bg[:FLOOR_TOP], floor], axis=0)


def _offsets(cx: np.ndarray, cy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre offsets from the object centre, broadcastable to [F, H, W] (float32 for speed)."""
    px = (np.arange(WIDTH, dtype=np.float32) + 0.5)[None, None, :] - cx.astype(np.float32)[:, None, None]
    py = (np.arange(HEIGHT, dtype=np.float32) + 0.5)[None, :, None] - cy.astype(np.float32)[:, None, None]
    return px, py


def _coverage(scene: Scene, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Anti-aliased object masks [F, H, W] from pixel offsets to the object centre."""
    edge = np.float32(scene.size + 0.5)
    if scene.shape == "ball":
        return np.clip(edge - np.sqrt(px * px + py * py), 0.0, 1.0)
    return np.clip(edge - np.abs(px), 0.0, 1.0) * np.clip(edge - np.abs(py), 0.0, 1.0)


def render(scene: Scene) -> Clip:
    """Video, audio and exact impact times of one scene (deterministic)."""
    rng = np.random.default_rng(scene.seed)
    motion = simulate(scene)
    x, h = motion.at(np.arange(FRAMES) / FPS)
    px, py = _offsets(x, FLOOR_TOP - scene.size - h)
    mask = _coverage(scene, px, py)[..., None]
    # Soft light from the top left so the object reads as solid, hue unchanged.
    shade = np.clip(1.0 - np.float32(0.12 / scene.size) * (px + py), 0.75, 1.15)[..., None]
    colour = (np.asarray(RGB[scene.colour]) * (1.0 + rng.uniform(-0.05, 0.05, size=3))).astype(np.float32)
    bg = _background(scene, rng).astype(np.float32)
    video = bg[None] + mask * (np.minimum(colour * shade, 1.0) - bg[None])
    strengths = np.clip(np.asarray(motion.speeds) / 200.0, 0.0, 1.0)
    audio = mix_impacts(scene.sound, motion.impacts_s, strengths, N_SAMPLES, rng, SAMPLE_RATE)
    return Clip(
        video=np.clip(video, 0.0, 1.0, out=video),
        audio=audio,
        impacts_s=[float(t) for t in motion.impacts_s],
        caption=scene.caption,
        fps=FPS,
        sample_rate=SAMPLE_RATE,
        impact_kinds=list(motion.kinds),
        scene=scene,
    )


def write_mp4(clip: Clip, path, scale: int = 4) -> None:
    """Save a clip as H.264 + AAC (48 kHz mono) mp4, frames enlarged `scale` times (nearest) to watch."""
    import av  # only the preview needs it

    frames = (np.clip(clip.video, 0, 1) * 255 + 0.5).astype(np.uint8)
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    with av.open(str(path), "w") as out:
        vstream = out.add_stream("libx264", rate=int(clip.fps))
        vstream.width, vstream.height = frames.shape[2], frames.shape[1]
        vstream.pix_fmt = "yuv420p"
        vstream.options = {"crf": "16"}
        astream = out.add_stream("aac", rate=clip.sample_rate)
        astream.layout = "mono"
        for frame in frames:
            out.mux(vstream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(vstream.encode())
        chunk = 1024  # AAC frame size
        for i in range(0, len(clip.audio), chunk):
            block = np.ascontiguousarray(clip.audio[None, i:i + chunk], dtype=np.float32)
            aframe = av.AudioFrame.from_ndarray(block, format="fltp", layout="mono")
            aframe.sample_rate, aframe.pts = clip.sample_rate, i
            out.mux(astream.encode(aframe))
        out.mux(astream.encode())


def main(argv=None) -> None:
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(description="Write a few toy clips as mp4 (with sound) to watch.")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n", type=int, default=3, help="number of clips")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--scale", type=int, default=4, help="pixel enlargement for viewing")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for seed in range(args.seed, args.seed + args.n):
        clip = render(scene_for_seed(seed))
        path = out / f"toy_{seed:04d}.mp4"
        write_mp4(clip, path, args.scale)
        meta = {"seed": seed, "caption": clip.caption, "impacts_s": clip.impacts_s, "kinds": clip.impact_kinds}
        (out / f"toy_{seed:04d}.json").write_text(json.dumps(meta, indent=1))
        print(f"{path}: {clip.caption} | impacts {', '.join(f'{t:.3f}' for t in clip.impacts_s)} s")


if __name__ == "__main__":
    main()

"""Shared bits of toy training: clip pools, resumable checkpoints, a step logger."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .. import scenes


def render_pool(first_seed: int, count: int):
    """Rendered clips for seeds first_seed .. first_seed+count-1 (random colour/shape/sound each)."""
    return [scenes.render(scenes.scene_for_seed(first_seed + i)) for i in range(count)]


def video_tensor(clip) -> torch.Tensor:
    """[F, H, W, 3] in [0, 1] -> [3, F, H, W] in [-1, 1]."""
    return torch.from_numpy(clip.video).permute(3, 0, 1, 2) * 2.0 - 1.0


def channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """Conv3d weights in channels_last_3d: 3-5x faster small-channel convs on CPU, same values."""
    for m in module.modules():
        if isinstance(m, torch.nn.Conv3d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last_3d)
    return module


class Checkpoint:
    """`<work>/<name>.ckpt.pt`: state dicts + step, written atomically; read back with weights_only."""

    def __init__(self, work: Path, name: str, every_s: float = 120.0):
        self.path = Path(work) / f"{name}.ckpt.pt"
        self.every_s, self.last = every_s, time.monotonic()

    def load(self, **objs) -> int:
        if not self.path.is_file():
            return 0
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        for key, obj in objs.items():
            obj.load_state_dict(state[key])
        if "rng" in state:
            torch.set_rng_state(state["rng"])
        return int(state["step"])

    def maybe_save(self, step: int, force: bool = False, **objs) -> None:
        if not force and time.monotonic() - self.last < self.every_s:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: o.state_dict() for k, o in objs.items()}
        state.update(step=step, rng=torch.get_rng_state())
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.path)
        self.last = time.monotonic()


class Log:
    """One JSON line per report in `<work>/<name>.log.jsonl`, echoed to stdout."""

    def __init__(self, work: Path, name: str):
        self.path = Path(work) / f"{name}.log.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic()

    def __call__(self, **row) -> None:
        row = {"t_s": round(time.monotonic() - self.t0, 1), **{k: (round(v, 5) if isinstance(v, float) else v)
                                                               for k, v in row.items()}}
        line = json.dumps(row)
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")


def rng_for(seed: int, step: int) -> np.random.Generator:
    """Per-step data randomness: the same step draws the same batch after a resume."""
    return np.random.default_rng([seed, step])

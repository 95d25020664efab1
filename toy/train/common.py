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


def draw_batch(rng: np.random.Generator, data: dict, b: int, text_drop: float):
    """One step's clip indices and caption ids; with probability text_drop a caption becomes the
    default negative or the empty prompt (the last two of data["prompts"]), so text CFG means something."""
    neg_ids = torch.tensor([len(data["prompts"]) - 2, len(data["prompts"]) - 1])
    idx = torch.from_numpy(rng.integers(0, len(data["video"]), size=b))
    ids = data["caption_ids"][idx].clone()
    drop = torch.from_numpy(rng.random(b) < text_drop)
    ids[drop] = neg_ids[torch.from_numpy(rng.integers(0, 2, size=b))][drop]
    return idx, ids


def optimise(loss: torch.Tensor, opt, sched, params: list) -> None:
    """Backward, clip the gradient norm to 1, one optimiser and one schedule step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()


@torch.no_grad()
def update_ema(ema_params, params, step: int, ema_decay: float) -> None:
    """EMA after `step` steps, with the usual warm-up of the decay."""
    decay = min(ema_decay, (1 + step) / (10 + step))
    for pe, pm in zip(ema_params, params):
        pe.lerp_(pm, 1 - decay)


def save_state(module: torch.nn.Module, path) -> None:
    """A module's state dict as one safetensors file."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(path))

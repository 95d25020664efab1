"""MovaGenerator: the two video experts, the audio tower and the Bridge; building, config resolution and
saving in the released layout (loading real weights is runtime/loading.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn as nn

from .bridge import DualTowerBridge
from ...common.checkpoint import save_component
from ..config import PRESETS, MovaConfig, load_component_config, load_mova_config
from .dit import AudioDiT, VideoDiT
from ...common.errors import ConfigError

# Folder names of the released layout -> attribute names on MovaGenerator.
COMPONENTS = {"video_dit": "video_high", "video_dit_2": "video_low", "audio_dit": "audio",
              "dual_tower_bridge": "bridge"}


class MovaGenerator(nn.Module):
    """video_high = video_dit (high-noise expert), video_low = video_dit_2 (low-noise), audio, bridge."""

    def __init__(self, config: MovaConfig, video_high: Optional[VideoDiT], video_low: Optional[VideoDiT],
                 audio: AudioDiT, bridge: DualTowerBridge):
        super().__init__()
        if video_high is None and video_low is None:
            raise ConfigError("MovaGenerator needs at least one video expert (video_dit or video_dit_2).")
        self.config = config
        self.video_high, self.video_low, self.audio, self.bridge = video_high, video_low, audio, bridge

    def expert(self, low_noise: bool) -> VideoDiT:
        """The expert for this phase; with only one expert loaded, that one serves both phases."""
        chosen = self.video_low if low_noise else self.video_high
        return chosen if chosen is not None else (self.video_high if low_noise else self.video_low)

    @property
    def device(self) -> torch.device:
        return self.audio.patch_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.audio.dtype


def build_component(name: str, config: MovaConfig) -> nn.Module:
    if name == "audio_dit":
        return AudioDiT(config.audio_dit)
    if name == "dual_tower_bridge":
        return DualTowerBridge(config.bridge)
    return VideoDiT(config.video_dit)


def build_generator(config: Union[MovaConfig, str], dtype=torch.float32, device="cpu", seed: int = None,
                    low_noise_expert: bool = True) -> MovaGenerator:
    """Randomly initialised generator (tests, toy-model training); runtime/loading.py loads real weights."""
    config = PRESETS[config] if isinstance(config, str) else config
    if seed is not None:
        torch.manual_seed(seed)
    parts = {n: (build_component(n, config) if n != "video_dit_2" or low_noise_expert else None) for n in COMPONENTS}
    gen = MovaGenerator(config, *(parts[n] for n in COMPONENTS))
    return gen.to(device=device, dtype=dtype).requires_grad_(False).eval()


def _component_config(source, name):
    """config.json beside the weights, or None."""
    src = Path(source) if isinstance(source, (str, Path)) else Path(list(source)[0])
    where = src if src.is_dir() else src.parent
    return load_component_config(where, name) if (where / "config.json").is_file() else None


def resolve_config(folder, sources, config) -> MovaConfig:
    base = PRESETS[config] if isinstance(config, str) and config in PRESETS else config
    if isinstance(config, str) and base is config:
        raise ConfigError(f"unknown preset {config!r}; expected one of {sorted(PRESETS)}.")
    if base is None and folder is not None and (folder / "audio_dit" / "config.json").is_file():
        base = load_mova_config(folder)
    found = {n: _component_config(s, n) for n, s in sources.items()}
    video = found.get("video_dit") or found.get("video_dit_2") or (base.video_dit if base else None)
    audio = found.get("audio_dit") or (base.audio_dit if base else None)
    bridge = found.get("dual_tower_bridge") or (base.bridge if base else None)
    if video is None or audio is None or bridge is None:
        raise ConfigError("no config.json next to the weights; pass config='mova-360p' (or 'mova-720p') or "
                          "keep each component's config.json beside its .safetensors file.")
    if found.get("video_dit") and found.get("video_dit_2") and found["video_dit"] != found["video_dit_2"]:
        raise ConfigError("video_dit and video_dit_2 config.json differ; both experts must share one architecture.")
    extra = {} if base is None else {k: getattr(base, k) for k in
                                     ("audio_vae", "video_vae", "text_encoder", "scheduler", "boundary_ratio")}
    return MovaConfig(video_dit=video, audio_dit=audio, bridge=bridge, **extra)


def save_generator(gen: MovaGenerator, folder, max_shard_bytes: int = None):
    """Write the released folder layout (model_index.json, scheduler/, one folder per component)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = gen.config
    index = {"_class_name": "MOVA", "audio_vae_type": "dac", "boundary_ratio": cfg.boundary_ratio}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(cfg.scheduler.to_dict(), indent=2))
    configs = {"video_dit": cfg.video_dit, "video_dit_2": cfg.video_dit, "audio_dit": cfg.audio_dit,
               "dual_tower_bridge": cfg.bridge}
    for name in ("audio_vae", "video_vae", "text_encoder"):  # configs only; their weights are saved elsewhere
        (folder / name).mkdir(exist_ok=True)
        if not (folder / name / "config.json").is_file():
            (folder / name / "config.json").write_text(json.dumps(getattr(cfg, name).to_dict(), indent=2))
    for name, attr in COMPONENTS.items():
        module = getattr(gen, attr)
        if module is not None:
            save_component(module, folder / name, configs[name].to_dict(), max_shard_bytes)

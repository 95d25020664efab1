"""Frozen configs for every MOVA component, read from each component's config.json.

Field names are the released ones (spec §1.2-1.6). A field missing from a file takes the default of the
official class that would read it (so a file lacking `vae_type` behaves as the official code would:
"oobleck" — which we refuse). Values we cannot run raise ConfigError instead of silently differing.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from ..common.errors import ConfigError

WAN21_LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                      0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


def _tuple(v):
    return tuple(_tuple(x) for x in v) if isinstance(v, (list, tuple)) else v


def _from_dict(cls, data: Mapping[str, Any], where: str, renames: Mapping[str, str] = None, **extra):
    """Build dataclass `cls` from `data`, keeping only its fields; required fields must be present."""
    renames = renames or {}
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        key = renames.get(key, key)
        if key in names:
            kwargs[key] = _tuple(value)
    kwargs.update(extra)
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing field(s) {', '.join(missing)}. Expected a MOVA "
                          f"{cls.__name__} config.json; re-download the component's config.json.")
    _check_numbers(cls, kwargs, where)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _check_numbers(cls, kwargs: dict, where: str) -> None:
    """Sizes, rates and epsilons are positive finite numbers: a config with num_layers -1 or
    sample_rate 0 is refused here, naming the field, not later as a weights or frame-count error."""
    for f in dataclasses.fields(cls):
        value = kwargs.get(f.name)
        kind = str(f.type).replace("Optional[", "").rstrip("]")
        if value is None or kind not in ("int", "float", "tuple"):
            continue
        items = value if kind == "tuple" else (value,)
        if kind == "tuple" and not isinstance(value, tuple):
            raise ConfigError(f"{where}: {f.name} = {value!r} should be a list; fix the config.json "
                              "or re-download it.")
        for item in items:
            if kind == "tuple" and (isinstance(item, bool) or not isinstance(item, int)):
                continue   # flags and float statistics (latents_mean) may be anything finite
            ok = (not isinstance(item, bool) and isinstance(item, (int, float)) and math.isfinite(item)
                  and item > 0 and (kind != "int" or item == int(item)))
            if not ok:
                want = "a positive whole number" if kind in ("int", "tuple") else "a positive number"
                raise ConfigError(f"{where}: {f.name} = {item!r} must be {want}; fix the config.json "
                                  "(values of the MOVA release: re-download it).")


def _refuse(where: str, name: str, found, expected, why: str):
    raise ConfigError(f"{where}: {name} = {found!r} is not supported (expected {expected!r}); {why}")


@dataclass(frozen=True)
class DiTConfig:
    """One tower (`kind` "video" = WanModel expert, "audio" = WanAudioModel)."""
    kind: str
    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    in_dim: int
    out_dim: int
    patch_size: tuple
    text_dim: int
    freq_dim: int
    eps: float
    vae_type: Optional[str] = None          # audio only; released "dac"
    has_image_input: bool = False
    seperated_timestep: bool = False        # (sic) released spelling
    fuse_vae_embedding_in_latents: bool = False

    def __post_init__(self):
        where = f"{self.kind}_dit config"
        if self.kind not in ("video", "audio"):
            _refuse(where, "kind", self.kind, "video|audio", "internal error")
        if self.dim % self.num_heads:
            _refuse(where, "dim", self.dim, f"a multiple of num_heads={self.num_heads}", "fix config.json")
        if self.head_dim % 2:
            _refuse(where, "head_dim", self.head_dim, "even", "RoPE rotates pairs of dimensions")
        if self.has_image_input:
            _refuse(where, "has_image_input", True, False, "MOVA towers have no CLIP image branch")
        if self.seperated_timestep or self.fuse_vae_embedding_in_latents:
            _refuse(where, "seperated_timestep/fuse_vae_embedding_in_latents", True, False,
                    "these Wan2.2-5B options are not used by MOVA")
        if self.kind == "video":
            if len(self.patch_size) != 3:
                _refuse(where, "patch_size", self.patch_size, "[1, 2, 2]", "video patches are 3-D")
            d = self.head_dim
            if (d - 2 * (d // 3)) % 2 or (d // 3) % 2:
                _refuse(where, "head_dim", d, "a split into even f/h/w parts (e.g. 128)",
                        "the 3-axis RoPE needs even per-axis widths")
        else:
            if len(self.patch_size) != 1:
                _refuse(where, "patch_size", self.patch_size, "[1]", "audio patches are 1-D")
            if self.vae_type != "dac":
                _refuse(where, "vae_type", self.vae_type, "dac",
                        "the legacy 'oobleck' RoPE is not used by released MOVA; read the real config.json")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], kind: str, where: str = None) -> "DiTConfig":
        defaults = {"vae_type": "oobleck"} if kind == "audio" else {}
        return _from_dict(cls, {**defaults, **data}, where or f"{kind}_dit config", kind=kind)

    def to_dict(self) -> dict:
        out = {"_class_name": "WanModel" if self.kind == "video" else "WanAudioModel"}
        for f in dataclasses.fields(self):
            if f.name == "kind" or (f.name == "vae_type" and self.kind == "video"):
                continue
            out[f.name] = list(self.patch_size) if f.name == "patch_size" else getattr(self, f.name)
        if self.kind == "video":
            out.update(require_vae_embedding=True, require_clip_embedding=False)
        return out


@dataclass(frozen=True)
class BridgeConfig:
    """DualTowerConditionalBridge (defaults are the official class defaults, not the released values)."""
    visual_layers: int = 30
    audio_layers: int = 30
    visual_hidden_dim: int = 3072
    audio_hidden_dim: int = 1536
    audio_fps: float = 44100 / 2048
    head_dim: int = 128
    interaction_strategy: str = "shallow_focus"
    apply_cross_rope: bool = False
    apply_first_frame_bias_in_rope: bool = False
    trainable_condition_scale: bool = False
    pooled_adaln: bool = False

    def __post_init__(self):
        where = "dual_tower_bridge config"
        if self.interaction_strategy != "full":
            _refuse(where, "interaction_strategy", self.interaction_strategy, "full",
                    "released MOVA bridges every shared layer; other strategies break the model")
        if self.pooled_adaln:
            _refuse(where, "pooled_adaln", True, False, "released MOVA does not use pooled AdaLN")
        if self.trainable_condition_scale:
            _refuse(where, "trainable_condition_scale", True, False,
                    "released MOVA has no learned condition scale")
        for name in ("visual_hidden_dim", "audio_hidden_dim"):
            if getattr(self, name) % self.head_dim:
                _refuse(where, name, getattr(self, name), f"a multiple of head_dim={self.head_dim}",
                        "fix config.json")
        if self.head_dim % 2:
            _refuse(where, "head_dim", self.head_dim, "even", "rotate-half RoPE splits the head in two")

    @property
    def interaction_layers(self) -> tuple:
        return tuple(range(min(self.visual_layers, self.audio_layers)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "dual_tower_bridge config") -> "BridgeConfig":
        return _from_dict(cls, data, where)

    def to_dict(self) -> dict:
        return {"_class_name": "DualTowerConditionalBridge", **dataclasses.asdict(self)}


@dataclass(frozen=True)
class SchedulerConfig:
    """FlowMatchPairScheduler config (defaults = official class defaults)."""
    shift: float = 3.0
    extra_one_step: bool = False
    num_train_timesteps: int = 1000
    sigma_max: float = 1.0
    sigma_min: float = 0.003 / 1.002
    inverse_timesteps: bool = False
    reverse_sigmas: bool = False
    exponential_shift: bool = False
    shift_terminal: Optional[float] = None

    def __post_init__(self):
        for name in ("inverse_timesteps", "reverse_sigmas", "exponential_shift"):
            if getattr(self, name):
                _refuse("scheduler config", name, True, False, "not used by released MOVA")
        if self.shift_terminal is not None:
            _refuse("scheduler config", "shift_terminal", self.shift_terminal, None,
                    "not used by released MOVA")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "scheduler config") -> "SchedulerConfig":
        return _from_dict(cls, data, where)

    def to_dict(self) -> dict:
        return {"_class_name": "FlowMatchPairScheduler", **dataclasses.asdict(self)}


@dataclass(frozen=True)
class AudioVAEConfig:
    """DAC audio VAE (spec §1.6)."""
    continuous: bool = True
    encoder_dim: int = 128
    encoder_rates: tuple = (2, 3, 4, 5, 8)
    latent_dim: int = 128
    decoder_dim: int = 2048
    decoder_rates: tuple = (8, 5, 4, 3, 2)
    sample_rate: int = 48000
    use_weight_norm: bool = False
    codebook_dim: int = 8
    codebook_size: int = 1024
    n_codebooks: int = 9
    quantizer_dropout: bool = False

    @property
    def hop_length(self) -> int:
        return math.prod(self.encoder_rates)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "audio_vae config") -> "AudioVAEConfig":
        return _from_dict(cls, data, where)

    def to_dict(self) -> dict:
        return {"_class_name": "DAC", **{k: list(v) if isinstance(v, tuple) else v
                                         for k, v in dataclasses.asdict(self).items()}}


@dataclass(frozen=True)
class VideoVAEConfig:
    """Wan 2.1 VAE (diffusers AutoencoderKLWan names; `temperal_downsample` is read as spelled there)."""
    z_dim: int = 16
    base_dim: int = 96
    dim_mult: tuple = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple = (False, True, True)
    latents_mean: tuple = WAN21_LATENTS_MEAN
    latents_std: tuple = WAN21_LATENTS_STD

    @property
    def spatial_stride(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_stride(self) -> int:
        return 2 ** sum(bool(x) for x in self.temporal_downsample)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "video_vae config") -> "VideoVAEConfig":
        return _from_dict(cls, data, where, renames={"temperal_downsample": "temporal_downsample"})

    def to_dict(self) -> dict:
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        d["temperal_downsample"] = d.pop("temporal_downsample")
        return {"_class_name": "AutoencoderKLWan", **d}


@dataclass(frozen=True)
class TextEncoderConfig:
    """umT5 encoder (HF UMT5Config names)."""
    d_model: int = 4096
    d_kv: int = 64
    d_ff: int = 10240
    num_layers: int = 24
    num_heads: int = 64
    vocab_size: int = 256384
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "gated-gelu"
    max_length: int = 512

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "text_encoder config") -> "TextEncoderConfig":
        return _from_dict(cls, data, where)

    def to_dict(self) -> dict:
        return {"architectures": ["UMT5EncoderModel"], **dataclasses.asdict(self)}


@dataclass(frozen=True)
class MovaConfig:
    video_dit: DiTConfig
    audio_dit: DiTConfig
    bridge: BridgeConfig
    audio_vae: AudioVAEConfig = field(default_factory=AudioVAEConfig)
    video_vae: VideoVAEConfig = field(default_factory=VideoVAEConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    scheduler: SchedulerConfig = field(default_factory=lambda: SchedulerConfig(shift=5.0, extra_one_step=True))
    boundary_ratio: float = 0.9

    def __post_init__(self):
        v, a, b = self.video_dit, self.audio_dit, self.bridge
        if v.kind != "video" or a.kind != "audio":
            raise ConfigError("MovaConfig: video_dit must be a video tower and audio_dit an audio tower.")
        found = (b.visual_layers, b.audio_layers, b.visual_hidden_dim, b.audio_hidden_dim)
        expected = (v.num_layers, a.num_layers, v.dim, a.dim)
        if found != expected:
            raise ConfigError(
                f"dual_tower_bridge config does not match the towers: (visual_layers, audio_layers, "
                f"visual_hidden_dim, audio_hidden_dim) = {found}, towers say {expected}. "
                "All components must come from the same MOVA release.")
        if v.text_dim != a.text_dim:
            raise ConfigError(f"text_dim differs between towers ({v.text_dim} vs {a.text_dim}).")
        if not 0.0 <= self.boundary_ratio <= 1.0:
            raise ConfigError(f"boundary_ratio = {self.boundary_ratio} must be within [0, 1].")


def read_json(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found. A MOVA folder has one config.json per component "
                          "(video_dit/, video_dit_2/, audio_dit/, dual_tower_bridge/, ...).")
    from ..common.files import read_json as read_object
    return read_object(path, path.name)


_COMPONENT_READERS = {
    "video_dit": lambda d, w: DiTConfig.from_dict(d, "video", w),
    "video_dit_2": lambda d, w: DiTConfig.from_dict(d, "video", w),
    "audio_dit": lambda d, w: DiTConfig.from_dict(d, "audio", w),
    "dual_tower_bridge": lambda d, w: BridgeConfig.from_dict(d, w),
    "audio_vae": lambda d, w: AudioVAEConfig.from_dict(d, w),
    "video_vae": lambda d, w: VideoVAEConfig.from_dict(d, w),
    "text_encoder": lambda d, w: TextEncoderConfig.from_dict(d, w),
    "scheduler": lambda d, w: SchedulerConfig.from_dict(d, w),
}


_CLASS_NAMES = {"video_dit": "WanModel", "video_dit_2": "WanModel", "audio_dit": "WanAudioModel",
                "dual_tower_bridge": "DualTowerConditionalBridge", "audio_vae": "DAC",
                "video_vae": "AutoencoderKLWan", "scheduler": "FlowMatchPairScheduler"}


def load_component_config(path, component: str):
    """Read `path` (a config.json, or a folder holding one) as the config of `component`."""
    path = Path(path)
    if path.is_dir():
        path = path / ("scheduler_config.json" if component == "scheduler" else "config.json")
    if component not in _COMPONENT_READERS:
        raise ConfigError(f"unknown component {component!r}; expected one of {sorted(_COMPONENT_READERS)}")
    data = read_json(path)
    found, expected = data.get("_class_name"), _CLASS_NAMES.get(component)
    if found and expected and found != expected:
        raise ConfigError(f"{path}: the {component} slot expects a {expected} config but this one is for "
                          f"{found}. Put each MOVA component in its own slot.")
    return _COMPONENT_READERS[component](data, str(path))


def load_mova_config(folder) -> MovaConfig:
    """Read a MOVA diffusers-style folder (model_index.json + one config per component).

    Either expert folder (video_dit/ or video_dit_2/) is enough; both must agree when both exist."""
    folder = Path(folder)
    index = read_json(folder / "model_index.json") if (folder / "model_index.json").is_file() else {}
    parts = {}
    for name in ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge", "audio_vae", "video_vae",
                 "text_encoder", "scheduler"):
        if (folder / name).is_dir():
            parts[name] = load_component_config(folder / name, name)
    video = parts.get("video_dit") or parts.get("video_dit_2")
    for name, have in (("video_dit", video), ("audio_dit", parts.get("audio_dit")),
                       ("dual_tower_bridge", parts.get("dual_tower_bridge"))):
        if have is None:
            raise ConfigError(f"{folder}: missing the {name}/ folder. Expected a MOVA-360p/720p folder "
                              "as downloaded from Hugging Face.")
    if "video_dit_2" in parts and parts["video_dit_2"] != video:
        raise ConfigError(f"{folder}: video_dit_2/config.json differs from video_dit/config.json; "
                          "both experts must share one architecture.")
    return MovaConfig(video_dit=video, audio_dit=parts["audio_dit"], bridge=parts["dual_tower_bridge"],
                      **{k: parts[k] for k in ("audio_vae", "video_vae", "text_encoder", "scheduler")
                         if k in parts},
                      boundary_ratio=float(index.get("boundary_ratio", 0.9)))


def _released() -> MovaConfig:
    video = DiTConfig(kind="video", dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=36,
                      out_dim=16, patch_size=(1, 2, 2), text_dim=4096, freq_dim=256, eps=1e-6)
    audio = DiTConfig(kind="audio", dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, in_dim=128,
                      out_dim=128, patch_size=(1,), text_dim=4096, freq_dim=256, eps=1e-6, vae_type="dac")
    bridge = BridgeConfig(visual_layers=40, audio_layers=30, visual_hidden_dim=5120, audio_hidden_dim=1536,
                          audio_fps=50.0, head_dim=128, interaction_strategy="full", apply_cross_rope=True)
    return MovaConfig(video_dit=video, audio_dit=audio, bridge=bridge)


def _tiny() -> MovaConfig:
    # Video head_dim 32 (3-axis RoPE split 12/10/10), audio head_dim 16, bridge head_dim 16.
    video = DiTConfig(kind="video", dim=64, ffn_dim=128, num_heads=2, num_layers=6, in_dim=36, out_dim=16,
                      patch_size=(1, 2, 2), text_dim=32, freq_dim=32, eps=1e-6)
    audio = DiTConfig(kind="audio", dim=32, ffn_dim=64, num_heads=2, num_layers=4, in_dim=128, out_dim=128,
                      patch_size=(1,), text_dim=32, freq_dim=32, eps=1e-6, vae_type="dac")
    bridge = BridgeConfig(visual_layers=6, audio_layers=4, visual_hidden_dim=64, audio_hidden_dim=32,
                          audio_fps=50.0, head_dim=16, interaction_strategy="full", apply_cross_rope=True)
    text = TextEncoderConfig(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, vocab_size=256384)
    return MovaConfig(video_dit=video, audio_dit=audio, bridge=bridge, text_encoder=text)


# 360p and 720p share one architecture (spec §7.1); only the trained weights differ.
PRESETS: dict = {"mova-360p": _released(), "mova-720p": _released(), "tiny": _tiny()}

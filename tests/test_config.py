"""Configs: released field names, refusals with clear messages, presets, folder reading."""
import json

import pytest

import conftest  # noqa: F401
from mova_pack.models.config import (PRESETS, BridgeConfig, DiTConfig, MovaConfig, SchedulerConfig,
                                     VideoVAEConfig, load_component_config, load_mova_config)
from mova_pack.common.errors import ConfigError, MovaError

RELEASED_AUDIO = {"_class_name": "WanAudioModel", "dim": 1536, "ffn_dim": 8960, "num_heads": 12, "num_layers": 30,
                  "in_dim": 128, "out_dim": 128, "patch_size": [1], "text_dim": 4096, "freq_dim": 256,
                  "eps": 1e-06, "vae_type": "dac", "has_image_input": False, "require_clip_embedding": True,
                  "require_vae_embedding": True, "seperated_timestep": False}
RELEASED_BRIDGE = {"visual_layers": 40, "audio_layers": 30, "visual_hidden_dim": 5120, "audio_hidden_dim": 1536,
                   "audio_fps": 50.0, "head_dim": 128, "interaction_strategy": "full", "apply_cross_rope": True,
                   "apply_first_frame_bias_in_rope": False, "trainable_condition_scale": False,
                   "pooled_adaln": False}


def test_released_audio_and_bridge_configs_read_unchanged():
    audio = DiTConfig.from_dict(RELEASED_AUDIO, "audio")
    assert audio == PRESETS["mova-360p"].audio_dit
    assert BridgeConfig.from_dict(RELEASED_BRIDGE) == PRESETS["mova-360p"].bridge
    assert PRESETS["mova-360p"].bridge.interaction_layers == tuple(range(30))
    assert PRESETS["mova-720p"].video_dit.head_dim == 128


@pytest.mark.parametrize("change, words", [
    ({"vae_type": "oobleck"}, "vae_type"),
    ({"has_image_input": True}, "has_image_input"),
    ({"num_heads": 7}, "num_heads"),
])
def test_audio_refusals(change, words):
    with pytest.raises(ConfigError, match=words):
        DiTConfig.from_dict({**RELEASED_AUDIO, **change}, "audio")


def test_missing_vae_type_means_official_default_oobleck_and_is_refused():
    data = dict(RELEASED_AUDIO)
    del data["vae_type"]
    with pytest.raises(ConfigError, match="oobleck"):
        DiTConfig.from_dict(data, "audio")


@pytest.mark.parametrize("change", [{"pooled_adaln": True}, {"interaction_strategy": "shallow_focus"},
                                    {"trainable_condition_scale": True}])
def test_bridge_refusals(change):
    with pytest.raises(ConfigError) as err:
        BridgeConfig.from_dict({**RELEASED_BRIDGE, **change})
    assert next(iter(change)) in str(err.value) and isinstance(err.value, MovaError)


def test_missing_required_field_names_it():
    data = dict(RELEASED_AUDIO)
    del data["dim"]
    with pytest.raises(ConfigError, match="missing field.*dim"):
        DiTConfig.from_dict(data, "audio")


def test_bridge_must_match_towers():
    p = PRESETS["mova-360p"]
    with pytest.raises(ConfigError, match="does not match"):
        MovaConfig(video_dit=p.video_dit, audio_dit=p.audio_dit, bridge=PRESETS["tiny"].bridge)


def test_scheduler_and_vae_names(tmp_path):
    (tmp_path / "scheduler_config.json").write_text(json.dumps({"shift": 5, "extra_one_step": True}))
    sched = load_component_config(tmp_path, "scheduler")
    assert sched == SchedulerConfig(shift=5.0, extra_one_step=True)
    with pytest.raises(ConfigError, match="shift_terminal"):
        SchedulerConfig.from_dict({"shift_terminal": 0.1})
    vae = VideoVAEConfig.from_dict({"z_dim": 16, "temperal_downsample": [False, True, True]})
    assert vae.temporal_stride == 4 and vae.spatial_stride == 8
    assert PRESETS["tiny"].audio_vae.hop_length == 960


def test_folder_round_trip(tmp_path):
    cfg = PRESETS["tiny"]
    for name, part in (("video_dit", cfg.video_dit), ("video_dit_2", cfg.video_dit), ("audio_dit", cfg.audio_dit),
                       ("dual_tower_bridge", cfg.bridge), ("scheduler", cfg.scheduler)):
        (tmp_path / name).mkdir()
        fname = "scheduler_config.json" if name == "scheduler" else "config.json"
        (tmp_path / name / fname).write_text(json.dumps(part.to_dict()))
    (tmp_path / "model_index.json").write_text(json.dumps({"boundary_ratio": 0.875}))
    back = load_mova_config(tmp_path)
    assert back.video_dit == cfg.video_dit and back.audio_dit == cfg.audio_dit and back.bridge == cfg.bridge
    assert back.boundary_ratio == 0.875 and back.scheduler == cfg.scheduler


def test_missing_folder_and_bad_json(tmp_path):
    with pytest.raises(ConfigError, match="video_dit/ folder"):
        load_mova_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_component_config(tmp_path, "audio_dit")

"""common/files.py: every file read names the file, says what it looks like and what to do; no raw
SafetensorError / JSONDecodeError / UnpicklingError (nor torch's weights_only advice) reaches a user."""
import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mova_pack.common import files
from mova_pack.common.errors import CheckpointError, ConfigError
from mova_pack.models.config import AudioVAEConfig, DiTConfig, PRESETS, load_component_config

RAW_NAMES = ("SafetensorError", "JSONDecodeError", "UnpicklingError", "TypeError", "KeyError", "weights_only")


def _header_file(path: Path, header, extra: bytes = b"") -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + extra)
    return path


class Boom:
    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/mova-files-test-pwned",))


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_bytes(b""), "too small.*empty"),
    (lambda p: p.write_bytes(b"\x13\x37garbage bytes here"), "no safetensors header"),
    (lambda p: _header_file(p, [1, 2, 3]), "not a tensor table"),
    (lambda p: _header_file(p, {"w": {"dtype": "F32", "shape": "big", "data_offsets": [0, 4]}}), "not a tensor description"),
    (lambda p: _header_file(p, {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}), "truncated"),
    (lambda p: p.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:00\n"), "Git LFS pointer"),
    (lambda p: p.write_bytes(b"<html><body>Login</body></html>" * 3), "HTML"),
])
def test_bad_safetensors_are_named_and_explained(tmp_path, make, words):
    path = tmp_path / "weights.safetensors"
    make(path)
    with pytest.raises(CheckpointError, match=words) as err:
        files.load_safetensors(path, "video VAE")
    text = str(err.value)
    assert text.startswith("video VAE: ") and str(path) in text
    assert not any(name in text for name in RAW_NAMES)


def test_good_safetensors_and_json_read(tmp_path):
    save_file({"w": torch.arange(4.0)}, str(tmp_path / "w.safetensors"))
    assert torch.equal(files.load_safetensors(tmp_path / "w.safetensors")["w"], torch.arange(4.0))
    (tmp_path / "c.json").write_text('{"a": 1}')
    assert files.read_json(tmp_path / "c.json") == {"a": 1}


@pytest.mark.parametrize("text, words", [("{not json", "not valid JSON"), ("[1, 2]", "JSON list, expected an object"),
                                         ("\xff\xfe", "not valid JSON")])
def test_bad_json_is_a_config_error_naming_the_file(tmp_path, text, words):
    path = tmp_path / "config.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError, match=words) as err:
        files.read_json(path, "video VAE config")
    assert str(path) in str(err.value) and "JSONDecodeError" not in str(err.value)


def test_pickles_are_refused_without_running_them_or_advising_weights_only_false(tmp_path):
    marker = Path("/tmp/mova-files-test-pwned")
    marker.unlink(missing_ok=True)
    torch.save({"w": torch.zeros(1), "x": Boom()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refused to load.*never runs") as err:
        files.read_weights(tmp_path / "evil.pth", "video VAE")
    assert not marker.exists()
    assert not any(name in str(err.value) for name in RAW_NAMES)
    torch.save({"model_state": {"w": torch.ones(2)}}, tmp_path / "ok.pth")
    assert torch.equal(files.read_weights(tmp_path / "ok.pth")["w"], torch.ones(2))


def test_colour_codes_and_control_characters_are_stripped():
    assert files.clean("\x1b[1mbold\x1b[0m \x1b[31mred\x1b[0m\x07") == "bold red?"
    assert len(files.clean("x" * 5000, 100)) == 100
    assert "\x1b" not in str(CheckpointError("\x1b[31mname\x1b[0m"))


@pytest.mark.parametrize("component, field, value", [
    ("audio_vae", "sample_rate", 0), ("audio_vae", "encoder_rates", [2, 3, 0, 5, 8]),
    ("video_dit", "num_layers", -1), ("video_dit", "dim", "wide"), ("video_dit", "eps", float("nan")),
    ("video_dit", "patch_size", 2),
])
def test_configs_refuse_non_positive_or_non_numeric_sizes_naming_the_field(tmp_path, component, field, value):
    cfg = PRESETS["tiny"]
    data = AudioVAEConfig().to_dict() if component == "audio_vae" else dict(cfg.video_dit.to_dict())
    data[field] = value
    folder = tmp_path / component
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=f"{field} = .*must be a positive|{field} = .*should be a list") as err:
        load_component_config(folder, component)
    assert "config.json" in str(err.value)


def test_released_and_preset_configs_still_load():
    for cfg in PRESETS.values():
        assert DiTConfig.from_dict(cfg.video_dit.to_dict(), "video") == cfg.video_dit
        assert AudioVAEConfig.from_dict(cfg.audio_vae.to_dict()) == cfg.audio_vae

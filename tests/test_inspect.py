"""scripts/inspect_model.py and the released key/shape tables (spec §7.2-7.4), on the meta device."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import conftest  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import inspect_model  # noqa: E402

from mova_pack.models.config import PRESETS  # noqa: E402

EXPECTED = {"video_dit": 14_288_901_184, "video_dit_2": 14_288_901_184, "audio_dit": 1_419_193_472,
            "dual_tower_bridge": 2_659_737_600}


@pytest.mark.parametrize("preset", ["mova-360p", "mova-720p"])
def test_param_counts(preset, capsys):
    assert inspect_model.main(["--preset", preset, "--json"]) == 0
    comps = json.loads(capsys.readouterr().out)["components"]
    for name, params in EXPECTED.items():
        assert comps[name]["params"] == params, name
    assert abs(comps["audio_vae"]["params"] - 371.5e6) < 0.1e6
    assert comps["video_dit"]["keys"] == 15 + 40 * 27 and comps["audio_dit"]["keys"] == 15 + 30 * 27
    assert comps["dual_tower_bridge"]["keys"] == 30 * 2 * 12
    # weights at bf16 match the released file sizes (28.6 GB, 2.84 GB, 5.32 GB)
    assert round(2 * comps["video_dit"]["params"] / 1e9, 1) == 28.6
    assert round(2 * comps["audio_dit"]["params"] / 1e9, 2) == 2.84
    assert round(2 * comps["dual_tower_bridge"]["params"] / 1e9, 2) == 5.32


def _shapes(name, preset="mova-360p"):
    return {k: tuple(v.shape) for k, v in inspect_model.build_on_meta(PRESETS[preset], name).state_dict().items()}


@pytest.mark.parametrize("preset", ["mova-360p", "mova-720p"])
def test_video_keys_spec_7_2(preset):
    s = _shapes("video_dit", preset)
    assert s["patch_embedding.weight"] == (5120, 36, 1, 2, 2) and s["patch_embedding.bias"] == (5120,)
    assert s["text_embedding.0.weight"] == (5120, 4096) and s["text_embedding.2.weight"] == (5120, 5120)
    assert s["time_embedding.0.weight"] == (5120, 256) and s["time_projection.1.weight"] == (30720, 5120)
    for n in (0, 39):
        for part in ("self_attn", "cross_attn"):
            for lin in "qkvo":
                assert s[f"blocks.{n}.{part}.{lin}.weight"] == (5120, 5120)
                assert s[f"blocks.{n}.{part}.{lin}.bias"] == (5120,)
            assert s[f"blocks.{n}.{part}.norm_q.weight"] == (5120,) == s[f"blocks.{n}.{part}.norm_k.weight"]
        assert s[f"blocks.{n}.norm3.weight"] == (5120,) and s[f"blocks.{n}.modulation"] == (1, 6, 5120)
        assert s[f"blocks.{n}.ffn.0.weight"] == (13824, 5120) and s[f"blocks.{n}.ffn.2.weight"] == (5120, 13824)
    assert s["head.head.weight"] == (64, 5120) and s["head.modulation"] == (1, 2, 5120)
    assert "blocks.40.modulation" not in s


def test_audio_keys_spec_7_3():
    s = _shapes("audio_dit")
    assert s["patch_embedding.weight"] == (1536, 128, 1) and s["head.head.weight"] == (128, 1536)
    assert s["head.modulation"] == (1, 2, 1536) and s["blocks.29.modulation"] == (1, 6, 1536)
    assert s["blocks.0.ffn.0.weight"] == (8960, 1536) and "blocks.30.ffn.0.weight" not in s


def test_bridge_keys_spec_7_4():
    s = _shapes("dual_tower_bridge")
    for i in (0, 29):
        a2v, v2a = f"audio_to_video_conditioners.{i}", f"video_to_audio_conditioners.{i}"
        assert s[f"{a2v}.y_norm.weight"] == (1536,) and s[f"{a2v}.y_norm.bias"] == (1536,)
        assert s[f"{a2v}.inner.q.weight"] == (5120, 5120) and s[f"{a2v}.inner.k.weight"] == (5120, 1536)
        assert s[f"{a2v}.inner.v.weight"] == (5120, 1536) and s[f"{a2v}.inner.o.weight"] == (5120, 5120)
        assert s[f"{a2v}.inner.norm_q.weight"] == (5120,) == s[f"{a2v}.inner.norm_k.weight"]
        assert s[f"{v2a}.y_norm.weight"] == (5120,)
        assert s[f"{v2a}.inner.q.weight"] == (1536, 1536) and s[f"{v2a}.inner.k.weight"] == (1536, 5120)
        assert s[f"{v2a}.inner.v.weight"] == (1536, 5120) and s[f"{v2a}.inner.o.bias"] == (1536,)
        assert s[f"{v2a}.inner.norm_q.weight"] == (1536,)
    assert "rotary.inv_freq" not in s and not any(k.endswith("condition_scale") for k in s)


def test_cli_runs():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "inspect_model.py"), "--preset", "tiny", "--json",
                          "--keys", "audio_dit"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["keys"]["patch_embedding.weight"] == [32, 128, 1]

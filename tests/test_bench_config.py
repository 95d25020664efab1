"""The benchmark's mid-size MOVA keeps the released model's proportions (scripts/bench.py:mid_config)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from bench import mid_config, proportions, real_ratio  # noqa: E402

from mova_pack.runtime.params import bridge_part, dit_part  # noqa: E402
from mova_pack.models.config import PRESETS  # noqa: E402


def test_mid_config_has_the_released_proportions():
    mid, real = mid_config(), PRESETS["mova-360p"]
    for m, r in ((mid.video_dit, real.video_dit), (mid.audio_dit, real.audio_dit)):
        assert (m.num_layers, m.text_dim, m.freq_dim, m.dim // m.num_heads) == \
            (r.num_layers, r.text_dim, r.freq_dim, r.dim // r.num_heads)
        assert abs(m.ffn_dim / m.dim - r.ffn_dim / r.dim) < 0.1
    assert mid.bridge.interaction_layers == real.bridge.interaction_layers
    p = proportions(mid)
    assert 2e8 < p["params"] < 6e8
    parts = dit_part(real.video_dit), dit_part(real.audio_dit), bridge_part(real.bridge)
    total = sum(x.params for x in parts)
    for name, x in zip(("video", "audio", "bridge"), parts):
        assert p["shares"][name] == pytest.approx(x.params / total, abs=0.025), name
    assert p["stem_share"] < 0.025


@pytest.mark.parametrize("mode,goal", [("fp8_e4m3fn", 0.52), ("int8", 0.52), ("nf4", 0.30)])
def test_weight_bytes_goals_hold_for_mid_and_released(mode, goal):
    """Config arithmetic (checked byte-for-byte against quantized modules in test_planner.py)."""
    cfg = mid_config()
    parts = dit_part(cfg.video_dit), dit_part(cfg.audio_dit), bridge_part(cfg.bridge)
    ratio = sum(x.bytes(mode) for x in parts) / sum(x.bytes("bf16") for x in parts)
    assert ratio <= goal and real_ratio(mode) <= goal

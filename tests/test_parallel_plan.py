"""Multi-GPU layout choice, communication arithmetic and per-GPU memory (issue 28), by hand on the tiny
config: video dim 64 (2 heads), 6 video blocks, out 16 × patch 1×2×2; audio dim 32, out 128; 4 Bridge
interaction layers. 64×64, 9 frames at 24 fps: 3×4×4 = 48 video tokens, 19 audio tokens."""
import math

import pytest

from mova_pack.common.errors import InputError
from mova_pack.models.config import PRESETS
from mova_pack.runtime.parallel_plan import (LINKS, STRATEGIES, ParallelLayout, choose_layout,
                                             communication_per_step, expected_step_time, forward_seconds_at,
                                             usable_rank_counts)
from mova_pack.runtime.planner import latent_sizes, plan_memory

TINY = ("tiny", 64, 64, 9, 24.0)
BF16 = 2


def test_tiny_request_has_the_token_counts_the_hand_figures_use():
    assert latent_sizes(PRESETS["tiny"], 64, 64, 9, 24.0) == (48, (3, 4, 4), 19)

# ------------------------------------------------------------------------------------------- layout
def test_rank_arithmetic_of_a_layout():
    layout = choose_layout(4, "both", passes=2, video_heads=40)
    assert (layout.strategy, layout.pass_groups, layout.sequence_ranks) == ("both", 2, 2)
    assert [layout.group_of(r) for r in range(4)] == [0, 0, 1, 1]
    assert [layout.sequence_rank(r) for r in range(4)] == [0, 1, 0, 1]
    assert layout.group_ranks(0) == [0, 1] and layout.group_ranks(1) == [2, 3]
    assert layout.passes_of(0, 3) == [0, 2] and layout.passes_of(1, 3) == [1]   # round-robin
    assert layout.forwards_per_rank(3) == 2 and layout.forward_share(3) == 1.0
    with pytest.raises(InputError, match="rank must be between 0 and 3"):
        layout.group_of(4)
    with pytest.raises(InputError, match="pass group must be between 0 and 1"):
        layout.group_ranks(2)
    with pytest.raises(InputError, match="pass_groups × sequence_ranks = 4"):
        ParallelLayout(4, "both", 3, 2, "hand-made")


def test_one_device_is_single_whatever_the_strategy():
    for strategy in STRATEGIES:
        layout = choose_layout(1, strategy, passes=3, video_heads=40)
        assert (layout.strategy, layout.pass_groups, layout.sequence_ranks) == ("single", 1, 1)
        assert layout.forward_share(3) == 3


def test_explicit_strategies():
    assert choose_layout(8, "sequence", 2, 40).sequence_ranks == 8
    g = choose_layout(3, "guidance", 3, 40)
    assert (g.pass_groups, g.sequence_ranks) == (3, 1)
    both = choose_layout(6, "both", 3, 40)
    assert (both.pass_groups, both.sequence_ranks) == (3, 2)
    # 8 devices, 2 passes: G is at most 2, so 2 × 4 (0.25 of a forward per device)
    assert (choose_layout(8, "both", 2, 40).pass_groups, choose_layout(8, "both", 2, 40).sequence_ranks) == (2, 4)


@pytest.mark.parametrize("ranks, passes, expected", [
    (2, 1, (1, 2)),    # no guidance: only sequence parallel helps
    (2, 2, (2, 1)),    # tie (1 forward each): guidance moves far fewer bytes
    (2, 3, (1, 2)),    # 1.5 forwards on sequence vs 2 on guidance
    (3, 3, (3, 1)),    # 3 does not divide 40 heads: guidance
    (4, 2, (2, 2)),    # tie at 0.5 with (1, 4): fewer sequence ranks
    (4, 3, (1, 4)),    # 0.75 vs (2, 2)'s 1.0
    (8, 3, (1, 8)),    # 0.375
])
def test_auto_takes_least_compute_then_fewest_sequence_ranks(ranks, passes, expected):
    layout = choose_layout(ranks, "auto", passes, 40)
    assert (layout.pass_groups, layout.sequence_ranks) == expected
    assert layout.reason.startswith(f"auto chose {layout.strategy}")


def test_auto_tie_break_really_moves_fewer_bytes():
    both = choose_layout(4, "auto", 2, 40)
    sequence = choose_layout(4, "sequence", 2, 40)
    assert both.forward_share(2) == sequence.forward_share(2) == 0.5
    request = ("mova-360p", 640, 352, 193, 24.0)
    assert (communication_per_step(*request, both, 2)["total"]
            < communication_per_step(*request, sequence, 2)["total"])


@pytest.mark.parametrize("ranks, strategy, passes, message", [
    (3, "sequence", 2, r"must divide 40\. Device counts that work for 'sequence' here \(up to 16\): 2, 4, 5, 8, 10\."),
    (4, "guidance", 2, r"at most 2 pass groups .* more devices would idle\. Device counts that work for "
                       r"'guidance' here \(up to 16\): 2\. With 4 devices use one of the strategies 'auto', "
                       r"'sequence', 'both'\."),
    (2, "guidance", 1, r"1 pass = no guidance, both text scales 1"),
    (2, "both", 2, r"Device counts that work for 'both' here \(up to 16\): 4, 8, 10, 16\."),
    (3, "auto", 2, r"cannot run strategy 'auto'.*Device counts that work for 'auto' here \(up to 16\): 2, 4, 5, 8, 10, 16\."),
])
def test_impossible_requests_say_what_would_work(ranks, strategy, passes, message):
    with pytest.raises(InputError, match=message) as caught:
        choose_layout(ranks, strategy, passes, 40)
    assert "MOVA Multi-GPU node's devices or strategy" in str(caught.value)


@pytest.mark.parametrize("args, message", [
    ((2, "ring", 2, 40), "strategy must be one of auto, sequence, guidance, both, got 'ring'"),
    ((0, "auto", 2, 40), "device count must be a whole number ≥ 1, got 0"),
    ((2.0, "auto", 2, 40), "device count must be a whole number"),
    ((True, "auto", 2, 40), "device count must be a whole number"),
    ((2, "auto", 0, 40), "passes per step must be a whole number ≥ 1"),
])
def test_malformed_arguments_are_refused(args, message):
    with pytest.raises(InputError, match=message):
        choose_layout(*args)


def test_usable_rank_counts():
    assert usable_rank_counts("sequence", 2, 40, up_to=10) == [2, 4, 5, 8, 10]
    assert usable_rank_counts("guidance", 3, 40) == [2, 3]
    assert usable_rank_counts("both", 3, 2, up_to=8) == [4, 6]   # tiny: 2 heads, S = 2 only


# ------------------------------------------------------------------------------------ communication
def test_bytes_of_sequence_parallel_by_hand():
    """S = 2, 2 passes on one group: 2 forwards. Local 24 tokens; an all-to-all of a local
    [24, 64] receives its other half of the heads: 24 × 32 elements."""
    layout = choose_layout(2, "sequence", 2, video_heads=2)
    c = communication_per_step(*TINY, layout, passes=2)
    assert c["ulysses"] == 2 * 6 * 4 * 24 * 32 * BF16           # 73,728
    assert c["bridge_gather"] == 2 * 4 * 2 * 24 * 32 * BF16      # 4 layers × k, v of 24 tokens at width 32
    assert c["output_gather"] == 2 * 24 * 64 * BF16              # 16 ch × 1×2×2
    assert c["pass_broadcast"] == 0 and c["control"] == 4
    assert c["total"] == 73728 + 24576 + 6144 + 4


def test_bytes_of_guidance_parallel_by_hand():
    """G = 2, 3 passes: group 0 runs passes 0 and 2 and receives pass 1's outputs:
    video [16, 12, 8, 8] + audio [128, 19] in bf16."""
    layout = choose_layout(2, "guidance", 3, video_heads=2)
    c = communication_per_step(*TINY, layout, passes=3)
    assert c["pass_broadcast"] == (16 * 3 * 8 * 8 + 128 * 19) * BF16 == 11008
    assert c["ulysses"] == c["bridge_gather"] == c["output_gather"] == 0
    assert c["total"] == 11008 + 4


def test_video_tokens_are_padded_to_a_multiple_of_the_sequence_ranks():
    """80×48: 3×3×5 = 45 video tokens, padded to 46 on 2 ranks (23 each); fp32 tensors."""
    layout = choose_layout(2, "sequence", 1, video_heads=2)
    c = communication_per_step("tiny", 80, 48, 9, 24.0, layout, passes=1, dtype="fp32")
    assert c["ulysses"] == 6 * 4 * 23 * 32 * 4
    assert c["output_gather"] == 23 * 64 * 4


def test_one_device_communicates_nothing():
    c = communication_per_step(*TINY, choose_layout(1, "auto", 2, 2), passes=2)
    assert c == {"ulysses": 0, "bridge_gather": 0, "output_gather": 0, "pass_broadcast": 0, "control": 0,
                 "total": 0}


def test_communication_refuses_a_layout_the_model_cannot_split():
    layout = choose_layout(4, "sequence", 2, video_heads=40)   # the tiny video tower has 2 heads
    with pytest.raises(InputError, match="2 attention heads"):
        communication_per_step(*TINY, layout, passes=2)
    with pytest.raises(InputError, match="dtype must be one of"):
        communication_per_step(*TINY, choose_layout(2, "sequence", 2, 2), passes=2, dtype="int4")


# ---------------------------------------------------------------------------------------- step time
def test_expected_step_time_adds_compute_share_and_transfer():
    layout = choose_layout(2, "sequence", 2, video_heads=2)
    seconds = expected_step_time(2.0, {"total": 64e9}, "pcie5", layout, passes=2)
    assert seconds == pytest.approx(2.0 * 2 / 2 + 64e9 / LINKS["pcie5"].bytes_per_second)
    single = choose_layout(1, "auto", 2, 2)
    assert expected_step_time(2.0, 0, "nvlink4", single, passes=2) == 4.0
    with pytest.raises(InputError, match="link must be one of nvlink4, pcie4, pcie5"):
        expected_step_time(2.0, 0, "infiniband", single, passes=2)


def test_forward_time_scales_the_attention_quadratically():
    # 4 s of which 1 s attention; twice the tokens: 3 s × 2 + 1 s × 4
    assert forward_seconds_at(200, 100, 4.0, 1.0) == pytest.approx(10.0)
    assert forward_seconds_at(100, 100, 4.0, 1.0) == pytest.approx(4.0)


# ----------------------------------------------------------------------------------- per-GPU memory
def test_one_sequence_rank_leaves_the_plan_unchanged():
    for request in (("mova-360p", 640, 352, 193), TINY[:4]):
        assert plan_memory(*request) == plan_memory(*request, sequence_ranks=1)


def test_two_sequence_ranks_lower_the_activations_within_reason():
    one = plan_memory("mova-360p", 640, 352, 193, cfg_passes=2)
    two = plan_memory("mova-360p", 640, 352, 193, cfg_passes=2, sequence_ranks=2)
    d1, d2 = one.stages["denoise"], two.stages["denoise"]
    assert d2["weights_resident"] == d1["weights_resident"]          # every GPU holds every weight
    assert d2["latents"] == d1["latents"]                            # the sampler runs whole on each
    # half the video tokens, plus the all-to-all copies: between half and the one-GPU figure
    assert 0.5 * d1["activations"] < d2["activations"] < 0.8 * d1["activations"]
    assert two.vram_bytes < one.vram_bytes
    four = plan_memory("mova-360p", 640, 352, 193, cfg_passes=2, sequence_ranks=4)
    assert four.stages["denoise"]["activations"] < 0.5 * d1["activations"]
    with pytest.raises(InputError, match="sequence_ranks must be a whole number ≥ 1"):
        plan_memory(*TINY[:4], sequence_ranks=0)


def test_tiny_per_gpu_activation_terms_by_hand():
    """S = 2 on the tiny request (fp32, CUDA): the split block plus the exchanges, gathers whole."""
    from mova_pack.runtime.planner import denoise_activation_bytes
    cfg = PRESETS["tiny"]
    fp32 = 4
    local = 24
    streams = (local * 64 + 19 * 32) * fp32
    inputs = 48 * 4 * 36 * 4
    contexts = 512 * (64 + 32) * fp32
    tables = (48 * 32 + 19 * 16) * 4 + (48 + 19) * 2 * 16 * fp32
    attention = local * 64 * (5 * fp32 + 4) + 4 * local * 64 * fp32
    ffn = local * fp32 * (3 * 64 + 2 * 128)
    bridge = local * 64 * fp32 * 6 + 19 * 64 * fp32 * 3 + 2 * 48 * 32 * fp32
    audio = max(19 * 32 * (5 * fp32 + 4), 19 * fp32 * (3 * 32 + 2 * 64))
    gathered = 48 * 64 * fp32
    expected = streams + inputs + contexts + max(attention, ffn, bridge, audio) + gathered + tables
    assert denoise_activation_bytes(cfg, 48, 19, fp32, sequence_ranks=2) == expected
    assert math.ceil(48 / 2) == local


# ------------------------------------------------------------------- the canvas estimate (routes.py)
def _routes():
    """nodes/routes.py without ComfyUI (as tests/test_routes.py imports it)."""
    import sys
    import types
    from pathlib import Path
    if "mova_pack.nodes" not in sys.modules:
        pkg = types.ModuleType("mova_pack.nodes")
        pkg.__path__ = [str(Path(__file__).resolve().parents[1] / "nodes")]
        sys.modules["mova_pack.nodes"] = pkg
    from mova_pack.nodes import routes
    return routes


def test_estimate_reports_per_gpu_figures_and_the_layout():
    routes = _routes()
    host = routes.Host(device_total_bytes=lambda: int(141e9), host_total_bytes=lambda: int(512e9))
    query = {"preset": "mova-360p", "width": 640, "height": 352, "frames": 193, "cfg_passes": 2}
    one = routes.estimate(query, host)
    assert one["parallel"] is None and "/GPU" not in one["text"]
    two = routes.estimate({**query, "devices": "0,1", "strategy": "sequence"}, host)
    p = two["parallel"]
    assert (p["devices"], p["layout"], p["pass_groups"], p["sequence_ranks"]) == (2, "sequence", 1, 2)
    assert two["denoise"]["activations"] < one["denoise"]["activations"]
    assert two["denoise"]["weights_resident"] == one["denoise"]["weights_resident"]
    assert two["text"].startswith(f"VRAM ≈ {two['vram_gb']:.1f} GB/GPU (2 GPUs, sequence ×2) ✓")
    # the machine's RAM: a second process with its own runtime
    assert two["host_gb"] > p["host_gb_rank0"] == one["host_gb"]
    auto = routes.estimate({**query, "devices": 2}, host)
    assert (auto["parallel"]["layout"], auto["parallel"]["strategy"]) == ("guidance", "auto")
    assert auto["denoise"] == one["denoise"]   # whole forwards on each GPU
    both = routes.estimate({**query, "devices": "cuda:0,cuda:1,cuda:2,cuda:3", "strategy": "both"}, host)
    assert "GB/GPU (4 GPUs, 2 pass groups × 2)" in both["text"]
    cpu = routes.estimate({"preset": "tiny", "devices": "cpu,cpu", "strategy": "sequence"}, host)
    assert cpu["dtype"] == "fp32" and cpu["fits"]["vram"] is None and "/rank (2 ranks, sequence ×2)" in cpu["text"]


@pytest.mark.parametrize("extra, message", [
    ({"devices": "0,1,2", "strategy": "sequence"}, "must divide 40"),
    ({"devices": "0,1", "strategy": "ring"}, "strategy must be one of auto, sequence, guidance, both"),
    ({"devices": "0,,1"}, "an entry is empty"),
    ({"devices": "0,cpu"}, "mix CUDA indices and 'cpu'"),
    ({"devices": "1,1"}, "name a GPU twice"),
    ({"devices": "gpu0"}, "neither a CUDA index"),
    ({"devices": 0}, "devices must be at least 1"),
])
def test_estimate_refuses_a_multi_gpu_setting_it_cannot_plan(extra, message):
    routes = _routes()
    with pytest.raises(InputError if "strategy must" not in message else routes.RequestError, match=message):
        routes.estimate({"preset": "mova-360p", "cfg_passes": 2, **extra})


def test_auto_can_rank_splits_by_expected_time_on_a_slow_link():
    """2 GPUs, 3 passes at 360p: by compute, sequence (1.5 forwards) beats guidance (2); on PCIe 4.0
    the sequence split's 65 GB per step cost more than the half forward it saves."""
    request, passes = ("mova-360p", 640, 352, 193, 24.0), 3

    def on(link):
        return lambda layout: expected_step_time(4.77, communication_per_step(*request, layout, passes), link,
                                                 layout, passes)
    assert choose_layout(2, "auto", passes, 40).strategy == "sequence"
    assert choose_layout(2, "auto", passes, 40, step_seconds=on("nvlink4")).strategy == "sequence"
    slow = choose_layout(2, "auto", passes, 40, step_seconds=on("pcie4"))
    assert slow.strategy == "guidance" and slow.reason.endswith("the least expected time per step")


def test_the_documented_tables_come_from_this_arithmetic():
    """scripts/parallel_figures.py prints docs/benchmarks.md's tables; spot-check one row of each kind."""
    import parallel_figures   # scripts/ is on sys.path (conftest)
    text = parallel_figures.table("360p", 2)
    assert "| 2 | 1 × 2 | 1 | 35.32 | 7.95 | 0.01 | 0.00 | 43.28 | 69.1 | 4.89 (1.95×) |" in text
    assert "| 2 | 2 × 1 | 1 | 0.00 | 0.00 | 0.00 | 0.01 | 0.01 | 70.4 | 4.77 (2.00×) |" in text
    assert "| 3 × 1 |" not in text                     # 3 groups for 2 passes would idle
    assert parallel_figures.forward_seconds(parallel_figures.REQUESTS["720p"]) == pytest.approx(52.9, abs=0.01)

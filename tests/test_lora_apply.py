"""Applying, re-applying and removing LoRA stacks: merged (exact restore) and computed alongside."""
import copy
import types

import pytest
import torch

from lora_helpers import TARGETS, by_hand, lora_deltas, random_factors, run, tiny_components, write_accelerate
from mova_pack.kernels.quant import QuantLinear, quantize_module
from mova_pack.models.lora.stack import LoraEntry, LoraStack, LoraStrengths, apply_lora_stack, remove_loras
from mova_pack.models.lora.formats import parse_lora, read_lora

TOL = 1e-5


def _state(comps):
    return {f"{c}.{k}": v.clone() for c, m in comps.items() for k, v in m.state_dict().items()}


def _assert_bit_identical(comps, saved):
    now = _state(comps)
    assert now.keys() == saved.keys()
    assert all(torch.equal(now[k], saved[k]) for k in saved)


def _max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def _accelerate_lora(tmp_path, comps, seed=1, targets=TARGETS, name="acc"):
    factors = random_factors(comps, targets, seed=seed)
    return read_lora(write_accelerate(tmp_path / name, factors)), lora_deltas(factors)


def test_strength_change_reapplies_without_disk_and_removal_is_exact(tmp_path):
    comps = tiny_components()
    saved, base = _state(comps), run(comps)
    lora, deltas = _accelerate_lora(tmp_path, comps)
    for f in (tmp_path / "acc").iterdir():
        f.unlink()  # everything must come from memory from now on
    for s in (1.0, 0.5, -2.0):
        strengths = LoraStrengths(video_high=s, video_low=s, audio=0.25 * s, bridge=2 * s)
        apply_lora_stack(comps, LoraStack((LoraEntry(lora, strengths),)))
        ref = by_hand(tiny_components(), deltas, {c: strengths.of(c) for c in deltas})
        for expert in ("video_high", "video_low"):
            assert _max_diff(run(comps, expert), run(ref, expert)) <= TOL
    remove_loras(comps)
    _assert_bit_identical(comps, saved)
    assert all(torch.equal(x, y) for x, y in zip(run(comps), base))


def test_strength_zero_is_the_base_bit_for_bit(tmp_path):
    comps = tiny_components()
    saved, base = _state(comps), run(comps)
    lora, _ = _accelerate_lora(tmp_path, comps)
    zero = LoraStrengths(0, 0, 0, 0)
    report = apply_lora_stack(comps, LoraStack((LoraEntry(lora, zero),)))
    _assert_bit_identical(comps, saved)
    assert all(torch.equal(x, y) for x, y in zip(run(comps), base))
    assert "strength 0 for video high-noise, 5 keys not applied" in str(report)


def test_only_changed_components_are_touched(tmp_path):
    comps = tiny_components()
    lora, _ = _accelerate_lora(tmp_path, comps)
    apply_lora_stack(comps, LoraStack((LoraEntry(lora),)))
    q = comps["video_high"].get_submodule("blocks.0.self_attn.q").weight
    before = q.detach()  # holds the merged storage, so its address cannot be reused by a new merge
    apply_lora_stack(comps, LoraStack((LoraEntry(lora, LoraStrengths(audio=0.3)),)))
    assert q.data_ptr() == before.data_ptr()  # video high-noise not re-merged when only the audio strength changed
    apply_lora_stack(comps, LoraStack((LoraEntry(lora, LoraStrengths(video_high=0.3)),)))
    assert q.data_ptr() != before.data_ptr()


def test_two_loras_on_the_same_modules_add_up(tmp_path):
    comps = tiny_components()
    saved = _state(comps)
    lora1, d1 = _accelerate_lora(tmp_path, comps, seed=1, name="a")
    lora2, d2 = _accelerate_lora(tmp_path, comps, seed=2, name="b")
    stack = LoraStack().add(LoraEntry(lora1, LoraStrengths(0.7, 0.7, 0.7, 0.7))).add(
        LoraEntry(lora2, LoraStrengths(-1.3, -1.3, -1.3, -1.3)))
    apply_lora_stack(comps, stack)
    total = {c: {p: 0.7 * d1[c][p] - 1.3 * d2[c][p] for p in d1[c]} for c in d1}
    ref = by_hand(tiny_components(), total)
    assert _max_diff(run(comps), run(ref)) <= TOL
    remove_loras(comps)
    _assert_bit_identical(comps, saved)


def test_bf16_merge_is_fp32_delta_cast_back_and_restores_exactly(tmp_path):
    comps = tiny_components(dtype=torch.bfloat16)
    saved = _state(comps)
    lora, deltas = _accelerate_lora(tmp_path, comps)
    apply_lora_stack(comps, LoraStack((LoraEntry(lora, LoraStrengths(video_high=0.5)),)))
    for path, delta in deltas["video_high"].items():
        w0 = saved[f"video_high.{path}.weight"]
        assert torch.equal(comps["video_high"].get_submodule(path).weight, (w0.float() + 0.5 * delta).bfloat16())
    remove_loras(comps)
    _assert_bit_identical(comps, saved)


def test_generator_object_and_untargeted_components(tmp_path):
    comps = tiny_components()
    gen = types.SimpleNamespace(video_high=comps["video_high"], video_low=None, audio=comps["audio"],
                                bridge=comps["bridge"], config=None)
    lora, _ = _accelerate_lora(tmp_path, comps)
    report = apply_lora_stack(gen, LoraStack((LoraEntry(lora),)))
    assert "3 keys for video low-noise, which is not loaded" in str(report)
    remove_loras(gen)


def test_forward_hooks_when_not_merging(tmp_path):
    comps = tiny_components()
    saved, base = _state(comps), run(comps)
    lora, deltas = _accelerate_lora(tmp_path, comps)
    report = apply_lora_stack(comps, LoraStack((LoraEntry(lora, LoraStrengths(bridge=0.5)),)), unmerged=True)
    _assert_bit_identical(comps, saved)  # nothing merged
    ref = by_hand(tiny_components(), deltas, {"bridge": 0.5})
    assert _max_diff(run(comps), run(ref)) <= TOL
    assert "(alongside)" in str(report)
    remove_loras(comps)
    assert all(torch.equal(x, y) for x, y in zip(run(comps), base))


def _dequantized_copy(comps):
    """Copy where every quantized linear is a plain fp32 Linear holding its dequantized weight."""
    out = copy.deepcopy(comps)
    for root in out.values():
        for path, m in list(root.named_modules()):
            if isinstance(m, QuantLinear):
                lin = torch.nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
                with torch.no_grad():
                    lin.weight.copy_(m.dequantize(torch.float32))
                    if m.bias is not None:
                        lin.bias.copy_(m.bias.float())
                parent, _, name = path.rpartition(".")
                setattr(root.get_submodule(parent) if parent else root, name, lin)
    return out


@pytest.mark.parametrize("mode", ["fp8_e4m3fn", "int8", "nf4"])
def test_quantized_linears_compute_the_lora_alongside(tmp_path, mode):
    comps = tiny_components()
    lora, deltas = _accelerate_lora(tmp_path, comps)
    ref_base, ref = run(comps), run(by_hand(tiny_components(), deltas))
    for m in comps.values():
        quantize_module(m, mode)
    quant_base = run(comps)
    dequantized = by_hand(_dequantized_copy(comps), deltas)  # the same quantized base, LoRA merged in fp32
    report = apply_lora_stack(comps, LoraStack((LoraEntry(lora),)))
    assert "alongside" in str(report)
    got = run(comps)
    assert _max_diff(got, run(dequantized)) <= 1e-4
    # Against the unquantized model with the LoRA: within the base's quantization error.
    assert _max_diff(got, ref) <= 2 * _max_diff(quant_base, ref_base) + 1e-4
    # Module level: dequantized weight + the LoRA exactly.
    layer = comps["video_high"].get_submodule("blocks.0.self_attn.q")
    assert isinstance(layer, QuantLinear) and len(layer.adapters) == 1
    x = torch.randn(3, layer.in_features)
    want = torch.nn.functional.linear(x, layer.dequantize(x.dtype) + deltas["video_high"]["blocks.0.self_attn.q"],
                                      layer.bias)
    assert (layer(x) - want).abs().max().item() <= TOL
    remove_loras(comps)
    assert len(layer.adapters) == 0
    assert all(torch.equal(x, y) for x, y in zip(run(comps), quant_base))


def test_lokr_alongside_a_quantized_weight():
    comps = tiny_components()
    quantize_module(comps["video_high"], "fp8_e4m3fn")
    layer = comps["video_high"].get_submodule("blocks.0.ffn.0")  # [128, 64]
    g = torch.Generator().manual_seed(0)
    w1, w2a, w2b = torch.randn(4, 4, generator=g), torch.randn(32, 2, generator=g), torch.randn(2, 16, generator=g)
    lora = parse_lora({"lycoris_blocks_0_ffn_0.lokr_w1": w1, "lycoris_blocks_0_ffn_0.lokr_w2_a": w2a,
                       "lycoris_blocks_0_ffn_0.lokr_w2_b": w2b, "lycoris_blocks_0_ffn_0.alpha": torch.tensor(1.0)},
                      "lokr_high_noise")
    apply_lora_stack(comps, LoraStack((LoraEntry(lora, LoraStrengths(video_high=0.8)),)))
    x = torch.randn(5, 64)
    delta = torch.kron(w1, w2a @ w2b) * 0.5 * 0.8
    want = torch.nn.functional.linear(x, layer.dequantize(x.dtype) + delta, layer.bias)
    assert (layer(x) - want).abs().max().item() <= 1e-4
    remove_loras(comps)
    assert len(layer.adapters) == 0


def test_streamed_weights_get_the_lora_alongside(tmp_path):
    from mova_pack.runtime.offload import OffloadEngine, OffloadSettings
    comps = tiny_components()
    lora, deltas = _accelerate_lora(tmp_path, comps)
    base, ref = run(comps), run(by_hand(tiny_components(), deltas))
    engine = OffloadEngine({"video_dit": comps["video_high"]}, comps["audio"], comps["bridge"],
                           OffloadSettings(resident_units=1), device="cpu")
    assert comps["video_high"].get_submodule("blocks.5.ffn.0").weight.numel() == 0  # streamed: a placeholder
    report = apply_lora_stack(comps, LoraStack((LoraEntry(lora),)))
    assert "video high-noise: 5 modules patched (alongside)" in str(report)
    assert _max_diff(run(comps), ref) <= TOL
    engine.release()  # everything evicted and streamed back in: the LoRA must survive
    engine.to()
    assert _max_diff(run(comps), ref) <= TOL
    remove_loras(comps)
    assert all(torch.equal(x, y) for x, y in zip(run(comps), base))
    engine.close()


def test_lora_for_an_unloaded_expert_is_reported_not_an_error(tmp_path):
    comps = tiny_components()
    lora, _ = _accelerate_lora(tmp_path, comps, targets={"video_low": TARGETS["video_low"]})
    gen = {"video_high": comps["video_high"], "audio": comps["audio"], "bridge": comps["bridge"]}
    report = apply_lora_stack(gen, LoraStack((LoraEntry(lora),)))
    assert "3 keys for video low-noise, which is not loaded" in str(report)


def _diff_lora(comps):
    """lightx2v-style extras: full `.diff` on a norm weight, `.diff_b` on a linear bias, `.diff_m`."""
    g = torch.Generator().manual_seed(4)
    norm = comps["video_high"].get_submodule("blocks.5.self_attn.norm_q").weight
    sd = {"diffusion_model.blocks.5.self_attn.norm_q.diff": torch.randn(norm.shape, generator=g) * 0.1,
          "diffusion_model.blocks.5.ffn.2.diff_b": torch.randn(64, generator=g) * 0.1,
          "diffusion_model.blocks.5.ffn.2.lora_A.weight": torch.randn(2, 128, generator=g) * 0.1,
          "diffusion_model.blocks.5.ffn.2.lora_B.weight": torch.randn(64, 2, generator=g) * 0.1,
          "diffusion_model.blocks.5.diff_m": torch.randn(1, 6, 64, generator=g) * 0.1,
          "diffusion_model.head.modulation.diff": torch.randn(1, 2, 64, generator=g) * 0.1}
    ref = copy.deepcopy(comps)
    with torch.no_grad():
        video = ref["video_high"]
        video.get_submodule("blocks.5.self_attn.norm_q").weight += sd["diffusion_model.blocks.5.self_attn.norm_q.diff"]
        ffn2 = video.get_submodule("blocks.5.ffn.2")
        ffn2.bias += sd["diffusion_model.blocks.5.ffn.2.diff_b"]
        ffn2.weight += sd["diffusion_model.blocks.5.ffn.2.lora_B.weight"] @ sd["diffusion_model.blocks.5.ffn.2.lora_A.weight"]
        video.blocks[5].modulation += sd["diffusion_model.blocks.5.diff_m"]
        video.head.modulation += sd["diffusion_model.head.modulation.diff"]
    return parse_lora(sd, "distill_high_noise"), ref


def test_full_diffs_merged_and_streamed():
    from mova_pack.runtime.offload import OffloadEngine, OffloadSettings
    comps = tiny_components()
    lora, ref = _diff_lora(comps)
    base, want = run(comps), run(ref)
    report = apply_lora_stack(comps, LoraStack((LoraEntry(lora),)))
    assert "applied 4 of 4 keys to video high-noise" in str(report) and not report.warnings
    assert _max_diff(run(comps), want) <= TOL
    remove_loras(comps)
    engine = OffloadEngine({"video_dit": comps["video_high"]}, comps["audio"], comps["bridge"],
                           OffloadSettings(resident_units=0), device="cpu")
    report = apply_lora_stack(comps, LoraStack((LoraEntry(lora),)))
    assert "video high-noise: 4 modules patched (patched per forward+alongside)" in str(report)
    assert not report.warnings
    assert _max_diff(run(comps), want) <= TOL
    assert _max_diff(run(comps), want) <= TOL  # no accumulation from one forward to the next
    engine.release()
    engine.to()
    assert _max_diff(run(comps), want) <= TOL
    remove_loras(comps)
    assert all(torch.equal(x, y) for x, y in zip(run(comps), base))
    engine.close()


def test_modulation_diffs_lightx2v_style():
    comps = tiny_components()
    g = torch.Generator().manual_seed(6)
    d_block, d_head = torch.randn(1, 6, 64, generator=g) * 0.1, torch.randn(1, 2, 64, generator=g) * 0.1
    lora = parse_lora({"diffusion_model.blocks.2.diff_m": d_block, "diffusion_model.head.modulation.diff": d_head},
                      "lightx2v_high_noise")
    saved, ref = _state(comps), copy.deepcopy(comps)
    with torch.no_grad():
        ref["video_high"].blocks[2].modulation += 0.5 * d_block
        ref["video_high"].head.modulation += 0.5 * d_head
    report = apply_lora_stack(comps, LoraStack((LoraEntry(lora, LoraStrengths(video_high=0.5)),)))
    assert "applied 2 of 2 keys to video high-noise, 0 unmatched" in str(report)
    assert _max_diff(run(comps), run(ref)) <= TOL
    remove_loras(comps)
    _assert_bit_identical(comps, saved)

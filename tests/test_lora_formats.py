"""Every LoRA format we read, applied to a tiny MOVA, against the same delta applied by hand."""
import pytest
import torch
from safetensors.torch import save_file

from lora_helpers import (TARGETS, by_hand, lora_deltas, random_factors, run, tiny_components, write_accelerate,
                          write_low_resource, write_single, write_videox, kohya)
from mova_pack.common.errors import CheckpointError
from mova_pack.models.lora.stack import (LoraEntry, LoraMismatchError, LoraStack, LoraStrengths, apply_lora_stack,
                                   remove_loras)
from mova_pack.models.lora.detect import expert_hint, guess_family
from mova_pack.models.lora.formats import is_lora_folder, parse_lora, read_lora

TOL = 1e-5


def _assert_close_to_hand(comps, deltas, lora, strengths=LoraStrengths(), expert="auto", experts=("video_high",)):
    ref = by_hand(comps, deltas, {c: strengths.of(c) for c in deltas})
    report = apply_lora_stack(comps, LoraStack((LoraEntry(lora, strengths, expert),)))
    for e in experts:
        for got, want in zip(run(comps, e), run(ref, e)):
            assert (got - want).abs().max().item() <= TOL
    for comp, items in deltas.items():  # weights themselves, too
        for path in items:
            got, want = comps[comp].get_submodule(path).weight, ref[comp].get_submodule(path).weight
            assert (got - want).abs().max().item() <= TOL, (comp, path)
    return report


def test_mova_accelerate_folder_alpha_is_rank(tmp_path):
    comps = tiny_components()
    factors = random_factors(comps)
    lora = read_lora(write_accelerate(tmp_path / "acc", factors))
    assert lora.source_format == "MOVA accelerate"
    base = run(comps)
    report = _assert_close_to_hand(comps, lora_deltas(factors, 1.0), lora, experts=("video_high", "video_low"))
    text = str(report)
    assert "applied 5 of 5 keys to video high-noise, 0 unmatched" in text
    assert "applied 3 of 3 keys to video low-noise, 0 unmatched" in text
    assert "applied 2 of 2 keys to audio tower" in text and "applied 3 of 3 keys to bridge" in text
    assert "lora_config.pt says rank 16, alpha 16.0 (not used)" in text
    assert lora.summary() == ("acc: MOVA accelerate, lora, rank 4; 5 video high-noise, 3 video low-noise, "
                              "2 audio tower, 3 bridge")
    remove_loras(comps)
    assert all(torch.equal(g, w) for g, w in zip(run(comps), base))


def test_mova_accelerate_diffsynth_default_suffix_and_single_file(tmp_path):
    comps = tiny_components()
    factors = random_factors(comps, {"video_low": TARGETS["video_low"]})
    folder = write_accelerate(tmp_path / "acc", factors, default_suffix=True)
    lora = read_lora(folder / "lora_weights.pt")  # picking the .pt file alone works too
    _assert_close_to_hand(comps, lora_deltas(factors), lora, experts=("video_low",))


def test_mova_low_resource_nested_dict(tmp_path):
    comps = tiny_components()
    factors = random_factors(comps, {c: TARGETS[c] for c in ("video_high", "bridge")}, rank=4)
    lora = read_lora(write_low_resource(tmp_path / "lora_weights.pt", factors, rank=4, alpha=8.0))
    assert lora.source_format == "MOVA low-resource"
    _assert_close_to_hand(comps, lora_deltas(factors, 8.0 / 4), lora)


def test_videox_fun_folders_map_transformer_to_low_noise(tmp_path):
    comps = tiny_components()
    factors = random_factors(comps, rank=8)
    lora = read_lora(write_videox(tmp_path / "vx", factors, alpha=4))
    assert lora.scopes() == {"video_low": 3, "video_high": 5, "audio": 2, "bridge": 3}
    report = _assert_close_to_hand(comps, lora_deltas(factors, 4 / 8), lora, experts=("video_high", "video_low"))
    assert "applied 3 of 3 keys to video low-noise" in str(report)


def test_lora_folders_are_recognised(tmp_path):
    comps = tiny_components()
    write_videox(tmp_path / "vx", random_factors(comps, {"audio": TARGETS["audio"]}), alpha=4)
    write_accelerate(tmp_path / "acc", random_factors(comps, {"audio": TARGETS["audio"]}))
    (tmp_path / "other").mkdir()
    assert is_lora_folder(tmp_path / "vx") and is_lora_folder(tmp_path / "acc")
    assert not is_lora_folder(tmp_path / "other") and not is_lora_folder(tmp_path / "acc" / "lora_weights.pt")


def test_videox_single_component_file_uses_its_folder(tmp_path):
    comps = tiny_components()
    factors = random_factors(comps, {"audio": TARGETS["audio"]})
    write_videox(tmp_path / "vx", factors, alpha=4)
    lora = read_lora(tmp_path / "vx" / "transformer_audio" / "lora_diffusion_pytorch_model.safetensors")
    assert lora.scopes() == {"audio": 2}
    _assert_close_to_hand(comps, lora_deltas(factors, 1.0), lora)


@pytest.mark.parametrize("style", ["kohya", "diffusion_model", "diffusers_wan", "peft"])
def test_community_wan22_layouts_go_to_the_named_expert(tmp_path, style):
    comps = tiny_components()
    factors = random_factors(comps, {"video_high": TARGETS["video_high"]}, rank=4)
    alpha = 2.0 if style == "kohya" else None
    file = write_single(tmp_path / "wan2.2_i2v_A14B_HighNoise_test.safetensors", factors["video_high"], style, alpha)
    lora = read_lora(file)
    low_before = run(comps, "video_low")
    report = _assert_close_to_hand(comps, lora_deltas(factors, (alpha or 4) / 4), lora)
    assert "high-noise expert (name says 'HighNoise')" in str(report)
    assert all(torch.equal(g, w) for g, w in zip(run(comps, "video_low"), low_before))  # low expert untouched


def test_expert_choice_without_hint_is_explicit(tmp_path):
    comps = tiny_components()
    factors = random_factors(comps, {"video_high": TARGETS["video_high"]})
    file = write_single(tmp_path / "my_style.safetensors", factors["video_high"], "kohya", alpha=4)
    lora = read_lora(file)
    both = {"video_high": lora_deltas(factors)["video_high"], "video_low": lora_deltas(factors)["video_high"]}
    report = _assert_close_to_hand(comps, both, lora, experts=("video_high", "video_low"))
    assert "both experts (no high-/low-noise hint" in str(report)
    remove_loras(comps)
    comps2 = tiny_components()
    low = {"video_low": lora_deltas(factors)["video_high"]}
    report = _assert_close_to_hand(comps2, low, lora, expert="low", experts=("video_high", "video_low"))
    assert "video high-noise" not in str(report)


def test_prefixless_diffsynth_file_for_the_audio_tower(tmp_path):
    comps = tiny_components()
    factors = random_factors(comps, {"audio": TARGETS["audio"]})
    lora = read_lora(write_single(tmp_path / "audio.safetensors", factors["audio"], "bare"))
    with pytest.raises(LoraMismatchError, match="shapes do not"):  # by default it is taken for a video LoRA
        apply_lora_stack(comps, LoraStack((LoraEntry(lora),)))
    _assert_close_to_hand(comps, lora_deltas(factors), lora, expert="audio")


def _lokr(g, out_dim, in_dim, factorize_w1):
    a1, b1 = (4, 8) if not factorize_w1 else (2, 4)
    w1_shape = (a1, b1)
    w2_shape = (out_dim // a1, in_dim // b1)
    t = {}
    if factorize_w1:
        t["lokr_w1_a"], t["lokr_w1_b"] = torch.randn(w1_shape[0], 2, generator=g), torch.randn(2, w1_shape[1], generator=g)
        t["lokr_w2"] = torch.randn(*w2_shape, generator=g) * 0.1
        w1, w2, rank = t["lokr_w1_a"] @ t["lokr_w1_b"], t["lokr_w2"], 2
    else:
        t["lokr_w1"] = torch.randn(*w1_shape, generator=g)
        t["lokr_w2_a"], t["lokr_w2_b"] = torch.randn(w2_shape[0], 3, generator=g) * 0.1, torch.randn(3, w2_shape[1], generator=g) * 0.1
        w1, w2, rank = t["lokr_w1"], t["lokr_w2_a"] @ t["lokr_w2_b"], 3
    return t, torch.kron(w1, w2), rank


@pytest.mark.parametrize("factorize_w1", [False, True])
def test_lycoris_lokr(tmp_path, factorize_w1):
    comps = tiny_components()
    g = torch.Generator().manual_seed(7)
    sd, deltas = {}, {}
    for path in TARGETS["video_high"]:
        w = comps["video_high"].get_submodule(path).weight
        t, delta, rank = _lokr(g, w.shape[0], w.shape[1], factorize_w1)
        base = f"lycoris_{kohya(path)}"
        sd.update({f"{base}.{k}": v for k, v in t.items()})
        sd[f"{base}.alpha"] = torch.tensor(1.5)
        deltas[path] = delta * 1.5 / rank
    save_file(sd, str(tmp_path / "lokr_high_noise.safetensors"))
    lora = read_lora(tmp_path / "lokr_high_noise.safetensors")
    assert lora.source_format == "LyCORIS LoKr"
    _assert_close_to_hand(comps, {"video_high": deltas}, lora)


def test_lycoris_loha(tmp_path):
    comps = tiny_components()
    g = torch.Generator().manual_seed(8)
    sd, deltas = {}, {}
    for path in TARGETS["video_low"]:
        w = comps["video_low"].get_submodule(path).weight
        t = {"hada_w1_a": torch.randn(w.shape[0], 2, generator=g) * 0.3, "hada_w1_b": torch.randn(2, w.shape[1], generator=g) * 0.3,
             "hada_w2_a": torch.randn(w.shape[0], 2, generator=g) * 0.3, "hada_w2_b": torch.randn(2, w.shape[1], generator=g) * 0.3}
        sd.update({f"lora_unet_{kohya(path)}.{k}": v for k, v in t.items()})
        sd[f"lora_unet_{kohya(path)}.alpha"] = torch.tensor(1.0)
        deltas[path] = (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"]) / 2
    save_file(sd, str(tmp_path / "loha.safetensors"))
    lora = read_lora(tmp_path / "loha.safetensors")
    _assert_close_to_hand(comps, {"video_low": deltas}, lora, expert="low", experts=("video_low",))


# ---------------------------------------------------------------------------------------------- refusals

class NotATensor:
    def __init__(self):
        self.payload = 1


def test_pt_with_custom_class_is_refused(tmp_path):
    torch.save({"blocks.0.self_attn.q.lora_A.weight": torch.zeros(2, 2), "evil": NotATensor()}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="refused to load.*never runs") as err:
        read_lora(tmp_path / "x.pt")
    assert "weights_only" not in str(err.value)      # torch's "set weights_only=False" advice never shown


def test_pt_loader_never_unpickles_code(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(NotATensor, "__setstate__", lambda self, s: calls.append(s), raising=False)
    torch.save([NotATensor()], tmp_path / "y.pth")
    with pytest.raises(CheckpointError):
        read_lora(tmp_path / "y.pth")
    assert calls == []


def test_truncated_and_unknown_files(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="bad.safetensors.*no safetensors header.*re-download"):
        read_lora(tmp_path / "bad.safetensors")
    (tmp_path / "x.gguf").write_bytes(b"1")
    with pytest.raises(CheckpointError, match="unsupported LoRA file type"):
        read_lora(tmp_path / "x.gguf")
    with pytest.raises(CheckpointError, match="not found"):
        read_lora(tmp_path / "missing.safetensors")


def _fake(tmp_path, name, keys_shapes):
    sd = {k: torch.zeros(s) for k, s in keys_shapes.items()}
    save_file(sd, str(tmp_path / name))
    return read_lora(tmp_path / name)


def test_flux_lora_is_named_in_the_error(tmp_path):
    comps = tiny_components()
    lora = _fake(tmp_path, "flux.safetensors", {
        "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": (4, 3072),
        "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": (9216, 4),
        "lora_unet_single_blocks_3_linear1.lora_down.weight": (4, 3072),
        "lora_unet_single_blocks_3_linear1.lora_up.weight": (21504, 4)})
    with pytest.raises(LoraMismatchError, match="looks like a LoRA for Flux"):
        apply_lora_stack(comps, LoraStack((LoraEntry(lora),)))


def test_sdxl_lora_is_named_in_the_error(tmp_path):
    comps = tiny_components()
    lora = _fake(tmp_path, "sdxl.safetensors", {
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 2048),
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight": (640, 4),
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 768),
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": (3072, 4)})
    with pytest.raises(LoraMismatchError, match="looks like a LoRA for SDXL"):
        apply_lora_stack(comps, LoraStack((LoraEntry(lora),)))


def test_sd15_diffusers_unet_is_named(tmp_path):
    keys = {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": (4, 768),
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight": (640, 4)}
    assert guess_family(keys, keys)[0] == "Stable Diffusion 1.x"


def test_wan_1_3b_lora_named_by_its_width(tmp_path):
    comps = tiny_components()
    lora = _fake(tmp_path, "wan21_t2v_1.3b.safetensors", {
        "diffusion_model.blocks.0.self_attn.q.lora_A.weight": (4, 1536),
        "diffusion_model.blocks.0.self_attn.q.lora_B.weight": (1536, 4)})
    with pytest.raises(LoraMismatchError, match="Wan 2.1 T2V-1.3B"):
        apply_lora_stack(comps, LoraStack((LoraEntry(lora),)))


def test_wan21_i2v_lora_applies_partially_with_warning(tmp_path):
    comps = tiny_components()
    factors = random_factors(comps, {"video_high": TARGETS["video_high"]})
    sd = {}
    for path, (a, b) in factors["video_high"].items():
        sd[f"diffusion_model.{path}.lora_A.weight"], sd[f"diffusion_model.{path}.lora_B.weight"] = a, b
    for i in range(2):
        for n in ("k_img", "v_img"):
            sd[f"diffusion_model.blocks.{i}.cross_attn.{n}.lora_A.weight"] = torch.zeros(4, 64)
            sd[f"diffusion_model.blocks.{i}.cross_attn.{n}.lora_B.weight"] = torch.zeros(64, 4)
    save_file(sd, str(tmp_path / "wan21_i2v_high_noise.safetensors"))
    lora = read_lora(tmp_path / "wan21_i2v_high_noise.safetensors")
    report = _assert_close_to_hand(comps, lora_deltas(factors), lora)
    assert "applied 5 of 9 keys to video high-noise, 4 unmatched" in str(report)
    (warning,) = report.warnings
    assert "blocks.*.cross_attn.k_img (2)" in warning and "Wan 2.1 I2V" in warning


def test_file_without_lora_tensors(tmp_path):
    comps = tiny_components()
    lora = _fake(tmp_path, "model.safetensors", {"blocks.0.self_attn.q.weight": (64, 64)})
    with pytest.raises(LoraMismatchError, match="contains no LoRA weights"):
        apply_lora_stack(comps, LoraStack((LoraEntry(lora),)))


@pytest.mark.parametrize("name,meta,want", [
    ("wan2.2_i2v_high_noise_lora", {}, "high"), ("Wan22-I2V-HighNoise", {}, "high"),
    ("x_LOW_fp16", {}, "low"), ("lowres_fix", {}, None), ("highlight", {}, None),
    ("style", {"ss_output_name": "style_low_noise"}, "low"), ("both_high_and_low", {}, None),
    ("style", {"ss_tag_frequency": "high noise"}, None)])
def test_expert_hints(name, meta, want):
    assert expert_hint(name, meta)[0] == want


@pytest.mark.parametrize("key,scope,path", [
    ("lora_unet_video_dit_2_blocks_0_self_attn_q.lora_down.weight", "video_low", "blocks.0.self_attn.q"),
    ("video_dit.blocks.1.ffn.2.lora_A.default.weight", "video_high", "blocks.1.ffn.2"),
    ("dual_tower_bridge.video_to_audio_conditioners.3.inner.o.lora_A", "bridge", "video_to_audio_conditioners.3.inner.o"),
    ("diffusion_model.blocks.2.attn1.to_out.0.lora_A.weight", "tower", "blocks.2.self_attn.o"),
    ("transformer.blocks.2.attn2.to_k.lora.down.weight", "tower", "blocks.2.cross_attn.k"),
    ("lora_transformer_blocks_4_ffn_net_0_proj.lora_down.weight", "tower", "blocks.4.ffn.0"),
    ("model.diffusion_model.blocks.3.cross_attn.v_lora.down.weight", "tower", "blocks.3.cross_attn.v"),
    ("base_model.model.blocks.5.self_attn.k.lora_linear_layer.down.weight", "tower", "blocks.5.self_attn.k"),
    ("transformer.condition_embedder.text_embedder.linear_1.lora_A.weight", "tower", "text_embedding.0"),
    ("diffusion_model.head.head.lora_A.weight", "tower", "head.head"),
])
def test_key_spellings_resolve_to_our_modules(key, scope, path):
    from mova_pack.models.lora.stack import _Catalog
    up = key.replace("lora_down", "lora_up").replace("lora_A", "lora_B").replace("lora.down", "lora.up") \
        .replace("lora_linear_layer.down", "lora_linear_layer.up").replace("_lora.down", "_lora.up")
    lora = parse_lora({key: torch.zeros(2, 4), up: torch.zeros(4, 2)}, "x")
    ((got_scope, name),) = lora.adapters
    comps = tiny_components()
    root = comps["video_high"] if scope in ("tower", "video_low", "video_high") else comps[scope]
    assert got_scope == scope and _Catalog(root).find(name) == path


@pytest.mark.parametrize("extra,high,low", [({}, "transformer", "transformer_2"),  # diffusers Wan2.2
                                             ({"transformer_audio": 1}, "transformer_2", "transformer")])  # VideoX-Fun
def test_two_expert_single_files(extra, high, low):
    sd = {}
    for prefix, rank in ((high, 2), (low, 3)) + tuple(extra.items()):
        sd[f"{prefix}.blocks.0.self_attn.q.lora_A.weight"] = torch.zeros(rank, 4)
        sd[f"{prefix}.blocks.0.self_attn.q.lora_B.weight"] = torch.zeros(4, rank)
    lora = parse_lora(sd, "two")
    assert lora.adapters[("video_high", "blocks.0.self_attn.q")].rank == 2
    assert lora.adapters[("video_low", "blocks.0.self_attn.q")].rank == 3
    assert any("layout: transformer =" in n for n in lora.notes)


def test_alpha_zero_means_rank():
    lora = parse_lora({"lora_unet_blocks_0_self_attn_q.lora_down.weight": torch.zeros(4, 8),
                       "lora_unet_blocks_0_self_attn_q.lora_up.weight": torch.zeros(8, 4),
                       "lora_unet_blocks_0_self_attn_q.alpha": torch.tensor(0.0)}, "x")
    assert next(iter(lora.adapters.values())).scale == 1.0


def test_released_architecture_key_counts_on_meta():
    """MOVA accelerate targets every Linear under blocks.* and the bridge q/k/v/o (spec §7.6): on the
    released 360p architecture (built on the meta device) that is 400 / 300 / 240 keys."""
    from mova_pack.models.net.bridge import DualTowerBridge
    from mova_pack.models.config import PRESETS
    from mova_pack.models.net.dit import AudioDiT, VideoDiT
    from mova_pack.models.lora.stack import _Catalog, plan_entry
    cfg = PRESETS["mova-360p"]
    with torch.device("meta"):
        comps = {"video_high": VideoDiT(cfg.video_dit), "audio": AudioDiT(cfg.audio_dit),
                 "bridge": DualTowerBridge(cfg.bridge)}
    sd = {}
    for comp, prefix in (("video_high", "video_dit"), ("audio", "audio_dit"), ("bridge", "dual_tower_bridge")):
        for path, m in comps[comp].named_modules():
            if isinstance(m, torch.nn.Linear) and (path.startswith("blocks.") or ".inner." in path):
                sd[f"{prefix}.{path}.lora_A.weight"] = torch.empty(16, m.in_features, device="meta")
                sd[f"{prefix}.{path}.lora_B.weight"] = torch.empty(m.out_features, 16, device="meta")
    lora = parse_lora(sd, "full", source_format="MOVA accelerate")
    plan = plan_entry(LoraEntry(lora), {c: _Catalog(m) for c, m in comps.items()})
    assert plan.counts == {"video_high": [400, 400], "audio": [300, 300], "bridge": [240, 240]}
    assert not plan.unmatched and not plan.misfit


@pytest.mark.parametrize("keys,family", [
    (["transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight",
      "transformer.context_embedder.token_refiner.refiner_blocks.0.attn.to_q.lora_A.weight"], "HunyuanVideo"),
    (["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight",
      "lora_unet_double_blocks_0_img_mlp_fc1.lora_down.weight"], "HunyuanVideo"),
    (["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight",
      "lora_unet_double_blocks_0_img_mlp_0.lora_down.weight"], "Flux"),
    (["transformer.transformer_blocks.0.attn.add_q_proj.lora_A.weight",
      "transformer.single_transformer_blocks.0.proj_out.lora_A.weight"], "Flux"),
    (["transformer.transformer_blocks.0.attn.add_q_proj.lora_A.weight"], "Stable Diffusion 3"),
    (["transformer.transformer_blocks.0.attn1.to_q.lora_A.weight"], "LTX-Video"),
    (["diffusion_model.transformer_blocks.0.audio_attn1.to_q.lora_A.weight"], "LTX-2"),
    (["transformer.transformer_blocks.0.img_mod.1.lora_A.weight"], "Qwen-Image"),
    (["diffusion_model.double_stream_blocks.0.block.attn1.to_q.lora_A.weight"], "HiDream"),
    (["diffusion_model.layers.0.attention.qkv.lora_A.weight"], "Lumina 2"),
    (["diffusion_model.blocks.0.cross_attn.k_img.lora_A.weight"], "Wan 2.1 I2V"),
    (["diffusion_model.blocks.0.cross_attn.k.lora_A.weight"], None),
])
def test_guess_family(keys, family):
    got = guess_family(keys)
    assert (got is None) if family is None else got[0].startswith(family)

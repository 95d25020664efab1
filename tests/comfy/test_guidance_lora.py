"""MOVA Bridge Guidance and MOVA LoRA nodes in the real ComfyUI, on the embedded model (in-process).

LoRA files are written for the embedded model's own architecture (module shapes read from the loaded
generator) into the `loras` folder of the test's ComfyUI base: a community-style kohya file (no
component prefix), a MOVA accelerate folder (lora_weights.pt + lora_config.pt), a VideoX-Fun folder,
and a Flux LoRA that fits nothing.
"""
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import (COMFY_DIR, OLD_WORKFLOWS, ROOT, WORKFLOWS, check_av_file, embedded_model_name, load_workflow,
                      model_sample_rate)

NEW_WORKFLOW = WORKFLOWS / "lora_bridge_guidance.json"
DEMO_LORA = ROOT / "demo_loras" / "mova-toy-trained-demo-lora.safetensors"    # fits embedded/mova-toy
# The first release's demo LoRA fits the random stand-in (mova-toy-random: video 64 wide, audio 32), which
# the old saved workflow (tests/fixtures/workflows_v1) still selects.
STAND_IN_DEMO_LORA = ROOT / "demo_loras" / "mova-toy-demo-lora.safetensors"
STEPS = 3
LORA_ID, GUIDE_ID, AUDIO_NEG_ID = "900", "901", "902"


# ------------------------------------------------------------------------------------------ LoRA files

def write_demo_lora(path: Path, video_width: int = 128, audio_width: int = 64) -> Path:
    """A demo LoRA of demo_loras/: MOVA-prefixed peft keys on modules the embedded models share
    (blocks 0-2 attention of both video experts, audio blocks 0-2 self-attention), fixed seed. The
    default widths fit the trained toy; 64/32 the random stand-in."""
    g = torch.Generator().manual_seed(20260122)
    sd = {}
    for prefix, width, parts in (("video_dit", video_width, ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
                                                    "cross_attn.q", "cross_attn.o")),
                                 ("video_dit_2", video_width, ("self_attn.q", "self_attn.v", "cross_attn.o")),
                                 ("audio_dit", audio_width, ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o"))):
        for block in range(3):
            for part in parts:
                base = f"{prefix}.blocks.{block}.{part}"
                sd[f"{base}.lora_A.weight"] = torch.randn(4, width, generator=g) * 0.15
                sd[f"{base}.lora_B.weight"] = torch.randn(width, 4, generator=g) * 0.15
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata={"title": "MOVA toy demo LoRA (random, shows the wiring)"})
    return path


def linears(module, under=("blocks.",)):
    return {p: m for p, m in module.named_modules()
            if isinstance(m, torch.nn.Linear) and p.startswith(under)}


def factors(module, seed, rank=4, scale=0.2, under=("blocks.",)):
    g = torch.Generator().manual_seed(seed)
    return {p: (torch.randn(rank, m.in_features, generator=g) * scale,
                torch.randn(m.out_features, rank, generator=g) * scale)
            for p, m in linears(module, under).items()}


def write_kohya(path, items):
    sd = {}
    for p, (a, b) in items.items():
        base = "lora_unet_" + p.replace(".", "_")
        sd[f"{base}.lora_down.weight"], sd[f"{base}.lora_up.weight"] = a.contiguous(), b.contiguous()
        sd[f"{base}.alpha"] = torch.tensor(float(a.shape[0]))
    save_file(sd, str(path))


def write_accelerate(folder, parts):
    folder.mkdir(parents=True, exist_ok=True)
    sd = {f"{prefix}.{p}.lora_{ab}.weight": t for prefix, items in parts.items()
          for p, (a, b) in items.items() for ab, t in (("A", a), ("B", b))}
    torch.save(sd, folder / "lora_weights.pt")
    torch.save({"rank": 16, "alpha": 16.0, "target_modules": list(parts)}, folder / "lora_config.pt")


def write_videox(folder, parts):
    for sub, items in parts.items():
        (folder / sub).mkdir(parents=True, exist_ok=True)
        write_kohya(folder / sub / "lora_diffusion_pytorch_model.safetensors", items)


@pytest.fixture(scope="module")
def env(comfy):
    """ComfyUI with LoRA files for the embedded model in its loras folder; returns a small helper."""
    return Env(comfy)


class Env:
    def __init__(self, comfy):
        self.comfy = comfy
        shutil.copy(COMFY_DIR / "input" / "example.png", comfy.base / "input" / "example.png")  # old i2v graph
        base = comfy.convert(load_workflow(WORKFLOWS / "text_to_video_audio.json"))
        self.ids = {v["class_type"]: k for k, v in base.items()}
        self.base = base
        self.sampler_id, self.loader_id = self.ids["MOVASampler"], self.ids["MOVAModelLoader"]
        g = self.gen
        self.loras = Path(comfy.folder_paths.get_folder_paths("loras")[0])
        self.loras.mkdir(parents=True, exist_ok=True)
        self.counts = {"video": len(linears(g.video_high)), "audio": len(linears(g.audio)),
                       "bridge": len(linears(g.bridge, ("audio_to_video", "video_to_audio")))}
        write_kohya(self.loras / "community_wan22.safetensors", factors(g.video_high, 1))
        write_kohya(self.loras / "community_wan22_high_noise.safetensors", factors(g.video_high, 2))
        self.accelerate = {"video_high": factors(g.video_high, 3), "video_low": factors(g.video_low, 4),
                           "audio": factors(g.audio, 5),
                           "bridge": factors(g.bridge, 6, under=("audio_to_video", "video_to_audio"))}
        write_accelerate(self.loras / "mova_accelerate", {
            {"video_high": "video_dit", "video_low": "video_dit_2", "audio": "audio_dit",
             "bridge": "dual_tower_bridge"}[c]: f for c, f in self.accelerate.items()})
        write_videox(self.loras / "videox_fun", {"transformer": factors(g.video_low, 7),
                                                 "transformer_audio": factors(g.audio, 8)})
        flux = {}
        for key in ("double_blocks_0_img_attn_qkv", "double_blocks_0_img_mlp_0", "single_blocks_3_linear1"):
            flux[f"lora_unet_{key}.lora_down.weight"] = torch.zeros(4, 3072)
            flux[f"lora_unet_{key}.lora_up.weight"] = torch.zeros(9216, 4)
        save_file(flux, str(self.loras / "flux_style_by_mistake.safetensors"))
        self.seed = 11

    @property
    def handle(self):
        """The loader's current output (re-run by ComfyUI whenever another test changed its inputs)."""
        return self.comfy.run(self.base, outputs=[self.loader_id]).values[self.loader_id][0][0]

    @property
    def gen(self):
        return self.handle.generator

    def pack_module(self, name):
        """A module of the pack as ComfyUI imported it (e.g. "nodes.lora"), never a second copy."""
        root = self.comfy.nodes.NODE_CLASS_MAPPINGS["MOVASampler"].__module__.rsplit(".", 2)[0]
        return sys.modules[f"{root}.{name}"]

    def prompt(self, lora=None, guidance=None, audio_negative=None, seed=None):
        p = json.loads(json.dumps(self.base))
        sampler = p[self.sampler_id]["inputs"]
        sampler.update(steps=STEPS, seed=self.seed if seed is None else seed)
        p[self.ids["MOVALatent"]]["inputs"].update(width=32, height=32, frames=9)   # small: quick runs
        if lora is not None:
            inputs = {"model": [self.loader_id, 0], "strength_video_high": 1.0, "strength_video_low": 1.0,
                      "strength_audio": 1.0, "strength_bridge": 1.0, "video_expert": "auto", "apply": "merge"}
            p[LORA_ID] = {"class_type": "MOVALora", "inputs": {**inputs, **lora}}
            sampler["model"] = [LORA_ID, 0]
        if guidance is not None:
            inputs = {"video_text_scale": 5.0, "audio_text_scale": 5.0, "a2v_bridge_scale": 2.0,
                      "v2a_bridge_scale": 2.0, "form": "nested", "bridge_off": "both", "bridge_start": 0.0,
                      "bridge_end": 1.0, "batch_passes": False}
            p[GUIDE_ID] = {"class_type": "MOVABridgeGuidance", "inputs": {**inputs, **guidance}}
            if audio_negative is not None:
                p[AUDIO_NEG_ID] = {"class_type": "MOVATextEncode",
                                   "inputs": {"text_encoder": [self.ids["MOVATextEncoderLoader"], 0],
                                              "text": audio_negative}}
                p[GUIDE_ID]["inputs"]["audio_negative"] = [AUDIO_NEG_ID, 0]
            sampler["guidance"] = [GUIDE_ID, 0]
        return p

    def sample(self, **kw):
        """(video, audio, info text or None, progress texts of the sampler); fails on any error."""
        p = self.prompt(**kw)
        outputs = [self.sampler_id] + ([LORA_ID] if LORA_ID in p else [])
        result = self.comfy.run(p, outputs=outputs)
        assert result.valid, result.node_errors
        assert result.success, result.execution_error()
        latent = result.values[self.sampler_id][0][0]
        info = result.values[LORA_ID][1][0] if LORA_ID in p else None
        self.last_handle = result.values[LORA_ID][0][0] if LORA_ID in p else None
        texts = [t for n, t in self.comfy.stub.progress_text if n == self.sampler_id]
        return latent.video, latent.audio, info, texts


def forwards(texts):
    return [int(t.split(" · ")[-1].split(" ")[0]) for t in texts]


# ------------------------------------------------------------------------------------------ nodes

def test_nodes_registered_with_category_and_tooltips(env):
    for node_id in ("MOVABridgeGuidance", "MOVALora"):
        info = env.comfy.object_info(node_id)
        assert info["category"].startswith("MOVA/"), node_id
        for category, inputs in info["input"].items():
            if category != "hidden":
                for name, spec in inputs.items():
                    assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    assert env.comfy.object_info("MOVALora")["output"] == ["MOVA_MODEL", "STRING"]
    assert env.comfy.object_info("MOVABridgeGuidance")["output"] == ["MOVA_GUIDANCE"]


def test_lora_list_has_files_and_lora_folders_not_their_insides(env):
    options = env.comfy.object_info("MOVALora")["input"]["required"]["lora"][1]["options"]
    for name in ("community_wan22.safetensors", "mova_accelerate/", "videox_fun/", DEMO_LORA.name,
                 STAND_IN_DEMO_LORA.name):
        assert name in options, options
    assert not [o for o in options if o.startswith(("mova_accelerate/", "videox_fun/")) and not o.endswith("/")]


@pytest.mark.parametrize("shipped, widths", [(DEMO_LORA, (128, 64)), (STAND_IN_DEMO_LORA, (64, 32))])
def test_demo_loras_are_the_ones_this_code_writes(tmp_path, shipped, widths):
    """demo_loras/ ships the demo LoRAs of the workflows; they are reproducible from write_demo_lora."""
    from safetensors.torch import load_file
    fresh = load_file(str(write_demo_lora(tmp_path / "demo.safetensors", *widths)))
    shipped = load_file(str(shipped))
    assert fresh.keys() == shipped.keys() and all(torch.equal(fresh[k], shipped[k]) for k in fresh)


# ------------------------------------------------------------------------------------------ LoRA

def test_lora_changes_output_strength_reapplies_and_removal_restores_base(env, comfy):
    # The reference: a fresh executor loads the model from disk and never sees a LoRA.
    ref = comfy.run(env.prompt(), fresh=True, outputs=[env.sampler_id])
    assert ref.success, ref.execution_error()
    ref_v, ref_a = ref.values[env.sampler_id][0][0].video, ref.values[env.sampler_id][0][0].audio

    lora = {"lora": "community_wan22.safetensors"}
    v1, a1, info, _ = env.sample(lora=lora)
    n = env.counts["video"]
    assert f"applied {n} of {n} keys to video high-noise, 0 unmatched" in info, info
    assert f"applied {n} of {n} keys to video low-noise, 0 unmatched" in info, info
    assert "both experts" in info and "warning" not in info, info
    assert not torch.equal(v1, ref_v) and not torch.equal(a1, ref_a)   # the Bridge carries it to the audio

    lora_mod = env.pack_module("nodes.lora")
    cached = dict(lora_mod._CACHE)
    v_half, _, info_half, _ = env.sample(lora={**lora, "strength_video_high": 0.5, "strength_video_low": 0.5})
    assert "strength 0.5" in info_half
    assert not torch.equal(v_half, v1) and not torch.equal(v_half, ref_v)
    assert dict(lora_mod._CACHE) == cached          # the LoRA file was not read again
    assert env.last_handle.generator is env.gen     # nor the model: the loader's output is reused
    assert env.handle.lora is None and len(env.last_handle.lora.entries) == 1   # a copy, input untouched
    v1b, a1b, _, _ = env.sample(lora=lora, seed=env.seed)
    assert torch.equal(v1b, v1) and torch.equal(a1b, a1)   # back to 1: from the kept originals, exactly

    zero = {k: 0.0 for k in ("strength_video_high", "strength_video_low", "strength_audio", "strength_bridge")}
    v0, a0, info0, _ = env.sample(lora={**lora, **zero})
    assert torch.equal(v0, ref_v) and torch.equal(a0, ref_a), "strength 0 must be the base model"
    assert "strength 0 for video high-noise" in info0

    v1c, _, _, _ = env.sample(lora=lora)
    assert torch.equal(v1c, v1)
    v_base, a_base, _, texts = env.sample()             # the node removed, same ComfyUI process
    assert len(texts) == STEPS                          # really sampled again, not a cached result
    assert torch.equal(v_base, ref_v) and torch.equal(a_base, ref_a)


def test_expert_hint_in_the_name_targets_one_expert(env):
    _, _, info, _ = env.sample(lora={"lora": "community_wan22_high_noise.safetensors"})
    n = env.counts["video"]
    assert f"applied {n} of {n} keys to video high-noise, 0 unmatched" in info, info
    assert "video low-noise" not in info.split("\n", 1)[1], info
    _, _, info, _ = env.sample(lora={"lora": "community_wan22_high_noise.safetensors", "video_expert": "low"})
    assert f"applied {n} of {n} keys to video low-noise" in info and "to video high-noise" not in info, info


def test_mova_accelerate_folder_chained_with_videox_and_alongside_mode(env, comfy):
    c = env.counts
    v_acc, a_acc, info, _ = env.sample(lora={"lora": "mova_accelerate/"})
    for label, n in (("video high-noise", c["video"]), ("video low-noise", c["video"]),
                     ("audio tower", c["audio"]), ("bridge", c["bridge"])):
        assert f"applied {n} of {n} keys to {label}, 0 unmatched" in info, info
    assert "MOVA accelerate" in info and "(merged)" in info, info

    v_al, a_al, info_al, _ = env.sample(lora={"lora": "mova_accelerate/", "apply": "alongside"})
    assert "(alongside)" in info_al and "(merged)" not in info_al, info_al
    assert torch.allclose(v_al, v_acc, atol=1e-4, rtol=1e-4) and torch.allclose(a_al, a_acc, atol=1e-4, rtol=1e-4)

    # A chain: MOVA LoRA -> MOVA LoRA -> sampler; the second node's handle carries both entries.
    p = env.prompt(lora={"lora": "mova_accelerate/", "strength_bridge": 0.0})
    p["903"] = {"class_type": "MOVALora", "inputs": {
        "model": [LORA_ID, 0], "lora": "videox_fun/", "strength_video_high": 1.0, "strength_video_low": 0.7,
        "strength_audio": 0.3, "strength_bridge": 1.0, "video_expert": "auto", "apply": "merge"}}
    p[env.sampler_id]["inputs"]["model"] = ["903", 0]
    result = comfy.run(p, outputs=[env.sampler_id, "903"])
    assert result.success, result.execution_error()
    handle, info2 = result.values["903"][0][0], result.values["903"][1][0]
    assert len(handle.lora.entries) == 2
    assert "VideoX-Fun" in info2 and f"applied {c['video']} of {c['video']} keys to video low-noise" in info2
    assert "strength 0 for bridge" in info2 and "strength 0.3" in info2, info2
    assert not torch.equal(result.values[env.sampler_id][0][0].video, v_acc)


def test_quantized_model_takes_the_lora_alongside_and_drops_it_exactly(env, comfy):
    """fp8 weights cannot be merged into: the LoRA is computed next to them; removing it gives the
    quantized base back bit for bit; the result stays within the quantization error of the float run."""
    def run(lora=None, fresh=False):
        p = env.prompt(lora=lora)
        p[env.loader_id]["inputs"]["quantization"] = "fp8_e4m3fn"
        outputs = [env.sampler_id] + ([LORA_ID] if lora else [])
        result = comfy.run(p, outputs=outputs, fresh=fresh)
        assert result.success, result.execution_error()
        assert len([t for n, t in comfy.stub.progress_text if n == env.sampler_id]) == STEPS   # not cached
        latent = result.values[env.sampler_id][0][0]
        return latent.video, (result.values[LORA_ID][1][0] if lora else None)

    base_q, _ = run(fresh=True)                   # a model that never saw the LoRA
    lora_q, info = run({"lora": "community_wan22.safetensors"})
    assert "(alongside)" in info and "(merged)" not in info, info
    assert not torch.equal(lora_q, base_q)
    lora_f, _, _, _ = env.sample(lora={"lora": "community_wan22.safetensors"})
    assert (lora_q - lora_f).norm() / lora_f.norm() < 0.2
    again, _ = run()
    assert torch.equal(again, base_q)


def test_lora_that_fits_nothing_is_a_readable_error_naming_its_family(env, comfy):
    result = comfy.run(env.prompt(lora={"lora": "flux_style_by_mistake.safetensors"}))
    assert result.valid, result.node_errors
    assert not result.success
    error = result.execution_error()
    assert error["node_type"] == "MOVALora"
    assert error["exception_type"].endswith("LoraMismatchError")
    assert "Flux" in error["exception_message"] and "none of its" in error["exception_message"]


def test_missing_lora_file_is_a_validation_error(env, comfy):
    result = comfy.run(env.prompt(lora={"lora": "not_there.safetensors"}))
    assert not result.valid
    assert "not_there.safetensors" in json.dumps(result.node_errors)


# ------------------------------------------------------------------------------------------ guidance

@pytest.mark.parametrize("case, guidance, audio_negative, per_step", [
    (0, None, None, [2, 2, 2]),                                                     # released text CFG
    (1, {}, None, [3, 3, 3]),                                                       # nested, bridge 2
    (2, {"video_text_scale": 1.0, "audio_text_scale": 1.0, "a2v_bridge_scale": 1.0,
         "v2a_bridge_scale": 1.0}, None, [1, 1, 1]),                                # nothing to guide
    (3, {"bridge_end": 0.5}, None, [3, 3, 2]),                                      # steps 0, 1 of 3
    (4, {"form": "independent", "video_text_scale": 1.0, "audio_text_scale": 1.0}, None, [2, 2, 2]),
    (5, {"bridge_off": "separate"}, "muffled, noise", [5, 5, 5]),
])
def test_forwards_per_step_in_the_progress_text(env, case, guidance, audio_negative, per_step):
    _, _, _, texts = env.sample(guidance=guidance, audio_negative=audio_negative, seed=500 + case)  # not cached
    assert forwards(texts) == per_step, texts


def test_guidance_range_and_limits_are_validation_errors(env, comfy):
    result = comfy.run(env.prompt(guidance={"bridge_start": 0.8, "bridge_end": 0.2}))
    assert not result.valid
    text = json.dumps(result.node_errors)
    assert "after bridge_end" in text and "MOVABridgeGuidance" in text, text
    result = comfy.run(env.prompt(guidance={"a2v_bridge_scale": 99.0}))
    assert not result.valid and "a2v_bridge_scale" in json.dumps(result.node_errors)


def test_audio_negative_from_another_text_encoder_is_a_readable_error(env, comfy):
    nodes = comfy.nodes.NODE_CLASS_MAPPINGS
    wide = nodes["MOVAConditioningFromCLIP"].execute(conditioning=[[torch.zeros(1, 5, 4096), {}]]).args[0]
    guidance = nodes["MOVABridgeGuidance"].execute(5.0, 5.0, 2.0, 2.0, "nested", "both", 0.0, 1.0, False,
                                                   audio_negative=wide).args[0]
    p = env.prompt()
    s = p[env.sampler_id]["inputs"]
    values = comfy.run(p, outputs=[s["positive"][0], s["negative"][0]]).values
    pos, neg = values[s["positive"][0]][0][0], values[s["negative"][0]][0][0]
    with pytest.raises(Exception, match="audio negative prompt was encoded 4096 wide") as err:
        env.pack_module("nodes.backend").sample(env.handle, pos, neg, latent=None, settings=None, guidance=guidance)
    assert type(err.value).__name__ == "InputError"


def test_neutral_guidance_is_the_released_cfg_bitwise_and_bridge_guidance_changes_it(env):
    base_v, base_a, _, _ = env.sample()
    v, a, _, _ = env.sample(guidance={"a2v_bridge_scale": 1.0, "v2a_bridge_scale": 1.0})
    assert torch.equal(v, base_v) and torch.equal(a, base_a)
    v, a, _, _ = env.sample(guidance={"form": "independent", "a2v_bridge_scale": 0.0, "v2a_bridge_scale": 0.0})
    assert torch.equal(v, base_v) and torch.equal(a, base_a)
    v2, a2, _, _ = env.sample(guidance={})
    assert not torch.equal(v2, base_v) and not torch.equal(a2, base_a)
    vb, ab, _, _ = env.sample(guidance={"batch_passes": True})
    assert torch.allclose(vb, v2, atol=1e-4, rtol=1e-4) and torch.allclose(ab, a2, atol=1e-4, rtol=1e-4)


def sample_by_hand(env, comfy, generator, guidance=None):
    """models/sampler.sample on `generator` with the graph's prompts, latent and settings."""
    sampler_mod, cond_mod = env.pack_module("models.sampling.sampler"), env.pack_module("models.sampling.conditioning")
    backend = env.pack_module("nodes.backend")
    p = env.prompt()
    s = p[env.sampler_id]["inputs"]
    wanted = [s["positive"][0], s["negative"][0], s["latent"][0]]
    values = comfy.run(p, outputs=wanted).values
    pos, neg, latent = (values[i][0][0] for i in wanted)
    settings = backend.sampler_settings(STEPS, s["shift"], s["boundary"], env.seed, s["video_cfg"],
                                        s["audio_cfg"], s["schedule"], latent.fps, s.get("audio_shift", 0.0))
    shapes = cond_mod.latent_shapes(generator.config, latent.width, latent.height, latent.frames, latent.fps)
    return sampler_mod.sample(generator, *sampler_mod.make_noise(env.seed, *shapes), pos.context, neg.context,
                              latent.y, settings, guidance=guidance)


def test_each_strength_reaches_its_component_like_a_delta_applied_by_hand(env, comfy):
    """MOVA accelerate folder with four different strengths == W + strength·B·A merged by hand into a copy."""
    import copy
    env.sample(seed=env.seed + 1)                  # no LoRA: the shared generator holds the base weights
    strengths = {"video_high": 0.5, "video_low": 1.0, "audio": 0.25, "bridge": 0.75}
    base = copy.deepcopy(env.gen)
    ref = copy.deepcopy(base)
    with torch.no_grad():
        for comp, items in env.accelerate.items():
            for path, (a, b) in items.items():
                w = getattr(ref, comp).get_submodule(path).weight
                w += strengths[comp] * (b @ a)
    hv, ha = sample_by_hand(env, comfy, ref)
    v, a, _, _ = env.sample(lora={"lora": "mova_accelerate/", **{f"strength_{c}": x for c, x in strengths.items()}})
    assert torch.allclose(v, hv, rtol=1e-5, atol=1e-5) and torch.allclose(a, ha, rtol=1e-5, atol=1e-5)
    base_v, _ = sample_by_hand(env, comfy, base)      # sanity: the LoRA matters at these strengths
    assert (v - base_v).abs().max() > 1e-3


def test_node_settings_reach_the_engine(env, comfy):
    """The node run equals models/guidance driven by hand with the same settings on the same model."""
    guidance_mod = env.pack_module("models.sampling.guidance")
    v, a, _, _ = env.sample(guidance={"video_text_scale": 4.0, "audio_text_scale": 3.0, "a2v_bridge_scale": 2.5,
                                      "v2a_bridge_scale": 1.5, "bridge_start": 0.3})
    g = guidance_mod.GuidanceSettings(video_text_scale=4.0, audio_text_scale=3.0, a2v_scale=2.5, v2a_scale=1.5,
                                      bridge_start=0.3)
    hv, ha = sample_by_hand(env, comfy, env.gen, guidance=guidance_mod.DualGuidance(g))
    assert torch.equal(hv, v) and torch.equal(ha, a)


# ------------------------------------------------------------------------------------------ workflows

def _layout_ok(ui):
    """No two nodes overlap. The loaders' sizes already hold the estimate lines web/mova.js reserves at
    creation; tests/browser/test_canvas.py checks the rendered canvas for overlaps."""
    boxes = [(n["type"], n["pos"][0], n["pos"][1], n["size"][0], n["size"][1]) for n in ui["nodes"]]
    for i, (ta, xa, ya, wa, ha) in enumerate(boxes):
        for tb, xb, yb, wb, hb in boxes[i + 1:]:
            assert not (xa < xb + wb and xb < xa + wa and ya < yb + hb and yb < ya + ha), (ta, tb)


def test_new_workflow_uses_both_nodes_and_runs_to_an_mp4_with_audio(env, comfy):
    ui = load_workflow(NEW_WORKFLOW)
    types = [n["type"] for n in ui["nodes"]]
    assert "MOVALora" in types and "MOVABridgeGuidance" in types
    _layout_ok(ui)
    for node in ui["nodes"]:   # smaller and fewer steps than shipped: quick (the shipped one runs in
        if node["type"] == "MOVALatent":              # test_comfy_nodes.py as it is)
            node["widgets_values"][:3] = [32, 32, 9]
        if node["type"] == "MOVASampler":
            node["widgets_values"][2] = 3
    prompt = comfy.convert(ui)
    result = comfy.run(prompt)
    assert result.valid, result.node_errors
    assert result.success, result.execution_error()
    videos = [f for f in result.files() if f["filename"].endswith(".mp4")]
    assert len(videos) == 1
    info = check_av_file(comfy.output_path(videos[0]), ui, model_sample_rate(embedded_model_name()))
    assert info["audio"][0]["samples"] > 0
    sampler_id = next(k for k, v in prompt.items() if v["class_type"] == "MOVASampler")
    texts = [t for n, t in comfy.stub.progress_text if n == sampler_id]
    assert texts and "3 forwards/step" in texts[0], texts
    lora_id = next(k for k, v in prompt.items() if v["class_type"] == "MOVALora")
    lora_text = " ".join(t for n, t in comfy.stub.progress_text if n == lora_id)
    assert "applied" in lora_text and "0 unmatched" in lora_text, lora_text


@pytest.mark.parametrize("path", sorted(OLD_WORKFLOWS.glob("*.json")), ids=lambda p: p.stem)
def test_saved_workflows_still_run_next_to_the_new_nodes(env, comfy, path):
    """Every frozen workflow (the first release's, and this one as first shipped) converts and runs."""
    prompt = comfy.convert(load_workflow(path))
    sampler = next(v for v in prompt.values() if v["class_type"] == "MOVASampler")
    assert ("guidance" in sampler["inputs"]) == (path.name == NEW_WORKFLOW.name)
    sampler["inputs"]["steps"] = 2     # quick: loading and running is the point here
    next(v for v in prompt.values() if v["class_type"] == "MOVALatent")["inputs"].update(width=32, height=32,
                                                                                          frames=9)
    result = comfy.run(prompt)
    assert result.valid, result.node_errors
    assert result.success, result.execution_error()
    assert [f for f in result.files() if f["filename"].endswith(".mp4")]

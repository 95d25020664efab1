"""Tiny MOVA trees and LoRA files in every supported format, plus the hand-applied reference."""
import copy

import torch
from safetensors.torch import save_file

from mova_pack.models.net.bridge import DualTowerBridge
from mova_pack.models.config import PRESETS
from mova_pack.models.net.dit import AudioDiT, VideoDiT
from mova_pack.models.net.joint import joint_forward

torch.set_num_threads(1)  # 2 shared cores: no oversubscription
CFG = PRESETS["tiny"]
MOVA_PREFIX = {"video_high": "video_dit", "video_low": "video_dit_2", "audio": "audio_dit",
               "bridge": "dual_tower_bridge"}
VIDEOX_FOLDER = {"video_low": "transformer", "video_high": "transformer_2", "audio": "transformer_audio",
                 "bridge": "dual_tower_bridge"}
TARGETS = {
    "video_high": ["blocks.0.self_attn.q", "blocks.0.self_attn.o", "blocks.3.cross_attn.k", "blocks.5.ffn.0",
                   "blocks.5.ffn.2"],
    "video_low": ["blocks.1.self_attn.v", "blocks.2.cross_attn.o", "blocks.4.ffn.2"],
    "audio": ["blocks.0.self_attn.k", "blocks.3.ffn.0"],
    "bridge": ["audio_to_video_conditioners.0.inner.q", "audio_to_video_conditioners.1.inner.k",
               "video_to_audio_conditioners.2.inner.v"],
}


def tiny_components(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    comps = {"video_high": VideoDiT(CFG.video_dit), "video_low": VideoDiT(CFG.video_dit),
             "audio": AudioDiT(CFG.audio_dit), "bridge": DualTowerBridge(CFG.bridge)}
    return {k: m.to(dtype).eval() for k, m in comps.items()}


def inputs(seed=3):
    g = torch.Generator().manual_seed(seed)
    return dict(video_latents=torch.randn(1, 16, 2, 8, 8, generator=g),
                audio_latents=torch.randn(1, 128, 11, generator=g),
                context=torch.randn(1, 12, 32, generator=g),
                y=torch.randn(1, 20, 2, 8, 8, generator=g))


@torch.no_grad()
def run(comps, expert="video_high", timestep=700.0, **kw):
    x = inputs()
    v, a = joint_forward(comps[expert], comps["audio"], comps["bridge"], x["video_latents"],
                         x["audio_latents"], timestep, x["context"], y=x["y"], **kw)
    return v.float(), a.float()


def random_factors(comps, targets=TARGETS, rank=4, seed=1):
    """{component: {path: (A [r, in], B [out, r])}} for the given module paths."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for comp, paths in targets.items():
        out[comp] = {}
        for path in paths:
            w = comps[comp].get_submodule(path).weight
            out[comp][path] = (torch.randn(rank, w.shape[1], generator=g) * 0.1,
                               torch.randn(w.shape[0], rank, generator=g) * 0.1)
    return out


def by_hand(comps, deltas, strengths=None):
    """Deep copy of `comps` with W += strength * delta, computed in fp32 and cast back."""
    ref = copy.deepcopy(comps)
    strengths = strengths or {}
    with torch.no_grad():
        for comp, items in deltas.items():
            for path, delta in items.items():
                w = ref[comp].get_submodule(path).weight
                w.copy_((w.float() + strengths.get(comp, 1.0) * delta.reshape(w.shape)).to(w.dtype))
    return ref


def lora_deltas(factors, scale=1.0):
    return {c: {p: (b @ a) * scale for p, (a, b) in items.items()} for c, items in factors.items()}


def kohya(path):
    return path.replace(".", "_")


# ---------------------------------------------------------------------------------------------- writers

def write_accelerate(folder, factors, default_suffix=False):
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".default.weight" if default_suffix else ".weight"
    sd = {}
    for comp, items in factors.items():
        for path, (a, b) in items.items():
            sd[f"{MOVA_PREFIX[comp]}.{path}.lora_A{suffix}"] = a
            sd[f"{MOVA_PREFIX[comp]}.{path}.lora_B{suffix}"] = b
    torch.save(sd, folder / "lora_weights.pt")
    torch.save({"rank": 16, "alpha": 16.0, "target_modules": ["video_dit", "audio_dit"]},
               folder / "lora_config.pt")
    return folder


def write_low_resource(file, factors, rank, alpha):
    sd = {}
    for comp, items in factors.items():
        for path, (a, b) in items.items():
            sd[f"{MOVA_PREFIX[comp]}.{path}.lora_A"] = a
            sd[f"{MOVA_PREFIX[comp]}.{path}.lora_B"] = b
    torch.save({"lora_state_dict": sd, "rank": rank, "alpha": alpha, "dropout": 0.0,
                "target_modules": ["q", "k", "v", "o"]}, file)
    return file


def write_videox(folder, factors, alpha):
    for comp, items in factors.items():
        sub = folder / VIDEOX_FOLDER[comp]
        sub.mkdir(parents=True, exist_ok=True)
        sd = {}
        for path, (a, b) in items.items():
            base = f"lora_unet__{kohya(path)}"
            sd[f"{base}.lora_down.weight"], sd[f"{base}.lora_up.weight"] = a.contiguous(), b.contiguous()
            sd[f"{base}.alpha"] = torch.tensor(float(alpha))
        save_file(sd, str(sub / "lora_diffusion_pytorch_model.safetensors"))
    return folder


def write_single(file, items, style, alpha=None, metadata=None):
    """One video-expert LoRA in a community layout. items: {path: (A, B)} (our module paths)."""
    sd = {}
    for path, (a, b) in items.items():
        if style == "kohya":
            base, down, up = f"lora_unet_{kohya(path)}", "lora_down.weight", "lora_up.weight"
        elif style == "diffusion_model":
            base, down, up = f"diffusion_model.{path}", "lora_A.weight", "lora_B.weight"
        elif style == "diffusers_wan":
            base, down, up = f"transformer.{diffusers_name(path)}", "lora_A.weight", "lora_B.weight"
        elif style == "peft":
            base, down, up = f"base_model.model.{path}", "lora_A.default.weight", "lora_B.default.weight"
        elif style == "bare":  # DiffSynth: no prefix at all
            base, down, up = path, "lora_A.default.weight", "lora_B.default.weight"
        else:
            raise ValueError(style)
        sd[f"{base}.{down}"], sd[f"{base}.{up}"] = a.contiguous(), b.contiguous()
        if alpha is not None:
            sd[f"{base}.alpha"] = torch.tensor(float(alpha))
    save_file(sd, str(file), metadata=metadata)
    return file


def diffusers_name(path):
    parts = path.split(".")
    n, part, leaf = parts[1], parts[2], parts[3]
    if part == "ffn":
        return f"blocks.{n}.ffn.net.0.proj" if leaf == "0" else f"blocks.{n}.ffn.net.2"
    attn = "attn1" if part == "self_attn" else "attn2"
    return f"blocks.{n}.{attn}." + {"q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0"}[leaf]

"""What a LoRA that does not fit MOVA was made for, and which Wan2.2 expert a video LoRA targets.

API
    guess_family(keys, shapes=None) -> (family, example_key) | None   "Flux", "SDXL", "Wan 2.1 I2V", ...
    guess_wan_size(width) -> str | None       a Wan tower width that is not MOVA's (1536 -> Wan 1.3B ...)
    expert_hint(name, metadata) -> ("high" | "low" | None, reason)   from file name / title metadata
    group_prefixes(names, limit=8) -> list[str]   "blocks.*.cross_attn.k_img (40)" summary of names
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Mapping, Optional

_DIGITS = re.compile(r"(?<=[._])\d+(?=[._]|$)")


def group_prefixes(names: Iterable[str], limit: int = 8) -> list:
    """Names with block indices collapsed to `*`, most frequent first, with counts."""
    counts = Counter(_DIGITS.sub("*", n) for n in names)
    out = [f"{p} ({c})" for p, c in counts.most_common(limit)]
    if len(counts) > limit:
        out.append(f"... {len(counts) - limit} more patterns")
    return out


def _any(keys: str, *needles) -> Optional[str]:
    return next((n for n in needles if n in keys), None)


# (family, test) in priority order; each test gets the space-joined lower-case keys.
_FAMILIES = (
    ("HunyuanVideo", lambda s: ("double_blocks" in s or "single_transformer_blocks" in s) and
     _any(s, "token_refiner", "img_mlp.fc1", "img_mlp_fc1", ".img_attn_qkv")),
    ("Flux", lambda s: _any(s, "double_blocks", "single_blocks", "single_transformer_blocks")),
    ("HiDream", lambda s: _any(s, "double_stream_blocks", "single_stream_blocks")),
    ("Stable Diffusion 3", lambda s: _any(s, "joint_blocks", "context_block.") or
     ("transformer_blocks" in s and _any(s, ".attn.add_q_proj", "_attn_add_q_proj"))),
    ("SDXL", lambda s: _any(s, "lora_te2_", "text_encoder_2", "conditioner.embedders.1")),
    ("Stable Diffusion 1.x/2.x/XL UNet", lambda s: _any(s, "input_blocks", "output_blocks", "down_blocks",
                                                        "up_blocks", "mid_block", "lora_te_", "lora_te1_")),
    ("Qwen-Image", lambda s: "transformer_blocks" in s and _any(s, "img_mod", "txt_mlp")),
    ("LTX-2 (audio-video)", lambda s: "transformer_blocks" in s and _any(s, "audio_attn", "audio_to_video_attn",
                                                                        "video_to_audio_attn", "audio_ff")),
    # Wan's diffusers layout says `blocks.N`, never `transformer_blocks.N`.
    ("LTX-Video / CogVideoX / Mochi (diffusers transformer_blocks)",
     lambda s: _any(s, "transformer_blocks", "adaln_single", "caption_projection")),
    ("Lumina 2 / Z-Image", lambda s: _any(s, "noise_refiner", "context_refiner", ".attention.qkv")),
    ("Wan 2.1 I2V (CLIP image branch, which MOVA does not have)",
     lambda s: _any(s, "k_img", "v_img", "img_emb", "add_k_proj", "image_embedder")),
)

_SDXL_WIDTHS = {768: "Stable Diffusion 1.x", 1024: "Stable Diffusion 2.x", 2048: "SDXL"}


def guess_family(keys: Iterable[str], shapes: Mapping[str, tuple] = None):
    """(family, first matching key) for keys of a model that is not MOVA, or None."""
    keys = list(keys)
    joined = " ".join(k.lower() for k in keys)
    for family, test in _FAMILIES:
        hit = test(joined)
        if hit:
            needle = hit if isinstance(hit, str) else None
            example = next((k for k in keys if needle and needle in k.lower()), keys[0] if keys else "")
            if family.startswith("Stable Diffusion 1.x") and shapes:
                family = _unet_family(shapes) or family
            return family, example
    return None


def _unet_family(shapes: Mapping[str, tuple]) -> Optional[str]:
    """Text-cross-attention key width tells SD1.x (768) / SD2.x (1024) / SDXL (2048) apart."""
    for key, shape in shapes.items():
        if ("attn2_to_k" in key or "attn2.to_k" in key) and ("down" in key or "lora_A" in key) and len(shape) >= 2:
            if shape[1] in _SDXL_WIDTHS:
                return _SDXL_WIDTHS[shape[1]]
    return None


_WAN_WIDTHS = {1536: "Wan 2.1 T2V-1.3B (width 1536)", 3072: "Wan 2.2 TI2V-5B (width 3072)",
               5120: "Wan 14B (width 5120)"}


def guess_wan_size(width: int) -> Optional[str]:
    return _WAN_WIDTHS.get(int(width))


_STRONG = re.compile(r"(high|low)[\s_\-.]?noise", re.IGNORECASE)
_WEAK = re.compile(r"(?<![a-z0-9])(high|low)(?![a-z])", re.IGNORECASE)
_NAME_FIELDS = ("_file_name", "_folder_name", "ss_output_name", "modelspec.title", "name", "title")


def expert_hint(name: str, metadata: Mapping[str, str] = None):
    """Which Wan2.2 expert a video LoRA was trained for, from its name/title only (never its content).
    Returns ("high" | "low", reason) or (None, reason)."""
    texts = [("name", name or "")] + [(f, str(v)) for f, v in (metadata or {}).items()
                                      if f in _NAME_FIELDS and isinstance(v, str) and len(v) < 300]
    for pattern, kind in ((_STRONG, "says"), (_WEAK, "has the word")):
        found = {}
        for field_name, text in texts:
            for m in pattern.finditer(text):
                found.setdefault(m.group(1).lower(), (field_name, m.group(0)))
        if len(found) == 1:
            (expert, (field_name, word)), = found.items()
            return expert, f"{field_name} {kind} '{word}'"
        if len(found) > 1:
            return None, "its name mentions both high and low noise"
    return None, "no high-/low-noise hint in its name or metadata"

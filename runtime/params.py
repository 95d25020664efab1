"""Parameter counts and weight bytes of the MOVA modules from config arithmetic (no module is built).

Every module is described as a list of Linear shapes that quantization may touch plus a count of
"other" parameters (norms, modulation, embeddings, convs, biases of kept layers) that stay in the
model dtype. tests/test_planner.py checks these numbers against meta-built modules, exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..kernels.quant import NF4_BLOCK

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


@dataclass(frozen=True)
class Part:
    """linears: ((out, in, has_bias), ...) that quantize; other: params always kept in the model dtype."""
    linears: tuple = ()
    other: int = 0
    fp32_buffers: int = 0  # non-persistent fp32 buffers (bridge rotary inv_freq)

    def __add__(self, o: "Part") -> "Part":
        return Part(self.linears + o.linears, self.other + o.other, self.fp32_buffers + o.fp32_buffers)

    def __mul__(self, n: int) -> "Part":
        return Part(self.linears * n, self.other * n, self.fp32_buffers * n)

    @property
    def params(self) -> int:
        return self.other + sum(o * i + (o if b else 0) for o, i, b in self.linears)

    def bytes(self, mode: str = "bf16", dtype: str = "bf16", fp8_scale: str = "tensor") -> int:
        """Stored bytes with `mode` quantization of the linears (bias stays in `dtype`)."""
        db = DTYPE_BYTES[dtype]
        total = self.other * db + self.fp32_buffers * 4
        for o, i, b in self.linears:
            total += (o * db if b else 0) + _weight_bytes(o, i, mode, db, fp8_scale)
        return total


def _weight_bytes(out: int, inp: int, mode: str, db: int, fp8_scale: str) -> int:
    n = out * inp
    if mode in ("bf16", "fp16"):
        return n * db
    if mode == "fp8_e4m3fn":
        return n + 4 * (out if fp8_scale == "channel" else 1)
    if mode == "int8":
        return n + 4 * out
    if mode == "nf4":
        if n % NF4_BLOCK:
            return n * db  # kept in high precision (see quantize_module)
        return n // 2 + 2 * (n // NF4_BLOCK)  # packed nibbles + fp16 block absmax
    raise ValueError(f"unknown quantization mode {mode!r}")


def _lin(out: int, inp: int, bias: bool = True) -> tuple:
    return (out, inp, bias)


def dit_block(cfg) -> Part:
    d, f = cfg.dim, cfg.ffn_dim
    attn = Part(tuple(_lin(d, d) for _ in range(4)), other=2 * d)  # q k v o + norm_q, norm_k
    ffn = Part((_lin(f, d), _lin(d, f)))
    return attn * 2 + ffn + Part(other=2 * d + 6 * d)  # norm3 (affine) + modulation


def dit_stem(cfg) -> Part:
    """Everything of a tower outside its blocks (kept in high precision, never quantized)."""
    d, p = cfg.dim, math.prod(cfg.patch_size)
    patch = cfg.in_dim * p * d + d
    text = cfg.text_dim * d + d + d * d + d
    time = cfg.freq_dim * d + d + d * d + d
    proj = d * 6 * d + 6 * d
    head = d * cfg.out_dim * p + cfg.out_dim * p + 2 * d
    return Part(other=patch + text + time + proj + head)


def bridge_layer(cfg) -> tuple[Part, Part]:
    """(a2v, v2a) conditioner of one interaction layer."""
    v, a = cfg.visual_hidden_dim, cfg.audio_hidden_dim

    def block(dim, kv):
        return Part((_lin(dim, dim), _lin(dim, kv), _lin(dim, kv), _lin(dim, dim)), other=2 * kv + 2 * dim)
    return block(v, a), block(a, v)


def bridge_stem(cfg) -> Part:
    return Part(fp32_buffers=cfg.head_dim // 2)  # rotary inv_freq (not in files)


def dit_part(cfg) -> Part:
    return dit_stem(cfg) + dit_block(cfg) * cfg.num_layers


def bridge_part(cfg) -> Part:
    a2v, v2a = bridge_layer(cfg)
    return bridge_stem(cfg) + (a2v + v2a) * len(cfg.interaction_layers)


def text_encoder_params(cfg) -> int:
    """umT5 encoder: shared embedding + per layer (self-attn, gated FFN, 2 norms, own rel. bias) + final norm."""
    inner = cfg.num_heads * cfg.d_kv
    layer = 4 * cfg.d_model * inner + 3 * cfg.d_model * cfg.d_ff + 2 * cfg.d_model
    layer += cfg.relative_attention_num_buckets * cfg.num_heads
    return cfg.vocab_size * cfg.d_model + cfg.num_layers * layer + cfg.d_model


def video_vae_params(cfg) -> int:
    """Wan 2.1 VAE (encoder + decoder); 126.9M for the released config [DERIVED from the key list]."""
    return round(126_892_531 * (cfg.base_dim / 96) ** 2)


def audio_vae_params(cfg) -> int:
    """DAC VAE, 371.5M for the released config (spec §10); scaled by width for other configs."""
    return round(371_540_000 * (cfg.decoder_dim / 2048) * (cfg.encoder_dim / 128))

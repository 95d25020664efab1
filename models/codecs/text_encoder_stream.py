"""umT5 weights read tensor by tensor into a model built on the meta device: host RAM never holds
more than the model's steady state plus one tensor. ComfyUI's scaled-fp8 file keeps its fp8 linears
as fp8 (kernels.quant.FP8Linear: weight * per-tensor scale, dequantized per layer in the forward);
everything else is cast to the requested dtype as it is read.

ComfyUI 0.3.75 marks such a file with a `scaled_fp8` tensor (its dtype is the fp8 format) and stores
one `<layer>.scale_weight` per fp8 weight (`<layer>.scale_input` only for fp8 matmuls: not needed)."""
from __future__ import annotations

import types
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ...common.errors import CheckpointError
from ...common.files import clean, safetensors_header
from ...kernels.quant import fp8_quantize, make_quantized_shells

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
_SKIP = ("scaled_fp8", "spiece_model")
_PREFIXES = ("text_encoders.umt5xxl.transformer.", "umt5xxl.transformer.", "transformer.")
_DTYPES = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


class TensorIndex:
    """key -> (file handle, stored key) over safetensors files, with shapes and dtypes from the
    headers only; `read(key)` copies one tensor out of its file."""

    def __init__(self, paths: Sequence[Path]):
        from safetensors import safe_open

        self.where: dict[str, tuple] = {}
        self._handles = []
        for path in paths:
            safetensors_header(Path(path), "text encoder")   # empty, HTML, truncated: named and explained
            try:
                handle = safe_open(str(path), framework="pt")
            except Exception as exc:   # safetensors raises its own error types for bad headers
                raise CheckpointError(f"{path}: not a readable safetensors file ({clean(exc, 160)}). "
                                      "Download it again.") from None
            self._handles.append(handle)
            for key in handle.keys():
                self.where[key] = (handle, key)
        prefix = next((p for p in _PREFIXES if f"{p}encoder.final_layer_norm.weight" in self.where), "")
        if prefix:
            self.where = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in self.where.items()
                          if k.startswith(prefix) or k in _SKIP}

    def __contains__(self, key: str) -> bool:
        return key in self.where

    def shape(self, key: str) -> tuple:
        handle, stored = self.where[key]
        return tuple(handle.get_slice(stored).get_shape())

    def dtype(self, key: str):
        handle, stored = self.where[key]
        return _DTYPES.get(handle.get_slice(stored).get_dtype())

    def read(self, key: str) -> torch.Tensor:
        handle, stored = self.where[key]
        return handle.get_tensor(stored)

    def meta_dict(self) -> dict:
        """Shapes as meta tensors (for infer_config)."""
        return {k: torch.empty(self.shape(k), device="meta") for k in self.where if k not in _SKIP}


def fp8_layers(index: TensorIndex) -> list[str]:
    """Layer paths whose weight is stored fp8 with a per-tensor scale_weight."""
    return sorted(k[: -len(".weight")] for k in index.where
                  if k.endswith(".weight") and k[: -len("weight")] + "scale_weight" in index
                  and index.dtype(k) in FP8_DTYPES)


def _gated_ff(self, hidden):
    # HF casts the FFN input to wo.weight.dtype (fp8 here); the quantized wo dequantizes itself instead
    h = self.act(self.wi_0(hidden)) * self.wi_1(hidden)
    return self.wo(self.dropout(h))


def _relu_ff(self, hidden):
    return self.wo(self.dropout(self.act(self.wi(hidden))))


def _assign(model: nn.Module, key: str, value: torch.Tensor) -> None:
    path, _, attr = key.rpartition(".")
    module = model.get_submodule(path)
    old = getattr(module, attr)
    if tuple(old.shape) != tuple(value.shape):
        raise CheckpointError(f"umT5 weight {key}: shape {tuple(value.shape)} in the file, {tuple(old.shape)} "
                              "expected from the other tensors. The file is damaged or mixes two models.")
    if attr in module._parameters:
        module._parameters[attr] = nn.Parameter(value, requires_grad=False)
    else:
        module._buffers[attr] = value


def block_linears(index: TensorIndex) -> list[str]:
    """Paths of the attention and FFN linears of every block (what fp8 quantization covers)."""
    return sorted(k[: -len(".weight")] for k in index.where if k.startswith("encoder.block.")
                  and k.endswith(".weight") and len(index.shape(k)) == 2 and "relative_attention_bias" not in k)


def stream_umt5(index: TensorIndex, cfg, dtype: torch.dtype, device, where: str,
                on_tensor: Callable[[str], None] | None = None, quantize_fp8: bool = False) -> nn.Module:
    """UMT5EncoderModel of `cfg` on `device`, weights read one at a time from `index`. `quantize_fp8`:
    the block linears of a full-precision source are quantized to fp8 (per tensor) as they are read."""
    from transformers import UMT5EncoderModel

    from .text_encoder import umt5_config

    with torch.device("meta"):
        model = UMT5EncoderModel(umt5_config(cfg))
    stored = set(fp8_layers(index))
    quantized = sorted(stored | set(block_linears(index))) if quantize_fp8 else sorted(stored)
    make_quantized_shells(model, {path: "fp8_e4m3fn" for path in quantized})
    if quantized:   # no dtype cast of the FFN input to the fp8 storage dtype
        for block in model.encoder.block:
            ff = block.layer[-1].DenseReluDense
            ff.forward = types.MethodType(_gated_ff if hasattr(ff, "wi_0") else _relu_ff, ff)
    want = {k for k in model.state_dict() if k != "encoder.embed_tokens.weight"}
    have = {k[: -len("scale_weight")] + "weight_scale" if k.endswith(".scale_weight") else k
            for k in index.where if k not in _SKIP and not k.endswith(".scale_input")}
    have = {"shared.weight" if k == "encoder.embed_tokens.weight" else k for k in have}
    have |= {layer + ".weight_scale" for layer in quantized if layer not in stored}
    missing, unexpected = sorted(want - have), sorted(have - want)
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: umT5 weights do not match: {len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} "
            f"unexpected (e.g. {unexpected[:3]}). The file is truncated or not umT5-xxl; use "
            "umt5_xxl_fp8_e4m3fn_scaled / umt5_xxl_fp16 or MOVA's text_encoder/ folder.")
    fp8 = set(quantized)
    for key in sorted(want):
        src = key
        if key.endswith(".weight_scale"):
            src = key[: -len("weight_scale")] + "scale_weight"
        elif key == "shared.weight" and key not in index:
            src = "encoder.embed_tokens.weight"
        layer = key.rpartition(".")[0]
        if layer in fp8 and layer not in stored:     # quantized while reading
            if key.endswith(".weight_scale"):
                continue                             # set with its weight
            w = index.read(src)
            if key[: -len("weight")] + "scale_weight" in index:
                w = w.float() * index.read(key[: -len("weight")] + "scale_weight").float()
            q, scale = fp8_quantize(w, per_channel=False)
            del w
            _assign(model, key, q.to(device))
            _assign(model, layer + ".weight_scale", scale.reshape(()).to(device))
            continue
        value = index.read(src)
        if key.endswith(".weight_scale"):
            value = value.float().reshape(())
        elif key.endswith(".weight") and key[: -len(".weight")] in fp8:
            pass                                         # stays fp8
        elif key.endswith(".weight") and key[: -len("weight")] + "scale_weight" in index:
            value = value.float() * index.read(key[: -len("weight")] + "scale_weight").float()
        if not (key.endswith(".weight") and key[: -len(".weight")] in fp8) and not key.endswith(".weight_scale"):
            value = value.to(dtype)
        _assign(model, key, value.to(device))
        del value
        if on_tensor is not None:
            on_tensor(key)
    model.encoder.embed_tokens = model.shared            # the tie the meta build set up
    return model.eval().requires_grad_(False)


def text_encoder_bytes(cfg, act: int, fp8_linears: bool) -> int:
    """Bytes of the loaded umT5: linears at 1 byte each when kept fp8 (ComfyUI's scaled file), all
    else (embedding, relative-position biases, norms) in the compute dtype."""
    d, inner, ff = cfg.d_model, cfg.num_heads * cfg.d_kv, cfg.d_ff
    gated = 3 if "gated" in cfg.feed_forward_proj else 2
    linears = cfg.num_layers * (4 * d * inner + gated * d * ff)
    rest = cfg.vocab_size * d + cfg.num_layers * (cfg.relative_attention_num_buckets * cfg.num_heads + 2 * d) + d
    return linears * (1 if fp8_linears else act) + rest * act


def write_comfy_scaled_fp8(state_dict: dict, path, spiece: bytes | None = None) -> None:
    """Write an HF-named umT5 state dict the way ComfyUI ships umt5_xxl_fp8_e4m3fn_scaled: every 2-D
    block weight as fp8 e4m3fn with a per-tensor `scale_weight` (amax / 448), the rest as given, the
    `scaled_fp8` marker and the sentencepiece model as uint8 `spiece_model` (for tests and probes)."""
    from safetensors.torch import save_file

    out = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for key, value in state_dict.items():
        if key == "encoder.embed_tokens.weight":
            continue
        if key.startswith("encoder.block.") and value.ndim == 2 and "relative_attention_bias" not in key:
            scale = (value.abs().max().float() / 448.0).clamp(min=1e-12)
            out[key] = (value.float() / scale).to(torch.float8_e4m3fn)
            out[key[: -len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            out[key] = value.contiguous()
    if spiece is not None:
        out["spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
    save_file(out, str(path))

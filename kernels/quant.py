"""Quantized linear layers: fp8 e4m3fn (scaled), bitsandbytes nf4 and int8 (weight-only).

Only the large Linear weights of the transformer blocks and bridge conditioners are quantized; norms,
biases, `modulation`, the patch/text/time embeddings, `head.head` and everything that is not an
nn.Linear stay in high precision (spec §8). Weights are dequantized on the fly to the activation dtype,
so the math is "bf16 compute with compressed storage" on every device.

State-dict layout of a quantized layer `<name>`: `<name>.weight` (fp8 / int8 / packed uint8 nf4),
`<name>.weight_scale` (fp32 per-tensor [] or per-channel [out, 1] for fp8, fp32 [out] for int8,
fp16 per-64-block absmax for nf4),
`<name>.bias` (high precision). The same keys are written to pre-quantized files (see quant_io.py).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .device import cuda_capability, fp8_matmul_capable, optional_import
from .fp8_act import act_granularity, act_quant_impl, quantize_activation

log = logging.getLogger("mova")

MODES = ("bf16", "fp16", "fp8_e4m3fn", "nf4", "int8")  # bf16 / fp16: no quantization
QUANTIZED_MODES = ("fp8_e4m3fn", "nf4", "int8")
FP8_MAX = 448.0
NF4_BLOCK = 64

# Module-path segments that stay in high precision (matched as whole dotted segments).
DEFAULT_SKIP = ("patch_embedding", "text_embedding", "time_embedding", "time_projection",
                "head.head", "modulation", "img_emb")


@dataclass(frozen=True)
class QuantSettings:
    mode: str = "bf16"
    fp8_scale: str = "tensor"         # tensor | channel
    fp8_fast_matmul: bool = False     # torch._scaled_mm on sm_89+; opt-in (users report quality loss)
    skip: tuple = DEFAULT_SKIP

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"quantization mode must be one of {MODES}, got {self.mode!r}")
        if self.fp8_scale not in ("tensor", "channel"):
            raise ValueError(f"fp8_scale must be 'tensor' or 'channel', got {self.fp8_scale!r}")

    @property
    def quantized(self) -> bool:
        return self.mode in QUANTIZED_MODES


def require_bitsandbytes(mode: str):
    bnb = optional_import("bitsandbytes")
    if bnb is None:
        raise ImportError(f"quantization mode {mode!r} needs bitsandbytes, which is not installed. "
                          "Install it into ComfyUI's Python (python -m pip install bitsandbytes; 0.45 or later), "
                          "or pick fp8_e4m3fn (no extra package).")
    return bnb


def should_quantize(path: str, module: nn.Module, skip=DEFAULT_SKIP) -> bool:
    """True for an nn.Linear whose dotted path contains none of the `skip` segments."""
    if type(module) is not nn.Linear:
        return False
    dotted = f".{path}."
    return not any(f".{s}." in dotted for s in skip)


def should_quantize_key(key: str, tensor: torch.Tensor, skip=DEFAULT_SKIP) -> bool:
    """The state-dict version of should_quantize: 2-D `.weight` of a non-skipped module.
    (In MOVA towers and the bridge, every 2-D weight belongs to an nn.Linear.)"""
    if not key.endswith(".weight") or tensor.dim() != 2:
        return False
    dotted = f".{key[:-len('.weight')]}."
    return not any(f".{s}." in dotted for s in skip)


class LowRankAdapter(nn.Module):
    """out += scale * (x @ A^T) @ B^T, computed next to a quantized weight (LoRA without merging).
    A/B are non-persistent so a saved quantized file never contains them."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, scale: float):
        super().__init__()
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise ValueError(f"LoRA shapes must be A [r, in], B [out, r]; got {tuple(a.shape)}, {tuple(b.shape)}")
        self.register_buffer("a", a, persistent=False)
        self.register_buffer("b", b, persistent=False)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = (t.to(device=x.device, dtype=x.dtype) for t in (self.a, self.b))  # no-ops once placed
        return F.linear(F.linear(x, a), b) * self.scale


class QuantLinear(nn.Module):
    """Base of the quantized linears: bias in high precision, optional low-rank adapters."""
    mode = ""

    def __init__(self, in_features: int, out_features: int, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        self.adapters = nn.ModuleList()

    def add_adapter(self, a: torch.Tensor, b: torch.Tensor, scale: float) -> LowRankAdapter:
        if a.shape[1] != self.in_features or b.shape[0] != self.out_features:
            raise ValueError(f"LoRA A {tuple(a.shape)} / B {tuple(b.shape)} do not fit a "
                             f"[{self.out_features}, {self.in_features}] layer")
        dev = self.weight.device
        adapter = LowRankAdapter(a.to(dev), b.to(dev), scale)
        self.adapters.append(adapter)
        return adapter

    def clear_adapters(self) -> None:
        self.adapters = nn.ModuleList()

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        out = F.linear(x, self.dequantize(x.dtype), bias)
        for adapter in self.adapters:
            out = out + adapter(x)
        return out

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, mode={self.mode}, bias={self.bias is not None}"


def fp8_quantize(w: torch.Tensor, per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    w = w.detach().float()
    absmax = w.abs().amax(dim=1, keepdim=True) if per_channel else w.abs().amax()
    scale = torch.where(absmax > 0, absmax / FP8_MAX, torch.ones_like(absmax))
    q = (w / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scale.float()


def fp8_matmul_problem(capability: tuple | None, dtype: torch.dtype, per_tensor: bool, in_features: int,
                       out_features: int) -> str | None:
    """Why torch._scaled_mm cannot run this layer, or None when it can (plain values: testable on CPU)."""
    if not fp8_matmul_capable(capability):
        return "needs a CUDA GPU of sm_89+ (Ada/Hopper)" if capability is None else \
            f"GPU sm_{capability[0]}{capability[1]} is older than sm_89"
    if dtype not in (torch.float16, torch.bfloat16):
        return f"activations are {dtype} (needs fp16/bf16)"
    if not per_tensor and act_granularity(capability, dtype) != "row":
        return "per-channel fp8 scales (need row-wise _scaled_mm: sm_90+ with bf16 activations)"
    if in_features % 16 or out_features % 16:
        return f"layer {out_features}x{in_features} (both sides must be multiples of 16)"
    return None


_warned_fp8 = set()


def _warn_no_fast_fp8(x: torch.Tensor) -> None:
    key = (x.device.type, x.dtype)
    if key not in _warned_fp8:
        _warned_fp8.add(key)
        log.warning("mova: fp8 fast matmul needs a CUDA GPU of sm_89+ (Ada/Hopper), per-tensor scales (or "
                    "sm_90+ with bf16) and fp16/bf16 activations; running %s %s with fp8 storage and %s compute instead",
                    x.device, str(x.dtype).replace("torch.", ""), str(x.dtype).replace("torch.", ""))


class FP8Linear(QuantLinear):
    mode = "fp8_e4m3fn"

    def __init__(self, in_features, out_features, bias=None, weight=None, weight_scale=None, fast_matmul=False):
        super().__init__(in_features, out_features, bias)
        self.weight = nn.Parameter(weight if weight is not None else
                                   torch.empty(out_features, in_features, dtype=torch.float8_e4m3fn),
                                   requires_grad=False)
        self.register_buffer("weight_scale", weight_scale if weight_scale is not None else torch.ones(()))
        self.fast_matmul = fast_matmul
        self.act_quant = "auto"  # activation quantization impl (kernels/fp8_act.py): auto | triton | compile | reference
        self.act_scale = "auto"  # auto (row-wise where _scaled_mm takes it) | row | tensor (benchmarks)

    @classmethod
    def from_linear(cls, linear: nn.Linear, per_channel=False, fast_matmul=False) -> "FP8Linear":
        q, s = fp8_quantize(linear.weight, per_channel)
        return cls(linear.in_features, linear.out_features, linear.bias, q, s, fast_matmul)

    def dequantize(self, dtype):
        return (self.weight.float() * self.weight_scale).to(dtype)

    def forward(self, x):
        if self.fast_matmul and not self.adapters:
            if self._scaled_mm_ok(x):
                return self._forward_scaled_mm(x)
            _warn_no_fast_fp8(x)
        return super().forward(x)

    def _scaled_mm_ok(self, x) -> bool:
        return fp8_matmul_problem(cuda_capability(x.device), x.dtype, self.weight_scale.numel() == 1,
                                  self.in_features, self.out_features) is None

    def _forward_scaled_mm(self, x):  # CUDA sm_89+ only: fp8 x fp8, activation quantized by a fused kernel
        gran = act_granularity(cuda_capability(x.device), x.dtype) if self.act_scale == "auto" else self.act_scale
        impl = _act_impl_for(x.device, self.act_quant)
        out = fp8_linear(x.reshape(-1, self.in_features), self.weight, self.weight_scale, self.bias, gran, impl)
        return out.reshape(*x.shape[:-1], self.out_features)


_act_impls: dict = {}


def _act_impl_for(device: torch.device, requested: str) -> str:
    """The activation-quantization implementation for this device, chosen once and logged with why."""
    key = (str(device), requested)
    if key not in _act_impls:
        triton_ok = device.type == "cuda" and optional_import("triton") is not None
        impl, reason = act_quant_impl(device.type, triton_ok, requested)
        log.info("mova fp8: activation quantization %s on %s (%s)", impl, device, reason)
        _act_impls[key] = impl
    return _act_impls[key]


_bias_in_mm = {"row": True, "tensor": True}  # becomes False if this torch's _scaled_mm refuses a bias


def fp8_linear(flat: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, bias, granularity: str,
               impl: str = "reference") -> torch.Tensor:
    """x [M, K] @ dequant(weight [N, K]).T + bias through torch._scaled_mm, the activation quantized
    per row or per tensor (kernels/fp8_act.py). Runs wherever _scaled_mm does (CUDA sm_89+; CPU builds
    of recent torch too, which is how the numerics are tested)."""
    x8, xs = quantize_activation(flat, granularity, impl)
    ws = weight_scale.float()
    if granularity == "row":  # [1, N] scales for the weight: per-channel as is, per-tensor broadcast
        ws = ws.reshape(1, -1).expand(1, weight.shape[0]).contiguous()
    else:
        ws = ws.reshape(())
    b = None if bias is None else bias.to(flat.dtype)
    if b is not None and _bias_in_mm[granularity]:
        try:
            return torch._scaled_mm(x8, weight.t(), scale_a=xs, scale_b=ws, bias=b, out_dtype=flat.dtype)
        except RuntimeError as exc:  # older builds: no bias with row-wise scales
            _bias_in_mm[granularity] = False
            log.info("mova fp8: _scaled_mm takes no bias with %s scales here (%s); adding it after", granularity,
                     str(exc).splitlines()[0])
    out = torch._scaled_mm(x8, weight.t(), scale_a=xs, scale_b=ws, out_dtype=flat.dtype)
    return out if b is None else out.add_(b)


class Int8Linear(QuantLinear):
    """Row-wise absmax int8 (bitsandbytes' vector-wise layout: CB int8 [out, in], SCB fp32 [out])."""
    mode = "int8"

    def __init__(self, in_features, out_features, bias=None, weight=None, weight_scale=None):
        super().__init__(in_features, out_features, bias)
        self.weight = nn.Parameter(weight if weight is not None else
                                   torch.empty(out_features, in_features, dtype=torch.int8), requires_grad=False)
        self.register_buffer("weight_scale", weight_scale if weight_scale is not None else
                             torch.ones(out_features))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        q, s = int8_quantize(linear.weight)
        return cls(linear.in_features, linear.out_features, linear.bias, q, s)

    def dequantize(self, dtype):
        return (self.weight.float() * (self.weight_scale.float() / 127.0)[:, None]).to(dtype)


def int8_quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    bnb = require_bitsandbytes("int8")
    w = w.detach()
    src = w if w.dtype in (torch.float16, torch.float32) else w.float()  # bnb CPU op: fp16/fp32 only
    cb, scb, _ = bnb.functional.int8_vectorwise_quant(src)
    return cb.contiguous(), scb.float()


class NF4Linear(QuantLinear):
    """bitsandbytes nf4, block 64: `weight` = packed nibbles (uint8 [out*in/2]), `weight_scale` =
    per-block absmax stored as fp16 ([out*in/64]; 0.25 bit/weight instead of 0.5, and a relative
    error of 5e-4, far below nf4's own step)."""
    mode = "nf4"

    def __init__(self, in_features, out_features, bias=None, weight=None, weight_scale=None):
        super().__init__(in_features, out_features, bias)
        n = in_features * out_features
        if n % NF4_BLOCK:
            raise ValueError(f"nf4 needs in*out divisible by {NF4_BLOCK}, got {in_features}x{out_features}")
        self.weight = nn.Parameter(weight if weight is not None else torch.empty(n // 2, dtype=torch.uint8),
                                   requires_grad=False)
        self.register_buffer("weight_scale", weight_scale if weight_scale is not None else
                             torch.ones(n // NF4_BLOCK, dtype=torch.float16))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "NF4Linear":
        q, s = nf4_quantize(linear.weight)
        return cls(linear.in_features, linear.out_features, linear.bias, q, s)

    def dequantize(self, dtype):
        bnb = require_bitsandbytes("nf4")
        fn = bnb.functional
        state = fn.QuantState(absmax=self.weight_scale.float(),
                              shape=torch.Size((self.out_features, self.in_features)),
                              code=fn.get_4bit_type("nf4", device=self.weight.device),
                              blocksize=NF4_BLOCK, quant_type="nf4", dtype=dtype)
        return fn.dequantize_4bit(self.weight.view(-1, 1), state)


def nf4_quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    bnb = require_bitsandbytes("nf4")
    packed, state = bnb.functional.quantize_4bit(w.detach().contiguous(), blocksize=NF4_BLOCK,
                                                 compress_statistics=False, quant_type="nf4")
    absmax = state.absmax.clamp(max=torch.finfo(torch.float16).max).to(torch.float16)
    return packed.view(-1).contiguous(), absmax.contiguous()


QUANT_CLASSES = {"fp8_e4m3fn": FP8Linear, "nf4": NF4Linear, "int8": Int8Linear}


def quantize_linear(linear: nn.Linear, settings: QuantSettings) -> QuantLinear:
    if settings.mode == "fp8_e4m3fn":
        return FP8Linear.from_linear(linear, settings.fp8_scale == "channel", settings.fp8_fast_matmul)
    return QUANT_CLASSES[settings.mode].from_linear(linear)


def _set_child(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, new)


def quantize_module(root: nn.Module, mode: str | QuantSettings, skip=None) -> list[str]:
    """Replace the large nn.Linear modules of `root` in place; returns the quantized paths.
    bf16 / fp16 are no-ops (casting the model dtype is the loader's job)."""
    settings = mode if isinstance(mode, QuantSettings) else QuantSettings(mode=mode)
    if skip is not None:
        settings = QuantSettings(settings.mode, settings.fp8_scale, settings.fp8_fast_matmul, tuple(skip))
    if not settings.quantized:
        return []
    if settings.mode in ("nf4", "int8"):
        require_bitsandbytes(settings.mode)
    targets = [(p, m) for p, m in root.named_modules() if should_quantize(p, m, settings.skip)]
    for path, linear in targets:
        if settings.mode == "nf4" and (linear.in_features * linear.out_features) % NF4_BLOCK:
            continue  # odd-sized layer: keep in high precision
        _set_child(root, path, quantize_linear(linear, settings))
    return [p for p, _ in targets]


def make_quantized_shells(root: nn.Module, layers: dict[str, str], fast_matmul=False) -> None:
    """Replace the nn.Linear at each path of `layers` ({path: mode}) by an empty quantized layer of the
    same shape, ready for load_state_dict (used when loading a pre-quantized file)."""
    for path, mode in layers.items():
        linear = root.get_submodule(path)
        if not isinstance(linear, (nn.Linear, QuantLinear)):
            raise TypeError(f"{path} is a {type(linear).__name__}, not a Linear layer")
        with torch.device(linear.weight.device):  # meta stays meta: shells cost no memory
            bias = None if linear.bias is None else torch.empty_like(linear.bias)
            shell = QUANT_CLASSES[mode](linear.in_features, linear.out_features, bias)
        if mode == "fp8_e4m3fn":
            shell.fast_matmul = fast_matmul
        _set_child(root, path, shell)


def quantize_tensor(w: torch.Tensor, settings: QuantSettings) -> dict[str, torch.Tensor]:
    """{'weight': q, 'weight_scale': s} for one Linear weight (used for files without a module)."""
    if settings.mode == "fp8_e4m3fn":
        q, s = fp8_quantize(w, settings.fp8_scale == "channel")
    elif settings.mode == "int8":
        q, s = int8_quantize(w)
    elif settings.mode == "nf4":
        q, s = nf4_quantize(w)
    else:
        raise ValueError(f"mode {settings.mode!r} does not quantize")
    return {"weight": q, "weight_scale": s}


def storage_bits_per_weight(mode: str) -> float:
    """Bits per quantized weight element including scales (used by the memory planner)."""
    return {"bf16": 16.0, "fp16": 16.0, "fp8_e4m3fn": 8.0, "int8": 8.0,
            "nf4": 4.0 + 16.0 / NF4_BLOCK}[mode]


def quantized_paths(root: nn.Module) -> dict[str, str]:
    return {p: m.mode for p, m in root.named_modules() if isinstance(m, QuantLinear)}


_LAYER_RE = re.compile(r"^(.*)\.weight_scale$")


def layers_in_state(keys) -> list[str]:
    """Module paths that a state dict stores quantized (they have a `.weight_scale`)."""
    return [m.group(1) for k in keys if (m := _LAYER_RE.match(k))]


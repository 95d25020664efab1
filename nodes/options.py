"""The fixed dropdown lists of the MOVA nodes: one source for the node schemas, their validation and the
HTTP routes (/mova/estimate). Plain Python: routes.py and its unit tests import it without ComfyUI.
Lists that depend on files on disk (models, VAEs, LoRAs) are computed by the nodes themselves."""
from __future__ import annotations

DTYPES = ["auto", "bf16", "fp16", "fp32"]
QUANTIZATION = ["none", "fp8_e4m3fn", "nf4", "int8"]
TEXT_QUANTIZATION = ["none", "fp8_e4m3fn"]      # umT5: its linears quantized while reading
OFFLOAD = ["none", "cpu", "disk"]
PRESETS = ["mova-360p", "mova-720p"]
SCHEDULES = ["mova", "diffsynth"]
GUIDANCE_FORMS = ["nested", "independent"]
BRIDGE_OFF = ["both", "separate"]
LORA_EXPERTS = ["auto", "both", "high", "low", "audio"]
LORA_MODES = ["merge", "alongside"]

"""MOVA Speed: attention backend, compiled elementwise work and fp8 fast matmul for the model it passes
on (applied right before sampling, like a LoRA stack; runtime/speed.py)."""
from __future__ import annotations

import dataclasses

from comfy_api.latest import io

from ..kernels.attention import BACKENDS
from ..kernels.device import cuda_capability, optional_import
from ..runtime.speed import SpeedSettings, expected_attention
from .types import CATEGORY, MovaModel, check_inputs

ATTENTION_TIP = ("auto = a rule per GPU generation: SageAttention on Ampere/Ada (sm_80-89), flash-attention 3 "
                 "or PyTorch SDPA on Hopper and newer (SageAttention 1.x measured 18 % slower there); timed = "
                 "measure every usable kernel once per sequence-length bucket and keep the fastest; or force one "
                 "(an unusable one falls back to SDPA with a log line).")
COMPILE_TIP = ("Compile the per-block elementwise work (norms, modulation, RoPE, gates) with torch.compile, "
               "attention and matmuls unchanged. First step slower (compiling); a compile failure falls back to "
               "eager with a warning. Off by default.")
FP8_TIP = ("For fp8_e4m3fn models on sm_89+ GPUs: multiply in fp8 (torch._scaled_mm) with the activation "
           "quantized by one fused kernel (per token on sm_90+). Elsewhere: the usual dequantize.")


class MovaSpeed(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MOVASpeed", display_name="MOVA Speed", category=f"{CATEGORY}/loaders",
            description="Speed settings for the model it passes on: attention kernel, compiled elementwise "
                        "work, fp8 fast matmul. The chosen attention kernel and why are shown here and logged.",
            inputs=[MovaModel.Input("model", tooltip="From a MOVA loader (or MOVA LoRA)."),
                    io.Combo.Input("attention", options=list(BACKENDS), default="auto", tooltip=ATTENTION_TIP),
                    io.Boolean.Input("compile_elementwise", default=False, tooltip=COMPILE_TIP),
                    io.Boolean.Input("fp8_fast_matmul", default=False, tooltip=FP8_TIP)],
            outputs=[MovaModel.Output(display_name="model", tooltip="The same model with these speed settings, for MOVA Sampler (or MOVA LoRA).")],
            hidden=[io.Hidden.unique_id])

    @classmethod
    def validate_inputs(cls, attention=None):
        return check_inputs(cls, {"attention": attention})

    @classmethod
    def execute(cls, model, attention, compile_elementwise, fp8_fast_matmul) -> io.NodeOutput:
        speed = SpeedSettings(attention, compile_elementwise, fp8_fast_matmul)
        gen = model.generator
        cap = cuda_capability(model.device)
        on_cuda = cap is not None
        backend, reason = expected_attention(
            cap, gen.video_high.dtype if gen.video_high is not None else gen.audio.dtype,
            gen.config.video_dit.head_dim, on_cuda and optional_import("sageattention") is not None,
            on_cuda and optional_import("flash_attn") is not None,
            on_cuda and optional_import("flash_attn_interface") is not None, attention)
        text = f"attention: {backend} ({reason})"
        from server import PromptServer
        if PromptServer.instance is not None and cls.hidden.unique_id is not None:
            PromptServer.instance.send_progress_text(text, cls.hidden.unique_id)
        return io.NodeOutput(dataclasses.replace(model, speed=speed))


NODES = [MovaSpeed]

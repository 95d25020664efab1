"""Memory planner: estimated peak VRAM and host RAM for one generation, without building a model.

Stages run one after another (text encode -> denoise -> decode), so each peak is the largest stage.
Weights are exact (config arithmetic, checked against real modules in tests); activations follow the
live tensors of one DiT block; VAE decode, runtime overhead and CUDA context are [ESTIMATE]s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..common.errors import ConfigError, InputError
from ..models.config import PRESETS
from .offload import OffloadSettings
from .params import (DTYPE_BYTES, audio_vae_params, bridge_layer, bridge_part, dit_block, dit_part,
                     dit_stem, video_vae_params)

GB = 1e9
RUNTIME_HOST = int(1.5 * GB)      # python + torch + ComfyUI, measured ~1 GB idle [ESTIMATE]
CUDA_CONTEXT = int(0.5 * GB)      # CUDA context + cuBLAS workspace [ESTIMATE]
TENSOR_OVERHEAD = 4096            # host bytes per loaded tensor beyond its data (objects, allocator) [ESTIMATE: 3.4 KB measured]


@dataclass(frozen=True)
class MemoryPlan:
    vram_bytes: int
    host_bytes: int
    vram: dict = field(default_factory=dict)     # breakdown of the peak stage (bytes)
    host: dict = field(default_factory=dict)
    stage: str = ""                              # which stage sets the VRAM peak
    stages: dict = field(default_factory=dict)   # every stage's breakdown

    def summary(self) -> str:
        parts = ", ".join(f"{k} {v / GB:.2f}" for k, v in self.vram.items() if v)
        return (f"MOVA memory estimate: peak VRAM {self.vram_bytes / GB:.1f} GB ({self.stage}: {parts}), "
                f"host RAM {self.host_bytes / GB:.1f} GB")

    def as_dict(self) -> dict:
        return {"vram_gb": round(self.vram_bytes / GB, 2), "host_gb": round(self.host_bytes / GB, 2),
                "stage": self.stage, "vram": self.vram, "host": self.host}


def resolve_config(config):
    """A MovaConfig, or the preset of that name."""
    if isinstance(config, str):
        if config not in PRESETS:
            raise ConfigError(f"unknown preset {config!r}; expected one of {sorted(PRESETS)} or a MovaConfig.")
        return PRESETS[config]
    return config


def latent_sizes(config, width: int, height: int, frames: int, fps: float):
    """(video tokens, (f, h, w) token grid, audio tokens) for a request (spec §4.1)."""
    vae, vid = config.video_vae, config.video_dit
    f = (frames - 1) // vae.temporal_stride + 1
    h = height // vae.spatial_stride // vid.patch_size[1]
    w = width // vae.spatial_stride // vid.patch_size[2]
    samples = int(config.audio_vae.sample_rate * frames / fps)
    audio = (samples - 1) // config.audio_vae.hop_length + 1
    return f * h * w, (f, h, w), audio


def block_extra_bytes(tokens: int, dim: int, ffn_dim: int, act: int, device: str = "cuda",
                      attention_extra: int = 0) -> int:
    """Peak bytes one DiT block allocates beyond its input (live tensors read off models/net/dit.py):
    attention phase = normed input, q, k, v, attention output (activation dtype) + the fp32 RoPE
    temporaries of one of q/k; FFN phase = new residual, normed input, hidden before and after GELU,
    FFN output. Checked against measured CPU peaks in tests/test_planner.py.

    device "cpu" with bf16/fp16 adds what CPU kernels allocate there (measured, see docs/benchmarks.md):
    nn.RMSNorm (norm_q/norm_k) runs its composite path in fp32 (3 fp32 copies of q or k live at once),
    and a half-precision Linear accumulates into an fp32 buffer of its output before the cast.
    `attention_extra`: bytes the attention phase holds beyond that (sequence parallel's exchanges)."""
    half_on_cpu = device == "cpu" and act != 4
    if half_on_cpu:
        attn = tokens * dim * (4 * act + 3 * 4) + attention_extra
        ffn = tokens * (3 * dim * act + ffn_dim * max(2 * act, act + 4))
        return max(attn, ffn)
    rope_tmp = 4 + (4 if act != 4 else 0)
    attn = tokens * dim * (5 * act + rope_tmp) + attention_extra
    ffn = tokens * act * (3 * dim + 2 * ffn_dim)
    return max(attn, ffn)


def denoise_activation_bytes(config, tokens_v: int, tokens_a: int, act: int, text_len: int = 512,
                             batch: int = 1, device: str = "cuda", sequence_ranks: int = 1) -> int:
    """Peak bytes of one joint forward beyond weights and the sampler's own latents; `batch` guidance
    passes run as one batched forward multiply everything but the position tables.

    `sequence_ranks` S > 1: one GPU's share of a Ulysses sequence-parallel forward (runtime/
    parallel_plan.py). The video tokens are split (padded to a multiple of S); the audio tower and the
    text stay whole. Added on top: the all-to-all's full-length q, k, v for heads/S and one exchange
    buffer, the Bridge's gathered video keys/values at the audio width, the gathered head output. The
    36-ch input and the position tables are counted whole: every rank patchifies the whole latents."""
    v, a, br = config.video_dit, config.audio_dit, config.bridge
    local_v = math.ceil(tokens_v / sequence_ranks)                    # this GPU's video tokens
    streams = (local_v * v.dim + tokens_a * a.dim) * act               # both residual streams
    inputs = tokens_v * math.prod(v.patch_size) * v.in_dim * 4         # 36-ch fp32 input kept by joint_forward
    contexts = text_len * (v.dim + a.dim) * act                       # embedded text per tower
    tables = (tokens_v * v.head_dim + tokens_a * a.head_dim) * 4 + (tokens_v + tokens_a) * 2 * br.head_dim * act
    split = sequence_ranks > 1
    # [B, Lv, heads/S, head_dim] q, k, v + one in-flight exchange: 4 tensors the size of a local q
    exchanges = 4 * local_v * v.dim * act if split else 0
    video = block_extra_bytes(local_v, v.dim, v.ffn_dim, act, device, attention_extra=exchanges)
    audio = block_extra_bytes(tokens_a, a.dim, a.ffn_dim, act, device)
    bridge = local_v * v.dim * act * 6 + tokens_a * v.dim * act * 3    # a2v: q, rope terms, out; k/v on audio
    gathered = 0
    if split:
        bridge += 2 * local_v * sequence_ranks * a.dim * act          # v2a keys/values, all video tokens
        gathered = local_v * sequence_ranks * v.out_dim * math.prod(v.patch_size) * act
    return batch * (streams + inputs + contexts + max(video, audio, bridge) + gathered) + tables


def quantized_temporaries(config, tokens_v: int, act: int, batch: int = 1) -> int:
    """What a quantized Linear allocates beyond the bf16 math: the weight dequantized to the activation
    dtype (default path), or the activation's fp8 copy (fp8 fast matmul) — the larger of the two, at the
    FFN down-projection, whose input is widest. The H200 run at 360p-193 frames measured fp8 + streamed
    at 6.5 GiB where the planner without this term said 6.1 GiB."""
    v = config.video_dit
    return max(v.ffn_dim * v.dim * act, batch * tokens_v * v.ffn_dim)


def _units(config, mode: str, dtype: str, fp8_scale: str) -> list[int]:
    """Bytes of each swap unit (interaction layer i, then the remaining video blocks)."""
    vb = dit_block(config.video_dit).bytes(mode, dtype, fp8_scale)
    ab = dit_block(config.audio_dit).bytes(mode, dtype, fp8_scale)
    a2v, v2a = bridge_layer(config.bridge)
    bb = a2v.bytes(mode, dtype, fp8_scale) + v2a.bytes(mode, dtype, fp8_scale)
    shared = len(config.bridge.interaction_layers)
    return [vb + ab + bb] * shared + [vb] * (config.video_dit.num_layers - shared)


def text_stage(te_config, act: int, fp8: bool = False) -> dict:
    """VRAM of the text encode: umT5 as models/codecs/text_encoder_stream loads it (fp8 linears of a
    scaled file stay fp8, all else in the compute dtype; the generator's quantization does not apply),
    and one layer's live tensors: fp32 scores and position bias of 512 tokens, the gated FFN, and
    (fp8) the layer's weight dequantized through fp32 [ESTIMATE]."""
    from ..models.codecs.text_encoder_stream import text_encoder_bytes

    c = te_config
    live = 2 * c.num_heads * 512 * 512 * 4 + 3 * 512 * c.d_ff * 4
    if fp8:
        live += c.d_model * c.d_ff * (4 + 4 + act)
    return {"text_encoder": text_encoder_bytes(c, act, fp8), "activations": live, "cuda_context": CUDA_CONTEXT}


def decode_stage(config, width: int, height: int, frames: int, act: int, tile_px: int = 0) -> dict:
    """VRAM of the video decode as MOVA Decode Video runs it: both VAEs' weights, the causal cache and
    one chunk's live tensors of one tile (the whole frame untiled; tiled, also the attention part's
    output kept for every latent frame), frames assembled in host RAM. Read off the forward in
    models/codecs/video_vae_tiles.py; checked against H200 peaks in docs/benchmarks.md."""
    from ..models.codecs.video_vae_tiles import decode_peak_bytes

    vvae, avae = video_vae_params(config.video_vae) * act, audio_vae_params(config.audio_vae) * 4
    return {"video_vae": vvae + avae,
            "activations": decode_peak_bytes(config.video_vae, width, height, frames, act, tile_px),
            "cuda_context": CUDA_CONTEXT}


def plan_memory(config, width: int, height: int, frames: int, fps: float = 24.0, dtype: str = "bf16",
                quant: str = "bf16", offload: OffloadSettings | None = None, cfg_passes: int = 2,
                experts: int = 2, fp8_scale: str = "tensor", passes_per_forward: int = 1,
                device: str = "cuda", decode_tile: int | None = 0, text_fp8: bool = False,
                sequence_ranks: int = 1) -> MemoryPlan:
    """Estimated peak VRAM / host RAM. `config` is a MovaConfig or a PRESETS name; `offload=None`
    keeps every weight on the GPU, both video experts included; with offload the idle expert waits in
    pinned host RAM ("cpu_pinned") or in its file ("disk"), see plan_load.

    `cfg_passes`: guidance passes per step (1 without guidance, 2 for CFG, more with bridge guidance);
    the sampler holds one velocity per pass. `passes_per_forward`: how many of them run as one batched
    joint forward (GuidanceSettings.batch_passes batches the passes that share a Bridge setting; the
    default 1 = one pass per forward, the sampler's default); activations scale with it.
    `device` "cpu" adds the fp32 temporaries of CPU half-precision kernels (see block_extra_bytes).
    `decode_tile`: the video decode's tile side in pixels (0 = untiled; None = what tiling "auto"
    would pick if the card held just the larger of the other stages), see decode_stage.
    `text_fp8`: the text encoder's linears are fp8 (ComfyUI's scaled-fp8 file, or load_text_encoder's
    quantization="fp8_e4m3fn"), see text_stage.
    `sequence_ranks`: the GPUs one joint forward is split across (multi-GPU "sequence" / "both"
    layouts, runtime/parallel_plan.py); the figures are then one GPU's: every weight whole on each,
    the video-token activations split (see denoise_activation_bytes). 1 = one GPU."""
    if isinstance(sequence_ranks, bool) or not isinstance(sequence_ranks, int) or sequence_ranks < 1:
        raise InputError(f"sequence_ranks must be a whole number ≥ 1 (GPUs sharing one joint forward), "
                         f"got {sequence_ranks!r}")
    if not 1 <= passes_per_forward <= max(cfg_passes, 1):
        raise ValueError(f"passes_per_forward must be between 1 and cfg_passes ({cfg_passes}), "
                         f"got {passes_per_forward}")
    config = resolve_config(config)
    act = DTYPE_BYTES[dtype]
    tokens_v, _, tokens_a = latent_sizes(config, width, height, frames, fps)

    # Weights of the active tower set, split into always-resident stems and swap units.
    v_stem = dit_stem(config.video_dit).bytes(quant, dtype)
    # with offload both experts' stems stay on the device (the towers read them directly)
    stems = v_stem * (experts if offload is not None else 1) + dit_stem(config.audio_dit).bytes(quant, dtype)
    stems += config.bridge.head_dim // 2 * 4
    units = _units(config, quant, dtype, fp8_scale)
    video_expert = dit_part(config.video_dit).bytes(quant, dtype, fp8_scale)
    dit_all = (experts * video_expert + dit_part(config.audio_dit).bytes(quant, dtype, fp8_scale)
               + bridge_part(config.bridge).bytes(quant, dtype, fp8_scale))
    if offload is None:   # every tower on the device, both experts: nothing waits in host RAM
        resident, streamed = dit_all, 0
        host_dit = 0
    else:
        keep = len(units) if offload.resident_units < 0 else min(offload.resident_units, len(units))
        resident = stems + sum(units[:keep])
        rest = units[keep:]
        streamed = (2 if offload.prefetch else 1) * max(rest, default=0)
        # "disk": safetensors maps the file zero-copy, so streamed weights are reclaimable page cache
        host_dit = dit_all if offload.storage != "disk" else 0

    # Latents, per-pass velocities and text conditioning held by the sampler (fp32 latents).
    v_lat = config.video_dit.out_dim * tokens_v * math.prod(config.video_dit.patch_size) * 4
    a_lat = config.audio_dit.out_dim * tokens_a * 4
    sampler = (v_lat + a_lat) * (3 + cfg_passes) + cfg_passes * 512 * config.video_dit.text_dim * act
    denoise = {"weights_resident": resident, "weights_streamed": streamed,
               "activations": denoise_activation_bytes(config, tokens_v, tokens_a, act,
                                                       batch=passes_per_forward, device=device,
                                                       sequence_ranks=sequence_ranks),
               "latents": sampler, "cuda_context": CUDA_CONTEXT}
    if quant not in ("bf16", "fp16", "fp32"):
        denoise["quantized_temporaries"] = quantized_temporaries(config, math.ceil(tokens_v / sequence_ranks), act,
                                                                 passes_per_forward)

    text = text_stage(config.text_encoder, act, text_fp8)
    text_bytes, text_bits = text["text_encoder"], 8 * act   # the embedding is never quantized
    vvae, avae = video_vae_params(config.video_vae) * act, audio_vae_params(config.audio_vae) * 4
    frame_px = width * height
    if decode_tile is None:   # what "auto" picks when the card holds just the larger other stage
        from ..models.codecs.video_vae_tiles import choose_tile
        room = max(sum(denoise.values()), sum(text.values())) - (vvae + avae + CUDA_CONTEXT)
        decode_tile = choose_tile(room, config.video_vae, width, height, frames, act)
    decode = decode_stage(config, width, height, frames, act, decode_tile)
    stages = {"denoise": denoise, "text encode": text, "decode": decode}
    stage = max(stages, key=lambda s: sum(stages[s].values()))

    # storage "disk": the text encoder is read from its mmap'd file too; only the largest tensor
    # (the token embedding) is staged in private memory
    embed = int(config.text_encoder.vocab_size * config.text_encoder.d_model * text_bits / 8)
    host = {"runtime": RUNTIME_HOST, "dit_weights": host_dit,
            "text_encoder": text_bytes if offload is None or offload.storage != "disk" else embed,
            "vaes": vvae + avae, "frames_out": 3 * frames * frame_px * 4 + frames * frame_px * 3}
    return MemoryPlan(vram_bytes=int(sum(stages[stage].values())), host_bytes=int(sum(host.values())),
                      vram=dict(stages[stage]), host=host, stage=stage, stages=stages)


def largest_tensor_bytes(config, dtype: str = "bf16") -> int:
    """The largest single weight of the towers in `dtype`: what a tensor-by-tensor load holds beyond
    its steady state (the video tower's time projection, 6·dim², in the released models)."""
    biggest = 0
    for c in (config.video_dit, config.audio_dit):
        d = c.dim
        biggest = max(biggest, 6 * d * d, c.ffn_dim * d, c.text_dim * d, c.freq_dim * d,
                      c.in_dim * math.prod(c.patch_size) * d)
    v, a = config.bridge.visual_hidden_dim, config.bridge.audio_hidden_dim
    return max(biggest, v * v, a * a, v * a) * DTYPE_BYTES[dtype]


def plan_load(config, dtype: str = "bf16", quant: str = "bf16", offload: OffloadSettings | None = None,
              device: str = "cuda", experts: int = 2, fp8_scale: str = "tensor") -> dict:
    """Private host RAM of the generator's towers after loading (steady) and while loading (peak), as
    runtime/loading.py reads them: tensor by tensor, quantized while reading, so the peak is the steady
    state plus one source tensor.

    Where the weights wait, per offload mode: none = on the device (both experts); cpu_pinned = every
    weight in (pinned) host RAM, the idle expert included; disk = nothing in private RAM (the files'
    pages are reclaimable cache; a bf16 file streamed quantized is first copied, quantized, shard by
    shard, to the temp folder). On a CPU "device" the device's weights are host RAM too."""
    config = resolve_config(config)
    total = (experts * dit_part(config.video_dit).bytes(quant, dtype, fp8_scale)
             + dit_part(config.audio_dit).bytes(quant, dtype, fp8_scale)
             + bridge_part(config.bridge).bytes(quant, dtype, fp8_scale))
    if offload is None or offload.storage != "disk":
        steady = total if (offload is not None or device == "cpu") else 0
    elif device == "cpu":   # stems + resident units + the unit in flight, all in host RAM
        stems = (experts * dit_stem(config.video_dit).bytes(quant, dtype) + dit_stem(config.audio_dit).bytes(quant, dtype)
                 + config.bridge.head_dim // 2 * 4)
        units = _units(config, quant, dtype, fp8_scale)
        keep = len(units) if offload.resident_units < 0 else min(offload.resident_units, len(units))
        steady = stems + sum(units[:keep]) + max(units[keep:], default=0)
    else:
        steady = 0
    if steady:   # bookkeeping of every tensor the process holds (host copies, or the device is the host)
        steady += TENSOR_OVERHEAD * tensor_count(config, quant, experts)
    largest = largest_tensor_bytes(config, dtype)
    return {"steady_host_bytes": int(steady), "peak_host_bytes": int(steady + largest),
            "largest_tensor_bytes": int(largest), "weight_bytes": int(total)}


def tensor_count(config, quant: str = "bf16", experts: int = 2) -> int:
    """About how many tensors the towers hold: weight + bias per Linear (+ a scale when quantized), and
    norms / modulation / embeddings (4 per block or layer, 20 per stem)."""
    per_linear = 3 if quant not in ("bf16", "fp16", "fp32") else 2
    v, a = dit_block(config.video_dit), dit_block(config.audio_dit)
    a2v, v2a = bridge_layer(config.bridge)
    count = experts * config.video_dit.num_layers * (per_linear * len(v.linears) + 4)
    count += config.audio_dit.num_layers * (per_linear * len(a.linears) + 4)
    count += len(config.bridge.interaction_layers) * (per_linear * len(a2v.linears + v2a.linears) + 8)
    return count + 20 * (experts + 1)

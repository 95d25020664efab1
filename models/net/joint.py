"""One joint forward of video tower + audio tower + Bridge, in the order of spec §11.1."""
from __future__ import annotations

import torch

from ...kernels.parallel import over_video_tokens, planned_shard
from .bridge import DualTowerBridge
from .dit import AudioDiT, VideoDiT


def joint_forward(video_dit: VideoDiT, audio_dit: AudioDiT, bridge: DualTowerBridge,
                  video_latents: torch.Tensor, audio_latents: torch.Tensor, timestep, context: torch.Tensor,
                  y: torch.Tensor = None, video_fps: float = 24.0,
                  a2v_scale: float = 1.0, v2a_scale: float = 1.0, audio_timestep=None):
    """Velocities (video [B,16,F,H,W], audio [B,C,L]) in the towers' activation dtype.

    video_latents [B,16,F,H,W] (any float dtype; cast per forward), y [B,20,F,H,W] mask + first frame,
    timestep: float or [B] tensor in [0, 1000] (same t for both towers), context [B, 512, text_dim].
    a2v_scale / v2a_scale multiply the Bridge outputs; 0 skips that direction.
    audio_timestep: the audio tower's own t when given (training; the sampler's audio_shift), else timestep.
    """
    # 1. time embeddings (fp32 MLPs, cast to the activation dtype), 2. text embeddings
    video_t, video_t_mod = video_dit.embed_time(timestep)
    audio_t, audio_t_mod = audio_dit.embed_time(timestep if audio_timestep is None else audio_timestep)
    video_ctx = video_dit.embed_text(context)
    audio_ctx = audio_dit.embed_text(context)

    # 3. patchify (36-ch video input = noisy latents + y)
    if y is not None:
        video_latents = torch.cat([video_latents, y], dim=1)
    video_x, grid = video_dit.patchify(video_latents)
    audio_x, audio_grid = audio_dit.patchify(audio_latents)

    # 4. in-tower RoPE tables, 5. aligned Bridge cos/sin (activation dtype)
    video_rope = video_dit.rope(grid, video_x.device)
    audio_rope = audio_dit.rope(audio_grid, audio_x.device)
    video_cross, audio_cross = bridge.aligned_rope(grid, audio_x.shape[1], video_fps, video_x.device, video_x.dtype)

    # Sequence parallel (kernels/parallel.py): this rank keeps a slice of the video tokens and of their
    # RoPE tables; every op is per token except attention, which exchanges through the shard.
    shard = planned_shard()
    if shard is not None:
        shard.length = video_x.shape[1]
        video_x, video_rope = shard.split(video_x), shard.split(video_rope, dim=0)
        if video_cross is not None:
            video_cross = tuple(shard.split(t) for t in video_cross)

    # 6. shared layers: Bridge (both directions from pre-bridge states), video block i, audio block i
    bridged = set(bridge.layers)
    shared = len(audio_dit.blocks)
    for i in range(shared):
        if i in bridged and (a2v_scale != 0 or v2a_scale != 0):
            with over_video_tokens(shard):
                video_x, audio_x = bridge(i, video_x, audio_x, video_cross, audio_cross, a2v_scale, v2a_scale)
        with over_video_tokens(shard):
            video_x = video_dit.blocks[i](video_x, video_ctx, video_t_mod, video_rope)
        audio_x = audio_dit.blocks[i](audio_x, audio_ctx, audio_t_mod, audio_rope)
    # 7. remaining video blocks alone
    with over_video_tokens(shard):
        for block in video_dit.blocks[shared:]:
            video_x = block(video_x, video_ctx, video_t_mod, video_rope)

    # 8. heads (modulated by t, not t_mod) and unpatchify
    video_tokens = video_dit.head(video_x, video_t)
    if shard is not None:
        video_tokens = shard.gather(video_tokens)
    video_out = video_dit.unpatchify(video_tokens, grid)
    audio_out = audio_dit.unpatchify(audio_dit.head(audio_x, audio_t), audio_grid)
    return video_out, audio_out

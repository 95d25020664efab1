"""Multi-GPU pieces the model code plugs into: a sequence shard (Ulysses sequence parallel of one joint
forward) and pass groups (the guidance passes of a step spread over groups of ranks).

Both are active through context variables, so models/ keeps one implementation: with nothing active
every function here is a no-op and the model runs as on one device.

Sequence shard: the video tokens are padded to a multiple of the group size and split; each rank runs
its slice through every per-token op. Attention over the video sequence is the only place ranks meet:
- video self-attention: yunchang's all-to-all turns [B, L/S, H, D] slices into [B, L, H/S, D] (all
  tokens, a share of the heads), attention runs on the real (unpadded) length, and back (Ulysses);
- the Bridge's video->audio direction (audio queries, video keys): the keys/values are all-gathered;
- the video head output is gathered once per forward.
The audio tower and the text are replicated. Communication goes through torch.distributed (NCCL on
GPUs, gloo on CPU); nothing here is hand-written transport.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist


@dataclass
class SequenceShard:
    """This rank's slice of the video sequence within a group of `size` ranks (`rank` within it)."""
    group: object            # torch.distributed ProcessGroup of the sequence ranks (None: the default group)
    rank: int
    size: int
    length: int = 0          # real (unpadded) video tokens of the forward being run; set by split()

    @property
    def padded(self) -> int:
        return -(-self.length // self.size) * self.size

    @property
    def local(self) -> int:
        return self.padded // self.size

    def split(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """This rank's slice of `x` along `dim` (zero padding at the end of the sequence)."""
        n = x.shape[dim]
        if n != self.length:
            raise ValueError(f"sequence shard: tensor has {n} tokens along dim {dim}, the forward {self.length}")
        if self.padded != n:
            pad = list(x.shape)
            pad[dim] = self.padded - n
            x = torch.cat([x, x.new_zeros(pad)], dim=dim)
        return x.narrow(dim, self.rank * self.local, self.local).contiguous()

    def gather(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """The whole (unpadded) sequence from every rank's slice along `dim`."""
        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        return torch.cat(parts, dim=dim).narrow(dim, 0, self.length)

    def self_attention(self, q, k, v, run: Callable) -> torch.Tensor:
        """Ulysses: q/k/v [B, L/S, H, D] -> all tokens for H/S heads -> run -> back to [B, L/S, H, D]."""
        from yunchang.comm.all_to_all import all_to_all_4D
        heads = q.shape[2]
        if heads % self.size:
            raise ValueError(f"sequence parallel needs the head count ({heads}) divisible by the ranks ({self.size})")
        full = [all_to_all_4D(t.contiguous(), 2, 1, group=self.group)[:, :self.length] for t in (q, k, v)]
        out = run(*full)
        if self.padded != self.length:
            b, _, h, d = out.shape
            out = torch.cat([out, out.new_zeros(b, self.padded - self.length, h, d)], dim=1)
        return all_to_all_4D(out.contiguous(), 1, 2, group=self.group)


_shard: contextvars.ContextVar[Optional[SequenceShard]] = contextvars.ContextVar("mova_sequence_shard",
                                                                                 default=None)
_ready: contextvars.ContextVar[Optional[SequenceShard]] = contextvars.ContextVar("mova_sequence_ready",
                                                                                 default=None)


@contextlib.contextmanager
def sequence_parallel(shard: Optional[SequenceShard]):
    """Run joint forwards under `shard` (None: no-op). The joint forward splits its video tokens."""
    token = _ready.set(shard)
    try:
        yield shard
    finally:
        _ready.reset(token)


def planned_shard() -> Optional[SequenceShard]:
    """The shard the joint forward should split its video tokens for (None on one device)."""
    shard = _ready.get()
    return shard if shard is not None and shard.size > 1 else None


@contextlib.contextmanager
def over_video_tokens(shard: Optional[SequenceShard]):
    """Attention calls inside see the video sequence split by `shard` (the joint forward wraps the video
    blocks and the Bridge in this; the audio tower runs outside it)."""
    if shard is None:
        yield
        return
    token = _shard.set(shard)
    try:
        yield
    finally:
        _shard.reset(token)


def active_shard() -> Optional[SequenceShard]:
    return _shard.get()


# ------------------------------------------------------------------------------------- pass groups
@dataclass
class PassGroups:
    """The guidance passes of a step dealt round-robin to `count` groups of ranks: pass j runs on group
    j % count, and its outputs are broadcast from that group's first rank (`leaders[g]`, global ranks)
    over `group` (every rank)."""
    count: int
    mine: int
    leaders: Sequence[int]
    group: object = None

    def run(self, runner: Callable, generator, expert, passes: list, video, audio, *args, **kwargs) -> list:
        own = [p for j, p in enumerate(passes) if j % self.count == self.mine]
        own_outputs = runner(generator, expert, own, video, audio, *args, **kwargs) if own else []
        shapes = (video.shape, audio.shape)
        dtypes = (expert.dtype, generator.audio.dtype)
        outputs = []
        for j in range(len(passes)):
            g = j % self.count
            if g == self.mine:
                pair = tuple(t.contiguous() for t in own_outputs[j // self.count])
            else:
                pair = tuple(torch.empty(s, dtype=d, device=video.device) for s, d in zip(shapes, dtypes))
            for t in pair:
                dist.broadcast(t, src=self.leaders[g], group=self.group)
            outputs.append(pair)
        return outputs


_passes: contextvars.ContextVar[Optional[PassGroups]] = contextvars.ContextVar("mova_pass_groups", default=None)


@contextlib.contextmanager
def pass_parallel(groups: Optional[PassGroups]):
    token = _passes.set(groups if groups is not None and groups.count > 1 else None)
    try:
        yield
    finally:
        _passes.reset(token)


def parallel_runner(runner: Callable) -> Callable:
    """`runner` (the sampler's run_forwards seam) spread over the active pass groups, else itself."""
    groups = _passes.get()
    if groups is None:
        return runner

    def run(generator, expert, passes, video, audio, *args, **kwargs):
        return groups.run(runner, generator, expert, list(passes), video, audio, *args, **kwargs)
    return run

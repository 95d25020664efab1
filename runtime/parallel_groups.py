"""The process groups of one multi-GPU layout, and the context every rank samples in.

A layout (runtime/parallel_plan.py) of N = G x S ranks: G pass groups, each of S sequence ranks (global
ranks g*S .. g*S+S-1). Every rank creates every subgroup (torch.distributed requires all ranks to call
new_group for each group, in the same order), then keeps its own.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch.distributed as dist

from ..kernels.parallel import PassGroups, SequenceShard, pass_parallel, sequence_parallel


@dataclass
class RankGroups:
    shard: Optional[SequenceShard]     # None when S == 1
    passes: Optional[PassGroups]       # None when G == 1


def make_rank_groups(pass_groups: int, sequence_ranks: int, rank: int) -> RankGroups:
    """This rank's shard and pass groups; call on every rank with the same layout (collective)."""
    world = dist.get_world_size()
    if pass_groups * sequence_ranks != world:
        raise ValueError(f"layout {pass_groups} pass groups x {sequence_ranks} sequence ranks does not match "
                         f"the {world} ranks of the process group")
    shard = None
    if sequence_ranks > 1:
        own = None
        for g in range(pass_groups):
            members = list(range(g * sequence_ranks, (g + 1) * sequence_ranks))
            group = dist.new_group(members) if pass_groups > 1 else None   # None: the default group
            if rank in members:
                own = group
        shard = SequenceShard(group=own, rank=rank % sequence_ranks, size=sequence_ranks)
    passes = None
    if pass_groups > 1:
        passes = PassGroups(count=pass_groups, mine=rank // sequence_ranks,
                            leaders=[g * sequence_ranks for g in range(pass_groups)])
    return RankGroups(shard=shard, passes=passes)


@contextlib.contextmanager
def sampling_on_ranks(groups: RankGroups):
    """Joint forwards and guidance passes inside run spread over the ranks as `groups` says."""
    with sequence_parallel(groups.shard), pass_parallel(groups.passes):
        yield

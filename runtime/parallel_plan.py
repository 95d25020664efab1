"""Multi-GPU sampling on paper (issue 28): how N ranks split into pass groups × sequence ranks, the
bytes each rank receives per sampling step, and the step time that follows. Arithmetic only: the
mechanism (process group, all-to-all, workers) lives in kernels/parallel.py and runtime/multigpu.py.

Layout: ranks N = G × S. The guidance passes of a step (1-3 joint forwards: text CFG positive /
negative, bridge-off passes) are dealt round-robin to the G pass groups (pass j on group j % G) and
each pass's outputs are broadcast to every rank. Inside a group, S sequence ranks run ONE joint forward
Ulysses-style: the video tokens are padded to a multiple of S and split, the audio tower and the text
are replicated. Rank r is sequence rank r % S of group r // S.

Traffic of one joint forward on S sequence ranks, per rank (a local video tensor is [B, Lv/S, width]):
  ulysses        every video block's self-attention: 4 all-to-alls (q, k, v in, output back) of a
                 local [B, Lv/S, video dim]; (S-1)/S of each leaves the rank
  bridge_gather  every Bridge interaction layer: the video->audio direction all-gathers the video keys
                 and values projected to the audio width (2 × [B, Lv, audio dim]); a rank receives
                 (S-1)/S of them. Audio->video and the text cross-attention stay local.
  output_gather  once: the video head output [B, Lv, out_dim·prod(patch)] all-gathered
Per step: pass_broadcast (the outputs of passes other groups ran) and control (one interrupt flag).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..common.errors import InputError
from .params import DTYPE_BYTES
from .planner import latent_sizes, resolve_config

STRATEGIES = ("auto", "sequence", "guidance", "both")
LAYOUT_STRATEGIES = ("single", "sequence", "guidance", "both")   # what a request resolves to
CONTROL_FLAG_BYTES = 4          # one int32 "stop" flag all-reduced per step
LISTED_RANKS = 16               # error messages list usable rank counts up to this many


@dataclass(frozen=True)
class Link:
    """A GPU-to-GPU link as the collectives see it: the bandwidth one rank receives at in an
    all-to-all / all-gather (NCCL's "bus bandwidth"), not the line rate."""
    name: str
    bytes_per_second: float
    source: str


LINKS = {
    # NVIDIA (S. Jeaugey, NVIDIA/nccl-tests issue 212): H100 NVLink 4 runs at 450 GB/s per direction
    # line rate; with NCCL's protocol overhead (~20 %) non-all-reduce collectives reach ~370 GB/s
    # bus bandwidth. H200 SXM has the same NVLink 4 / NVSwitch fabric.
    "nvlink4": Link("NVLink 4 (H100/H200 SXM)", 370e9,
                    "NCCL bus bandwidth of non-all-reduce collectives, NVIDIA/nccl-tests#212"),
    # PCIe line rates: 4.0 x16 = 16 GT/s × 16 lanes × 128/130 ≈ 31.5 GB/s per direction, 5.0 x16 ≈ 63.
    # Achieved: one GPU pair reaches ~86 % of line rate (p2pBandwidthLatencyTest / p2pmark, PCIe 5.0),
    # all 8 GPUs exchanging at once ~38 % (p2pmark's dense score 0.44 of that); NCCL takes ~20 % more.
    # We take half the line rate, between the pair and the crowded case [ESTIMATE]. GeForce cards
    # without peer-to-peer go through host memory and are slower still.
    "pcie4": Link("PCIe 4.0 x16", 16e9, "half of the 31.5 GB/s line rate [ESTIMATE], see the comment"),
    "pcie5": Link("PCIe 5.0 x16", 32e9, "half of the 63 GB/s line rate [ESTIMATE], see the comment"),
}


@dataclass(frozen=True)
class ParallelLayout:
    """How `ranks` devices share a sampling step: `pass_groups` (G) groups of `sequence_ranks` (S)."""
    ranks: int
    strategy: str          # one of LAYOUT_STRATEGIES: what the request ("auto", ...) resolved to
    pass_groups: int
    sequence_ranks: int
    reason: str

    def __post_init__(self):
        if self.strategy not in LAYOUT_STRATEGIES:
            raise InputError(f"layout strategy must be one of {', '.join(LAYOUT_STRATEGIES)}, got "
                             f"{self.strategy!r}; build layouts with choose_layout.")
        if self.pass_groups < 1 or self.sequence_ranks < 1 or self.pass_groups * self.sequence_ranks != self.ranks:
            raise InputError(f"a layout of {self.ranks} ranks needs pass_groups × sequence_ranks = {self.ranks}, "
                             f"got {self.pass_groups} × {self.sequence_ranks}; build layouts with choose_layout.")

    def _check_rank(self, rank: int) -> int:
        if not 0 <= rank < self.ranks:
            raise InputError(f"rank must be between 0 and {self.ranks - 1} for a layout of {self.ranks} "
                             f"ranks, got {rank}.")
        return rank

    def group_of(self, rank: int) -> int:
        return self._check_rank(rank) // self.sequence_ranks

    def sequence_rank(self, rank: int) -> int:
        return self._check_rank(rank) % self.sequence_ranks

    def group_ranks(self, group: int) -> list:
        if not 0 <= group < self.pass_groups:
            raise InputError(f"pass group must be between 0 and {self.pass_groups - 1}, got {group}.")
        return list(range(group * self.sequence_ranks, (group + 1) * self.sequence_ranks))

    def passes_of(self, group: int, passes: int) -> list:
        """The pass indices (of 0..passes-1) that `group` runs: round-robin, pass j on group j % G."""
        self.group_ranks(group)   # validates the group
        return list(range(group, passes, self.pass_groups))

    def forwards_per_rank(self, passes: int) -> int:
        """Joint forwards the busiest group (group 0) runs per step."""
        return math.ceil(passes / self.pass_groups)

    def forward_share(self, passes: int) -> float:
        """Compute per step on the busiest rank, in whole one-GPU joint forwards: ceil(passes/G) / S."""
        return self.forwards_per_rank(passes) / self.sequence_ranks


def _whole(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{name} must be a whole number ≥ {low}, got {value!r}.")
    return value


def _valid_splits(ranks: int, passes: int, video_heads: int) -> list:
    """Every (G, S) with G × S = ranks that runs: no idle pass group (G ≤ passes) and S dividing the
    video heads (Ulysses gives each sequence rank heads/S whole heads)."""
    return [(g, ranks // g) for g in range(1, ranks + 1)
            if ranks % g == 0 and g <= passes and video_heads % (ranks // g) == 0]


def _fits(strategy: str, g: int, s: int) -> bool:
    return {"sequence": g == 1, "guidance": s == 1, "both": g > 1 and s > 1, "auto": True}[strategy]


def usable_rank_counts(strategy: str, passes: int, video_heads: int, up_to: int = LISTED_RANKS) -> list:
    """Rank counts from 2 to `up_to` that `strategy` can use for this run."""
    return [n for n in range(2, up_to + 1)
            if any(_fits(strategy, g, s) for g, s in _valid_splits(n, passes, video_heads))]


def choose_layout(ranks: int, strategy: str, passes: int, video_heads: int, step_seconds=None) -> ParallelLayout:
    """The layout for `ranks` devices, `strategy` (one of STRATEGIES), `passes` joint forwards per
    step (models/sampling/guidance.passes_needed) and the video tower's `video_heads` (40 released).
    "auto" (and "both" when several splits fit) takes the split with the least compute per step on the
    busiest rank, ceil(passes/G)/S forwards; ties go to fewer sequence ranks, which moves fewer bytes
    (a sequence rank exchanges activations in every block, a pass group only its outputs).

    `step_seconds(layout) -> seconds`, when the caller knows the request and the link, ranks the
    splits by expected time instead, e.g. `lambda l: expected_step_time(forward_s,
    communication_per_step(..., l, passes), "pcie4", l, passes)`: on slow links guidance passes can
    beat a sequence split that computes less."""
    if strategy not in STRATEGIES:
        raise InputError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}; pick one "
                         "of those on the MOVA Multi-GPU node.")
    ranks, passes = _whole("the device count", ranks), _whole("passes per step", passes)
    video_heads = _whole("video_heads", video_heads)
    if ranks == 1:
        return ParallelLayout(1, "single", 1, 1, "one device: nothing to split")

    splits = [(g, s) for g, s in _valid_splits(ranks, passes, video_heads) if _fits(strategy, g, s)]
    if not splits:
        raise InputError(_impossible(ranks, strategy, passes, video_heads))
    layouts = [ParallelLayout(ranks, "sequence" if g == 1 else "guidance" if s == 1 else "both", g, s, "")
               for g, s in splits]
    best = min(layouts, key=lambda layout: (step_seconds(layout) if step_seconds else layout.forward_share(passes),
                                            layout.sequence_ranks))
    g, s, share = best.pass_groups, best.sequence_ranks, best.forward_share(passes)
    how = (f"{g} pass group{'s' if g > 1 else ''} × {s} sequence rank{'s' if s > 1 else ''}: "
           f"each device does the work of {share:g} joint forward{'' if share == 1 else 's'} per step "
           f"(one GPU alone: {passes})")
    if strategy == "auto":
        how = (f"auto chose {best.strategy}, {how} — "
               + ("the least expected time per step" if step_seconds else "the least compute per device"))
    return ParallelLayout(ranks, best.strategy, g, s, how)


def _impossible(ranks: int, strategy: str, passes: int, video_heads: int) -> str:
    """What was asked, why it cannot run, and which device counts or strategies would."""
    counts = usable_rank_counts(strategy, passes, video_heads)
    shown = ", ".join(map(str, counts)) if counts else "none"
    others = [k for k in STRATEGIES if k != strategy and any(
        _fits(k, g, s) for g, s in _valid_splits(ranks, passes, video_heads))]
    instead = (f" With {ranks} devices use one of the strategies {', '.join(repr(k) for k in others)}." if others
               else "")
    groups = (f"at most {passes} pass group{'s' if passes > 1 else ''} (the passes per step"
              + ("; 1 pass = no guidance, both text scales 1)" if passes == 1 else ")"))
    why = {
        "sequence": f"'sequence' splits the video tower's {video_heads} attention heads evenly across the "
                    f"devices, so the device count must divide {video_heads}",
        "guidance": f"'guidance' gives each device whole guidance passes, {groups}: more devices would idle",
        "both": f"'both' needs at least 2 pass groups of at least 2 sequence ranks each, {groups}, "
                f"sequence ranks dividing the {video_heads} video heads",
        "auto": f"no split into pass groups × sequence ranks works, {groups}, sequence ranks dividing the "
                f"{video_heads} video heads",
    }[strategy]
    return (f"{ranks} devices cannot run strategy {strategy!r}: {why}. Device counts that work for "
            f"{strategy!r} here (up to {LISTED_RANKS}): {shown}.{instead} Change the MOVA Multi-GPU "
            "node's devices or strategy.")


def parse_devices(devices) -> tuple:
    """(rank count, "cuda" or "cpu") from the MOVA Multi-GPU node's `devices` text ("0,1",
    "cuda:0,cuda:1", "cpu,cpu") or a plain count (CUDA devices). Only counts and shape are checked
    here; whether the devices exist is the node's business."""
    if isinstance(devices, int) and not isinstance(devices, bool):
        if devices < 1:
            raise InputError(f"devices must be at least 1, got {devices}.")
        return devices, "cuda"
    if not isinstance(devices, str):
        raise InputError(f"devices must be a list like '0,1' (CUDA indices) or 'cpu,cpu', or a count, got {devices!r}.")
    entries = [e.strip().lower() for e in devices.split(",")]
    if not devices.strip() or "" in entries:
        raise InputError(f"devices must be comma-separated entries like '0,1' or 'cpu,cpu', got {devices!r}: "
                         "an entry is empty.")
    cuda = []
    for entry in entries:
        index = entry[5:] if entry.startswith("cuda:") else entry
        if entry != "cpu" and not index.isdigit():
            raise InputError(f"device {entry!r} in {devices!r} is neither a CUDA index (0, 1, cuda:0 …) nor 'cpu'.")
        if entry != "cpu":
            cuda.append(int(index))
    if cuda and len(cuda) != len(entries):
        raise InputError(f"devices {devices!r} mix CUDA indices and 'cpu'; list only GPUs, or only 'cpu' entries.")
    if len(set(cuda)) != len(cuda):
        raise InputError(f"devices {devices!r} name a GPU twice; each rank needs its own GPU (list each index once).")
    return len(entries), "cuda" if cuda else "cpu"


def machine_host_bytes(plan, ranks: int) -> int:
    """Host RAM of one machine running every rank [ESTIMATE]: rank 0's plan (runtime/planner.py
    MemoryPlan) plus, per worker process, its own runtime and its own copy of the offloaded weights
    (none with offload "disk": they share the files' page cache). The text encoder, the VAEs and the
    frames stay with rank 0."""
    per_worker = plan.host.get("runtime", 0) + plan.host.get("dit_weights", 0)
    return int(plan.host_bytes + (ranks - 1) * per_worker)


def communication_per_step(config, width: int, height: int, frames: int, fps: float, layout: ParallelLayout,
                           passes: int, dtype: str = "bf16") -> dict:
    """Bytes the busiest rank (rank 0: its group runs ceil(passes/G) forwards) receives in one sampling
    step, by kind: ulysses, bridge_gather, output_gather, pass_broadcast, control, total. `config` is a
    MovaConfig or a preset name (as runtime/planner.py takes it); tensors move in `dtype`.

    Every pass is counted with the Bridge's video->audio direction on (an upper bound: a "bridge off"
    pass skips its gathers). Batching passes into one forward moves the same bytes in fewer messages."""
    config = resolve_config(config)
    passes = _whole("passes per step", passes)
    if dtype not in DTYPE_BYTES:
        raise InputError(f"dtype must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}.")
    act = DTYPE_BYTES[dtype]
    v, a = config.video_dit, config.audio_dit
    tokens_v, _, tokens_a = latent_sizes(config, width, height, frames, fps)
    s, forwards = layout.sequence_ranks, layout.forwards_per_rank(passes)
    if v.num_heads % s:
        raise InputError(f"the video tower has {v.num_heads} attention heads, which {s} sequence ranks cannot "
                         f"share evenly; choose the layout with video_heads={v.num_heads}.")
    local = math.ceil(tokens_v / s)           # video tokens padded to a multiple of S, then split
    out_width = v.out_dim * math.prod(v.patch_size)

    # A rank keeps 1 of the S slices of what it sends; from each of the S-1 others it receives one
    # slice: a local [Lv/S, dim] split by heads (all-to-all) or whole (all-gather).
    ulysses = v.num_layers * 4 * (s - 1) * local * (v.dim // s) * act
    bridge_gather = len(config.bridge.interaction_layers) * 2 * (s - 1) * local * a.dim * act
    output_gather = (s - 1) * local * out_width * act
    outputs_of_one_pass = (tokens_v * out_width + tokens_a * a.out_dim * math.prod(a.patch_size)) * act
    out = {"ulysses": forwards * ulysses,
           "bridge_gather": forwards * bridge_gather,
           "output_gather": forwards * output_gather,
           "pass_broadcast": (passes - forwards) * outputs_of_one_pass if layout.pass_groups > 1 else 0,
           "control": CONTROL_FLAG_BYTES if layout.ranks > 1 else 0}
    out["total"] = sum(out.values())
    return out


def expected_step_time(forward_seconds: float, comm_bytes, link, layout: ParallelLayout, passes: int) -> float:
    """Seconds per sampling step on the busiest rank: its share of compute (`forward_seconds` is one
    joint forward on one GPU; ceil(passes/G)/S of them) plus its received bytes at the link's achieved
    bandwidth, nothing overlapped (the all-to-alls sit between the projections and the attention).
    `comm_bytes`: communication_per_step's dict or a byte count; `link`: a LINKS key or a Link.
    Left out: the replicated audio tower (403 tokens at 360p: milliseconds) and collective latencies
    (~220 collectives per forward at tens of µs)."""
    if isinstance(link, str):
        if link not in LINKS:
            raise InputError(f"link must be one of {', '.join(LINKS)} or a Link, got {link!r}.")
        link = LINKS[link]
    total = comm_bytes["total"] if isinstance(comm_bytes, dict) else comm_bytes
    if not (isinstance(forward_seconds, (int, float)) and forward_seconds > 0):
        raise InputError(f"forward_seconds must be a positive number of seconds, got {forward_seconds!r}.")
    return forward_seconds * layout.forward_share(passes) + total / link.bytes_per_second


def forward_seconds_at(tokens: int, measured_tokens: int, measured_seconds: float, attention_seconds: float) -> float:
    """One joint forward at `tokens` video tokens from a measurement at `measured_tokens`: the
    self-attention part (`attention_seconds` of `measured_seconds`) grows with the square of the
    tokens, everything else (projections, FFN, cross-attention) linearly."""
    ratio = tokens / measured_tokens
    return (measured_seconds - attention_seconds) * ratio + attention_seconds * ratio ** 2

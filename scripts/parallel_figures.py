"""Multi-GPU sampling on paper (issue 28): bytes per step, expected step time and per-GPU VRAM for each
layout at 360p and 720p, printed as the markdown tables of docs/benchmarks.md. Arithmetic only (no
torch work, seconds on a CPU):

    python scripts/parallel_figures.py > /tmp/figures.md

Forward times: 4.77 s per joint forward measured at 360p-193 frames on an H200 (bf16, resident;
/work/shared/spec/gpu-notes.md). 720p is scaled from it: self-attention (40 blocks × 66 ms measured
for [1, 40 heads, 43,120, 128] with SDPA) grows with the square of the video tokens, the other 2.13 s
linearly (runtime/parallel_plan.forward_seconds_at).
"""
from __future__ import annotations

import _pack  # noqa: F401  (registers mova_pack)

from mova_pack.runtime.parallel_plan import (LINKS, ParallelLayout, communication_per_step, expected_step_time,
                                             forward_seconds_at)
from mova_pack.runtime.planner import latent_sizes, plan_memory, resolve_config

GB = 1e9
MEASURED_FORWARD_S = 4.77          # H200, 360p-193 frames, one joint forward (resident, bf16)
MEASURED_ATTENTION_S = 40 * 0.066  # 40 video blocks × SDPA self-attention at 43,120 tokens
REQUESTS = {"360p": ("mova-360p", 640, 352, 193, 24.0), "720p": ("mova-720p", 1280, 720, 193, 24.0)}
SPLITS = [(1, 1), (1, 2), (1, 4), (1, 8), (2, 1), (3, 1), (2, 2), (2, 4), (3, 2)]   # (G, S)
PASSES = {2: "released text CFG", 3: "bridge guidance, nested, bridge active"}


def video_tokens(request) -> int:
    return latent_sizes(resolve_config(request[0]), *request[1:])[0]


def forward_seconds(request) -> float:
    return forward_seconds_at(video_tokens(request), video_tokens(REQUESTS["360p"]), MEASURED_FORWARD_S,
                              MEASURED_ATTENTION_S)


def layout_of(groups: int, sequence: int) -> ParallelLayout:
    kind = ("single" if groups * sequence == 1 else "sequence" if groups == 1
            else "guidance" if sequence == 1 else "both")
    return ParallelLayout(groups * sequence, kind, groups, sequence, "table row")


def table(name: str, passes: int) -> str:
    request = REQUESTS[name]
    forward = forward_seconds(request)
    one_gpu = forward * passes
    rows = [f"#### {name} ({request[1]}×{request[2]}, {request[3]} frames), {passes} passes per step "
            f"({PASSES[passes]}); one forward {forward:.2f} s, one GPU {one_gpu:.1f} s per step",
            "",
            "| GPUs | G × S | forwards/GPU | Ulysses | Bridge gather | head gather | pass broadcast | total GB "
            "| VRAM/GPU GB | NVLink 4 s (×) | PCIe 5.0 s (×) | PCIe 4.0 s (×) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for groups, sequence in SPLITS:
        if groups > passes:
            continue
        layout = layout_of(groups, sequence)
        comm = communication_per_step(*request, layout, passes)
        vram = plan_memory(request[0], *request[1:4], fps=request[4], cfg_passes=passes,
                           sequence_ranks=sequence).vram_bytes
        times = [expected_step_time(forward, comm, link, layout, passes) for link in ("nvlink4", "pcie5", "pcie4")]
        cells = [str(layout.ranks), f"{groups} × {sequence}", f"{layout.forward_share(passes):g}",
                 *(f"{comm[k] / GB:.2f}" for k in ("ulysses", "bridge_gather", "output_gather", "pass_broadcast",
                                                   "total")),
                 f"{vram / GB:.1f}", *(f"{t:.2f} ({one_gpu / t:.2f}×)" for t in times)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    print("Links (achieved bandwidth a rank receives at): "
          + "; ".join(f"{link.name} {link.bytes_per_second / GB:g} GB/s ({link.source})" for link in LINKS.values()))
    for name in REQUESTS:
        for passes in PASSES:
            print()
            print(table(name, passes))


if __name__ == "__main__":
    main()

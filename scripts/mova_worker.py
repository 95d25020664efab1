"""A MOVA multi-GPU worker rank (runtime/multigpu.py). The MOVA Multi-GPU node starts the ranks of its
own machine itself; on another machine start one per GPU by hand, e.g. for ranks 2 and 3 of 4:

    python scripts/mova_worker.py --rank 2 --world-size 4 --master-addr 10.0.0.5 --master-port 29500 --device cuda:0
    python scripts/mova_worker.py --rank 3 --world-size 4 --master-addr 10.0.0.5 --master-port 29500 --device cuda:1

(MASTER_ADDR / MASTER_PORT / RANK / WORLD_SIZE from the environment work too: env:// rendezvous.)
The model files must be at the same paths as on the first machine (shared storage or the same layout).
"""
from __future__ import annotations

import argparse
import os
import sys

import _pack  # noqa: F401  (registers mova_pack)

from mova_pack.runtime.multigpu import worker_main


def main(argv=None) -> int:
    env = os.environ
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rank", type=int, default=int(env.get("RANK", -1)))
    p.add_argument("--world-size", type=int, default=int(env.get("WORLD_SIZE", -1)))
    p.add_argument("--master-addr", default=env.get("MASTER_ADDR", "127.0.0.1"))
    p.add_argument("--master-port", type=int, default=int(env.get("MASTER_PORT", 0)))
    p.add_argument("--device", default="cuda:0", help="this rank's device: cuda:N or cpu")
    p.add_argument("--error-file", default=None, help="where a failure is written for rank 0 to read")
    p.add_argument("--timeout-s", type=float, default=600.0)
    p.add_argument("--parent-pid", type=int, default=None, help="exit when this process dies (set by rank 0)")
    a = p.parse_args(argv)
    if a.rank < 1 or a.world_size < 2 or a.rank >= a.world_size or not a.master_port:
        p.error(f"need 1 <= --rank < --world-size and a --master-port (got rank {a.rank}, world size "
                f"{a.world_size}, port {a.master_port}); rank 0 is the ComfyUI process")
    return worker_main(a.rank, a.world_size, a.master_addr, a.master_port, a.device, a.error_file, a.timeout_s,
                       a.parent_pid)


if __name__ == "__main__":
    sys.exit(main())

"""Multi-rank sampling equals one process (issue 28): gloo ranks on CPU, fp32, a full run with nested
bridge guidance (3 passes per step) and the expert switch, for each strategy."""
import socket

import pytest
import torch
import torch.multiprocessing as mp

import parallel_ranks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def single_process():
    torch.set_num_threads(2)
    out = {}
    for heads in (2, 4):
        out[heads] = parallel_ranks.run_sampling(parallel_ranks.seeded_generator(heads))
    return out


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("pass_groups,sequence_ranks,heads", [
    (1, 2, 2),    # sequence parallel, 2 ranks
    (2, 1, 2),    # guidance passes on 2 ranks (3 passes: 2 rounds)
    (3, 1, 2),    # one pass per rank
    (1, 4, 4),    # sequence parallel, 4 ranks (45 video tokens padded to 48)
    (2, 2, 4),    # both
])
def test_layout_matches_single_process(tmp_path, single_process, pass_groups, sequence_ranks, heads):
    world = pass_groups * sequence_ranks
    out = tmp_path / "rank0.pt"
    mp.start_processes(parallel_ranks.rank_main, nprocs=world, start_method="spawn",
                       args=(world, _free_port(), pass_groups, sequence_ranks, heads, str(out)))
    got = torch.load(out, weights_only=True)
    ref_video, ref_audio = single_process[heads]
    assert got["video"].shape == ref_video.shape and got["audio"].shape == ref_audio.shape
    print(f"rel video {_rel(got['video'], ref_video):.2e} audio {_rel(got['audio'], ref_audio):.2e}")
    assert _rel(got["video"], ref_video) <= 1e-5
    assert _rel(got["audio"], ref_audio) <= 1e-5

"""Spatial tiles of the video VAE: the grid and its blend weights, the tile chosen for a memory budget,
tiled vs untiled on the toy VAE and a random Wan VAE (max abs difference on [0, 1] frames <= 1e-2),
the OOM retry, the planner's decode stage and the decode probe script on CPU."""
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import conftest  # noqa: F401  (registers mova_pack)
from mova_pack.common.errors import InputError
from mova_pack.models.codecs import video_vae_tiles as tiles
from mova_pack.models.codecs.video_vae import WanVideoVAE, load_video_vae, video_vae_param_count
from mova_pack.models.config import VideoVAEConfig

ROOT = Path(__file__).resolve().parents[1]
GIB = 2 ** 30


@pytest.mark.parametrize("size,tile", [(40, 16), (44, 32), (88, 64), (33, 32), (20, 32)])
def test_spans_cover_the_axis_with_at_least_the_overlap(size, tile):
    ov = tiles.overlap_for(tile)
    axis = tiles.spans(size, tile, ov)
    assert axis[0].start == 0 and axis[-1].end == size
    assert all(e - s == min(tile, size) for s, e in axis)
    for a, b in zip(axis, axis[1:]):
        assert a.start < b.start and a.end - b.start >= ov


@pytest.mark.parametrize("size,tile,scale", [(40, 16, 8), (88, 64, 8), (50, 32, 1)])
def test_feather_weights_are_positive_everywhere_and_fade_across_seams(size, tile, scale):
    axis = tiles.spans(size, tile, tiles.overlap_for(tile))
    total = [0.0] * (size * scale)
    for i, (s, _) in enumerate(axis):
        for j, w in enumerate(tiles.feather(axis, i, scale, tiles.margin_for(tile))):
            assert 0.0 <= w <= 1.0
            total[s * scale + j] += w
    assert min(total) > 0.99 and max(total) < 1.01     # linear ramps cross-fade to a sum of 1
    if len(axis) > 1:   # the margin next to a shared edge is left out of the blend
        m = tiles.margin_for(tile) * scale
        assert tiles.feather(axis, 1, scale, tiles.margin_for(tile))[:m] == [0.0] * m


def test_parse_tiling_values_and_readable_errors():
    assert tiles.parse_tiling("auto") is None and tiles.parse_tiling(None) is None
    assert tiles.parse_tiling("off") == 0 and tiles.parse_tiling("384") == 384
    for bad in ("big", "100", "32", "-256"):
        with pytest.raises(InputError, match="auto', 'off' or a tile size"):
            tiles.parse_tiling(bad)


def test_tile_chosen_from_the_budget_is_the_largest_that_fits():
    cfg, w, h, f = VideoVAEConfig(), 1280, 704, 193
    need = {px: tiles.decode_peak_bytes(cfg, w, h, f, 2, px) for px in (0, *tiles.TILE_CHOICES_PX)}
    assert need[0] > need[512] > need[384] > need[256] >= need[128]   # floor: the whole-frame attention
    assert tiles.choose_tile(need[0], cfg, w, h, f, 2) == 0
    assert tiles.choose_tile(need[0] - 1, cfg, w, h, f, 2) == 512
    assert tiles.choose_tile(need[384] + 1, cfg, w, h, f, 2) == 384
    assert tiles.choose_tile(need[256], cfg, w, h, f, 2) == 256
    assert tiles.choose_tile(need[256] - 1, cfg, w, h, f, 2) == 128
    assert tiles.choose_tile(1, cfg, w, h, f, 2) == 128           # nothing fits: the smallest tile
    # frames assembled on the device need more, so the same budget gets a smaller tile
    assert tiles.choose_tile(need[0], cfg, w, h, f, 2, frames_on_device=True) != 0
    assert tiles.tile_count(w, h, 256) > tiles.tile_count(w, h, 512) > tiles.tile_count(w, h, 0) == 1


def test_decode_estimate_agrees_with_the_h200_measurement_of_the_untiled_decode():
    """docs/gpu-notes: released VAE, bf16, latent and frames on the GPU, 193 frames: 3.2 GiB at 360p,
    12.0 GiB at 720p, measured with the chunk list + torch.cat of the earlier decode (two copies of
    the frames). The estimate must not be under and not more than 10 % over."""
    cfg = VideoVAEConfig()
    weights = video_vae_param_count(cfg) * 2
    for (w, h), measured in (((640, 352), 3.2), ((1280, 704), 12.0)):
        frames = 3 * 193 * w * h * 4
        estimate = (weights + frames + tiles.decode_peak_bytes(cfg, w, h, 193, 2, 0, frames_on_device=True)) / GIB
        assert measured <= estimate <= measured * 1.10, (w, h, estimate, measured)


def test_planner_decode_stage_counts_the_tiles():
    from mova_pack.runtime.planner import plan_memory

    untiled = plan_memory("mova-360p", 1280, 704, 193).stages["decode"]
    tiled = plan_memory("mova-360p", 1280, 704, 193, decode_tile=256).stages["decode"]
    assert tiled["video_vae"] == untiled["video_vae"]
    assert tiled["activations"] < untiled["activations"] / 4
    assert tiled["activations"] == tiles.decode_peak_bytes(VideoVAEConfig(), 1280, 704, 193, 2, 256)


def _perturbed(cfg, seed=0):
    torch.manual_seed(seed)
    vae = WanVideoVAE(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(vae.named_parameters()):
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return vae


def _latent(t, h, w, seed=1):
    return torch.randn(1, 16, t, h, w, generator=torch.Generator().manual_seed(seed))


def test_tiled_decode_and_encode_match_untiled_on_the_toy_vae():
    vae = load_video_vae(ROOT / "embedded" / "mova-toy" / "video_vae")
    lat = _latent(2, 24, 40)                                     # 192 x 320 px, 5 frames
    ref = vae.decode(lat, tiling="off")
    out = vae.decode(lat, tiling=128)
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() / 2 <= 1e-2           # [0, 1] frames: half the [-1, 1] range
    img = torch.rand(1, 3, 1, 192, 320, generator=torch.Generator().manual_seed(3)) * 2 - 1
    z_ref = vae.encode(img, tiling="off")
    assert (vae.encode(img, tiling=128) - z_ref).abs().max().item() <= 1e-2 * z_ref.abs().max().item()


def test_tiled_decode_matches_untiled_on_a_random_wan_vae():
    vae = _perturbed(VideoVAEConfig(base_dim=8))
    lat = _latent(2, 24, 48)                                     # two 256 px tiles across
    ref = vae.decode(lat, tiling="off")
    out = vae.decode(lat, tiling=256)
    assert tiles.tile_count(384, 192, 256) == 2
    assert (out - ref).abs().max().item() / 2 <= 1e-2


def test_out_of_memory_in_an_untiled_decode_is_retried_tiled_once(monkeypatch, caplog):
    vae = _perturbed(VideoVAEConfig(base_dim=8, num_res_blocks=1))
    lat = _latent(2, 24, 48)
    want = vae.decode(lat, tiling=256)
    calls = []

    def oom(x, cache):   # the untiled path runs the whole decoder per chunk
        calls.append(x.shape)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    monkeypatch.setattr(vae.decoder, "forward", oom)
    with caplog.at_level(logging.WARNING, logger="mova"):
        got = vae.decode(lat, tiling="off")
    assert len(calls) == 1 and torch.equal(got, want)            # no CUDA here: retried with 256 px
    assert "out of GPU memory in the untiled video VAE decode; retrying with 256 px tiles" in caplog.text
    monkeypatch.setattr(vae.decoder, "local", oom)               # a tiled decode is not retried again
    with pytest.raises(torch.OutOfMemoryError):
        vae.decode(lat, tiling=256)


def test_auto_on_cpu_decodes_untiled():
    vae = _perturbed(VideoVAEConfig(base_dim=8, num_res_blocks=1))
    lat = _latent(2, 4, 6)
    assert vae.pick_tile("auto", 48, 32, 5, torch.device("cpu"), False) == 0
    assert torch.equal(vae.decode(lat), vae.decode(lat, tiling="off"))


def test_decode_probe_runs_the_tiny_config_on_cpu():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "vae_decode_probe.py"), "--tiny"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.strip().splitlines()]
    assert rows[0]["device"] == "cpu" and len(rows) == 3
    for row in rows[1:]:
        assert "error" not in row and row["seconds"] > 0 and row["planner_gib"] > 0
    assert rows[2]["tiles"] > 1 and "max_abs_vs_untiled" in rows[2]


def test_out_of_memory_in_an_untiled_encode_is_retried_tiled(monkeypatch, caplog):
    from mova_pack.kernels.device import free_memory_bytes

    assert free_memory_bytes("cpu") is None and free_memory_bytes(None) is None
    vae = _perturbed(VideoVAEConfig(base_dim=8, num_res_blocks=1))
    img = torch.rand(1, 3, 1, 192, 384, generator=torch.Generator().manual_seed(4)) * 2 - 1
    want = vae.encode(img, tiling=256)

    def oom(x, cache):
        raise torch.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(vae.encoder, "forward", oom)
    with caplog.at_level(logging.WARNING, logger="mova"):
        got = vae.encode(img, tiling="auto")
    assert torch.equal(got, want)
    assert "untiled video VAE encode; retrying with 256 px tiles" in caplog.text


def test_planner_auto_tile_keeps_the_decode_under_the_other_stages():
    from mova_pack.runtime.offload import OffloadSettings
    from mova_pack.runtime.planner import plan_memory

    # nf4 streamed at 1280x704x49: the untiled decode (~10.9 GiB) would top denoise and text (~7 GiB)
    low = dict(quant="nf4", offload=OffloadSettings(resident_units=0, storage="disk"), text_fp8=True)
    untiled = plan_memory("mova-360p", 1280, 704, 49, **low)
    auto = plan_memory("mova-360p", 1280, 704, 49, decode_tile=None, **low)
    others = max(sum(auto.stages[s].values()) for s in ("denoise", "text encode"))
    assert sum(untiled.stages["decode"].values()) > others          # untiled, decode would set the peak
    assert sum(auto.stages["decode"].values()) <= others and auto.stage != "decode"
    assert auto.vram_bytes < untiled.vram_bytes

"""Spatial tiles for the Wan 2.1 video VAE: the tile grid, linear feathering, a working-memory
estimate (bytes of one tile's causal cache plus one chunk's live tensors) and the tile chosen for a
memory budget. Pure functions of the config and sizes: no tensors, no device queries.

Units: a tile is given in latent pixels (8 output pixels each for the released VAE)."""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

from ..config import VideoVAEConfig
from ...common.errors import InputError

TILE_CHOICES_PX = (512, 384, 256, 128)   # what "auto" tries, largest first (square tiles)
TILING_OPTIONS = ("auto", "off", "256", "384", "512")
CHUNK_FRAMES = 4           # decode: one latent frame -> 4 output frames (the first gives 1)


class Span(NamedTuple):
    start: int   # latent pixels
    end: int


def overlap_for(tile: int) -> int:
    """Overlap (latent px) between neighbouring tiles: 12 (96 output px), at most half the tile."""
    return min(12, tile // 2)


def margin_for(tile: int) -> int:
    """Latent px next to a shared tile edge left out of the blend (the rest of the overlap
    cross-fades): 5 of 12. Measured on a random-weight Wan VAE, whose receptive field reaches
    furthest: margin 0 / 2 / 5 -> max abs difference 0.36 / 0.06 / 0.008 on [0, 1] frames."""
    return max(0, (overlap_for(tile) - 2) // 2)


def spans(size: int, tile: int, overlap: int) -> list[Span]:
    """Tiles of `tile` covering [0, size) with at least `overlap` shared between neighbours; the last
    tile is aligned to the end (so it may overlap more). tile <= 0 or >= size: one span."""
    if tile <= 0 or tile >= size:
        return [Span(0, size)]
    if not 0 <= overlap < tile:
        raise InputError(f"tile overlap must be between 0 and the tile size {tile}; got {overlap}.")
    stride = tile - overlap
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return [Span(s, s + tile) for s in starts]


def _ramp(n: int, overlap: int, margin: int) -> list[float]:
    """Weights of the `overlap` pixels a tile shares with a neighbour, inner side first: 1 up to the
    cross-fade, a linear ramp down over it, 0 over the `margin` nearest the tile's edge (where the
    tile's own zero padding is within the receptive field)."""
    margin = min(margin, max(0, (overlap - 1) // 2))
    fade = overlap - 2 * margin
    w = [1.0] * margin + [1.0 - (i + 1) / (fade + 1) for i in range(fade)] + [0.0] * margin
    return w[:n]


def feather(axis: Sequence[Span], index: int, scale: int, margin: int = 0) -> list[float]:
    """Weights (one per output pixel of tile `index`) for blending it with its neighbours: seams
    cross-fade linearly, `margin` (same units as the spans) next to a shared edge is left out.
    Blending divides by the summed weights, which are > 0 everywhere."""
    s, e = axis[index]
    n = (e - s) * scale
    w = [1.0] * n
    if index > 0:
        left = _ramp(n, (axis[index - 1].end - s) * scale, margin * scale)
        for i, v in enumerate(left):            # left edge: the ramp mirrored
            w[len(left) - 1 - i] = min(w[len(left) - 1 - i], v)
    if index + 1 < len(axis):
        right = _ramp(n, (e - axis[index + 1].start) * scale, margin * scale)
        for i, v in enumerate(right):
            w[n - len(right) + i] = min(w[n - len(right) + i], v)
    return w


def parse_tiling(value) -> Optional[int]:
    """Widget value -> "auto" (None), 0 (off) or a tile side in output pixels."""
    text = str(value if value is not None else "auto").strip().lower()
    if text == "auto":
        return None
    if text == "off":
        return 0
    if text.isdigit() and int(text) >= 64 and int(text) % 8 == 0:
        return int(text)
    raise InputError(f"video VAE tiling must be 'auto', 'off' or a tile size in pixels (a multiple of 8, "
                     f"at least 64, e.g. 256/384/512); got {value!r}.")


def _decoder_steps(cfg: VideoVAEConfig):
    """(kind, in_ch, out_ch, area factor vs output pixels, frames per chunk) of the decoder's layers in
    order, mirroring Decoder3d (conv1, middle, upsamples, head); area factor 1 = output resolution."""
    mult = cfg.dim_mult
    dims = [cfg.base_dim * m for m in (mult[-1], *mult[::-1])]
    s = cfg.spatial_stride
    area, t = 1.0 / (s * s), 1
    steps = [("conv", cfg.z_dim, dims[0], area, t)]
    steps += [("res", dims[0], dims[0], area, t), ("attn", dims[0], dims[0], area, t),
              ("res", dims[0], dims[0], area, t)]
    temporal_up = cfg.temporal_downsample[::-1]
    for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
        if i > 0:
            cin //= 2
        for _ in range(cfg.num_res_blocks + 1):
            steps.append(("res", cin, cout, area, t))
            cin = cout
        if i < len(mult) - 1:
            kind = "up3d" if temporal_up[i] else "up2d"
            steps.append((kind, cout, cout // 2, area, t))
            area, t = area * 4, (t * 2 if kind == "up3d" else t)
    steps.append(("res_head", dims[-1], 3, area, t))
    return steps


def decode_working_bytes(cfg: VideoVAEConfig, tile_px: float, act: int, steps=None) -> int:
    """Peak bytes of a decode beyond the weights and the output video, for tiles of `tile_px` output
    pixels: every cached conv keeps 2 input frames of the tile (persistent across chunks) + the live
    tensors of the worst layer of one chunk (read off the forward: norm/SiLU temporaries, the
    past-frames concat and pad of a causal conv, the fp32 nearest-upsample and its cast)."""
    cache, worst = 0.0, 0.0
    for kind, cin, cout, area, t in (steps if steps is not None else _decoder_steps(cfg)):
        a = area * tile_px
        m_in, m_out = cin * a * t, cout * a * t
        conv_peak = lambda c_in, c_out: (2 * c_in * a * (t + 2) + c_in * a * t + c_out * a * t  # noqa: E731
                                         + 2 * c_in * a)                                     # + tail clone
        if kind == "conv":
            cache += 2 * cin * a
            worst = max(worst, conv_peak(cin, cout))
        elif kind in ("res", "res_head"):
            cache += 2 * cin * a + 2 * cout * a
            shortcut = m_out if cin != cout else 0
            norm = 2 * m_in                         # normalize, then the scaled copy
            worst = max(worst, m_in + shortcut + norm, m_in + shortcut + m_in + conv_peak(cin, cout),
                        m_in + shortcut + m_out + conv_peak(cout, cout))
        elif kind == "attn":
            # copy + qkv (3c) + contiguous split (3c) + out; fp32 scores of one frame (math SDPA path)
            worst = max(worst, m_in * 9 + t * a * a * 2)
        else:   # up2d / up3d: [time_conv], reshape copy, fp32 nearest x4 area, its cast, the 2D conv
            if kind == "up3d":
                cache += 2 * cin * a
                worst = max(worst, m_in + conv_peak(cin, 2 * cin) + 2 * m_in)
                m_in, t = 2 * m_in, 2 * t
            up = 4 * m_in
            worst = max(worst, m_in + m_in + up * (4 / act) + up, m_in + up + 4 * m_out * (2 if kind == "up3d" else 1))
    return int((cache + worst) * act)


def decode_peak_bytes(cfg: VideoVAEConfig, width: int, height: int, frames: int, act: int,
                      tile_px: int = 0, frames_on_device: bool = False) -> int:
    """Decode peak beyond the weights (tile_px 0 = untiled) + the fp32 video when it is assembled on
    the compute device. Tiled, the attention part (conv1, middle) runs on whole latent frames first
    and its output for every latent frame is kept; then one tile's working set of the rest."""
    s = cfg.spatial_stride
    out = 3 * frames * width * height * 4 if frames_on_device else 0
    steps = _decoder_steps(cfg)
    if tile_count(width, height, tile_px, s) == 1:
        return decode_working_bytes(cfg, width * height, act, steps) + out
    tw, th = min(tile_px, width), min(tile_px, height)
    t_lat = (frames - 1) // (2 ** sum(bool(x) for x in cfg.temporal_downsample)) + 1
    feats = steps[0][2] * t_lat * (width // s) * (height // s) * act
    whole = decode_working_bytes(cfg, width * height, act, steps[:4])
    tile = decode_working_bytes(cfg, tw * th, act, steps[4:])
    blend = width * height * 4 if frames_on_device else 0
    chunk_out = 3 * CHUNK_FRAMES * tw * th * 4 * 2      # the tile's fp32 chunk and its weighted copy
    return feats + max(whole, tile + chunk_out) + out + blend


def tile_count(width: int, height: int, tile_px: int, stride: int = 8) -> int:
    if not tile_px:
        return 1
    t = tile_px // stride
    return len(spans(height // stride, t, overlap_for(t))) * len(spans(width // stride, t, overlap_for(t)))


def choose_tile(budget_bytes: int, cfg: VideoVAEConfig, width: int, height: int, frames: int, act: int,
                frames_on_device: bool = False) -> int:
    """Largest tile side (output px; 0 = untiled) whose decode fits `budget_bytes`, else the smallest
    tile. Pure: the caller supplies the budget (free device memory, or anything in a test)."""
    need = lambda px: decode_peak_bytes(cfg, width, height, frames, act, px, frames_on_device)  # noqa: E731
    if need(0) <= budget_bytes:
        return 0
    sides = [px for px in TILE_CHOICES_PX if px < max(width, height)]
    for px in sides:
        if need(px) <= budget_bytes:
            return px
    return sides[-1] if sides else 0

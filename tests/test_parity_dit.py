"""Each tower's block and each full tower vs diffsynth 2.1.12 (fp32, tiny config, seeded weights)."""
import pytest
import torch

from parity_utils import TINY, TOL, ref_audio, ref_video, rel_err, seed_params, tiny_inputs
from mova_pack.models.net.dit import AudioDiT, VideoDiT, sinusoidal_embedding

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def towers():
    video = seed_params(VideoDiT(TINY.video_dit), 1).eval()
    audio = seed_params(AudioDiT(TINY.audio_dit), 2).eval()
    return video, ref_video(video), audio, ref_audio(audio)


def _ref_video_freqs(ref, f, h, w):
    fr = ref.freqs
    return torch.cat([fr[0][:f].view(f, 1, 1, -1).expand(f, h, w, -1),
                      fr[1][:h].view(1, h, 1, -1).expand(f, h, w, -1),
                      fr[2][:w].view(1, 1, w, -1).expand(f, h, w, -1)], dim=-1).reshape(f * h * w, 1, -1)


def _ref_audio_freqs(ref, n):
    return torch.cat([ref.freqs[i][:n].view(n, -1) for i in range(3)], dim=-1).reshape(n, 1, -1)


def _ref_tower(ref, x, t, ctx, video: bool):
    """A tower alone through diffsynth's own modules, in the order of its model_fn_mova_audio_video
    (diffsynth's WanModel.forward / MovaAudioDit.forward cannot run: their patchify returns no grid)."""
    from diffsynth.models.wan_video_dit import sinusoidal_embedding_1d
    te = ref.time_embedding(sinusoidal_embedding_1d(ref.freq_dim, t))
    t_mod = ref.time_projection(te).unflatten(1, (6, ref.dim))
    ctx = ref.text_embedding(ctx)
    x = ref.patch_embedding(x)
    grid = tuple(x.shape[2:])
    x = x.flatten(2).transpose(1, 2)
    freqs = _ref_video_freqs(ref, *grid) if video else _ref_audio_freqs(ref, grid[0])
    for block in ref.blocks:
        x = block(x, ctx, t_mod, freqs)
    return ref.unpatchify(ref.head(x, te), grid)


def test_sinusoid_is_cos_first_float64():
    from diffsynth.models.wan_video_dit import sinusoidal_embedding_1d
    t = torch.tensor([999.0, 501.25, 3.0])
    ref = sinusoidal_embedding_1d(256, t.double()).float()
    assert torch.equal(sinusoidal_embedding(256, t), ref)
    assert torch.allclose(sinusoidal_embedding(256, torch.tensor([0.0]))[0, :128], torch.ones(128))


@pytest.mark.parametrize("which", ["video", "audio"])
@torch.no_grad()
def test_block_matches_reference(towers, which):
    video, rvideo, audio, raudio = towers
    mine, ref = (video, rvideo) if which == "video" else (audio, raudio)
    gen = torch.Generator().manual_seed(5)
    dim = mine.cfg.dim
    ctx = torch.randn(2, 24, dim, generator=gen)
    t_mod = torch.randn(2, 6, dim, generator=gen)
    if which == "video":
        grid = (3, 4, 6)
        ref_freqs = _ref_video_freqs(ref, *grid)
    else:
        grid = (37,)
        ref_freqs = _ref_audio_freqs(ref, 37)
    x = torch.randn(2, int(torch.tensor(grid).prod()), dim, generator=gen)
    x_before = x.clone()
    out = mine.blocks[3](x, ctx, t_mod, mine.rope(grid, x.device))
    expected = ref.blocks[3](x, ctx, t_mod, ref_freqs)
    assert torch.equal(x, x_before), "a block must not overwrite its input"
    err = rel_err(out, expected)
    print(f"{which} block max rel err {err:.2e}")
    assert err <= TOL
    # the test can fail: a different layer's weights give a clearly different output
    assert rel_err(mine.blocks[2](x, ctx, t_mod, mine.rope(grid, x.device)), expected) > 1e-2


@torch.no_grad()
def test_video_tower_matches_reference(towers):
    video, rvideo, _, _ = towers
    latents, y, _, ctx = tiny_inputs(seed=3, batch=2)
    t = torch.tensor([937.5, 937.5])
    out = video(latents, t, ctx, y=y)
    expected = _ref_tower(rvideo, torch.cat([latents, y], dim=1), t, ctx, True)
    assert out.shape == latents.shape
    err = rel_err(out, expected)
    print(f"video tower max rel err {err:.2e}")
    assert err <= TOL
    assert rel_err(video(latents, torch.tensor([500.0, 500.0]), ctx, y=y), expected) > 1e-3


@torch.no_grad()
def test_audio_tower_matches_reference(towers):
    _, _, audio, raudio = towers
    _, _, latents, ctx = tiny_inputs(seed=4, audio_len=41)
    t = torch.tensor([321.0])
    out = audio(latents, t, ctx)
    expected = _ref_tower(raudio, latents, t, ctx, False)
    assert out.shape == latents.shape
    err = rel_err(out, expected)
    print(f"audio tower max rel err {err:.2e}")
    assert err <= TOL


def test_state_dict_keys_are_released_layout(towers):
    video, _, audio, _ = towers
    keys = set(video.state_dict())
    for k in ("patch_embedding.weight", "text_embedding.0.weight", "text_embedding.2.bias",
              "time_embedding.0.weight", "time_embedding.2.bias", "time_projection.1.weight",
              "blocks.0.self_attn.norm_q.weight", "blocks.5.cross_attn.norm_k.weight", "blocks.0.norm3.bias",
              "blocks.0.ffn.0.weight", "blocks.0.ffn.2.bias", "blocks.0.modulation", "head.head.weight",
              "head.modulation"):
        assert k in keys, k
    assert not any("norm1" in k or "norm2" in k or "img_emb" in k or "k_img" in k for k in keys)
    assert tuple(audio.state_dict()["patch_embedding.weight"].shape) == (32, 128, 1)


@torch.no_grad()
def test_time_mlp_runs_in_fp32_with_bf16_weights():
    """Released pipeline: time MLPs under fp32 autocast, then cast to the activation dtype."""
    import torch.nn.functional as F
    from mova_pack.models.net.dit import _linear_fp32
    tower = seed_params(VideoDiT(TINY.video_dit), 9).to(torch.bfloat16)
    t = torch.tensor([937.5])
    te, t_mod = tower.embed_time(t)
    x = sinusoidal_embedding(TINY.video_dit.freq_dim, t)
    lin = lambda m, v: F.linear(v, m.weight.float(), m.bias.float())
    exp_t = lin(tower.time_embedding[2], F.silu(lin(tower.time_embedding[0], x)))
    exp_mod = lin(tower.time_projection[1], F.silu(exp_t)).unflatten(1, (6, TINY.video_dit.dim))
    assert te.dtype == t_mod.dtype == torch.bfloat16
    assert torch.equal(te, exp_t.to(torch.bfloat16)) and torch.equal(t_mod, exp_mod.to(torch.bfloat16))
    # the row-slab upcast equals one big fp32 matmul up to fp32 summation order
    big = tower.time_projection[1]
    assert rel_err(_linear_fp32(exp_t, big, rows=7), lin(big, exp_t)) < 1e-6

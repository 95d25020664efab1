"""The committed toy MOVA (embedded/mova-toy): loads through the real loaders with strict validation,
generates finite outputs of the right shapes, and its training code is deterministic and resumable."""
import json

import pytest
import torch

from mova_pack.models.sampling import sampler as sampler_mod
from mova_pack.models.codecs.audio_vae import load_audio_vae
from mova_pack.models.sampling.conditioning import first_frame_y, latent_shapes
from mova_pack.models.config import WAN21_LATENTS_STD, load_mova_config
from mova_pack.common.errors import CheckpointError
from mova_pack.runtime.loading import load_generator
from mova_pack.models.codecs.text_encoder import load_text_encoder
from mova_pack.models.codecs.video_vae import load_video_vae
from mova_pack.toy import scenes
from mova_pack.toy.train import configs, dit, pipeline

MODEL = configs.MODEL_DIR
FOLDERS = ("scheduler", "tokenizer", "text_encoder", "video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge",
           "audio_vae", "video_vae")


@pytest.fixture(scope="module", autouse=True)
def threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def test_folder_has_the_released_layout_and_is_small():
    assert (MODEL / "model_index.json").is_file(), "embedded/mova-toy missing: run scripts/train_toy.py"
    for name in FOLDERS:
        assert (MODEL / name).is_dir(), name
        if name not in ("scheduler", "tokenizer"):
            assert (MODEL / name / "config.json").is_file(), name
            assert list((MODEL / name).glob("*.safetensors")), name
    size = sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file())
    assert size < 40e6, f"toy model is {size / 1e6:.1f} MB"


def test_configs_are_consistent():
    cfg = load_mova_config(MODEL)
    assert cfg.video_dit.in_dim == cfg.video_vae.z_dim + 4 + cfg.video_vae.z_dim == 36
    assert cfg.audio_dit.in_dim == cfg.audio_dit.out_dim == cfg.audio_vae.latent_dim
    assert cfg.audio_vae.hop_length == 960 and cfg.audio_vae.sample_rate == 48000
    assert cfg.bridge.audio_fps == 50.0 and cfg.bridge.interaction_layers == tuple(range(cfg.audio_dit.num_layers))
    assert cfg.video_vae.latents_std != WAN21_LATENTS_STD   # measured on toy clips, not Wan's
    index = json.loads((MODEL / "model_index.json").read_text())
    assert index["boundary_ratio"] == 0.9


@pytest.fixture(scope="module")
def toy():
    gen = load_generator(MODEL, dtype=torch.float32)
    return {"gen": gen, "text": load_text_encoder(MODEL, dtype=torch.float32),
            "video_vae": load_video_vae(MODEL / "video_vae"), "audio_vae": load_audio_vae(MODEL / "audio_vae")}


def test_loads_both_experts_strictly(toy, tmp_path):
    gen = toy["gen"]
    assert gen.video_high is not None and gen.video_low is not None
    # each expert was fine-tuned on its own t range from one shared start: same shapes, different weights
    high, low = gen.video_high.state_dict(), gen.video_low.state_dict()
    assert high.keys() == low.keys() and all(high[k].shape == low[k].shape for k in high)
    assert any(not torch.equal(high[k], low[k]) for k in high)
    # strict validation: a truncated copy of a component is refused
    import shutil
    from safetensors.torch import load_file, save_file
    bad = tmp_path / "mova"
    shutil.copytree(MODEL, bad)
    f = bad / "audio_dit" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(f))
    sd.pop(sorted(sd)[0])
    save_file(sd, str(f))
    with pytest.raises(CheckpointError):
        load_generator(bad, dtype=torch.float32)


def test_tokenizer_knows_the_caption_words(toy):
    ids, mask = toy["text"].tokenize("a red ball bouncing on a wooden floor, hollow knock")
    tokens = ids[0, : int(mask.sum())].tolist()
    assert tokens[-1] == 1 and 2 not in tokens   # EOS at the end, no <unk>
    a, b = toy["text"].encode(["a red ball bouncing on a metal plate, metal clang",
                                "a blue ball bouncing on a metal plate, metal clang"])
    assert a.shape == (512, configs.TEXT_DIM) and not torch.equal(a, b)


def test_short_generation_is_finite_with_the_right_shapes(toy):
    gen, vae, avae = toy["gen"], toy["video_vae"], toy["audio_vae"]
    w, frames, fps = scenes.WIDTH, scenes.FRAMES, scenes.FPS
    vshape, ashape = latent_shapes(gen.config, w, w, frames, fps)
    assert vshape == (1, 16, 13, 8, 8) and ashape == (1, configs.AUDIO_LATENT, 103)
    noise = sampler_mod.make_noise(3, vshape, ashape)
    y = first_frame_y(vae, w, w, frames)
    pos = toy["text"].encode(["a green square bounces on a drum skin with deep drum thuds"])
    neg = toy["text"].encode([configs.NEGATIVE_PROMPT])
    video, audio = sampler_mod.sample(gen, *noise, pos, neg, y, sampler_mod.SamplerSettings(steps=2, video_fps=fps))
    assert video.shape == vshape and audio.shape == ashape
    assert torch.isfinite(video).all() and torch.isfinite(audio).all()
    wave = avae.decode(audio)
    assert wave.shape == (1, 1, 103 * 960) and torch.isfinite(wave).all() and wave.abs().max() <= 1
    pixels = vae.decode(video[:, :, :2])   # two latent frames are enough for the shape check
    assert pixels.shape == (1, 3, 5, 64, 64) and torch.isfinite(pixels).all()


def _fake_latents(work, n=4):
    g = torch.Generator().manual_seed(0)
    torch.save({"video": torch.randn(n, 16, 13, 8, 8, generator=g),
                "audio": torch.randn(n, configs.AUDIO_LATENT, 103, generator=g),
                "caption_ids": torch.tensor([0, 1, 0, 1][:n]), "contexts": torch.randn(4, 512, configs.TEXT_DIM, generator=g),
                "prompts": ["a", "b", configs.NEGATIVE_PROMPT, ""],
                "impacts": [[0.5]] * n}, work / "latents.pt")


def _fake_latents_dir(work):
    work.mkdir()
    _fake_latents(work)
    return work


def test_dit_training_is_deterministic_and_resumes(tmp_path):
    cfg = configs.mova_config()
    straight, resumed = tmp_path / "a", tmp_path / "b"
    for w in (straight, resumed):
        w.mkdir()
        _fake_latents(w)
    y = torch.randn(1, 20, 13, 8, 8, generator=torch.Generator().manual_seed(1))
    opts = dict(out=tmp_path / "x", batch=2, expert_steps=0)
    a = dit.train_dit(pipeline.Options(work=straight, dit_steps=3, **opts), cfg, y)
    dit.train_dit(pipeline.Options(work=resumed, dit_steps=2, **opts), cfg, y)   # saves at its end
    b = dit.train_dit(pipeline.Options(work=resumed, dit_steps=3, **opts), cfg, y)
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k
    lines = (resumed / "dit.log.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 3


def test_annealed_schedule_extends_the_cosine_with_a_low_rate_tail():
    # Up to steps - anneal it is the plain cosine of that length, so a finished run resumes into the tail.
    for s in (0, 50, 100, 2000, 6499, 6500):
        assert dit._lr(s, 9500, anneal=3000) == pytest.approx(dit._lr(s, 6500))
    tail = [dit._lr(s, 9500, anneal=3000) for s in range(6500, 9501, 500)]
    assert tail[0] == pytest.approx(0.1) and tail[-1] == pytest.approx(0.01)
    assert all(a > b for a, b in zip(tail, tail[1:]))
    assert dit._lr(2, 3, anneal=3000) == dit._lr(2, 3)      # no room for a tail: plain schedule


def test_cli_rejects_an_anneal_longer_than_the_run(tmp_path, capsys):
    import sys
    sys.path.insert(0, str(configs.ROOT / "scripts"))
    import train_toy

    with pytest.raises(SystemExit) as e:
        train_toy.main(["--stage", "text", "--work", str(tmp_path), "--dit-steps", "100", "--dit-anneal-steps", "100"])
    assert e.value.code == 2 and "--dit-anneal-steps" in capsys.readouterr().err


def test_frame_masking_replaces_whole_latent_frames_with_noise():
    import numpy as np
    x = torch.zeros(64, 16, 13, 8, 8)
    out, mask = dit.mask_frames(np.random.default_rng(0), torch.Generator().manual_seed(0), x, fraction=0.3)
    per_sample = mask.sum(dim=1)
    assert 0.15 < (per_sample > 0).float().mean() < 0.45 and per_sample.max() <= dit.FRAME_MASK_MAX
    assert torch.equal(out[~mask[:, None, :, None, None].expand_as(x)], x[~mask[:, None, :, None, None].expand_as(x)])
    masked = out.permute(0, 2, 1, 3, 4)[mask]                    # [frames, 16, 8, 8] of pure noise
    assert masked.shape[0] == per_sample.sum() and 0.8 < masked.std() < 1.2
    _, none = dit.mask_frames(np.random.default_rng(0), torch.Generator().manual_seed(0), x, fraction=0.0)
    assert not none.any()


def test_video_loss_is_the_flow_target_except_on_masked_frames():
    g = torch.Generator().manual_seed(0)
    x0, eps, xt = (torch.randn(2, 16, 3, 4, 4, generator=g) for _ in range(3))
    sigma = torch.tensor([0.5, 0.8]).view(2, 1, 1, 1, 1)
    perfect = eps - x0
    none = torch.zeros(2, 3, dtype=torch.bool)
    assert dit.video_loss(perfect, xt, x0, eps, sigma, none) == 0
    some = none.clone()
    some[1, 2] = True
    implied = (xt - sigma * perfect - x0)[1, :, 2].square().sum() / perfect.numel()
    torch.testing.assert_close(dit.video_loss(perfect, xt, x0, eps, sigma, some), implied)
    exact_x0 = (xt - x0) / sigma                                  # the prediction whose implied x0 is x0
    loss = dit.video_loss(torch.where(some[:, None, :, None, None], exact_x0, perfect), xt, x0, eps, sigma, some)
    assert loss.abs() < 1e-10


def test_expert_split_tunes_each_expert_on_its_own_range_and_resumes(tmp_path):
    cfg = configs.mova_config()
    y = torch.randn(1, 20, 13, 8, 8, generator=torch.Generator().manual_seed(1))
    base, split, resumed = tmp_path / "base", tmp_path / "split", tmp_path / "resumed"
    for w in (base, split, resumed):
        w.mkdir()
        _fake_latents(w)
    one = dit.train_dit(pipeline.Options(work=base, out=tmp_path / "x", dit_steps=2, batch=2), cfg, y)
    two = dit.train_dit(pipeline.Options(work=split, out=tmp_path / "x", dit_steps=2, expert_steps=2, batch=2), cfg, y)
    # stage 1 is the same run; stage 2 moves only the video experts, each its own way
    for part in ("audio", "bridge"):
        for (k, a), b in zip(getattr(one, part).state_dict().items(), getattr(two, part).state_dict().values()):
            assert torch.equal(a, b), (part, k)
    changed = lambda a, b: any(not torch.equal(x, z) for x, z in zip(a.state_dict().values(), b.state_dict().values()))
    assert changed(one.video_high, two.video_high) and changed(one.video_low, two.video_low)
    assert changed(two.video_high, two.video_low)
    # an interrupted expert stage resumes to the same weights
    dit.train_dit(pipeline.Options(work=resumed, out=tmp_path / "x", dit_steps=2, expert_steps=1, batch=2), cfg, y)
    three = dit.train_dit(pipeline.Options(work=resumed, out=tmp_path / "x", dit_steps=2, expert_steps=2, batch=2), cfg, y)
    for (k, a), b in zip(two.state_dict().items(), three.state_dict().values()):
        assert torch.equal(a, b), k
    assert (resumed / "expert_video_low.log.jsonl").is_file()
    # raising stage 1's target afterwards tunes the experts again from the new stage 1
    more = dit.train_dit(pipeline.Options(work=resumed, out=tmp_path / "x", dit_steps=3, expert_steps=2, batch=2), cfg, y)
    fresh = dit.train_dit(pipeline.Options(work=tmp_path / "fresh3", out=tmp_path / "x", dit_steps=3, expert_steps=2,
                                           batch=2), cfg, y) if _fake_latents_dir(tmp_path / "fresh3") else None
    for (k, a), b in zip(fresh.state_dict().items(), more.state_dict().values()):
        assert torch.equal(a, b), k


def test_sync_stage_audio_half_equals_the_joint_forward():
    from mova_pack.models.net.generator import build_generator
    from mova_pack.models.net.joint import joint_forward
    from mova_pack.toy.train import sync

    gen = build_generator(configs.mova_config(), dtype=torch.float32, seed=3).eval()
    g = torch.Generator().manual_seed(2)
    v, a = torch.randn(2, 16, 13, 8, 8, generator=g), torch.randn(2, configs.AUDIO_LATENT, 103, generator=g)
    ctx, y = torch.randn(2, 512, configs.TEXT_DIM, generator=g), torch.randn(2, 20, 13, 8, 8, generator=g)
    tv, ta = torch.tensor([950.0, 400.0]), torch.tensor([300.0, 400.0])
    for bridge in (1.0, 0.0):
        with torch.no_grad():
            want = joint_forward(gen.video_low, gen.audio, gen.bridge, v, a, tv, ctx, y=y, audio_timestep=ta,
                                 a2v_scale=bridge, v2a_scale=bridge)[1]
            got = sync.audio_forward(gen, gen.video_low, v, a, tv, ta, ctx, y, 24.0, bridge)
        assert torch.equal(want, got), bridge


def test_sync_stage_tunes_only_the_audio_side_deterministically_and_resumes(tmp_path):
    from mova_pack.models.net.generator import build_generator
    from mova_pack.toy.train import sync

    cfg = configs.mova_config()
    y = torch.randn(1, 20, 13, 8, 8, generator=torch.Generator().manual_seed(1))
    full = build_generator(cfg, dtype=torch.float32, seed=4).eval()
    runs = {}
    for name, stops in (("straight", (3,)), ("resumed", (2, 3))):
        work = _fake_latents_dir(tmp_path / name)
        for steps in stops:
            runs[name] = sync.train_sync(pipeline.Options(work=work, out=tmp_path / "x", batch=2, sync_steps=steps),
                                         cfg, y, full)
    tuned = runs["straight"]
    for (k, a), b in zip(tuned.state_dict().items(), runs["resumed"].state_dict().values()):
        assert torch.equal(a, b), k
    before, after = full.state_dict(), tuned.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith(("audio.", "bridge.video_to_audio_conditioners.")) for k in moved), moved
    assert any(k.startswith("bridge.") for k in moved) and any(k.startswith("audio.") for k in moved)
    assert json.loads((tmp_path / "resumed" / "sync.log.jsonl").read_text().splitlines()[-1])["step"] == 3


def test_export_takes_the_sync_stage_generator_when_it_runs(tmp_path):
    assert pipeline.generator_file(pipeline.Options(work=tmp_path, out=tmp_path)).name == "generator.sync.safetensors"
    assert pipeline.generator_file(pipeline.Options(work=tmp_path, out=tmp_path, sync_steps=0)).name == \
        "generator.safetensors"

"""scripts/train_toy.py --init-from: a work dir seeded from an exported toy folder resumes the recipe from
those weights (toy/train/seed.py)."""
import json

import pytest
import torch
from safetensors.torch import load_file

from mova_pack.models.net.generator import build_generator
from mova_pack.runtime.loading import load_generator
from mova_pack.models.codecs.video_vae import load_video_vae
from mova_pack.toy.train import configs, dit, pipeline, vae
from mova_pack.toy.train.seed import seed_work_dir
from test_toy_model import _fake_latents

MODEL = configs.MODEL_DIR


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    work = tmp_path_factory.mktemp("seeded")
    o = pipeline.Options(work=work, out=work / "out", video_vae_steps=6, dit_steps=4, batch=2, expert_steps=0)
    seed_work_dir(o, MODEL, 5, 3)
    return o


def test_seeded_checkpoints_hold_the_folder_weights(seeded):
    work = seeded.work
    state = torch.load(work / "dit.ckpt.pt", weights_only=True)
    assert state["step"] == 3 and state["sched"]["last_epoch"] == 3
    released = load_generator(MODEL, dtype=torch.float32).state_dict()
    assert set(state["model"]) == {k for k in released if not k.startswith("video_low.")}
    for k, v in state["model"].items():
        assert torch.equal(v, released[k]) and torch.equal(state["ema"][k], v), k
    vstate = torch.load(work / "video_vae.ckpt.pt", weights_only=True)
    assert vstate["step"] == 5 and vstate["sched"]["last_epoch"] == 5
    decoder = load_video_vae(MODEL / "video_vae").state_dict()
    for k, v in vstate["model"].items():
        assert torch.equal(v, decoder[k]), k
    encoder = load_file(str(work / "video_encoder.safetensors"))
    assert encoder and all(k.startswith(vae.ENCODER_KEYS) for k in encoder)
    assert (work / "text" / "tokenizer").is_dir() and (work / "text" / "text_encoder" / "config.json").is_file()
    assert json.loads((work / "audio_latent_stats.json").read_text())["std"]
    assert pipeline.load_audio_vae(seeded) is not None


def test_seeded_stages_resume_from_the_seed_steps(seeded, tmp_path):
    work = seeded.work
    _fake_latents(work, n=2)
    y = torch.randn(1, 20, 13, 8, 8, generator=torch.Generator().manual_seed(1))
    before = load_generator(MODEL, dtype=torch.float32).state_dict()
    gen = dit.train_dit(seeded, configs.mova_config(pipeline.video_vae_config(seeded)), y)
    steps = [json.loads(line)["step"] for line in (work / "dit.log.jsonl").read_text().splitlines()]
    assert steps == [4]                                   # one step: 3 -> 4
    w = "video_high.blocks.0.self_attn.q.weight"
    moved = (gen.state_dict()[w] - before[w]).abs().max()
    assert 0 < moved < 0.05                               # fine-tuned, not re-initialised
    vae.train_video_vae(pipeline.video_vae_config(seeded), work, 6, seeded.seed, pool_size=2)
    assert [json.loads(line)["step"] for line in (work / "video_vae.log.jsonl").read_text().splitlines()] == [6]


def test_seeding_refuses_to_overwrite_or_guess(seeded, tmp_path):
    with pytest.raises(FileExistsError, match="already holds"):
        seed_work_dir(seeded, MODEL, 5, 3)
    o = pipeline.Options(work=tmp_path / "w", out=tmp_path / "o", dit_steps=4)
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        seed_work_dir(o, tmp_path, 5, 3)
    with pytest.raises(ValueError, match="inside the targets"):
        seed_work_dir(o, MODEL, 5, 4)
    with pytest.raises(ValueError, match="inside the targets"):
        seed_work_dir(o, MODEL, o.video_vae_steps + 1, 3)


def test_a_video_vae_step_at_its_target_keeps_the_folder_decoder_as_finished(tmp_path):
    o = pipeline.Options(work=tmp_path / "w", out=tmp_path / "o", video_vae_steps=6, dit_steps=4)
    seed_work_dir(o, MODEL, 6, 3)
    finished = o.work / "video_vae.safetensors"
    written = load_file(str(finished))
    decoder = load_video_vae(MODEL / "video_vae").state_dict()
    assert written.keys() == decoder.keys()
    assert all(torch.equal(v, decoder[k]) for k, v in written.items())
    before = finished.stat().st_mtime_ns
    pipeline.stage_video_vae(o)                            # finished: nothing trained, nothing rewritten
    assert finished.stat().st_mtime_ns == before and not (o.work / "video_vae.log.jsonl").exists()
    assert not (o.work / "video_vae.ckpt.pt").exists()     # no resume state for a stage that is done


def test_cli_reports_bad_seeds_without_a_traceback(tmp_path, capsys):
    import sys
    sys.path.insert(0, str(configs.ROOT / "scripts"))
    import train_toy

    for extra in (["--init-from", str(tmp_path)], ["--init-from", str(MODEL), "--init-steps", "x"]):
        with pytest.raises(SystemExit) as e:
            train_toy.main(["--stage", "text", "--work", str(tmp_path / "w"), *extra])
        assert e.value.code == 2
    assert "model_index.json" in capsys.readouterr().err

"""The stages of scripts/train_toy.py; each reads the previous stage's files from `work` and skips when
its own output exists (delete it to redo a stage)."""
from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ...models.codecs import text_encoder as te
from ...models.codecs.audio_vae import AudioVAE, audio_vae_from_state_dict
from ...models.codecs.video_vae import video_vae_from_state_dict
from ...models.codecs.video_vae_keys import to_diffusers
from .. import captions
from . import configs
from .common import render_pool, save_state

DEFAULTS = {"video_vae_steps": 7000, "audio_vae_steps": 900, "clips": 8192, "dit_steps": 13000,
            "dit_anneal_steps": 6500, "expert_steps": 100,
            "sync_steps": 1500, "batch": 16}


@dataclass(frozen=True)
class Options:
    work: Path
    out: Path
    seed: int = configs.SEED
    video_vae_steps: int = DEFAULTS["video_vae_steps"]
    audio_vae_steps: int = DEFAULTS["audio_vae_steps"]
    clips: int = DEFAULTS["clips"]
    dit_steps: int = DEFAULTS["dit_steps"]
    dit_anneal_steps: int = DEFAULTS["dit_anneal_steps"]
    expert_steps: int = DEFAULTS["expert_steps"]
    sync_steps: int = DEFAULTS["sync_steps"]
    batch: int = DEFAULTS["batch"]


# ------------------------------------------------------------------------------------------------ text
def text_dir(o: Options) -> Path:
    return o.work / "text"


def stage_text(o: Options) -> None:
    """Sentencepiece on the toy captions + the default negative prompt; umT5 frozen at a seeded init."""
    out = text_dir(o)
    if (out / "text_encoder" / "config.json").is_file():
        return
    from transformers import UMT5EncoderModel

    sentences = captions.all_captions() + [configs.NEGATIVE_PROMPT]
    spm = te.train_sentencepiece(o.work / "spm" / "spiece", vocab_size=configs.TEXT_ENCODER.vocab_size,
                                 sentences=sentences)
    te.save_tokenizer_folder(spm, out / "tokenizer")
    import sentencepiece

    vocab = sentencepiece.SentencePieceProcessor(model_file=str(spm)).get_piece_size()
    cfg = dataclasses.replace(configs.TEXT_ENCODER, vocab_size=vocab)
    torch.manual_seed(o.seed + 7)
    UMT5EncoderModel(te.umt5_config(cfg)).eval().save_pretrained(str(out / "text_encoder"), safe_serialization=True)


def load_text(o: Options):
    return te.load_text_encoder(text_dir(o), dtype=torch.float32)


# ------------------------------------------------------------------------------------------------ VAEs
def stage_video_vae(o: Options) -> None:
    from .vae import train_video_vae

    final = o.work / "video_vae.safetensors"
    if final.is_file():
        return
    vae = train_video_vae(configs.VIDEO_VAE, o.work, o.video_vae_steps, o.seed)
    save_state(vae, final)


def stage_audio_vae(o: Options) -> None:
    from .vae import train_audio_vae

    final = o.work / "audio_vae.safetensors"
    if final.is_file():
        return
    audio_latent_stats_file(o)
    vae = train_audio_vae(configs.AUDIO_VAE, o.work, o.audio_vae_steps, o.seed, *audio_latent_stats(o))
    save_state(vae, final)


def designed_audio_stats(seed: int = configs.SEED):
    """Per-channel mean/std of the designed audio latent (48 clips): the audio VAE's latent is the
    designed one standardised with these (folded into its quant_conv / post_quant_conv)."""
    from . import latents as L
    from .vae import latent_stats

    return latent_stats([L.clip_audio_latent(c) for c in render_pool(seed + 60_000, 48)])


def audio_latent_stats_file(o: Options) -> Path:
    """`audio_latent_stats.json` in the work dir, measured on the designed latent if missing."""
    stats = o.work / "audio_latent_stats.json"
    if not stats.is_file():
        mean, std = designed_audio_stats(o.seed)
        stats.write_text(json.dumps({"mean": mean.tolist(), "std": std.tolist()}))
    return stats


def audio_latent_stats(o: Options):
    s = json.loads((o.work / "audio_latent_stats.json").read_text())
    return s["mean"], s["std"]


def video_vae_config(o: Options):
    """The toy video VAE config with the statistics of the designed latent (measured on 48 clips)."""
    stats = o.work / "video_latent_stats.json"
    if not stats.is_file():
        from . import latents as L
        from .vae import latent_stats

        mean, std = latent_stats([L.clip_video_latent(c) for c in render_pool(o.seed + 70_000, 48)])
        stats.write_text(json.dumps({"mean": mean.tolist(), "std": std.tolist()}))
    s = json.loads(stats.read_text())
    return configs.with_latent_stats(configs.VIDEO_VAE, s["mean"], s["std"])


def load_video_vae(o: Options):
    return video_vae_from_state_dict(load_file(str(o.work / "video_vae.safetensors")), video_vae_config(o))


def load_video_encoder(o: Options):
    """The video VAE with the encoder frozen early in stage video_vae (all y needs); waits for it."""
    import time

    from ...models.codecs.video_vae import WanVideoVAE

    path = o.work / "video_encoder.safetensors"
    while not path.is_file():   # stage video_vae writes it after its first ENCODER_STEPS steps
        time.sleep(10)
    vae = WanVideoVAE(video_vae_config(o))
    missing, unexpected = vae.load_state_dict(load_file(str(path)), strict=False)
    assert not unexpected and all(not k.startswith(("encoder.", "conv1.")) for k in missing)
    return vae.eval()


def load_audio_vae(o: Options) -> AudioVAE:
    return audio_vae_from_state_dict(load_file(str(o.work / "audio_vae.safetensors")), configs.AUDIO_VAE)


# ------------------------------------------------------------------------------------------------ DiT
def stage_encode(o: Options) -> None:
    from .dit import encode_dataset

    encode_dataset(o, video_vae_config(o), audio_latent_stats(o), load_text(o))


def stage_dit(o: Options) -> None:
    from .dit import train_dit, white_frame_y

    if (o.work / "generator.safetensors").is_file():
        return
    gen = train_dit(o, configs.mova_config(video_vae_config(o)), white_frame_y(load_video_encoder(o)))
    save_state(gen, o.work / "generator.safetensors")
    for stale in ("sync.ckpt.pt", "generator.sync.safetensors"):     # tuned from an older generator
        (o.work / stale).unlink(missing_ok=True)


def stage_sync(o: Options) -> None:
    """Stage 3 (toy/train/sync.py): audio tower + video->audio Bridge tuned to follow the video's timing."""
    from ...models.net.generator import build_generator
    from .dit import white_frame_y
    from .sync import train_sync

    final = o.work / "generator.sync.safetensors"
    if final.is_file() or o.sync_steps <= 0:
        return
    cfg = configs.mova_config(video_vae_config(o))
    full = build_generator(cfg, dtype=torch.float32, seed=0)
    full.load_state_dict(load_file(str(o.work / "generator.safetensors")))
    save_state(train_sync(o, cfg, white_frame_y(load_video_encoder(o)), full.eval()), final)


def generator_file(o: Options) -> Path:
    """The generator export writes: stage 3's when it runs, else stages 1-2's."""
    return o.work / ("generator.sync.safetensors" if o.sync_steps > 0 else "generator.safetensors")


# ------------------------------------------------------------------------------------------------ export
def _save_component(folder: Path, state: dict, cfg: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(folder / "diffusion_pytorch_model.safetensors"))


def stage_export(o: Options) -> None:
    """Write the MOVA folder: model_index.json, scheduler/, tokenizer/, text_encoder/, video_dit/,
    video_dit_2/, audio_dit/, dual_tower_bridge/, audio_vae/, video_vae/."""
    from ...models.net.generator import build_generator, save_generator

    vcfg = video_vae_config(o)
    text_cfg = te.load_text_encoder(text_dir(o), dtype=torch.float32).model.config
    cfg = configs.mova_config(vcfg, dataclasses.replace(configs.TEXT_ENCODER, vocab_size=text_cfg.vocab_size))
    gen = build_generator(cfg, dtype=torch.float32, seed=0)
    gen.load_state_dict(load_file(str(generator_file(o))))
    tmp = o.out.with_name(o.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_generator(gen, tmp)
    _save_component(tmp / "video_vae", to_diffusers(load_video_vae(o).state_dict(), vcfg), vcfg.to_dict())
    _save_component(tmp / "audio_vae", load_audio_vae(o).state_dict(), configs.AUDIO_VAE.to_dict())
    for name in ("text_encoder", "tokenizer"):
        shutil.rmtree(tmp / name, ignore_errors=True)
        shutil.copytree(text_dir(o) / name, tmp / name)
    (tmp / "TOY_MODEL").write_text("trained by scripts/train_toy.py; see docs/toy-model.md\n")
    shutil.rmtree(o.out, ignore_errors=True)
    tmp.rename(o.out)

"""DAC audio VAE: parity with diffsynth's MOVA audio VAE, released-config size, dtype and input checks."""
import math

import pytest
import torch

import conftest  # noqa: F401  (registers mova_pack)
from mova_pack.models.codecs.audio_vae import AudioVAE, audio_vae_param_count
from mova_pack.models.config import AudioVAEConfig
from mova_pack.common.errors import ConfigError, InputError

TINY = AudioVAEConfig(encoder_dim=8, encoder_rates=(2, 3, 4, 5, 8), latent_dim=8,
                      decoder_dim=32, decoder_rates=(8, 5, 4, 3, 2))


def seeded(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            n = torch.randn(p.shape, generator=gen)
            if name.endswith("alpha"):
                p.copy_(1.0 + 0.3 * n)
            elif p.ndim >= 2:
                fan_in = p.shape[0] if "decoder.model" in name and name.endswith("block.1.weight") else p.shape[1]
                p.copy_(n / math.sqrt(fan_in * p.shape[-1]))
            else:
                p.copy_(0.05 * n)
    return module


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def reference(cfg: AudioVAEConfig):
    from diffsynth.models.mova_audio_vae import DacVAE
    return DacVAE(encoder_dim=cfg.encoder_dim, encoder_rates=list(cfg.encoder_rates), latent_dim=cfg.latent_dim,
                  decoder_dim=cfg.decoder_dim, decoder_rates=list(cfg.decoder_rates),
                  sample_rate=cfg.sample_rate, continuous=True, use_weight_norm=False).eval()


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    mine = seeded(AudioVAE(TINY)).eval()
    ref = reference(TINY)
    ref.load_state_dict(mine.state_dict(), strict=True)  # same key names and shapes, both ways
    assert set(ref.state_dict()) == set(mine.state_dict())
    return mine, ref


def test_decode_matches_reference(pair):
    mine, ref = pair
    z = torch.randn(2, TINY.latent_dim, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref.decode(z)
    got = mine.decode(z)
    assert got.shape == (2, 1, 7 * 960) and got.dtype == torch.float32
    assert want.abs().max() > 0.05  # the check is not comparing near-zero signals
    assert rel_err(got, want) <= 1e-5


def test_encode_matches_reference_mean_with_right_padding(pair):
    mine, ref = pair
    wave = 0.5 * torch.randn(1, 1, 960 * 5 + 123, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        padded = ref.preprocess(wave, 48000)
        want = ref.encode(padded)[0].mode()
    got = mine.encode(wave)
    assert got.shape == (1, TINY.latent_dim, 6)
    assert rel_err(got, want) <= 1e-5


def test_properties_and_bf16_weights_decode_in_fp32(pair):
    mine, _ = pair
    assert mine.hop_length == 960 and mine.sample_rate == 48000
    vae = seeded(AudioVAE(TINY)).to(torch.bfloat16)
    out = vae.decode(torch.randn(1, TINY.latent_dim, 3, dtype=torch.bfloat16))
    assert out.dtype == torch.float32 and all(p.dtype == torch.float32 for p in vae.parameters())


def test_released_config_size_on_meta():
    # spec 1.6: file 743,102,794 B in bf16 = 2 B per parameter + a JSON header of ~24 kB
    # (224 tensors x ~100 B of name/shape/offsets), so no weight-norm g/v pairs and no codebooks.
    n = audio_vae_param_count(AudioVAEConfig())
    assert n == 371_539_137
    assert 16_000 < 743_102_794 - 2 * n < 32_000
    with torch.device("meta"):
        vae = AudioVAE(AudioVAEConfig())
    sd = vae.state_dict()
    assert sd["encoder.block.1.block.0.block.0.alpha"].shape == (1, 128, 1)  # RU at 256 // 2
    assert sd["decoder.model.1.block.1.weight"].shape == (2048, 1024, 16)  # ConvTranspose1d [in, out, k]
    assert sd["decoder.model.7.weight"].shape == (1, 64, 7)
    assert sd["quant_conv.weight"].shape == (256, 128, 1)


def test_refuses_unsupported_configs_and_bad_input(pair):
    with pytest.raises(ConfigError, match="use_weight_norm"):
        AudioVAE(AudioVAEConfig(use_weight_norm=True))
    with pytest.raises(ConfigError, match="continuous"):
        AudioVAE(AudioVAEConfig(continuous=False))
    mine, _ = pair
    with pytest.raises(InputError, match="latent"):
        mine.decode(torch.zeros(1, TINY.latent_dim + 1, 4))
    with pytest.raises(InputError, match="mono"):
        mine.encode(torch.zeros(1, 2, 960))


def test_load_folder_roundtrip_and_wrong_file(pair, tmp_path):
    import json

    from safetensors.torch import save_file

    from mova_pack.models.codecs.audio_vae import load_audio_vae
    from mova_pack.common.errors import CheckpointError

    mine, _ = pair
    folder = tmp_path / "audio_vae"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY.to_dict()))
    save_file({k: v.contiguous() for k, v in mine.state_dict().items()},
              str(folder / "diffusion_pytorch_model.safetensors"))
    loaded = load_audio_vae(folder)
    assert loaded.config == TINY and loaded.quant_conv.weight.dtype == torch.float32
    z = torch.randn(1, TINY.latent_dim, 3)
    assert torch.equal(loaded.decode(z), mine.decode(z))
    bad = tmp_path / "bad.safetensors"
    save_file({"encoder.block.0.weight_g": torch.zeros(1)}, str(bad))
    with pytest.raises(CheckpointError, match="weight-norm"):
        load_audio_vae(bad, cfg=TINY)

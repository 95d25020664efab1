"""Wan 2.1 video VAE: parity with diffsynth (Wan-native layout) and diffusers AutoencoderKLWan (MOVA's
layout), key-layout conversion both ways, loading both file kinds, causality of the chunked decode."""
import json

import pytest
import torch

import conftest  # noqa: F401  (registers mova_pack)
from mova_pack.models.config import VideoVAEConfig
from mova_pack.common.errors import CheckpointError, InputError
from mova_pack.models.codecs.video_vae import WanVideoVAE, load_video_vae, video_vae_from_state_dict, video_vae_param_count
from mova_pack.models.codecs.video_vae_keys import DIFFUSERS, NATIVE, detect_layout, to_diffusers, to_native

TINY = VideoVAEConfig(base_dim=8)
MEAN = torch.tensor(TINY.latents_mean).view(1, 16, 1, 1, 1)
STD = torch.tensor(TINY.latents_std).view(1, 16, 1, 1, 1)


def perturbed(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Default init + noise, so zero-initialised parts (attention proj) and gammas are exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return module


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return perturbed(WanVideoVAE(TINY)).eval()


def video(frames=9, h=16, w=24, seed=1):
    return torch.rand(1, 3, frames, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def latent(frames=3, h=2, w=3, seed=2):
    return torch.randn(1, 16, frames, h, w, generator=torch.Generator().manual_seed(seed))


def test_parity_with_diffsynth_native_layout(tiny):
    from diffsynth.models.wan_video_vae import VideoVAE_

    ref = VideoVAE_(dim=TINY.base_dim, z_dim=16).eval()
    ref.load_state_dict(tiny.state_dict(), strict=True)
    scale = [MEAN.flatten(), 1.0 / STD.flatten()]
    with torch.no_grad():
        want_z = ref.encode(video(), scale)
        want_x = ref.decode(latent(), scale).clamp(-1, 1)
    got_z, got_x = tiny.encode(video()), tiny.decode(latent())
    assert got_z.shape == (1, 16, 3, 2, 3) and got_x.shape == (1, 3, 9, 16, 24)
    assert rel_err(got_z, want_z) <= 1e-5
    assert rel_err(got_x, want_x) <= 1e-5


def test_parity_with_diffusers_autoencoder_kl_wan(tiny):
    import diffusers   # pinned in requirements-dev.txt (reference implementation)
    ref = diffusers.AutoencoderKLWan(base_dim=TINY.base_dim, z_dim=16).eval()
    ref.load_state_dict(to_diffusers(tiny.state_dict(), TINY), strict=True)
    with torch.no_grad():
        want_z = (ref.encode(video()).latent_dist.mean - MEAN) / STD
        want_x = ref.decode(latent() * STD + MEAN).sample
    assert rel_err(tiny.encode(video()), want_z) <= 1e-5
    assert rel_err(tiny.decode(latent()), want_x) <= 1e-5


def test_full_size_vae_matches_diffsynth_wrapper_on_a_tiny_video():
    from diffsynth.models.wan_video_vae import WanVideoVAE as RefWrapper  # hard-codes dim 96

    torch.manual_seed(3)
    ref = RefWrapper()
    perturbed(ref.model, seed=3)
    mine = video_vae_from_state_dict(ref.model.state_dict())  # meta build + assign: no second init
    x = video(frames=5, h=16, w=16)
    with torch.no_grad():
        want_z = ref.encode(x, device="cpu")
        want_x = ref.decode(want_z, device="cpu")
    # fp32 rounding only: AVX-512 conv kernels land at 1.2e-5 on the decoder (1e-5 or less on AVX2)
    assert rel_err(mine.encode(x), want_z) <= 3e-5
    assert rel_err(mine.decode(want_z), want_x) <= 3e-5


def test_released_size_on_meta():
    # Wan 2.1 VAE: 126.9M params = the 254 MB bf16 wan_2.1_vae.safetensors
    assert video_vae_param_count(VideoVAEConfig()) == 126_892_531


def test_key_layouts_round_trip_and_match_diffusers_names():
    cfg = VideoVAEConfig()
    with torch.device("meta"):
        native = WanVideoVAE(cfg).state_dict()
    diff = to_diffusers(native, cfg)
    assert len(diff) == len(native) == 194 and detect_layout(diff) == DIFFUSERS
    back, layout = to_native(diff, cfg)
    assert layout == DIFFUSERS and list(back) == list(native)
    assert all(back[k] is native[k] for k in native)  # tensors travel with their own names
    assert detect_layout(native) == NATIVE
    # names spot-checked against diffusers' convert_wan_to_diffusers.py
    assert "decoder.up_blocks.1.resnets.0.conv_shortcut.weight" in diff  # native decoder.upsamples.4.shortcut
    assert "decoder.up_blocks.2.upsamplers.0.resample.1.weight" in diff
    assert "encoder.down_blocks.5.time_conv.weight" in diff and "encoder.mid_block.attentions.0.norm.gamma" in diff
    import diffusers   # pinned in requirements-dev.txt (reference implementation)
    with torch.device("meta"):
        real = diffusers.AutoencoderKLWan().state_dict()
    assert set(real) == set(diff)
    assert all(real[k].shape == diff[k].shape for k in real)


def test_both_file_layouts_load_to_the_same_model(tiny, tmp_path):
    from safetensors.torch import save_file

    native_file = tmp_path / "wan_2.1_vae.safetensors"  # ComfyUI-style single file
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(native_file))
    folder = tmp_path / "video_vae"  # MOVA-style diffusers folder
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**TINY.to_dict(), "base_dim": 8, "attn_scales": []}))
    save_file({k: v.contiguous() for k, v in to_diffusers(tiny.state_dict(), TINY).items()},
              str(folder / "diffusion_pytorch_model.safetensors"))
    a, b = load_video_vae(native_file), load_video_vae(folder)
    z = latent(frames=2)
    assert torch.equal(a.decode(z), tiny.decode(z)) and torch.equal(b.decode(z), tiny.decode(z))
    wrapped = video_vae_from_state_dict({"model." + k: v for k, v in tiny.state_dict().items()})  # diffsynth prefix
    assert torch.equal(wrapped.decode(z), tiny.decode(z))


def test_wrong_files_give_clear_errors(tiny):
    with pytest.raises(CheckpointError, match="not a Wan 2.1 video VAE"):
        video_vae_from_state_dict({"first_stage_model.encoder.conv_in.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="Wan 2.2"):
        detect_layout(["encoder.conv1.weight", "conv2.weight", "encoder.downsamples.0.downsamples.0.residual.0.gamma"])
    sd = dict(tiny.state_dict())
    sd.pop("decoder.head.2.weight")
    with pytest.raises(CheckpointError, match=r"video VAE: missing 1 of \d+ keys: decoder\.head\.2\.weight\. The file"):
        video_vae_from_state_dict(sd)


def test_decode_is_causal_and_chunked(tiny):
    z = latent(frames=3)
    full = tiny.decode(z)
    part = tiny.decode(z[:, :, :2])
    assert part.shape[2] == 5 and torch.allclose(full[:, :, :5], part, atol=1e-6)
    seen = []
    tiny.decode(z, on_frame=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_encode_rejects_bad_frame_counts(tiny):
    with pytest.raises(InputError, match="1\\+4k frames"):
        tiny.encode(video(frames=8))
    with pytest.raises(InputError, match="divisible by 8"):
        tiny.encode(video(frames=5, h=20, w=16))

"""umT5 text encoder: MOVA folder and ComfyUI single file (fp16 / scaled fp8, embedded tokenizer) give the
same context; 512 tokens, zero padding, truncation with EOS, prompt cleaning."""
import dataclasses

import pytest
import torch

import conftest  # noqa: F401  (registers mova_pack)
from mova_pack.models.codecs import text_encoder as te
from mova_pack.models.config import PRESETS
from mova_pack.common.errors import CheckpointError, InputError

CFG = dataclasses.replace(PRESETS["tiny"].text_encoder, vocab_size=320)
PROMPTS = ["A cat walks on the beach at sunset &amp;amp; waves   crash.",
           "一只猫在海边散步，色调艳丽",
           "x"]


@pytest.fixture(scope="module")
def mova_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mova")
    te.save_random_text_encoder(folder, CFG, seed=0)
    return folder


@pytest.fixture(scope="module")
def folder_encoder(mova_folder):
    return te.load_text_encoder(mova_folder / "text_encoder", dtype=torch.float32)


def comfy_file(path, encoder, spiece=None, fp8=False, prefix=""):
    """Write `encoder`'s weights the way ComfyUI ships umT5 (no embed_tokens copy, optional extras)."""
    from safetensors.torch import save_file

    sd = {}
    for key, value in encoder.model.state_dict().items():
        if key == "encoder.embed_tokens.weight":
            continue
        if fp8 and value.ndim == 2 and "DenseReluDense" in key or fp8 and key.endswith(("q.weight", "o.weight")):
            scale = value.abs().max().float() / 448.0
            sd[prefix + key] = (value / scale).to(torch.float8_e4m3fn)
            sd[prefix + key[: -len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            sd[prefix + key] = value.contiguous()
    if fp8:
        sd[prefix + "scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    if spiece is not None:
        sd[prefix + "spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
    save_file(sd, str(path))
    return path


def spiece_bytes(mova_folder):
    return (mova_folder / "tokenizer" / "spiece.model").read_bytes()


def test_context_shape_and_zero_padding(folder_encoder):
    ids, mask = folder_encoder.tokenize(PROMPTS)
    ctx = folder_encoder.encode(PROMPTS)
    assert ctx.shape == (3, 512, CFG.d_model) and ctx.dtype == torch.float32
    for row, n in enumerate(mask.sum(1).tolist()):
        assert ids[row, n - 1] == te.EOS_ID and (ids[row, n:] == te.PAD_ID).all()
        assert (ctx[row, n:] == 0).all() and (ctx[row, :n].abs().sum(-1) > 0).all()
    assert mask[2].sum() <= 3  # "x" -> a token or two + EOS


def test_context_is_the_masked_encoder_output(folder_encoder):
    """Reference computation written out: HF encoder with mask, keep seq_len tokens, zero the rest."""
    ids, mask = folder_encoder.tokenize(PROMPTS[:1])
    with torch.no_grad():
        hidden = folder_encoder.model(input_ids=ids, attention_mask=mask).last_hidden_state
    n = int(mask.sum())
    want = torch.zeros_like(hidden)
    want[:, :n] = hidden[:, :n]
    assert torch.equal(folder_encoder.encode(PROMPTS[:1]), want)


def test_comfy_single_file_matches_mova_folder(mova_folder, folder_encoder, tmp_path):
    spiece = spiece_bytes(mova_folder)
    path = comfy_file(tmp_path / "umt5_xxl_fp16.safetensors", folder_encoder, spiece=spiece)
    single = te.load_text_encoder(path, dtype=torch.float32)
    assert isinstance(single.tokenizer, te.SentencePieceTokenizer)
    for a, b in zip(single.tokenize(PROMPTS), folder_encoder.tokenize(PROMPTS)):
        assert torch.equal(a, b)
    assert torch.equal(single.encode(PROMPTS), folder_encoder.encode(PROMPTS))
    prefixed = comfy_file(tmp_path / "saved.safetensors", folder_encoder, spiece=spiece,
                          prefix="text_encoders.umt5xxl.transformer.")
    assert torch.equal(te.load_text_encoder(prefixed, dtype=torch.float32).encode(PROMPTS[:1]),
                       folder_encoder.encode(PROMPTS[:1]))


def test_scaled_fp8_file_is_dequantized(mova_folder, folder_encoder, tmp_path):
    path = comfy_file(tmp_path / "umt5_xxl_fp8_e4m3fn_scaled.safetensors", folder_encoder,
                      spiece=spiece_bytes(mova_folder), fp8=True)
    from safetensors.torch import load_file

    raw = load_file(str(path))
    key = "encoder.block.0.layer.1.DenseReluDense.wo.weight"
    single = te.load_text_encoder(path, dtype=torch.float32)
    layer = single.model.get_submodule(key[: -len(".weight")])
    assert layer.weight.dtype == torch.float8_e4m3fn      # kept fp8, dequantized per layer
    got = layer.dequantize(torch.float32)
    assert torch.equal(got, raw[key].float() * raw[key[:-6] + "scale_weight"])
    assert (got - folder_encoder.model.state_dict()[key]).abs().max() < 0.07 * got.abs().max()
    ctx = single.encode(PROMPTS)
    assert ctx.shape == (3, 512, CFG.d_model) and torch.isfinite(ctx).all()


def test_single_file_without_tokenizer_needs_tokenizer_path(mova_folder, folder_encoder, tmp_path):
    path = comfy_file(tmp_path / "umt5_no_tok.safetensors", folder_encoder)
    with pytest.raises(CheckpointError, match="tokenizer_path"):
        te.load_text_encoder(path, dtype=torch.float32)
    with_tok = te.load_text_encoder(path, dtype=torch.float32, tokenizer_path=mova_folder / "tokenizer")
    assert torch.equal(with_tok.encode(PROMPTS), folder_encoder.encode(PROMPTS))
    bare = te.load_text_encoder(path, dtype=torch.float32, tokenizer_path=mova_folder / "tokenizer" / "spiece.model")
    assert torch.equal(bare.encode(PROMPTS), folder_encoder.encode(PROMPTS))


def test_truncation_keeps_512_tokens_and_eos(mova_folder, folder_encoder):
    long_prompt = " ".join(["the quick brown fox jumps over the lazy dog"] * 120)
    spm = te.SentencePieceTokenizer(spiece_bytes(mova_folder))
    ids, mask = folder_encoder.tokenize(long_prompt)
    assert mask.sum() == 512 and ids[0, -1] == te.EOS_ID
    assert torch.equal(ids, spm([te.clean_prompt(long_prompt)], 512)[0])
    assert folder_encoder.encode(long_prompt).shape == (1, 512, CFG.d_model)


def test_prompt_cleaning():
    assert te.clean_prompt("Tom &amp;amp; Jerry") == "Tom & Jerry"  # unescaped twice
    assert te.clean_prompt("cafÃ©  au\tlait\n") == "café au lait"  # mojibake fixed, whitespace collapsed
    assert te.clean_prompt("  a \u3000 b ") == "a b"


def test_pad_context_for_comfy_conditioning():
    ctx = torch.randn(1, 7, 16)
    out = te.pad_context(ctx)
    assert out.shape == (1, 512, 16) and torch.equal(out[:, :7], ctx) and (out[:, 7:] == 0).all()
    assert te.pad_context(torch.randn(2, 600, 4)).shape == (2, 512, 4)


def test_wrong_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    bad = tmp_path / "clip_l.safetensors"
    save_file({"text_model.embeddings.token_embedding.weight": torch.zeros(4, 4)}, str(bad))
    with pytest.raises(CheckpointError, match="not a umT5 encoder"):
        te.load_text_encoder(bad)


def test_released_umt5_xxl_size_on_meta():
    from transformers import UMT5EncoderModel

    with torch.device("meta"):
        model = UMT5EncoderModel(te.umt5_config(PRESETS["mova-360p"].text_encoder))
    n = sum(p.numel() for p in model.parameters())  # shared embedding counted once
    assert n == 5_680_910_336


def test_plain_t5_is_refused(folder_encoder):
    sd = {k: v for k, v in folder_encoder.model.state_dict().items() if "block.1.layer.0.SelfAttention.relative" not in k}
    with pytest.raises(CheckpointError, match="not umT5"):
        te.infer_config(sd)


def test_truncated_single_file_is_a_readable_error(mova_folder, folder_encoder, tmp_path):
    path = comfy_file(tmp_path / "umt5_fp8_scaled.safetensors", folder_encoder, spiece=spiece_bytes(mova_folder),
                      fp8=True)
    data = path.read_bytes()
    cut = tmp_path / "truncated.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.safetensors is truncated.*download again"):
        te.load_text_encoder(cut, dtype=torch.float32)


def test_folder_quantized_while_reading_equals_comfy_scaled_fp8_file(mova_folder, folder_encoder, tmp_path):
    from mova_pack.models.codecs.text_encoder_stream import write_comfy_scaled_fp8

    quantized = te.load_text_encoder(mova_folder / "text_encoder", dtype=torch.float32, quantization="fp8_e4m3fn")
    key = "encoder.block.0.layer.1.DenseReluDense.wo"
    assert quantized.model.get_submodule(key).weight.dtype == torch.float8_e4m3fn
    path = tmp_path / "umt5_fp8_scaled.safetensors"
    write_comfy_scaled_fp8(folder_encoder.model.state_dict(), path, spiece_bytes(mova_folder))
    single = te.load_text_encoder(path, dtype=torch.float32)
    assert torch.equal(quantized.encode(PROMPTS), single.encode(PROMPTS))     # same per-tensor scales
    ref = folder_encoder.encode(PROMPTS)
    assert ((quantized.encode(PROMPTS) - ref).norm() / ref.norm()).item() < 0.1
    with pytest.raises(InputError, match="'none' or 'fp8_e4m3fn'"):
        te.load_text_encoder(path, quantization="nf4")

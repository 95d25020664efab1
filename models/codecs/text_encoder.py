"""umT5 text encoder as MOVA uses it: cleaned prompt -> 512 tokens -> HF UMT5EncoderModel with the
attention mask -> hidden states of the real tokens, zeros after them -> context [B, 512, d_model].

Two sources: a MOVA folder (`text_encoder/` HF weights + config, `tokenizer/` T5TokenizerFast) or
ComfyUI's single file (`umt5_xxl_fp16.safetensors`, `umt5_xxl_fp8_e4m3fn_scaled.safetensors`) whose keys
already carry HF UMT5 names, optionally with per-tensor fp8 `scale_weight`s and the sentencepiece
model embedded as the uint8 tensor `spiece_model`.
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ..config import TextEncoderConfig
from ...common.checkpoint import expected_shapes, validate
from ...common.errors import CheckpointError, InputError
from ...common.files import load_safetensors

MAX_LENGTH = 512
PAD_ID, EOS_ID = 0, 1  # umT5 / T5 special token ids
_COMFY_EXTRA_KEYS = ("scaled_fp8", "spiece_model")
_COMFY_PREFIXES = ("text_encoders.umt5xxl.transformer.", "umt5xxl.transformer.", "transformer.")


def clean_prompt(text: str) -> str:
    """MOVA's prompt_clean: fix mojibake (ftfy), unescape HTML twice, collapse whitespace."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


def pad_context(context: torch.Tensor, length: int = MAX_LENGTH) -> torch.Tensor:
    """[B, n, d] -> [B, length, d]: keep the first `length` tokens, zeros after (e.g. ComfyUI CONDITIONING)."""
    if context.dim() == 2:
        context = context.unsqueeze(0)
    if context.dim() != 3:
        raise InputError(f"text context must be [batch, tokens, width]; got shape {tuple(context.shape)}.")
    out = context.new_zeros(context.shape[0], length, context.shape[2])
    n = min(length, context.shape[1])
    out[:, :n] = context[:, :n]
    return out


class SentencePieceTokenizer:
    """Raw sentencepiece + EOS, as ComfyUI tokenizes umT5; same ids as the HF fast tokenizer."""

    def __init__(self, model_proto: bytes):
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor(model_proto=model_proto)

    def __call__(self, prompts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((len(prompts), max_length), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(prompts), max_length), dtype=torch.long)
        for row, text in enumerate(prompts):
            tokens = self.sp.encode(text)[: max_length - 1] + [EOS_ID]  # truncation keeps the EOS
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        return ids, mask


class HFTokenizer:
    """A MOVA `tokenizer/` folder (T5TokenizerFast) called exactly as the MOVA pipeline does."""

    def __init__(self, folder: Path):
        from transformers import AutoTokenizer

        try:
            self.tok = AutoTokenizer.from_pretrained(str(folder))
        except (OSError, ValueError, ImportError) as exc:
            raise CheckpointError(f"{folder}: cannot load the umT5 tokenizer ({exc}). Expected a MOVA "
                                  "tokenizer/ folder with tokenizer.json or spiece.model.") from None

    def __call__(self, prompts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.tok(list(prompts), padding="max_length", max_length=max_length, truncation=True,
                       add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        return out.input_ids, out.attention_mask


class UMT5TextEncoder(nn.Module):
    """Tokenizer + UMT5 encoder; `encode(prompts)` gives the MOVA text context."""

    def __init__(self, model: nn.Module, tokenizer, max_length: int = MAX_LENGTH):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def dtype(self) -> torch.dtype:   # the compute dtype (fp8 linears dequantize to it)
        return self.model.shared.weight.dtype

    @property
    def d_model(self) -> int:
        return int(self.model.config.d_model)

    def tokenize(self, prompts: Union[str, Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        return self.tokenizer([clean_prompt(p) for p in prompts], self.max_length)

    @torch.no_grad()
    def encode(self, prompts: Union[str, Sequence[str]]) -> torch.Tensor:
        """prompts -> context [B, 512, d_model] in the encoder's dtype; rows past each prompt's tokens are 0."""
        ids, mask = self.tokenize(prompts)
        device = self.model.shared.weight.device
        hidden = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        keep = mask.to(device=device, dtype=hidden.dtype).unsqueeze(-1)
        return hidden * keep  # zero after the real tokens (the padding stays attended downstream)


# ------------------------------------------------------------------------------------------ weights
def umt5_config(cfg: TextEncoderConfig):
    from transformers import UMT5Config

    return UMT5Config(d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff, num_layers=cfg.num_layers,
                      num_heads=cfg.num_heads, vocab_size=cfg.vocab_size,
                      relative_attention_num_buckets=cfg.relative_attention_num_buckets,
                      relative_attention_max_distance=cfg.relative_attention_max_distance,
                      layer_norm_epsilon=cfg.layer_norm_epsilon, feed_forward_proj=cfg.feed_forward_proj,
                      is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False)


def _strip_prefix(sd: Mapping[str, torch.Tensor]) -> dict:
    for prefix in _COMFY_PREFIXES:
        if f"{prefix}encoder.final_layer_norm.weight" in sd:
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix) or k in _COMFY_EXTRA_KEYS}
    return dict(sd)


def comfy_to_hf_state_dict(sd: Mapping[str, torch.Tensor], dtype: torch.dtype
                           ) -> tuple[dict, Optional[bytes]]:
    """ComfyUI umT5 file -> (HF UMT5EncoderModel state dict in `dtype`, embedded spiece model or None).

    Scaled fp8 weights are dequantized: weight = fp8 * scale_weight (per tensor)."""
    sd = _strip_prefix(sd)
    if "encoder.final_layer_norm.weight" not in sd or "shared.weight" not in sd:
        raise CheckpointError(
            "not a umT5 encoder file: expected keys shared.weight and encoder.block.N.layer.0.SelfAttention.q.weight "
            f"(found e.g. {sorted(sd)[:4]}). Use umt5_xxl_fp16 / umt5_xxl_fp8_e4m3fn_scaled from ComfyUI's "
            "models/text_encoders or MOVA's text_encoder/ folder.")
    spiece = sd.get("spiece_model")
    out = {}
    for key, value in sd.items():
        if key in _COMFY_EXTRA_KEYS or key.endswith((".scale_weight", ".scale_input")):
            continue
        if key.endswith(".weight") and key[: -len("weight")] + "scale_weight" in sd:
            value = value.to(torch.float32) * sd[key[: -len("weight")] + "scale_weight"].to(torch.float32)
        out[key] = value.to(dtype)
    out.setdefault("encoder.embed_tokens.weight", out["shared.weight"])
    return out, (spiece.numpy().tobytes() if spiece is not None else None)


def infer_config(sd: Mapping[str, torch.Tensor]) -> TextEncoderConfig:
    """Shapes of an HF-named umT5 state dict -> TextEncoderConfig (single files carry no config)."""
    vocab, d_model = sd["shared.weight"].shape
    layers = len({k.split(".")[2] for k in sd if k.startswith("encoder.block.")})
    bias = sd.get("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    if bias is None or "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" not in sd and layers > 1:
        raise CheckpointError("this is a T5 (not umT5) encoder: umT5 has a relative attention bias in every "
                              "block. MOVA needs umT5-xxl (ComfyUI: umt5_xxl_*.safetensors).")
    buckets, heads = bias.shape
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in sd
    ff_key = "wi_0" if gated else "wi"
    return TextEncoderConfig(
        d_model=int(d_model), vocab_size=int(vocab), num_layers=layers, num_heads=int(heads),
        d_kv=int(sd["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]) // int(heads),
        d_ff=int(sd[f"encoder.block.0.layer.1.DenseReluDense.{ff_key}.weight"].shape[0]),
        relative_attention_num_buckets=int(buckets),
        feed_forward_proj="gated-gelu" if gated else "relu")


def build_umt5(sd: Mapping[str, torch.Tensor], cfg: TextEncoderConfig, device="cpu") -> nn.Module:
    """UMT5EncoderModel built on the meta device, weights assigned (no second copy in memory)."""
    from transformers import UMT5EncoderModel

    with torch.device("meta"):
        model = UMT5EncoderModel(umt5_config(cfg))
    validate("text encoder", expected_shapes(model), {k: tuple(v.shape) for k, v in sd.items()},
             "The file is truncated or not umT5-xxl; use MOVA's text_encoder/ folder or umt5_xxl_fp16.")
    model.load_state_dict({k: v.to(device) for k, v in sd.items()}, assign=True)
    model.encoder.embed_tokens = model.shared  # keep the tie after assign replaced the parameter
    return model.eval().requires_grad_(False)


def _read_safetensors(paths: Sequence[Path]) -> dict:
    sd = {}
    for path in paths:
        sd.update(load_safetensors(path, "text encoder"))
    return sd


def _find_tokenizer(folder: Path, tokenizer_path) -> Optional[Path]:
    if tokenizer_path is not None:
        return Path(tokenizer_path)
    for candidate in (folder / "tokenizer", folder.parent / "tokenizer", folder):
        if (candidate / "tokenizer.json").is_file() or (candidate / "spiece.model").is_file():
            return candidate
    return None


def _tokenizer_for(path: Path):
    """tokenizer.json (fast, as MOVA ships it) first; a bare spiece.model gives the same ids."""
    if path.is_file():
        return SentencePieceTokenizer(path.read_bytes())
    if not (path / "tokenizer.json").is_file() and (path / "spiece.model").is_file():
        return SentencePieceTokenizer((path / "spiece.model").read_bytes())
    return HFTokenizer(path)


def load_text_encoder(path, dtype: torch.dtype = torch.bfloat16, device="cpu",
                      tokenizer_path=None, quantization: str = "none") -> UMT5TextEncoder:
    """Load umT5 from a MOVA folder, its `text_encoder/` folder (tokenizer from the sibling `tokenizer/`),
    or a ComfyUI single file (tokenizer embedded, else `tokenizer_path`: a tokenizer folder or spiece.model).

    Built on the meta device and read tensor by tensor (text_encoder_stream): host RAM holds the
    steady state plus one tensor; a scaled-fp8 file's linears stay fp8. `quantization` "fp8_e4m3fn"
    quantizes the block linears of a full-precision source while reading (umT5-xxl: 11.4 -> 6.7 GB)."""
    if quantization not in ("none", "fp8_e4m3fn"):
        raise InputError(f"text encoder quantization must be 'none' or 'fp8_e4m3fn'; got {quantization!r}.")
    quantize = quantization == "fp8_e4m3fn"
    from .text_encoder_stream import TensorIndex, stream_umt5

    path = Path(path)
    if path.is_dir():
        te = path / "text_encoder" if (path / "text_encoder").is_dir() else path
        if not (te / "config.json").is_file():
            raise CheckpointError(f"{te}: no config.json; expected MOVA's text_encoder/ folder (HF UMT5EncoderModel).")
        from ..config import load_component_config

        cfg = load_component_config(te, "text_encoder")
        files = sorted(te.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{te}: no .safetensors weights found.")
        tok_dir = _find_tokenizer(te, tokenizer_path)
        if tok_dir is None:
            raise CheckpointError(f"{te}: no tokenizer found next to it; expected {te.parent / 'tokenizer'} "
                                  "(tokenizer.json / spiece.model) or pass tokenizer_path.")
        model = stream_umt5(TensorIndex(files), cfg, dtype, device, str(te), quantize_fp8=quantize)
        return UMT5TextEncoder(model, _tokenizer_for(tok_dir))
    if not path.is_file():
        raise CheckpointError(f"{path}: text encoder file or folder not found.")
    index = TensorIndex([path])
    if "encoder.final_layer_norm.weight" not in index or "shared.weight" not in index:
        raise CheckpointError(
            f"{path}: not a umT5 encoder file: expected keys shared.weight and encoder.block.N.layer.0.SelfAttention.q.weight "
            f"(found e.g. {sorted(index.where)[:4]}). Use umt5_xxl_fp16 / umt5_xxl_fp8_e4m3fn_scaled from ComfyUI's "
            "models/text_encoders or MOVA's text_encoder/ folder.")
    cfg = infer_config(index.meta_dict())
    if "spiece_model" in index and tokenizer_path is None:
        tokenizer = SentencePieceTokenizer(index.read("spiece_model").numpy().tobytes())
    elif tokenizer_path is not None:
        tokenizer = _tokenizer_for(Path(tokenizer_path))
    else:
        raise CheckpointError(f"{path}: the file has no embedded tokenizer (spiece_model); pass the umT5 "
                              "tokenizer folder (MOVA's tokenizer/) or spiece.model as tokenizer_path.")
    return UMT5TextEncoder(stream_umt5(index, cfg, dtype, device, str(path), quantize_fp8=quantize), tokenizer)


# ------------------------------------------------------------------------- small stand-ins (tests, toy)
_CORPUS = (
    "A cat walks along the beach at sunset while waves crash softly on the sand.",
    "A man plays an acoustic guitar and sings in a small cozy room.",
    "Rain falls on a tin roof; thunder rumbles far away in the dark hills.",
    "Two children laugh and run through a green park with a barking dog.",
    "A red car drives fast on a wet city street at night, neon lights reflect.",
    "An old woman speaks quietly to the camera, birds chirp in the background.",
    "Ocean, forest, wind, fire, music, voice, drums, piano, engine, crowd, applause.",
    "The quick brown fox jumps over the lazy dog 0123456789 times!",
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，最差质量，低质量",
)


def train_sentencepiece(prefix: Path, vocab_size: int = 200, sentences: Sequence[str] = _CORPUS) -> Path:
    """Train a tiny umT5-style sentencepiece model (pad 0, eos 1, unk 2, no bos) -> `<prefix>.model`."""
    import sentencepiece

    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    corpus = prefix.with_suffix(".txt")
    corpus.write_text("\n".join(list(sentences) * 4), encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(prefix), vocab_size=vocab_size, model_type="unigram",
        pad_id=PAD_ID, eos_id=EOS_ID, unk_id=2, bos_id=-1, character_coverage=1.0, num_threads=1,
        hard_vocab_limit=False, minloglevel=2)
    corpus.unlink()
    return prefix.with_suffix(".model")


def save_tokenizer_folder(spiece_model: Path, folder: Path) -> None:
    """MOVA-style tokenizer/ (T5TokenizerFast with tokenizer.json, Metaspace prefix as umT5's)."""
    from transformers import T5TokenizerFast

    tok = T5TokenizerFast(vocab_file=str(spiece_model), extra_ids=0, add_prefix_space=True)
    tok.save_pretrained(str(folder))


def save_random_text_encoder(folder, cfg: TextEncoderConfig, seed: int = 0) -> None:
    """Write `<folder>/text_encoder` (random UMT5 weights of `cfg`) and `<folder>/tokenizer` (tiny spm)."""
    from transformers import UMT5EncoderModel

    folder = Path(folder)
    torch.manual_seed(seed)
    model = UMT5EncoderModel(umt5_config(cfg)).eval()
    model.save_pretrained(str(folder / "text_encoder"), safe_serialization=True)
    spm = train_sentencepiece(folder / "tokenizer_build" / "spiece")
    save_tokenizer_folder(spm, folder / "tokenizer")
    for leftover in sorted((folder / "tokenizer_build").iterdir()):
        leftover.unlink()
    (folder / "tokenizer_build").rmdir()

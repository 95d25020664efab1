"""Captions for the toy bouncing-object world: templates, vocabulary, parsing and fixed eval prompts.

A caption names the object's colour, its shape and the surface it bounces on; the surface decides the
impact sound (see toy/sounds.py). The vocabulary is closed and tiny so a word-level or sentencepiece
tokenizer can be trained on `all_captions()` alone.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("ball", "square")
SOUNDS = ("wood", "metal", "glass", "drum")

# Surface the object lands on, and the sound it makes there (two wordings each).
SURFACE = {
    "wood": "a wooden floor",
    "metal": "a metal plate",
    "glass": "a glass table",
    "drum": "a drum skin",
}
SOUND_PHRASES = {
    "wood": ("hollow knock", "hollow wooden knocks"),
    "metal": ("metal clang", "ringing metallic clangs"),
    "glass": ("glass clink", "bright glassy clinks"),
    "drum": ("drum thud", "deep drum thuds"),
}

# {c} colour, {s} shape, {f} surface, {n} singular sound, {p} plural sound.
TEMPLATES = (
    "a {c} {s} bouncing on {f}, {n}",
    "a {c} {s} bounces on {f} with {p}",
    "{p} as a {c} {s} bounces on {f}",
    "a {c} {s} drops onto {f} and bounces, {n} at every hit",
    "{f}, a {c} {s} bouncing, {p}",
)


def make_caption(colour: str, shape: str, sound: str, template: int = 0) -> str:
    """The caption for one scene; `template` picks one of TEMPLATES (taken modulo their number)."""
    for name, value, allowed in (("colour", colour, COLOURS), ("shape", shape, SHAPES), ("sound", sound, SOUNDS)):
        if value not in allowed:
            raise ValueError(f"toy caption: {name} must be one of {allowed}, got {value!r}")
    singular, plural = SOUND_PHRASES[sound]
    text = TEMPLATES[template % len(TEMPLATES)]
    return text.format(c=colour, s=shape, f=SURFACE[sound], n=singular, p=plural)


def all_captions() -> list[str]:
    """Every caption the generator can produce (4*2*4*5 = 160), for tokenizer training."""
    return [make_caption(c, s, k, t) for c in COLOURS for s in SHAPES for k in SOUNDS for t in range(len(TEMPLATES))]


def words(text: str) -> list[str]:
    """Lower-case word tokens; punctuation is its own token (only ',' occurs in captions)."""
    return re.findall(r"[a-z]+|[^\sa-z]", text.lower())


VOCAB: tuple[str, ...] = tuple(sorted({w for cap in all_captions() for w in words(cap)}))
PAD_ID, UNK_ID = 0, 1     # word ids: 0 padding, 1 unknown word, then VOCAB in order
_WORD_ID = {w: i + 2 for i, w in enumerate(VOCAB)}


def word_ids(text: str, length: int = 16) -> list[int]:
    """Fixed-length word ids of a prompt (truncated / padded with PAD_ID), for a tiny word-level encoder."""
    ids = [_WORD_ID.get(w, UNK_ID) for w in words(text)][:length]
    return ids + [PAD_ID] * (length - len(ids))

_SOUND_KEYWORDS = {
    "wood": ("wood", "wooden", "knock", "knocks"),
    "metal": ("metal", "metallic", "clang", "clangs"),
    "glass": ("glass", "glassy", "clink", "clinks"),
    "drum": ("drum", "thud", "thuds"),
}


def parse_caption(text: str) -> tuple[str | None, str | None, str | None]:
    """(colour, shape, sound) named in a caption or free prompt; None where it names none of ours."""
    toks = set(words(text))
    colour = next((c for c in COLOURS if c in toks), None)
    shape = next((s for s in SHAPES if s in toks), None)
    sound = next((k for k, keys in _SOUND_KEYWORDS.items() if toks.intersection(keys)), None)
    return colour, shape, sound


@dataclass(frozen=True)
class EvalPrompt:
    """One fixed prompt/seed pair of the sync evaluation, with the attributes the prompt asks for."""

    prompt: str
    seed: int
    colour: str
    shape: str
    sound: str


def _eval_prompts() -> tuple[EvalPrompt, ...]:
    # Every colour meets every sound once (16 pairs); shapes and templates rotate so each appears often.
    out = []
    for i, colour in enumerate(COLOURS):
        for j, sound in enumerate(SOUNDS):
            k = i * len(SOUNDS) + j
            shape = SHAPES[(i + j) % len(SHAPES)]
            prompt = make_caption(colour, shape, sound, template=(i + 2 * j) % len(TEMPLATES))
            out.append(EvalPrompt(prompt, seed=1000 + 17 * k, colour=colour, shape=shape, sound=sound))
    return tuple(out)


EVAL_PROMPTS: tuple[EvalPrompt, ...] = _eval_prompts()

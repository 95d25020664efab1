"""The one input check every MOVA node's `validate_inputs` calls.

ComfyUI 0.3.75 skips its own min/max check for every input a node's `validate_inputs` declares, never
checks V3 dropdown values sent through the API, and lets NaN through min/max (NaN < min is False).
`check_inputs` does all three: dropdown values among the options, numbers of the right type, finite,
within min/max. Linked inputs arrive as None and are checked when they run.
"""
from __future__ import annotations

import math

from comfy_api.latest import io

from ..common.files import clean

_SHOWN = 8


def short(value, limit: int = 60) -> str:
    """repr of a user value, bounded (a 5,000-character string is not echoed back whole)."""
    return clean(repr(value), limit)


def _choices(options) -> str:
    shown = ", ".join(map(repr, options[:_SHOWN])) + (" …" if len(options) > _SHOWN else "")
    return shown or "none found"


def check_value(inp, value, hint: str = "") -> str | None:
    """The problem with one widget value of input `inp` (a V3 io.*.Input), or None."""
    name = inp.id
    if isinstance(inp, io.Combo.Input) and inp.options is not None:
        if not isinstance(value, str) or value not in inp.options:
            return (f"{name}: {short(value)} is not one of the choices ({_choices(inp.options)}). "
                    + (hint or "Pick one of the listed values."))
        return None
    if isinstance(inp, (io.Int.Input, io.Float.Input)):
        kind = "a whole number" if isinstance(inp, io.Int.Input) else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name}: expected {kind}, got {short(value)}. Type a number into the widget."
        if isinstance(value, float) and not math.isfinite(value):
            return (f"{name}: {value} is not a finite number; it would turn the whole generation into NaN. "
                    f"Set a value between {inp.min} and {inp.max}.")
        if isinstance(inp, io.Int.Input) and value != int(value):
            return f"{name}: expected {kind}, got {value}. Use {round(value)}."
        if inp.min is not None and value < inp.min:
            return f"{name}: {value} is below the minimum {inp.min}; set it to at least {inp.min}."
        if inp.max is not None and value > inp.max:
            return f"{name}: {value} is above the maximum {inp.max}; set it to at most {inp.max}."
    return None


def check_inputs(node_cls, values: dict, hints: dict | None = None):
    """True, or one message naming the node, every bad input and what to do. ComfyUI 0.3.75 files it once
    per input `validate_inputs` declares; the text is the same each time, so the page's dedupe
    (web/mova.js dedupeNodeErrors) keeps one, on the input it names."""
    hints = hints or {}
    schema = node_cls.define_schema()
    problems = []
    for inp in schema.inputs:
        if inp.id in values and values[inp.id] is not None:
            problem = check_value(inp, values[inp.id], hints.get(inp.id, ""))
            if problem:
                problems.append(problem)
    if not problems:
        return True
    return f"{schema.display_name}: " + " ".join(problems)


def fail(node_cls, text: str) -> str:
    """A node-level message (cross-input checks) in the same form."""
    return f"{node_cls.define_schema().display_name}: {text}"


def declared_inputs(node_cls) -> set:
    """Names `validate_inputs` declares (the tests check every float and dropdown is among them)."""
    import inspect
    fn = getattr(node_cls, "validate_inputs")
    return set(inspect.getfullargspec(fn).args) - {"cls"}

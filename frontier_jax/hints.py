"""Nearest-name suggestions and unit hints for user mistakes (one-line FrontierError messages)."""
from __future__ import annotations

import difflib
from collections.abc import Sequence

from .errors import FrontierError

# Common names that mean something the model spells differently.
_PRECISION_ALIASES = {"fp16": "bf16", "float16": "bf16", "half": "bf16", "bfloat16": "bf16", "float8": "fp8",
                      "fp8_e4m3": "fp8", "e4m3": "fp8"}
ALIASES = {"precision": _PRECISION_ALIASES, "kv_precision": _PRECISION_ALIASES}
ALIAS_WHY = {("precision", "bf16"): "16-bit weights run as bf16 in the model",
             ("precision", "fp8"): "8-bit weights are modelled as fp8",
             ("kv_precision", "bf16"): "a 16-bit KV cache is modelled as bf16",
             ("kv_precision", "fp8"): "an 8-bit KV cache is modelled as fp8"}


def closest(name: str, known: Sequence[str], n: int = 3) -> list[str]:
    """The known names nearest `name`: every known name containing all of its dash-separated parts, then
    difflib's closest matches."""
    q = str(name).strip().lower()
    parts = [p for p in q.replace("_", "-").split("-") if p]
    by_parts = [k for k in known if parts and all(p in k.lower() for p in parts)]
    fuzzy = difflib.get_close_matches(q, [k.lower() for k in known], n=n, cutoff=0.5)
    lower = {k.lower(): k for k in known}
    out = list(dict.fromkeys(by_parts + [lower[f] for f in fuzzy]))
    return out[:n]


def unknown(what: str, name, known: Sequence[str], extra: str = "") -> FrontierError:
    """FrontierError for an unknown name: the nearest known names (or the list when none is near)."""
    listed = f"unknown {what} {name!r}; known: {', '.join(known)}"
    alias = ALIASES.get(what, {}).get(str(name).strip().lower())
    if alias is not None:
        why = ALIAS_WHY.get((what, alias), "")
        return FrontierError(f"{listed}; use {alias!r}" + (f" ({why})" if why else ""))
    near = closest(str(name), known)
    if near:
        return FrontierError(f"{listed}; did you mean {' or '.join(repr(x) for x in near)}?" + extra)
    return FrontierError(listed + extra)


def check_name(what: str, name, known: Sequence[str], extra: str = "") -> str:
    """`name` if it is one of `known` (case-insensitive), else the unknown() error."""
    if isinstance(name, str):
        lower = {k.lower(): k for k in known}
        if name.strip().lower() in lower:
            return lower[name.strip().lower()]
    raise unknown(what, name, known, extra)


def check_percentile(value) -> None:
    """A percentile given in percent (99 for 0.99) gets the fraction it meant."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return
    if 50.0 <= x < 100.0:  # a percent-looking number; (1, 50) keeps the generic range message
        raise FrontierError(f"percentile {value!r} is a fraction in (0, 1): write {x / 100:g} for p{x:g}")

"""Sweep specifications: a TOML file (or dict) naming fixed inputs and grid axes, validated against an input
registry (the kernel's inputs: costmodel.kernel.INPUTS for the cost model). See docs/sweeps.md for the format."""
from __future__ import annotations

import difflib
import json
import math
import numbers
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from frontier_jax.errors import FrontierError

Kind = Literal["continuous", "categorical", "integer"]
Value = float | int | str

# Derived inputs: when `io_ratio` and `total_len` are given (each fixed or swept), the grid supplies
# input_len = total_len*r/(1+r) and output_len = total_len/(1+r); neither may then be given directly.
DERIVED_PAIR = ("io_ratio", "total_len")
DERIVED_OUTPUTS = ("input_len", "output_len")
SWEEP_KEYS = ("name", "title", "description", "percentile")


@dataclass(frozen=True)
class InputSpec:
    """One input the cost model accepts. Bounds apply to numeric kinds; `choices_fn` lists categorical values."""

    name: str
    kind: Kind
    units: str
    long_name: str
    lower: float | None = None
    upper: float | None = None
    lower_open: bool = False
    choices_fn: Callable[[], list[str]] | None = None
    upper_open: bool = False
    hint: str = ""  # appended to the out-of-range message (e.g. the units the value is in)

    def bounds_text(self) -> str:
        """The admissible range as text, e.g. "0 < rate"."""
        lo = "" if self.lower is None else f"{self.lower:g} {'<' if self.lower_open else '<='} "
        hi = "" if self.upper is None else f" {'<' if self.upper_open else '<='} {self.upper:g}"
        return f"{lo}{self.name}{hi}"


def positive(name: str, units: str, long_name: str, kind: Kind = "continuous") -> InputSpec:
    """An input that must be > 0."""
    return InputSpec(name, kind, units, long_name, lower=0.0, lower_open=True)


def nonnegative(name: str, long_name: str) -> InputSpec:
    """A dimensionless input that must be >= 0."""
    return InputSpec(name, "continuous", "1", long_name, lower=0.0)


@dataclass(frozen=True)
class Axis:
    """One grid dimension. `values` are floats (continuous), ints (integer) or strings (categorical)."""

    name: str
    kind: Kind
    values: tuple[Value, ...]
    units: str
    long_name: str

    @property
    def size(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Fixed:
    """One input held constant over the sweep."""

    name: str
    kind: Kind
    value: Value
    units: str
    long_name: str


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep. `axes` keep spec order (C order of the grid: the last axis varies fastest).
    `choices[name]` is the full list a categorical input's int32 index refers to (registry order)."""

    name: str
    title: str
    description: str
    axes: tuple[Axis, ...]
    fixed: tuple[Fixed, ...]
    choices: Mapping[str, tuple[str, ...]]
    raw: Mapping[str, Any] = field(repr=False)
    source: str | None = field(default=None, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(a.size for a in self.axes)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def axis_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)

    @property
    def derived(self) -> bool:
        """True when input_len/output_len are computed from io_ratio and total_len."""
        names = set(self.axis_names) | {f.name for f in self.fixed}
        return set(DERIVED_PAIR) <= names

    @property
    def input_names(self) -> tuple[str, ...]:
        """Names of the per-point arrays the kernel receives."""
        names = self.axis_names + tuple(f.name for f in self.fixed)
        return names + (DERIVED_OUTPUTS if self.derived else ())

    def to_json(self) -> str:
        """The spec as given (parsed TOML or dict) as JSON; stored in every output file."""
        return json.dumps(self.raw, separators=(",", ":"))  # key order kept: it is the axis order


def load_spec(src: str | os.PathLike | Mapping[str, Any], registry: Mapping[str, InputSpec]) -> SweepSpec:
    """Load and validate a spec from a path, a TOML string or an already-parsed dict."""
    text, where = None, "spec"
    if isinstance(src, Mapping):
        raw = _plain(src)
    else:
        if isinstance(src, os.PathLike) or (isinstance(src, str) and "\n" not in src and "=" not in src):
            path = Path(src)
            if path.is_dir():
                raise FrontierError(f"spec path {str(path)!r} is a directory; pass the spec's .toml file")
            if not path.is_file():
                raise FrontierError(f"spec file {str(path)!r} not found; check the path")
            try:
                text, where = path.read_text(encoding="utf-8"), str(path)
            except UnicodeDecodeError as e:
                raise FrontierError(f"spec file {str(path)!r} is not UTF-8 text ({e.reason} at byte {e.start}); "
                                    "save it as a UTF-8 TOML file") from None
            except OSError as e:
                raise FrontierError(f"cannot read spec file {str(path)!r} ({e.strerror or e}); "
                                    "check its permissions") from None
        elif isinstance(src, str):
            text = src
        else:
            raise FrontierError(f"spec must be a path, a TOML string or a dict, not {type(src).__name__}")
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise FrontierError(f"invalid TOML in {where}: {e}; fix the syntax there") from None
    return _build(raw, registry, text)


def _plain(obj: Any) -> Any:
    """Deep-copy a mapping into plain dicts/lists so the spec can be serialised and compared."""
    if isinstance(obj, np.ma.MaskedArray):
        raise FrontierError("a masked array was given in the spec; its mask would be lost: pass plain values "
                            "(arr.compressed() drops the masked ones, arr.filled(x) replaces them)")
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _suggest(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}?" if close else f"known names: {', '.join(sorted(known))}"


def _table(raw: Mapping, key: str) -> dict:
    t = raw.get(key, {})
    if not isinstance(t, Mapping):
        raise FrontierError(f"[{key}] must be a table; write it as a [{key}] section")
    return dict(t)


def _build(raw: Mapping[str, Any], registry: Mapping[str, InputSpec], text: str | None) -> SweepSpec:
    for key in raw:
        if key not in ("sweep", "fixed", "axes"):
            hint = _suggest(key, ["sweep", "fixed", "axes"])
            raise FrontierError(f"unknown section [{key}]; use [sweep], [fixed] and [axes] ({hint})")
    sweep, fixed_raw, axes_raw = _table(raw, "sweep"), _table(raw, "fixed"), _table(raw, "axes")
    for key in sweep:
        if key not in SWEEP_KEYS:
            raise FrontierError(f"unknown key {key!r} in [sweep]; {_suggest(key, SWEEP_KEYS)}")
    if "percentile" in sweep:
        if "percentile" in fixed_raw or "percentile" in axes_raw:
            raise FrontierError("percentile is given in [sweep] and again in [fixed] or [axes]; keep one")
        fixed_raw = {"percentile": sweep["percentile"], **fixed_raw}
    name, description = sweep.get("name", "sweep"), sweep.get("description", "")
    title = sweep.get("title", name)
    if not all(isinstance(v, str) for v in (name, title, description)):
        raise FrontierError("[sweep] name, title and description must be strings; quote them")
    _check_name(name)
    if not axes_raw and not fixed_raw:
        raise FrontierError("spec has no [axes] and no [fixed] inputs; add an [axes] table")

    for key in list(fixed_raw) + list(axes_raw):
        if key not in registry:
            raise FrontierError(f"unknown input {key!r}; {_suggest(key, registry)}")
    for key in axes_raw:
        if key in fixed_raw:
            raise FrontierError(f"input {key!r} is in both [fixed] and [axes]; keep one")
    names = set(fixed_raw) | set(axes_raw)
    if any(n in names for n in DERIVED_PAIR if n in registry):
        missing = [n for n in DERIVED_PAIR if n not in names]
        if missing:
            raise FrontierError(f"io_ratio and total_len go together; add {missing[0]!r} to [fixed] or [axes]")
        clash = [n for n in DERIVED_OUTPUTS if n in names]
        if clash:
            raise FrontierError(f"{clash[0]!r} is derived from io_ratio and total_len; remove it from the spec")

    choices: dict[str, tuple[str, ...]] = {}

    def choices_of(inp: InputSpec) -> tuple[str, ...]:
        if inp.name not in choices:
            if inp.choices_fn is None:
                raise FrontierError(f"categorical input {inp.name!r} has no choices in the registry; fix the registry")
            choices[inp.name] = tuple(inp.choices_fn())
        return choices[inp.name]

    fixed = tuple(
        Fixed(k, registry[k].kind, _check_value(registry[k], v, f"[fixed] {k}", choices_of), registry[k].units,
              registry[k].long_name)
        for k, v in fixed_raw.items()
    )
    axes = tuple(_axis(registry[k], v, choices_of) for k, v in axes_raw.items())
    return SweepSpec(name, title, description, axes, fixed, choices, raw=_plain(raw), source=text)


# Integers travel to the kernel as floats: above 2**53 they are no longer exact (and past 2**63 the file's int64
# cannot hold them).
MAX_INTEGER = 2**53
# Continuous inputs must lie (in magnitude, unless 0) in [MIN_MAGNITUDE, MAX_MAGNITUDE]: values outside are
# unrepresentable in float32 (denormal or overflowing) or make the model's latencies and costs non-finite (a rate of
# 1e-300 req/s, a KV link of 1e300 B/s). No real input comes near these bounds.
MIN_MAGNITUDE, MAX_MAGNITUDE = 1e-15, 1e18
MAX_NAME = 200


def _check_name(name: str) -> None:
    """`name` is the default output file name (NAME.nc): a plain file name, not a path."""
    bad = (not name.strip() or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\\0")
           or any(ord(c) < 32 for c in name) or len(name.encode()) > MAX_NAME)
    if bad:
        raise FrontierError(f"[sweep] name = {name!r} cannot be a file name (it is the default output NAME.nc): use "
                            f"1 to {MAX_NAME} letters, digits, '-', '_' or '.', not starting with '.', no '/'")


def _axis(inp: InputSpec, entry: Any, choices_of: Callable[[InputSpec], tuple[str, ...]]) -> Axis:
    where = f"axis {inp.name!r}"
    if isinstance(entry, list):
        entry = {"values": entry}
    if not isinstance(entry, Mapping) or len(entry) != 1:
        raise FrontierError(f"{where} must be one of {{ values = [...] }}, {{ linspace = [start, stop, num] }} "
                            f"or {{ logspace = [start, stop, num] }}")
    (form, arg), = entry.items()
    if form == "values":
        if not isinstance(arg, list) or not arg:
            raise FrontierError(f"{where} has an empty values list; give at least one value")
        values = [_check_value(inp, v, where, choices_of) for v in arg]
    elif form in ("linspace", "logspace"):
        if inp.kind == "categorical":
            raise FrontierError(f"{where} is categorical; list its values with values = [...]")
        values = [_check_value(inp, v, where, choices_of) for v in _range(inp, form, arg, where)]
        if inp.kind == "integer":
            values = [int(v) for v in values]
    else:
        raise FrontierError(f"{where} uses unknown form {form!r}; {_suggest(form, ['values', 'linspace', 'logspace'])}")
    seen = set()
    for v in values:
        if v in seen:
            raise FrontierError(f"{where} repeats the value {v!r}; axis values must be distinct")
        seen.add(v)
    return Axis(inp.name, inp.kind, tuple(values), inp.units, inp.long_name)


def _range(inp: InputSpec, form: str, arg: Any, where: str) -> list[float]:
    if not isinstance(arg, list) or len(arg) != 3:
        raise FrontierError(f"{where}: {form} takes [start, stop, num]")
    start, stop, num = arg
    for v in (start, stop):
        _number(v, where)
    if isinstance(num, bool) or not isinstance(num, numbers.Integral):
        raise FrontierError(f"{where}: {form} num must be an integer, got {num!r}")
    if num < 1:
        raise FrontierError(f"{where}: {form} num is {num}; it must be at least 1")
    from frontier_jax.runner.limits import MAX_AXIS
    if num > MAX_AXIS:
        raise FrontierError(f"{where}: {form} num is {num:,}; one axis holds at most {MAX_AXIS:,} values "
                            "(and the whole grid is limited too); use fewer points")
    if start > stop:
        raise FrontierError(f"{where}: {form} start {start:g} > stop {stop:g}; swap them (axes must increase)")
    if form == "logspace":
        if start <= 0:
            raise FrontierError(f"{where}: logspace bounds must be > 0, got {start:g}; use linspace or a start > 0")
        out = np.geomspace(float(start), float(stop), int(num))
    else:
        out = np.linspace(float(start), float(stop), int(num))
    if num > 1:  # make the ends exact
        out[0], out[-1] = float(start), float(stop)
    if inp.kind == "integer":
        if not np.all(out == np.round(out)):
            raise FrontierError(f"{where} is an integer input but {form} gives non-integer values; use values = [...]")
    return [float(v) for v in out]


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise FrontierError(f"{where}: expected a number, got {v!r}; write it without quotes")
    try:
        finite = math.isfinite(v)
    except OverflowError:  # a Python int beyond float range
        finite = False
    if not finite:
        raise FrontierError(f"{where}: {v!r} is not finite; give a finite number")
    return float(v)


def _check_value(inp: InputSpec, v: Any, where: str, choices_of: Callable[[InputSpec], tuple[str, ...]]) -> Value:
    if inp.kind == "categorical":
        if not isinstance(v, str):
            raise FrontierError(f"{where}: expected a name (string), got {v!r}; quote it")
        opts = choices_of(inp)
        if v not in opts:
            explain = getattr(inp.choices_fn, "explain", None)
            why = explain(v) if explain is not None else None
            if why:
                raise FrontierError(f"{where}: {inp.name} {v!r} cannot be used: {why}")
            raise FrontierError(f"{where}: unknown {inp.name} {v!r}; {_suggest(v, opts)}")
        return v
    x = _number(v, where)
    if inp.kind == "integer" and abs(x) > MAX_INTEGER:
        raise FrontierError(f"{where}: {inp.name} = {x:g} is too large for an integer input; at most 2**53 = "
                            f"{MAX_INTEGER}")
    if inp.kind == "continuous" and x != 0 and not MIN_MAGNITUDE <= abs(x) <= MAX_MAGNITUDE:
        raise FrontierError(f"{where}: {inp.name} = {x:g} is outside the representable range ({MIN_MAGNITUDE:g} to "
                            f"{MAX_MAGNITUDE:g} in magnitude, or 0); check its units ({inp.units})")
    lo_bad = inp.lower is not None and (x < inp.lower or (inp.lower_open and x == inp.lower))
    hi_bad = inp.upper is not None and (x > inp.upper or (inp.upper_open and x == inp.upper))
    if lo_bad or hi_bad:
        hint = f"; {inp.hint}" if inp.hint else ""
        raise FrontierError(f"{where}: value {x:g} is out of range; need {inp.bounds_text()}{hint}")
    if inp.kind == "integer":
        if x != round(x):
            raise FrontierError(f"{where}: {inp.name} must be a whole number, got {x:g}")
        return int(x)
    return x


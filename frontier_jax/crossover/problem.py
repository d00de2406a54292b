"""A break-even problem from a spec: the options of its [breakeven] table, the solved axis and its bracket, the
parameters of the sensitivities, and the reduced grid of the other axes (MODEL.md section 7; docs/breakeven.md)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from ..costmodel import catalog
from ..costmodel.kernel import INPUTS, check_spec
from ..costmodel.types import Efficiency, SearchSpace
from ..errors import FrontierError
from ..runner.netcdf import VarMeta
from ..runner.spec import DERIVED_OUTPUTS, Fixed, InputSpec, SweepSpec, load_spec
from ..solvers import BracketedNewton
from ..variables import breakeven_variables

BREAKEVEN_REGISTRY: Mapping[str, InputSpec] = {
    **INPUTS,
    "eta_flops_scale": InputSpec("eta_flops_scale", "continuous", "1",
                                 "scale on the calibrated achieved fraction of peak FLOP/s (eta_flops)", 0.0,
                                 lower_open=True),
    "eta_hbm_scale": InputSpec("eta_hbm_scale", "continuous", "1",
                               "scale on the calibrated achieved fraction of HBM bandwidth (eta_hbm)", 0.0,
                               lower_open=True),
}
EFFICIENCY_SCALES = {"eta_flops_scale": "eta_flops", "eta_hbm_scale": "eta_hbm"}
EFFICIENCY_UNITS = {"eta_flops": "1", "eta_flops_decay": "1", "eta_hbm": "1", "eta_hbm_decay": "1",
                    "overhead": "s", "overhead_tp": "s", "allreduce_latency": "s", "overhead_layer": "s",
                    "elementwise_passes": "1"}
DEFAULT_WRT = ("hbm_bandwidth_scale", "flops_scale", "eta_flops", "eta_hbm")
BRACKET = ("bracket_lower", "bracket_upper")
# Options of the [breakeven] table of a spec (and keyword arguments of `breakeven`), with their defaults.
OPTION_KEYS = {"solve_for": "kv_bandwidth", "samples": 16, "max_steps": 40, "ftol": 1e-10, "xtol": 1e-9,
               "probe": 1e-5, "kink_rtol": 1e-2, "wrt": list(DEFAULT_WRT)}
# In float32 the advantage is resolved to about 1e-7, so the float64 tolerances above cannot be met.
FLOAT32_DEFAULTS = {"ftol": 2e-5, "xtol": 1e-6, "probe": 1e-3}

@dataclass(frozen=True)
class Theta:
    """One parameter the root's sensitivity is taken with respect to."""

    name: str
    source: str   # "input" (a per-point input of the cost model) or "efficiency" (a field of Efficiency)
    units: str
    long_name: str


@dataclass(frozen=True)
class KernelKey:
    """Everything the compiled break-even kernel depends on (hashable): same key, same kernel object, so the
    sweep engine's executable cache compiles once per spec shape."""

    choices: tuple
    point_names: tuple[str, ...]
    derived: bool
    solve_for: str
    log: bool
    thetas: tuple[Theta, ...]
    solver: BracketedNewton
    space: SearchSpace
    engines: tuple[str, ...] = ("current",)  # the engines the spec uses (one latency form)


@dataclass(frozen=True)
class Problem:
    """A validated break-even problem: the full spec, the reduced spec of the other axes, and the kernel key."""

    spec: SweepSpec            # as given (includes the solved axis)
    reduced: SweepSpec         # the grid of the other axes, plus the bracket as fixed inputs
    solve_for: str
    log: bool
    lower: float
    upper: float
    thetas: tuple[Theta, ...]
    solver: BracketedNewton
    options: Mapping[str, Any]
    key: KernelKey

    @property
    def units(self) -> str:
        return BREAKEVEN_REGISTRY[self.solve_for].units

    def outputs_meta(self):
        """The break-even kernel's output variables (runner VarMeta)."""
        return outputs_meta(self.solve_for, self.thetas, self.log)


def _read_source(src) -> tuple[dict, str | None, str]:
    """(raw dict, TOML text or None, where) from a path, a TOML string or a dict (the rules of `load_spec`)."""
    if isinstance(src, SweepSpec):
        return dict(src.raw), src.source, "spec"
    if isinstance(src, Mapping):
        return json.loads(json.dumps(src, default=_plain)), None, "spec"
    if isinstance(src, os.PathLike) or (isinstance(src, str) and "\n" not in src and "=" not in src):
        path = Path(src)
        if not path.is_file():
            raise FrontierError(f"spec file {str(path)!r} not found; check the path")
        text, where = path.read_text(), str(path)
    elif isinstance(src, str):
        text, where = src, "spec"
    else:
        raise FrontierError(f"spec must be a path, a TOML string or a dict, not {type(src).__name__}")
    try:
        return tomllib.loads(text), text, where
    except tomllib.TOMLDecodeError as e:
        raise FrontierError(f"invalid TOML in {where}: {e}; fix the syntax there") from None


def _plain(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, np.ndarray)):
        return list(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def _options(table: Mapping, overrides: Mapping) -> dict:
    for key in table:
        if key not in OPTION_KEYS:
            import difflib
            close = difflib.get_close_matches(key, list(OPTION_KEYS), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(OPTION_KEYS)}"
            raise FrontierError(f"unknown key {key!r} in [breakeven]; {hint}")
    defaults = dict(OPTION_KEYS)
    if np.dtype(jnp.result_type(float)) == np.float32:
        defaults.update(FLOAT32_DEFAULTS)
    opts = {**defaults, **dict(table), **{k: v for k, v in overrides.items() if v is not None}}
    if isinstance(opts["wrt"], str):
        opts["wrt"] = [w.strip() for w in opts["wrt"].split(",") if w.strip()]
    opts["wrt"] = list(opts["wrt"])
    for key in ("samples", "max_steps"):
        v = opts[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise FrontierError(f"[breakeven] {key} must be an integer, got {v!r}")
        opts[key] = int(v)
    for key in ("ftol", "xtol", "probe", "kink_rtol"):
        v = opts[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise FrontierError(f"[breakeven] {key} must be a positive number, got {v!r}")
        opts[key] = float(v)
    if opts["samples"] < 2:
        raise FrontierError(f"[breakeven] samples = {opts['samples']}; the bracket scan needs at least 2")
    if opts["max_steps"] < 1:
        raise FrontierError(f"[breakeven] max_steps = {opts['max_steps']}; it must be at least 1")
    if not isinstance(opts["solve_for"], str):
        raise FrontierError(f"[breakeven] solve_for must be an input name, got {opts['solve_for']!r}")
    return opts


def _is_positive(inp: InputSpec) -> bool:
    return inp.lower is not None and inp.lower == 0.0 and inp.lower_open


def spec_engines(spec: SweepSpec) -> list[str]:
    """The engines a spec uses (its engine axis or fixed value; "current" when it names none)."""
    engines = [str(v) for a in spec.axes if a.name == "engine" for v in a.values]
    engines += [str(f.value) for f in spec.fixed if f.name == "engine"]
    return engines or ["current"]


def _engine_form(spec: SweepSpec) -> type:
    """The engine pytree type of a spec's engines (one form per spec; catalog.stacked_efficiency refuses a mix)."""
    return catalog.engine_form(spec_engines(spec)[0])


def _theta(name: str, spec: SweepSpec, solve_for: str) -> Theta:
    names = set(spec.axis_names) | {f.name for f in spec.fixed}
    if name == solve_for:
        raise FrontierError(f"cannot take the sensitivity of the {solve_for} root with respect to {solve_for} itself;"
                            " remove it from wrt")
    if name in _engine_form(spec)._fields:
        return Theta(name, "efficiency", EFFICIENCY_UNITS.get(name, "1"), f"calibrated efficiency term {name}")
    if spec.derived and name in DERIVED_OUTPUTS:
        raise FrontierError(f"{name} is derived from io_ratio and total_len in this spec; take the sensitivity to "
                            "io_ratio or total_len instead")
    inp = BREAKEVEN_REGISTRY.get(name)
    if inp is None:
        known = sorted(set(_engine_form(spec)._fields) | {n for n, i in BREAKEVEN_REGISTRY.items() if i.kind == "continuous"})
        raise FrontierError(f"unknown sensitivity input {name!r}; choose from {', '.join(known)}")
    if inp.kind != "continuous":
        raise FrontierError(f"{name} is {inp.kind}; sensitivities need a continuous input")
    if name in ("io_ratio", "total_len") and not spec.derived:
        raise FrontierError(f"{name} is not used by this spec (it gives input_len and output_len); drop it from wrt")
    if name in ("input_len", "output_len", "ttft", "tpot") and name not in names:
        raise FrontierError(f"{name} is not in this spec")
    if name == "rate" and "rate" not in names:
        raise FrontierError("rate is not set (fluid mode: the cost does not depend on a rate); drop it from wrt")
    if name in ("total_gpus",):
        raise FrontierError(f"{name} is an integer input; it has no derivative")
    return Theta(name, "input", inp.units, inp.long_name)


def prepare(spec, solve_for: str | None = None, **options) -> Problem:
    """Validate a break-even spec (path, TOML text, dict; an optional [breakeven] table holds the options) and
    build the reduced spec and the kernel key. Keyword options override the table (see OPTION_KEYS); `space`
    pins the configuration search space."""
    space = options.pop("space", None) or SearchSpace()
    raw, text, where = _read_source(spec)
    table = raw.pop("breakeven", {})
    if not isinstance(table, Mapping):
        raise FrontierError("[breakeven] must be a table; write it as a [breakeven] section")
    opts = _options(table, {"solve_for": solve_for, **options})
    full = load_spec(raw, BREAKEVEN_REGISTRY)
    full = dataclasses.replace(full, source=text)
    check_spec(full)
    axis_name = opts["solve_for"]
    axes = {a.name: a for a in full.axes}
    if axis_name not in axes:
        inp = BREAKEVEN_REGISTRY.get(axis_name)
        if inp is None:
            raise FrontierError(f"cannot solve for unknown input {axis_name!r}; use an axis of the spec "
                                f"({', '.join(full.axis_names) or 'none'})")
        where_now = "in [fixed]" if axis_name in {f.name for f in full.fixed} else "not in the spec"
        raise FrontierError(f"{axis_name} is {where_now}; give its bracket as an axis, e.g. [axes] {axis_name} = "
                            "{ logspace = [LOW, HIGH, 2] }")
    axis = axes[axis_name]
    inp = BREAKEVEN_REGISTRY[axis_name]
    if axis.kind != "continuous":
        raise FrontierError(f"{axis_name} is {axis.kind}; the solved axis must be a continuous input")
    lower, upper = float(min(axis.values)), float(max(axis.values))
    if not lower < upper:
        raise FrontierError(f"axis {axis_name!r} has one value; give a range (its min and max are the bracket)")
    log = _is_positive(inp)
    wanted = [a.name for a in full.axes if a.kind == "continuous" and a.name != axis_name]
    form = _engine_form(full)
    roofline_only = set(Efficiency._fields) - set(form._fields)
    default = opts["wrt"] == list(DEFAULT_WRT)
    wanted += [w for w in opts["wrt"] if w not in wanted and not (default and w in roofline_only)]
    scales = [n for n, field in EFFICIENCY_SCALES.items() if field in roofline_only and n in full.input_names]
    if scales:
        raise FrontierError(f"{scales[0]} scales a roofline efficiency; this spec's engine composes measured kernels "
                            "(use flops_scale or hbm_bandwidth_scale)")
    for w in wanted:
        if w in roofline_only:
            raise FrontierError(f"{w} is a term of the roofline engines; this spec's engine composes measured kernels:"
                                f" take the sensitivity to one of {', '.join(form._fields)}")
    thetas = tuple(_theta(w, full, axis_name) for w in wanted)

    solver = BracketedNewton(samples=opts["samples"], max_steps=opts["max_steps"], ftol=opts["ftol"],
                             xtol=opts["xtol"], probe=opts["probe"], kink_rtol=opts["kink_rtol"])
    bracket = tuple(Fixed(n, "continuous", v, axis.units, f"{end} end of the {axis_name} bracket")
                    for n, v, end in zip(BRACKET, (lower, upper), ("lower", "upper")))
    clash = [n for n in BRACKET if n in {f.name for f in full.fixed}]
    if clash:
        raise FrontierError(f"{clash[0]} is reserved for the bracket; rename that input")
    raw_out = {**{k: v for k, v in full.raw.items()}, "breakeven": {**opts, "solve_for": axis_name}}
    reduced = dataclasses.replace(full, axes=tuple(a for a in full.axes if a.name != axis_name),
                                  fixed=full.fixed + bracket, raw=raw_out)
    key = KernelKey(tuple(sorted((k, tuple(v)) for k, v in full.choices.items())), tuple(reduced.input_names),
                    full.derived, axis_name, log, thetas, solver, space, tuple(spec_engines(full)))
    return Problem(full, reduced, axis_name, log, lower, upper, thetas, solver, dict(raw_out["breakeven"]), key)




def outputs_meta(solve_for: str, thetas, log: bool) -> dict:
    """The break-even kernel's outputs as the runner's VarMeta, from the one variable table."""
    inp = BREAKEVEN_REGISTRY[solve_for]
    table = breakeven_variables(solve_for, inp.units, inp.long_name, log, [(t.name, t.units) for t in thetas])
    return {v.name: VarMeta(v.dims, v.units, v.long_name, v.dtype, v.flag_values, v.flag_meanings) for v in table}

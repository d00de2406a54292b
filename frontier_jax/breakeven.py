"""Break-even surfaces and crossover sensitivities (MODEL.md section 7).

The advantage A = log cost(best colocated mode) - log cost(disaggregated) is solved for A = 0 along one input (the
*solved axis*: KV bandwidth, input/output ratio, arrival rate, SLO slack or any other continuous input) at every
point of the grid of the other axes. The grid runs through the sweep engine (`run_sweep`: chunked, sharded,
streamed to netCDF, resumable) with a kernel that solves per point; the solved axis' range in the spec is the
bracket and travels as fixed data (`bracket_lower`, `bracket_upper`), so changing it does not recompile.

Per point: a coarse scan of the bracket, a safeguarded Newton refinement with forward-mode derivatives, kink
probes, and the sensitivities of the root to every other continuous axis and to chosen model inputs by the
implicit function theorem (`frontier_jax.solvers`). See docs/breakeven.md.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from .calibration import Efficiency, stacked_efficiency
from .catalog import stacked_hardware, stacked_models
from .errors import FrontierError
from .search import ARCHS, SearchSpace, evaluate_point
from .solvers import REASON_DOCS, REASONS, BracketedNewton, root_find
from .sweep.engine import run_sweep
from .sweep.kernel import DEFAULTS, check_spec, point_inputs
from .sweep.spec import DEFAULT_REGISTRY, DERIVED_OUTPUTS, Fixed, InputSpec, SweepSpec, load_spec

__all__ = ["breakeven", "prepare", "Problem", "BREAKEVEN_REGISTRY", "DEFAULT_WRT", "OPTION_KEYS", "ARCH_FLAGS",
           "kernel_traces"]

# Inputs a break-even spec may use beyond the sweep registry: scales on the calibrated efficiency terms, so that
# a sensitivity to eta_flops / eta_hbm can be checked against finite differences (and swept) like any input.
BREAKEVEN_REGISTRY: Mapping[str, InputSpec] = {
    **DEFAULT_REGISTRY,
    "eta_flops_scale": InputSpec("eta_flops_scale", "continuous", "1",
                                 "scale on the calibrated achieved fraction of peak FLOP/s (eta_flops)", 0.0,
                                 lower_open=True),
    "eta_hbm_scale": InputSpec("eta_hbm_scale", "continuous", "1",
                               "scale on the calibrated achieved fraction of HBM bandwidth (eta_hbm)", 0.0,
                               lower_open=True),
}
EFFICIENCY_SCALES = {"eta_flops_scale": "eta_flops", "eta_hbm_scale": "eta_hbm"}
EFFICIENCY_UNITS = {"eta_flops": "1", "eta_flops_decay": "1", "eta_hbm": "1", "eta_hbm_decay": "1",
                    "overhead": "s", "overhead_tp": "s", "allreduce_latency": "s"}
DEFAULT_WRT = ("hbm_bandwidth_scale", "flops_scale", "eta_flops", "eta_hbm")
BRACKET = ("bracket_lower", "bracket_upper")
ARCH_FLAGS = ([-1, 0, 1, 2], "none " + " ".join(ARCHS))
# Options of the [breakeven] table of a spec (and keyword arguments of `breakeven`), with their defaults.
OPTION_KEYS = {"solve_for": "kv_bandwidth", "samples": 16, "max_steps": 40, "ftol": 1e-10, "xtol": 1e-9,
               "probe": 1e-5, "kink_rtol": 1e-2, "wrt": list(DEFAULT_WRT)}
# In float32 the advantage is resolved to about 1e-7, so the float64 tolerances above cannot be met.
FLOAT32_DEFAULTS = {"ftol": 2e-5, "xtol": 1e-6, "probe": 1e-3}

_TRACES: list[str] = []


def kernel_traces() -> int:
    """How many times a break-even kernel has been traced in this process (a test hook: once per spec shape)."""
    return len(_TRACES)


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
        return outputs_meta(self.solve_for, self.thetas, self.log)


# ---------------------------------------------------------------------------------------------------------------
# Spec handling
# ---------------------------------------------------------------------------------------------------------------
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


def _theta(name: str, spec: SweepSpec, solve_for: str) -> Theta:
    names = set(spec.axis_names) | {f.name for f in spec.fixed}
    if name == solve_for:
        raise FrontierError(f"cannot take the sensitivity of the {solve_for} root with respect to {solve_for} itself;"
                            " remove it from wrt")
    if name in Efficiency._fields:
        return Theta(name, "efficiency", EFFICIENCY_UNITS.get(name, "1"), f"calibrated efficiency term {name}")
    if spec.derived and name in DERIVED_OUTPUTS:
        raise FrontierError(f"{name} is derived from io_ratio and total_len in this spec; take the sensitivity to "
                            "io_ratio or total_len instead")
    inp = BREAKEVEN_REGISTRY.get(name)
    if inp is None:
        known = sorted(set(Efficiency._fields) | {n for n, i in BREAKEVEN_REGISTRY.items() if i.kind == "continuous"})
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
    wanted += [w for w in opts["wrt"] if w not in wanted]
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
                    full.derived, axis_name, log, thetas, solver, space)
    return Problem(full, reduced, axis_name, log, lower, upper, thetas, solver, dict(raw_out["breakeven"]), key)


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------
def _per(ux: str, ut: str) -> str:
    return ux if ut == "1" else f"{ux} per ({ut})"


def outputs_meta(solve_for: str, thetas: Sequence[Theta], log: bool) -> dict:
    from .io.netcdf import VarMeta

    inp = BREAKEVEN_REGISTRY[solve_for]
    ux = inp.units
    meta = {
        f"breakeven_{solve_for}": VarMeta((), ux, f"break-even {inp.long_name}: the lowest root of advantage = 0 "
                                                  "in the bracket (NaN: none located)"),
        "converged": VarMeta((), "1", "the root is located to tolerance (reason converged or kink)", np.int8,
                             [0, 1], "no yes"),
        "reason": VarMeta((), "1", "outcome of the root solve", np.int8, list(range(len(REASONS))),
                          " ".join(REASONS)),
        "iterations": VarMeta((), "1", "refinement steps (Newton or bisection)", np.int16),
        "evaluations": VarMeta((), "1", "evaluations of the advantage and its forward-mode derivative", np.int16),
        "residual": VarMeta((), "1", "advantage at the reported root (for max_steps: the smallest |advantage| seen)"),
        "n_crossings": VarMeta((), "1", "sign changes of the advantage between the bracket samples (a lower bound "
                                        "on the number of roots; the lowest is reported)", np.int16),
        "arch_below": VarMeta((), "1", f"cheapest architecture just below the root (no root: at the lower end of "
                                       f"the bracket)", np.int8, *ARCH_FLAGS),
        "arch_above": VarMeta((), "1", f"cheapest architecture just above the root (no root: at the upper end of "
                                       f"the bracket)", np.int8, *ARCH_FLAGS),
        "advantage_slope": VarMeta((), "1" if log else _per("1", ux),
                                   f"d advantage / d {'log ' if log else ''}{solve_for} at the root"),
    }
    for t in thetas:
        meta[f"d_breakeven_{solve_for}_d_{t.name}"] = VarMeta(
            (), _per(ux, t.units), f"sensitivity of the break-even {solve_for} to {t.name} (implicit function "
                                   f"theorem; NaN unless reason is converged)")
        meta[f"elasticity_{solve_for}_{t.name}"] = VarMeta(
            (), "1", f"d log(break-even {solve_for}) / d log({t.name})")
    return meta


# ---------------------------------------------------------------------------------------------------------------
# The kernel
# ---------------------------------------------------------------------------------------------------------------
_KERNELS: dict[KernelKey, Callable[[dict], dict]] = {}


def make_kernel(key: KernelKey, spec: SweepSpec | None = None) -> Callable[[dict], dict]:
    """The per-chunk kernel for `run_sweep`: a vmap of one root solve per point. The same key gives the same
    kernel object (the sweep engine caches executables per kernel object); `spec` is only passed through to
    `point_inputs`, which reads the per-point arrays."""
    if key not in _KERNELS:
        _KERNELS[key] = _build_kernel(key, spec)
    return _KERNELS[key]


def _build_kernel(key: KernelKey, spec: SweepSpec | None) -> Callable[[dict], dict]:
    choices = dict(key.choices)
    hw_t = stacked_hardware(list(choices["hardware"]))
    md_t = stacked_models(list(choices["model"]))
    eff_t = stacked_efficiency(tuple(choices.get("engine", ("current",))))
    fp8_index = list(choices.get("precision", ("bf16", "fp8"))).index("fp8")
    tables = (hw_t, md_t, eff_t, fp8_index)
    axis, log, solver, space = key.solve_for, key.log, key.solver, key.space
    inputs = [(i, t.name) for i, t in enumerate(key.thetas) if t.source == "input"]
    effs = [(i, t.name) for i, t in enumerate(key.thetas) if t.source == "efficiency"]
    drop = set(BRACKET) | set(EFFICIENCY_SCALES)

    def efficiency(pt):
        e = jax.tree.map(lambda t: t[pt["engine"]] if "engine" in pt else t[0], eff_t)
        return e._replace(**{field: getattr(e, field) * pt[scale] for scale, field in EFFICIENCY_SCALES.items()
                             if scale in pt})

    def base(pt, t: Theta, dt):
        if t.source == "efficiency":
            return getattr(efficiency(pt), t.name).astype(dt)
        if t.name in pt:
            return pt[t.name].astype(dt)
        if t.name == "kv_bandwidth":
            return hw_t.nic_bandwidth[pt["hardware"]].astype(dt)
        return jnp.asarray(DEFAULTS[t.name], dt)

    def advantage(y, theta, pt):
        dt = y.dtype
        v = {k: x for k, x in pt.items() if k not in drop}
        v[axis] = jnp.exp(y) if log else y
        for i, name in inputs:
            v[name] = theta[i]
        if key.derived:
            r, total = v["io_ratio"], v["total_len"]
            v["input_len"], v["output_len"] = total * r / (1.0 + r), total / (1.0 + r)
        batch = {k: jnp.reshape(x, (1,)) for k, x in v.items()}
        point, demand, price = jax.tree.map(lambda a: a[0], point_inputs(spec, batch, tables))
        eff = efficiency(pt)
        eff = eff._replace(**{name: theta[i] for i, name in effs})
        point = point._replace(eff=jax.tree.map(lambda a, b: jnp.asarray(a, b.dtype), eff, point.eff))
        out = evaluate_point(point, demand, price, space)
        c = jnp.where(out["feasible"], out["cost"], jnp.inf)
        a = jnp.log(jnp.minimum(c[0], c[1])) - jnp.log(c[2])
        fluid = jnp.isnan(demand.rate)
        integral = lambda x: jnp.where(fluid, 0.0, x)  # noqa: E731  (fluid instance counts are continuous)
        signature = jnp.concatenate([out["tp_prefill"], out["tp_decode"], out["chunk"], out["overlap"],
                                     out["feasible"].astype(dt), integral(out["n_prefill"]),
                                     integral(out["n_decode"]), (c[1] < c[0]).astype(dt)[None]])
        return a, (signature, {"best_arch": out["best_arch"]})

    def solve_point(pt):
        dt = jnp.result_type(float)
        lo, hi = pt[BRACKET[0]].astype(dt), pt[BRACKET[1]].astype(dt)
        to_y = jnp.log if log else (lambda x: x)
        theta0 = jnp.stack([base(pt, t, dt) for t in key.thetas]) if key.thetas else jnp.zeros((0,), dt)
        aux_like = (jax.ShapeDtypeStruct((5 * 3 + 2 * 3 + 1,), dt), {"best_arch": jax.ShapeDtypeStruct((), jnp.int32)})
        sol = root_find(advantage, solver, to_y(lo), to_y(hi), theta0, pt, aux_like=aux_like)
        x = jnp.exp(sol.root) if log else sol.root
        dy = sol.sensitivities
        res = {f"breakeven_{axis}": x, "converged": sol.located.astype(jnp.int8),
               "reason": sol.reason.astype(jnp.int8), "iterations": sol.steps.astype(jnp.int16),
               "evaluations": sol.evaluations.astype(jnp.int16), "residual": sol.value,
               "n_crossings": sol.crossings.astype(jnp.int16),
               "arch_below": sol.aux_below["best_arch"].astype(jnp.int8),
               "arch_above": sol.aux_above["best_arch"].astype(jnp.int8), "advantage_slope": sol.slope}
        for j, t in enumerate(key.thetas):
            dx = x * dy[j] if log else dy[j]
            res[f"d_breakeven_{axis}_d_{t.name}"] = dx
            res[f"elasticity_{axis}_{t.name}"] = theta0[j] * dy[j] if log else theta0[j] * dy[j] / x
        return res

    def kernel(pts: dict) -> dict:
        _TRACES.append(axis)  # runs once per trace, never per chunk
        return jax.vmap(solve_point)(pts)

    return kernel


# ---------------------------------------------------------------------------------------------------------------
# The public entry point
# ---------------------------------------------------------------------------------------------------------------
def breakeven(spec, solve_for: str | None = None, out: str | os.PathLike | None = None, chunk: int = 2048, *,
              samples: int | None = None, max_steps: int | None = None, wrt: Sequence[str] | str | None = None,
              ftol: float | None = None, xtol: float | None = None, probe: float | None = None,
              kink_rtol: float | None = None, space: SearchSpace | None = None, progress: bool = False,
              **run_kw):
    """Solve advantage = 0 for `solve_for` over the grid of the spec's other axes and return an xarray.Dataset.

    spec: a path, a TOML string or a dict shaped like a sweep spec (optionally with a [breakeven] table of
    options); the solved axis' min and max are the bracket. With `out` the results are streamed to that netCDF
    file and the returned dataset is opened from it lazily (close it when done); without, a temporary file is used
    and the dataset is loaded into memory. Other keyword arguments go to `run_sweep` (resume, overwrite, devices,
    process_index, process_count)."""
    import netCDF4
    import xarray as xr

    prob = prepare(spec, solve_for, samples=samples, max_steps=max_steps, wrt=wrt, ftol=ftol, xtol=xtol,
                   probe=probe, kink_rtol=kink_rtol, space=space)
    kernel = make_kernel(prob.key, prob.reduced)
    tmpdir = None
    if out is None:
        tmpdir = tempfile.mkdtemp(prefix="breakeven-")
        out = os.path.join(tmpdir, f"{prob.spec.name}.nc")
    try:
        t0 = time.perf_counter()
        summary = run_sweep(prob.reduced, kernel, prob.outputs_meta(), out, chunk=chunk, progress=progress, **run_kw)
        attrs = {
            "breakeven_solve_for": prob.solve_for, "breakeven_units": prob.units,
            "breakeven_variable": "log" if prob.log else "linear",
            "breakeven_bracket": np.array([prob.lower, prob.upper]),
            "breakeven_wrt": " ".join(t.name for t in prob.thetas),
            "breakeven_options": json.dumps(prob.options, separators=(",", ":")),
            "breakeven_reasons": "; ".join(f"{k}: {v}" for k, v in REASON_DOCS.items()),
            "breakeven_method": ("coarse scan of the bracket, safeguarded Newton (forward-mode jvp) with bisection "
                                 "fallback, kink probes, implicit-function-theorem sensitivities; advantage = log "
                                 "min(colocated, chunked) cost - log disaggregated cost, +inf/-inf where only one "
                                 "side is feasible"),
            "breakeven_seconds": time.perf_counter() - t0,
            "breakeven_compile_seconds": summary.compile_seconds,
            "breakeven_points_per_second": summary.points_per_second,
        }
        with netCDF4.Dataset(summary.out_path, "a") as nc:
            nc.setncatts(attrs)
        if tmpdir is not None:
            with xr.open_dataset(summary.out_path) as ds:
                return ds.load()
        return xr.open_dataset(summary.out_path)
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)

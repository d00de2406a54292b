"""The break-even kernel: per point, one root solve of advantage = 0 along the solved axis (frontier_jax.solvers),
with the cost model evaluated inside; the sensitivities by the implicit function theorem."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ..costmodel.cost import evaluate_point
from ..costmodel.kernel import DEFAULTS, point_inputs, stacked_tables
from ..costmodel.types import Arch
from ..solvers import root_find
from .problem import BRACKET, EFFICIENCY_SCALES, KernelKey, Theta

_TRACES: list[str] = []


def kernel_traces() -> int:
    """How many times a break-even kernel has been traced in this process (a test hook: once per spec shape)."""
    return len(_TRACES)


_KERNELS: dict[KernelKey, Callable[[dict], dict]] = {}


def make_kernel(key: KernelKey) -> Callable[[dict], dict]:
    """The per-chunk kernel for `run_sweep`: a vmap of one root solve per point. The same key gives the same
    kernel object (the runner caches executables per kernel object)."""
    if key not in _KERNELS:
        _KERNELS[key] = _build_kernel(key)
    return _KERNELS[key]


def _build_kernel(key: KernelKey) -> Callable[[dict], dict]:
    tables = stacked_tables(dict(key.choices), key.engines)
    hw_t, _, eff_t, _, _ = tables
    axis, log, solver, space = key.solve_for, key.log, key.solver, key.space
    inputs = [(i, t.name) for i, t in enumerate(key.thetas) if t.source == "input"]
    effs = [(i, t.name) for i, t in enumerate(key.thetas) if t.source == "efficiency"]
    drop = set(BRACKET) | set(EFFICIENCY_SCALES)

    def efficiency(pt):
        e = jax.tree.map(lambda t: t[pt["engine"]] if "engine" in pt else t[0], eff_t)
        return e._replace(**{field: getattr(e, field) * pt[scale] for scale, field in EFFICIENCY_SCALES.items()
                             if scale in pt and field in e._fields})

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
        point, demand, price = jax.tree.map(lambda a: a[0], point_inputs(batch, tables))
        eff = efficiency(pt)
        eff = eff._replace(**{name: theta[i] for i, name in effs})
        point = point._replace(eff=jax.tree.map(lambda a, b: jnp.asarray(a, b.dtype), eff, point.eff))
        out = evaluate_point(point, demand, price, space)
        c = jnp.where(out.feasible, out.cost_per_mtok, jnp.inf)
        a = jnp.log(jnp.minimum(c[Arch.COLOCATED], c[Arch.CHUNKED])) - jnp.log(c[Arch.DISAGGREGATED])
        fluid = jnp.isnan(demand.rate)
        integral = lambda x: jnp.where(fluid, 0.0, x)  # noqa: E731  (fluid instance counts are continuous)
        signature = jnp.concatenate([out.tp_prefill, out.tp_decode, out.chunk, out.overlap,
                                     out.feasible.astype(dt), integral(out.n_prefill),
                                     integral(out.n_decode), (c[Arch.CHUNKED] < c[Arch.COLOCATED]).astype(dt)[None]])
        return a, (signature, {"best_arch": out.best_arch})

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
               "solver_outcome": sol.outcome.astype(jnp.int8), "iterations": sol.steps.astype(jnp.int16),
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


"""The cost model as a sweep kernel: per-point arrays in (categorical inputs as int32 indices), outputs out.

Catalogue tables (every GPU, model and engine the spec may name) are stacked once and gathered per point, so
switching GPU or model is data, not a recompilation. Inputs a spec leaves out take the defaults of `evaluate`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..calibration import stacked_efficiency
from ..catalog import stacked_hardware, stacked_models
from ..errors import FrontierError
from ..evaluate import FLAGS, VARIABLES
from ..inputs import assemble
from ..io.netcdf import VarMeta
from ..search import (ARCHS, DECODE_ONLY_INPUTS, LINK_ONLY_INPUTS, SearchSpace, evaluate_point, evaluate_prefill,
                      evaluate_unlinked)
from .spec import SweepSpec

REQUIRED = ("hardware", "model", "ttft", "tpot")
DEFAULTS = dict(percentile=0.99, input_cv=0.0, output_cv=0.0, arrival_ca2=1.0, cache_hit=0.0, slo_scale=1.0,
                rate=np.nan, total_gpus=np.inf, price_scale=1.0, hbm_bandwidth_scale=1.0, flops_scale=1.0)
EXTRA_COORDS = {"arch": (list(ARCHS), {"long_name": "serving architecture"})}


# In a sweep file the contract bounds `ttft`/`tpot` may be axes (coordinates), so the achieved latencies are
# stored under other names.
SWEEP_NAMES = {"ttft": "ttft_achieved", "tpot": "tpot_achieved"}


def outputs_meta() -> dict[str, VarMeta]:
    meta = {SWEEP_NAMES.get(name, name): VarMeta(("arch",), units, long_name)
            for name, units, long_name in VARIABLES.values()}
    for name, units, long_name, values, meanings in FLAGS.values():
        meta[name] = VarMeta(("arch",), units, long_name, np.int8, values, meanings)
    meta["best_arch"] = VarMeta((), "1", "cheapest feasible architecture (-1: none feasible)", np.int8,
                                [-1, 0, 1, 2], "none " + " ".join(ARCHS))
    meta["advantage"] = VarMeta((), "1", "log cost of best colocated mode minus log cost of disaggregated "
                                          "(> 0: disaggregation cheaper)")
    return meta


def check_spec(spec: SweepSpec) -> None:
    names = set(spec.input_names)
    for need in REQUIRED:
        if need not in names:
            raise FrontierError(f"the spec needs {need!r} in [fixed] or [axes]")
    if not ({"input_len", "output_len"} <= names):
        raise FrontierError("the spec needs input_len and output_len (or io_ratio with total_len)")
    if "total_gpus" in names and "rate" not in names:
        raise FrontierError("total_gpus caps an integral deployment: add rate to [fixed] or [axes]")


def point_inputs(spec: SweepSpec, pts: dict, tables) -> tuple:
    """(Point, Demand, price) for a batch of points from the kernel's input arrays."""
    hw_t, md_t, eff_t, fp8_index = tables
    take = lambda table, key: jax.tree.map(lambda t: t[pts[key]], table)  # noqa: E731
    hw, md = take(hw_t, "hardware"), take(md_t, "model")
    n = pts["hardware"].shape[0]
    dt = jnp.result_type(float)
    eff = take(eff_t, "engine") if "engine" in pts else jax.tree.map(lambda t: jnp.broadcast_to(t[0], (n,)), eff_t)
    fp8 = (pts["precision"] == fp8_index).astype(dt) if "precision" in pts else jnp.zeros((n,), dt)
    v = {k: jnp.broadcast_to(jnp.asarray(d, dt), (n,)) for k, d in DEFAULTS.items()}
    v.update({k: x.astype(dt) for k, x in pts.items() if k not in ("hardware", "model", "engine", "precision")})
    v["q"] = v.pop("percentile")
    v["kv_bandwidth"] = v["kv_bandwidth"] if "kv_bandwidth" in pts else hw.nic_bandwidth
    v.update(mean_mode=jnp.zeros((n,), dt), fp8=fp8, n_prefill=jnp.zeros((n,), dt), n_decode=jnp.zeros((n,), dt))
    point, demand, _ = assemble(hw, md, eff, v)
    return point, demand, hw.price * v["price_scale"]


class SweepKernel:
    """The cost model as a sweep kernel. Called on a dict of (n,) input arrays it evaluates every point in full.
    `shared` is the same result with the parts named in `shared_parts` evaluated once per representative point
    and gathered (sweep/sharing.py): the link-blind searches, which ignore the KV bandwidth and the price, and the
    linked prefill search, which ignores the decode side."""

    PARTS = {"unlinked": (evaluate_unlinked, LINK_ONLY_INPUTS), "prefill": (evaluate_prefill, DECODE_ONLY_INPUTS)}
    shared_parts = {name: ignores for name, (_, ignores) in PARTS.items()}  # what sweep/sharing.py reads

    def __init__(self, spec: SweepSpec, space: SearchSpace):
        check_spec(spec)
        ch = spec.choices
        self.spec, self.space = spec, space
        self.tables = (stacked_hardware(list(ch["hardware"])), stacked_models(list(ch["model"])),
                       stacked_efficiency(tuple(ch.get("engine", ("current",)))),
                       list(ch.get("precision", ("bf16", "fp8"))).index("fp8"))
        self.rename = {k: SWEEP_NAMES.get(v[0], v[0]) for k, v in {**VARIABLES, **FLAGS}.items()}

    def _outputs(self, out: dict) -> dict:
        res = {self.rename.get(k, k): v for k, v in out.items()}
        for name in ("feasible", "reason", "best_arch"):
            res[name] = res[name].astype(jnp.int8)
        return res

    def __call__(self, pts: dict) -> dict:
        point, demand, price = point_inputs(self.spec, pts, self.tables)
        out = jax.vmap(lambda p, d, c: evaluate_point(p, d, c, self.space))(point, demand, price)
        return self._outputs(out)

    def shared(self, pts: dict, heads: dict, which: dict) -> dict:
        """`heads[name]`: the representative points of shared part `name` (a subset of self.shared_parts);
        `which[name]`: each point's position among them. A point and its representative must differ only in inputs
        the part ignores. Parts not named are evaluated per point."""
        parts = {}
        for name, hpts in heads.items():
            hpoint, hdemand, _ = point_inputs(self.spec, hpts, self.tables)
            part = jax.vmap(lambda p, d, f=self.PARTS[name][0]: f(p, d, self.space))(hpoint, hdemand)
            parts[name] = jax.tree.map(lambda x, w=which[name]: jnp.take(x, w, axis=0), part)
        point, demand, price = point_inputs(self.spec, pts, self.tables)
        out = jax.vmap(lambda p, d, c, u, q: evaluate_point(p, d, c, self.space, u, q))(
            point, demand, price, parts.get("unlinked"), parts.get("prefill"))
        return self._outputs(out)


def make_kernel(spec: SweepSpec, space: SearchSpace = SearchSpace()) -> SweepKernel:
    return SweepKernel(spec, space)

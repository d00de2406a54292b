"""The cost model as a sweep kernel: the inputs a spec may set (INPUTS), per-point arrays in (categorical inputs as
int32 indices), the output variables out (frontier_jax.variables).

Catalogue tables (every GPU, model and engine the spec may name) are stacked once and gathered per point, so
switching GPU or model is data, not a recompilation. Inputs a spec leaves out take the defaults of `evaluate`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import FrontierError
from ..runner.netcdf import VarMeta
from ..runner.spec import InputSpec, SweepSpec, load_spec, nonnegative, positive
from ..variables import ARCH_COORD, POINT_VARIABLES
from . import catalog
from .cost import evaluate_point
from .inputs import DISPATCH_CHOICES, MAX_TPOT_S, MAX_TTFT_S, assemble
from .policy import enforce
from .search import (DECODE_ONLY_INPUTS, LINK_ONLY_INPUTS, PREFILL_PRIMITIVES_IGNORE, prefill_primitives,
                     search_link_blind, search_prefill_pool)
from .types import KernelEngine, SearchSpace

INPUTS: Mapping[str, InputSpec] = {
    s.name: s
    for s in (
        InputSpec("hardware", "categorical", "1", "GPU type", choices_fn=catalog.list_hardware),
        InputSpec("model", "categorical", "1", "model", choices_fn=catalog.list_models),
        InputSpec("engine", "categorical", "1", "serving-engine generation", choices_fn=lambda: list(catalog.ENGINES)),
        InputSpec("precision", "categorical", "1", "weight precision (and the KV cache's unless kv_precision is "
                  "given)", choices_fn=lambda: list(catalog.PRECISIONS)),
        InputSpec("kv_precision", "categorical", "1", "KV-cache precision (vLLM's --kv-cache-dtype; default: the "
                  "weights' precision)", choices_fn=lambda: list(catalog.PRECISIONS)),
        InputSpec("dispatch", "categorical", "1", "how each pool shares its arrivals (auto: a central queue for "
                  "the prefill pool, JSQ elsewhere)", choices_fn=lambda: list(DISPATCH_CHOICES)),
        positive("input_len", "1", "mean input (prompt) length in tokens"),
        positive("output_len", "1", "mean output length in tokens"),
        positive("total_len", "1", "mean input plus output length in tokens"),
        positive("io_ratio", "1", "input/output length ratio at fixed total length"),
        # larger bounds are milliseconds by mistake (costmodel.inputs.MAX_TTFT_S / MAX_TPOT_S)
        InputSpec("ttft", "continuous", "s", "time-to-first-token bound", 0.0, MAX_TTFT_S, lower_open=True,
                  hint="ttft is in seconds (2000 ms is 2.0)"),
        InputSpec("tpot", "continuous", "s", "time-per-output-token bound", 0.0, MAX_TPOT_S, lower_open=True,
                  hint="tpot is in seconds (50 ms is 0.05)"),
        InputSpec("percentile", "continuous", "1", "SLO percentile", 0.0, 1.0, lower_open=True, upper_open=True),
        positive("rate", "s-1", "request arrival rate (requests per second)"),
        positive("kv_bandwidth", "byte s-1", "KV-transfer link bandwidth per prefill GPU"),
        positive("slo_scale", "1", "SLO slack (scale on both latency bounds)"),
        nonnegative("input_cv", "coefficient of variation of input length"),
        nonnegative("output_cv", "coefficient of variation of output length"),
        nonnegative("arrival_ca2", "squared coefficient of variation of inter-arrival times"),
        positive("total_gpus", "1", "total GPUs in the deployment", kind="integer"),
        positive("price_scale", "1", "scale on GPU price"),
        positive("hbm_bandwidth_scale", "1", "scale on HBM bandwidth"),
        positive("flops_scale", "1", "scale on peak FLOP/s"),
        InputSpec("cache_hit", "continuous", "1", "prefix-cache hit ratio", 0.0, 1.0, upper_open=True),
    )
}
REQUIRED = ("hardware", "model", "ttft", "tpot")
DEFAULTS = dict(percentile=0.99, input_cv=0.0, output_cv=0.0, arrival_ca2=1.0, cache_hit=0.0, slo_scale=1.0,
                rate=np.nan, total_gpus=np.inf, price_scale=1.0, hbm_bandwidth_scale=1.0, flops_scale=1.0)
EXTRA_COORDS = {ARCH_COORD[0]: ARCH_COORD[1:]}
CATEGORICAL = ("hardware", "model", "engine", "precision", "kv_precision", "dispatch")


def load_sweep_spec(src: str | os.PathLike | Mapping[str, Any]) -> SweepSpec:
    """A sweep spec (path, TOML text or dict) validated against the cost model's INPUTS."""
    return load_spec(src, INPUTS)


def outputs_meta() -> dict[str, VarMeta]:
    """The kernel's outputs as the runner's VarMeta, from the one variable table."""
    return {v.name: VarMeta(v.dims, v.units, v.long_name, v.dtype, v.flag_values, v.flag_meanings)
            for v in POINT_VARIABLES}


def _spec_values(spec: SweepSpec, name: str) -> list:
    for a in spec.axes:
        if a.name == name:
            return list(a.values)
    return [f.value for f in spec.fixed if f.name == name]


def sweep_assumptions(spec: SweepSpec) -> dict[str, str]:
    """The assumptions behind a sweep's numbers, as global attributes of its file (as `api.assumptions` for
    `evaluate`): each GPU's catalogue price (USD/GPU-hour, source, date, times price_scale where swept) and, unless
    kv_bandwidth is an input, the scale-out NIC bandwidth used as the KV link, with its source; engine, precision,
    percentile, dispatch and arrivals where the spec leaves them at their defaults."""
    from .catalog import hardware_info
    prices, nics = [], []
    for h in _spec_values(spec, "hardware"):
        info = hardware_info(str(h))
        p, nic = info.get("price", {}), info.get("nic_bandwidth", {})
        prices.append(f"{h}: {float(p.get('value')):g} ({p.get('source', '')}; {p.get('date', '')})")
        nics.append(f"{h}: {float(nic.get('value')):g} ({nic.get('source', '')})")
    given = set(spec.input_names)
    defaults = {"engine": "current", "precision": "bf16", "kv_precision": "the weights' precision",
                "dispatch": "auto (central queue in fluid mode, join-the-shortest-queue with a rate)",
                "arrival_ca2": "1 (Poisson arrivals)"}
    out = {"assumed_price": "USD/GPU-hour, the catalogue's" + (" (scaled by price_scale)" if "price_scale" in given
                                                                else "") + ": " + "; ".join(prices),
           "assumed_kv_bandwidth": ("the kv_bandwidth input (byte s-1 per prefill GPU)" if "kv_bandwidth" in given
                                    else "byte s-1 per prefill GPU, the GPU's scale-out NIC: " + "; ".join(nics))}
    out.update({f"assumed_{k}": v for k, v in defaults.items() if k not in given})
    out["latency_path"] = latency_paths([str(h) for h in _spec_values(spec, "hardware")],
                                        [str(e) for e in _spec_values(spec, "engine")] or ["current"])
    return out


def latency_paths(gpus: list[str], engines: list[str]) -> str:
    """Which latency path each GPU takes under the engines: measured kernels (its own tables, or the closest tabled
    GPU's fitted efficiencies with its own peaks) or the roofline with calibrated efficiencies."""
    if catalog.engine_form(engines[0]) is not KernelEngine:
        return "roofline with the engine's calibrated efficiencies (" + ", ".join(engines) + ") for every GPU"
    path = lambda h: (catalog.kernel_path(h) if h in catalog.list_hardware() else  # noqa: E731
                      "its kernel_gpu index, or the tabled GPU closest by peaks")
    return "operations from measured kernels: " + "; ".join(f"{h}: {path(h)}" for h in gpus)


def check_spec(spec: SweepSpec) -> None:
    """FrontierError unless the spec gives what the cost model needs."""
    names = set(spec.input_names)
    for need in REQUIRED:
        if need not in names:
            raise FrontierError(f"the spec needs {need!r} in [fixed] or [axes]")
    if not ({"input_len", "output_len"} <= names):
        raise FrontierError("the spec needs input_len and output_len (or io_ratio with total_len)")
    if "total_gpus" in names and "rate" not in names:
        raise FrontierError("total_gpus caps an integral deployment: add rate to [fixed] or [axes]")


def stacked_tables(choices: Mapping[str, tuple], engines=("current",)) -> tuple:
    """(Hardware, Model, engine terms with leaves stacked over the spec's choices, index of fp8 among the
    precisions, among the KV precisions). `engines`: those the spec uses (one latency form)."""
    return (catalog.stacked_hardware(list(choices["hardware"])), catalog.stacked_models(list(choices["model"])),
            catalog.stacked_efficiency(tuple(choices.get("engine", ("current",))), engines),
            list(choices.get("precision", catalog.PRECISIONS)).index("fp8"),
            list(choices.get("kv_precision", catalog.PRECISIONS)).index("fp8"))


def point_inputs(pts: dict, tables) -> tuple:
    """(Point, Demand, price in USD per GPU-hour) for a batch of points from the kernel's input arrays."""
    hw_t, md_t, eff_t, fp8_index, kv_fp8_index = tables
    take = lambda table, key: jax.tree.map(lambda t: t[pts[key]], table)  # noqa: E731
    hw, md = take(hw_t, "hardware"), take(md_t, "model")
    n = pts["hardware"].shape[0]
    dt = jnp.result_type(float)
    eff = take(eff_t, "engine") if "engine" in pts else jax.tree.map(lambda t: jnp.broadcast_to(t[0], (n,)), eff_t)
    fp8 = (pts["precision"] == fp8_index).astype(dt) if "precision" in pts else jnp.zeros((n,), dt)
    kv_fp8 = (pts["kv_precision"] == kv_fp8_index).astype(dt) if "kv_precision" in pts else fp8
    v = {k: jnp.broadcast_to(jnp.asarray(d, dt), (n,)) for k, d in DEFAULTS.items()}
    v.update({k: x.astype(dt) for k, x in pts.items() if k not in CATEGORICAL})
    v["q"] = v.pop("percentile")
    v["kv_bandwidth"] = v["kv_bandwidth"] if "kv_bandwidth" in pts else hw.nic_bandwidth
    v.update(mean_mode=jnp.zeros((n,), dt), fp8=fp8, kv_fp8=kv_fp8, n_prefill=jnp.zeros((n,), dt),
             n_decode=jnp.zeros((n,), dt))
    v["dispatch"] = (pts["dispatch"].astype(dt) - 1.0) if "dispatch" in pts else jnp.full((n,), -1.0, dt)
    point, demand, _ = assemble(hw, md, eff, v)
    return point, demand, hw.price * v["price_scale"]


class SweepKernel:
    """The cost model as a sweep kernel. Called on a dict of (n,) input arrays it evaluates every point in full.
    `shared` is the same result with the parts named in `shared_parts` evaluated once per representative point
    and gathered (runner/sharing.py): the link-blind searches, which ignore the KV bandwidth and the price, and the
    linked prefill search, which ignores the decode side; with measured kernels also that search's primitives (its
    prompts' prefill times), which ignore the link as well."""

    PARTS = {"link_blind": (search_link_blind, LINK_ONLY_INPUTS), "prefill": (search_prefill_pool, DECODE_ONLY_INPUTS)}
    KERNEL_PARTS = {"prefill_primitives": (prefill_primitives, PREFILL_PRIMITIVES_IGNORE)}

    def __init__(self, spec: SweepSpec, space: SearchSpace):
        check_spec(spec)
        self.spec, self.space = spec, space
        engines = _spec_values(spec, "engine") or ["current"]
        self.tables = stacked_tables(spec.choices, engines)
        parts = dict(self.PARTS)
        if catalog.engine_form(str(engines[0])) is KernelEngine:
            parts.update(self.KERNEL_PARTS)
        self.parts = parts
        self.shared_parts = {name: ignores for name, (_, ignores) in parts.items()}  # what runner/sharing.py reads

    @staticmethod
    def _outputs(out) -> dict:
        res = enforce(out._asdict())  # costmodel/policy.py: feasible only with finite, positive costs and latencies
        for v in POINT_VARIABLES:
            if v.flag_values is not None:
                res[v.name] = res[v.name].astype(jnp.int8)
        return res

    def __call__(self, pts: dict) -> dict:
        point, demand, price = point_inputs(pts, self.tables)
        out = jax.vmap(lambda p, d, c: evaluate_point(p, d, c, self.space))(point, demand, price)
        return self._outputs(out)

    def shared(self, pts: dict, heads: dict, which: dict) -> dict:
        """`heads[name]`: the representative points of shared part `name` (a subset of self.shared_parts);
        `which[name]`: each point's position among them. A point and its representative must differ only in inputs
        the part ignores. Parts not named are evaluated per point."""
        parts, prims = {}, None
        if "prefill" in heads and "prefill_primitives" in heads:
            hpoint, _, _ = point_inputs(heads["prefill_primitives"], self.tables)
            prims = jax.vmap(lambda p: prefill_primitives(p, self.space))(hpoint)
            # each prefill head's position among the primitives' heads (heads nobody maps to, the padding, repeat
            # the first head's point: they take its primitives)
            n = jax.tree.leaves(heads["prefill"])[0].shape[0]
            at = jnp.zeros((n,), which["prefill"].dtype).at[which["prefill"]].set(which["prefill_primitives"])
            used = jnp.zeros((n,), bool).at[which["prefill"]].set(True)
            prims = jax.tree.map(lambda x: jnp.take(x, jnp.where(used, at, at[0]), axis=0), prims)
        for name, hpts in heads.items():
            if name == "prefill_primitives":
                continue
            hpoint, hdemand, _ = point_inputs(hpts, self.tables)
            f = self.parts[name][0]
            if name == "prefill" and prims is not None:
                part = jax.vmap(lambda p, d, q: search_prefill_pool(p, d, self.space, q))(hpoint, hdemand, prims)
            else:
                part = jax.vmap(lambda p, d, f=f: f(p, d, self.space))(hpoint, hdemand)
            parts[name] = jax.tree.map(lambda x, w=which[name]: jnp.take(x, w, axis=0), part)
        point, demand, price = point_inputs(pts, self.tables)
        out = jax.vmap(lambda p, d, c, u, q: evaluate_point(p, d, c, self.space, u, q))(
            point, demand, price, parts.get("link_blind"), parts.get("prefill"))
        return self._outputs(out)


def make_kernel(spec: SweepSpec, space: SearchSpace = SearchSpace()) -> SweepKernel:
    """The sweep kernel of a spec (its categorical choices stacked once)."""
    return SweepKernel(spec, space)

"""The public entry point: one scenario (or a 1-D batch of them) in SI units -> an xarray.Dataset over `arch`."""
from __future__ import annotations

import json
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from . import inputs
from .errors import FrontierError
from .search import ARCHS, REASONS, SearchSpace, evaluate_point
from .tracing import COMPILER_OPTIONS, inline_jnp

# name in the kernel output -> (variable name, units, long_name)
VARIABLES = {
    "cost": ("cost_per_mtok", "USD / 1e6 output tokens", "cost per million SLO-compliant output tokens"),
    "prefill": ("prefill_cost", "USD / 1e6 output tokens", "prefill term of the cost"),
    "decode": ("decode_cost", "USD / 1e6 output tokens", "decode term of the cost"),
    "kv_tax": ("kv_tax", "USD / 1e6 output tokens", "KV-transfer tax: cost(B_kv) - cost(B_kv = infinity)"),
    "kv_direct": ("kv_tax_direct", "USD / 1e6 output tokens", "direct KV tax: link occupancy and its capacity"),
    "kv_indirect": ("kv_tax_indirect", "USD / 1e6 output tokens", "indirect KV tax: TTFT slack eaten by the transfer"),
    "cost_total": ("cost_per_mtok_total", "USD / 1e6 input+output tokens", "cost per million input+output tokens"),
    "ttft": ("ttft", "s", "time to first token at the contract percentile, at the operating point"),
    "tpot": ("tpot", "s", "time per output token at the contract percentile, at the operating point"),
    "goodput": ("goodput", "requests / s / GPU", "largest SLO-compliant request rate per GPU (fluid)"),
    "throughput": ("throughput", "output tokens / s / GPU", "output token rate per GPU at the operating point"),
    "gpus": ("gpus", "GPUs", "GPUs deployed (fluid mode: one prefill instance and its share of decode)"),
    "tp_prefill": ("tp_prefill", "GPUs", "tensor-parallel degree of the prefill (or colocated) instances"),
    "tp_decode": ("tp_decode", "GPUs", "tensor-parallel degree of the decode (or colocated) instances"),
    "n_prefill": ("n_prefill", "instances", "prefill (or colocated) instances"),
    "n_decode": ("n_decode", "instances", "decode instances (fluid disaggregated mode: per prefill instance)"),
    "chunk": ("chunk", "tokens", "chunked-prefill token budget per iteration (0: not chunked)"),
    "overlap": ("overlap", "1", "layer-wise KV-transfer overlap (1 = on)"),
}
FLAGS = {
    "feasible": ("feasible", "1", "the contract can be met", [0, 1], "infeasible feasible"),
    "reason": ("reason", "1", "why the point is infeasible", list(range(len(REASONS))), " ".join(REASONS)),
}


@partial(jax.jit, static_argnames=("space",), compiler_options=COMPILER_OPTIONS)  # one point: compile-bound
def _kernel(point, demand, price, space):
    with inline_jnp():  # the same program, traced faster (frontier_jax/tracing.py)
        return jax.vmap(lambda p, d, c: evaluate_point(p, d, c, space))(point, demand, price)


def search_space(tp=None, tp_prefill=None, tp_decode=None, chunk=None, overlap=None) -> SearchSpace:
    """The configuration space with any pinned choices (a pin may be any positive value, not only the defaults)."""
    def pin(name, value, default, integer=True):
        if value is None:
            return default
        inputs.check_number(name, value, integer=integer, allow_zero=(name == "overlap"))
        return (float(value),)
    base = SearchSpace()
    return SearchSpace(tp=pin("tp", tp, base.tp), chunk=pin("chunk", chunk, base.chunk),
                       tp_prefill=pin("tp_prefill", tp_prefill if tp_prefill is not None else tp, base.tp_prefill),
                       tp_decode=pin("tp_decode", tp_decode if tp_decode is not None else tp, base.tp_decode),
                       overlap=pin("overlap", None if overlap is None else float(bool(overlap)), base.overlap))


def to_dataset(out: dict, lead_dims: tuple, coords: dict, attrs: dict) -> xr.Dataset:
    data = {}
    for key, (name, units, long_name) in VARIABLES.items():
        data[name] = (lead_dims + ("arch",), np.asarray(out[key]), {"units": units, "long_name": long_name})
    for key, (name, units, long_name, values, meanings) in FLAGS.items():
        data[name] = (lead_dims + ("arch",), np.asarray(out[key]).astype(np.int8),
                      {"units": units, "long_name": long_name, "flag_values": np.asarray(values, np.int8),
                       "flag_meanings": meanings})
    data["best_arch"] = (lead_dims, np.asarray(out["best_arch"]).astype(np.int8),
                         {"units": "1", "long_name": "cheapest feasible architecture (-1: none feasible)",
                          "flag_values": np.asarray([-1, 0, 1, 2], np.int8),
                          "flag_meanings": "none " + " ".join(ARCHS)})
    data["advantage"] = (lead_dims, np.asarray(out["advantage"]),
                         {"units": "1", "long_name": "log cost of best colocated mode minus log cost of "
                                                     "disaggregated (> 0: disaggregation cheaper)"})
    ds = xr.Dataset(data, coords={"arch": ("arch", list(ARCHS), {"long_name": "serving architecture"}), **coords})
    ds.attrs.update(attrs)
    return ds


def evaluate(hardware="h100-80gb-sxm", model="llama-3.1-70b", input_len=2048, output_len=256, ttft=2.0, tpot=0.05,
             percentile=0.99, rate=None, kv_bandwidth=None, total_gpus=None, *, engine="current", precision="bf16",
             input_cv=0.0, output_cv=0.0, arrival_ca2=1.0, cache_hit=0.0, slo_scale=1.0, price=None,
             hbm_bandwidth_scale=1.0, flops_scale=1.0, tp=None, tp_prefill=None, tp_decode=None, chunk=None,
             n_prefill=None, n_decode=None, overlap=None) -> xr.Dataset:
    """Cost per SLO-compliant token of colocated, chunked and disaggregated serving for one scenario.

    SI units: lengths in tokens, ttft/tpot in s, rate in requests/s, kv_bandwidth in bytes/s per prefill GPU
    (default: the GPU's scale-out NIC), price in USD per GPU-hour (default: the catalogue's). `rate=None` gives the
    fluid cost at the largest compliant rate per GPU; a rate sizes an integral deployment (capped by total_gpus).
    Numeric inputs may be 1-D arrays of one common length (dimension `point`). Infeasible contracts come back
    with feasible = 0, NaN costs and a reason, never an exception; user mistakes raise FrontierError.
    """
    space = search_space(tp, tp_prefill, tp_decode, chunk, overlap)
    point, demand, price_arr = inputs.build(
        hardware, model, input_len=input_len, output_len=output_len, ttft=ttft, tpot=tpot, percentile=percentile,
        rate=rate, kv_bandwidth=kv_bandwidth, total_gpus=total_gpus, engine=engine, precision=precision,
        input_cv=input_cv, output_cv=output_cv, arrival_ca2=arrival_ca2, cache_hit=cache_hit, slo_scale=slo_scale,
        n_prefill=n_prefill, n_decode=n_decode, price=price, hbm_bandwidth_scale=hbm_bandwidth_scale,
        flops_scale=flops_scale)
    shape = price_arr.shape
    if len(shape) > 1:
        raise FrontierError("evaluate takes scalars or 1-D arrays; use a sweep spec for grids")
    flat = jax.tree.map(lambda x: jnp.reshape(jnp.broadcast_to(x, shape), (-1,)), (point, demand, price_arr))
    out = _kernel(*flat, space=space)
    lead = ("point",) if shape else ()
    out = {k: (np.asarray(v) if shape else np.asarray(v)[0]) for k, v in out.items()}
    ca2 = np.unique(np.asarray(arrival_ca2, dtype=float))
    attrs = {"title": "frontier-jax evaluation",
             "arrivals": "Poisson" if np.all(ca2 == 1.0) else f"renewal, inter-arrival SCV {ca2.min():g} to "
                         f"{ca2.max():g}" if ca2.size > 1 else f"renewal, inter-arrival SCV {ca2[0]:g}",
             "inputs": json.dumps(dict(hardware=str(hardware), model=str(model), engine=engine, precision=precision,
                                       percentile=str(percentile), rate=None if rate is None else str(rate)))}
    return to_dataset(out, lead, {}, attrs)

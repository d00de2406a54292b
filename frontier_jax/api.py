"""The public entry points: one scenario (or a 1-D batch of them) in SI units -> an xarray.Dataset over `arch`
(`evaluate`), and the latency primitives by catalogue name (`prefill_time`, `decode_step_time`, `closed_loop`)."""
from __future__ import annotations

import json
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from .costmodel import inputs
from .costmodel import latency as lat
from .costmodel.arch.closed_loop import closed_loop as _closed_loop
from .costmodel.catalog import load_hardware, load_model, precision_flag
from .costmodel.cost import evaluate_point
from .costmodel.types import ARCHS, Point, Scenario, SearchSpace
from .errors import FrontierError
from .tracing import COMPILER_OPTIONS, inline_jnp
from .variables import ARCH_COORD, POINT_VARIABLES

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
    """An xarray.Dataset of the model's outputs (dims lead_dims + each variable's own) with CF attributes. Float
    variables keep the precision they were computed in (float32 with jax_enable_x64 off); flags are cast."""
    def values(v):
        x = np.asarray(out[v.name])
        return x if x.dtype.kind == "f" and np.dtype(v.dtype).kind == "f" else x.astype(v.dtype)
    data = {v.name: (lead_dims + v.dims, values(v), v.attrs()) for v in POINT_VARIABLES}
    ds = xr.Dataset(data, coords={ARCH_COORD[0]: ARCH_COORD, **coords})
    ds.attrs.update(attrs)
    return ds


def evaluate(hardware="h100-80gb-sxm", model="llama-3.1-70b", input_len=2048, output_len=256, ttft=2.0, tpot=0.05,
             percentile=0.99, rate=None, kv_bandwidth=None, total_gpus=None, *, engine="current", precision="bf16",
             input_cv=0.0, output_cv=0.0, arrival_ca2=1.0, cache_hit=0.0, slo_scale=1.0, price=None,
             hbm_bandwidth_scale=1.0, flops_scale=1.0, tp=None, tp_prefill=None, tp_decode=None, chunk=None,
             n_prefill=None, n_decode=None, overlap=None, decode_hardware=None, decode_price=None,
             cache_load_bandwidth=None, dispatch="auto") -> xr.Dataset:
    """Cost per SLO-compliant token of colocated, chunked and disaggregated serving for one scenario.

    SI units: lengths in tokens, ttft/tpot in s, rate in requests/s, kv_bandwidth in bytes/s per prefill GPU
    (default: the GPU's scale-out NIC), price in USD per GPU-hour (default: the catalogue's). `rate=None` gives the
    fluid cost at the largest compliant rate per GPU; a rate sizes an integral deployment (capped by total_gpus).
    `decode_hardware` puts the disaggregated decode pool on another GPU (priced at `decode_price`, default its
    catalogue price); `cache_load_bandwidth` (bytes/s per prefill GPU) loads prefix-cache hits from a global cache.
    Numeric inputs may be 1-D arrays of one common length (dimension `point`). Infeasible contracts come back
    with feasible = 0, NaN costs and a reason, never an exception; user mistakes raise FrontierError.
    """
    space = search_space(tp, tp_prefill, tp_decode, chunk, overlap)
    point, demand, price_arr = inputs.build(
        hardware, model, input_len=input_len, output_len=output_len, ttft=ttft, tpot=tpot, percentile=percentile,
        rate=rate, kv_bandwidth=kv_bandwidth, total_gpus=total_gpus, engine=engine, precision=precision,
        input_cv=input_cv, output_cv=output_cv, arrival_ca2=arrival_ca2, cache_hit=cache_hit, slo_scale=slo_scale,
        n_prefill=n_prefill, n_decode=n_decode, price=price, hbm_bandwidth_scale=hbm_bandwidth_scale,
        flops_scale=flops_scale, decode_hardware=decode_hardware, decode_price=decode_price,
        cache_load_bandwidth=cache_load_bandwidth, dispatch=dispatch)
    shape = price_arr.shape
    if len(shape) > 1:
        raise FrontierError("evaluate takes scalars or 1-D arrays; use a sweep spec for grids")
    flat = jax.tree.map(lambda x: jnp.reshape(jnp.broadcast_to(x, shape), (-1,)), (point, demand, price_arr))
    out = _kernel(*flat, space=space)._asdict()
    lead = ("point",) if shape else ()
    out = {k: (np.asarray(v) if shape else np.asarray(v)[0]) for k, v in out.items()}
    ca2 = np.unique(np.asarray(arrival_ca2, dtype=float))
    attrs = {"title": "frontier-jax evaluation",
             "arrivals": "Poisson" if np.all(ca2 == 1.0) else f"renewal, inter-arrival SCV {ca2.min():g} to "
                         f"{ca2.max():g}" if ca2.size > 1 else f"renewal, inter-arrival SCV {ca2[0]:g}",
             "inputs": json.dumps(dict(hardware=str(hardware), model=str(model), engine=engine, precision=precision,
                                       percentile=str(percentile), rate=None if rate is None else str(rate)))}
    return to_dataset(out, lead, {}, attrs)


def _resolve(hardware, model, engine, precision):
    return load_hardware(hardware), load_model(model), inputs.engine_efficiency(engine), precision_flag(precision)


def prefill_time(hardware, model, tokens, tp, batch=1, *, engine="current", precision="bf16"):
    """Seconds of one prefill iteration over `batch` prompts of `tokens` tokens on a TP group of `tp` GPUs."""
    hw, md, eff, fp8 = _resolve(hardware, model, engine, precision)
    f = jnp.asarray(fp8)
    return lat.prefill_seconds(hw, md, eff, jnp.asarray(tokens, float), jnp.asarray(tp, float),
                               jnp.asarray(batch, float), f)


def decode_step_time(hardware, model, batch, context, tp, *, engine="current", precision="bf16"):
    """Seconds of one decode iteration of `batch` sequences at mean context `context` (tokens) on `tp` GPUs."""
    hw, md, eff, fp8 = _resolve(hardware, model, engine, precision)
    return lat.decode_seconds(hw, md, eff, jnp.asarray(batch, float), jnp.asarray(context, float),
                              jnp.asarray(tp, float), jnp.asarray(fp8))


@jax.jit
def _closed_loop_batch(hw, md, eff, fp8, i, o, n, g, c):
    """closed_loop over 1-D arrays; the catalogue objects are traced arrays, so this compiles once per length."""
    def one(i, o, n, g, c):
        sc = Scenario.build(input_len=i, output_len=o, ttft=1.0, tpot=1.0, q=0.5, mean_mode=1.0, fp8=fp8)
        return _closed_loop(Point(hw, md, eff, sc), g, c, n)
    return jax.vmap(one)(i, o, n, g, c)


def closed_loop(hardware, model, input_len, output_len, concurrency, tp, *, engine="current", precision="bf16",
                chunk=2048.0):
    """Mean TTFT (s), mean TPOT (s) and throughput (requests/s) of one aggregated (chunked-prefill) instance with
    `concurrency` requests always in flight, as serving benchmarks measure. Every number may be an array."""
    for name, v in (("input_len", input_len), ("output_len", output_len), ("concurrency", concurrency), ("tp", tp)):
        inputs.check_number(name, v)
    hw, md, eff, fp8 = _resolve(hardware, model, engine, precision)
    args = [jnp.asarray(x, float) for x in (input_len, output_len, concurrency, tp, chunk)]
    shape = jnp.broadcast_shapes(*(a.shape for a in args))
    flat = [jnp.broadcast_to(a, shape).ravel() for a in args]
    dt = flat[0].dtype
    as_dt = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, dt), tree)  # noqa: E731
    ttft, tpot, x = _closed_loop_batch(as_dt(hw), as_dt(md), as_dt(eff), jnp.asarray(fp8, dt), *flat)
    return ttft.reshape(shape), tpot.reshape(shape), x.reshape(shape)

"""The public entry points: one scenario (or a 1-D batch of them) in SI units -> an xarray.Dataset over `arch`
(`evaluate`), and the latency primitives by catalogue name (`prefill_time`, `decode_step_time`, `closed_loop`)."""
from __future__ import annotations

import json
import os
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from .costmodel import inputs
from .costmodel import latency as lat
from .costmodel.arch.closed_loop import closed_loop as _closed_loop
from .costmodel.catalog import kv_precision_flag, load_hardware, load_model, precision_flag
from .costmodel.cost import evaluate_point
from .costmodel.search import searched_overlaps
from .costmodel.types import ARCHS, Point, Scenario, SearchSpace
from .errors import FrontierError
from .tracing import COMPILER_OPTIONS, inline_jnp
from .variables import ARCH_COORD, POINT_VARIABLES

X64_ENV = "FRONTIER_JAX_X64"


def configure() -> None:
    """What `import frontier_jax` sets up, as the CLI does: float64 (unless $FRONTIER_JAX_X64 is 0/off; the GPU
    sweeps' --float32 is the CLI's choice) and the persistent compile cache (cli.common.compile_cache_dir:
    ~/.cache/frontier-jax/xla, $FRONTIER_JAX_CACHE=off disables it), so a new Python process loads `evaluate`'s
    compiled program instead of compiling it again."""
    from .cli.common import compile_cache_dir
    if os.environ.get(X64_ENV, "").strip().lower() not in ("0", "off", "no", "false"):
        jax.config.update("jax_enable_x64", True)
    cache = compile_cache_dir()
    if cache and not jax.config.jax_compilation_cache_dir:
        try:
            os.makedirs(cache, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", cache)
        except OSError:  # an unwritable home: run without the cache
            pass


# The configuration choices are data (traced arrays of fixed lengths), not part of the compiled program: a pinned
# value fills its candidate array, so evaluate(tp_prefill=2) and evaluate(tp_prefill=4) share one executable.
_TRACES = {"kernel": 0}  # how often each program was traced (tests count recompilations)


@partial(jax.jit, compiler_options=COMPILER_OPTIONS)  # one point: compile-bound
def _kernel(point, demand, price, cfg):
    _TRACES["kernel"] += 1
    space = SearchSpace(**cfg)
    with inline_jnp():  # the same program, traced faster (frontier_jax/tracing.py)
        return jax.vmap(lambda p, d, c: evaluate_point(p, d, c, space))(point, demand, price)


def search_space(tp=None, tp_prefill=None, tp_decode=None, chunk=None, overlap=None) -> SearchSpace:
    """The configuration space with any pinned choices (a pin may be any positive value, not only the defaults):
    a pinned choice has one candidate."""
    def pin(name, value, default, integer=True):
        if value is None:
            return default
        inputs.check_number(name, value, integer=integer, allow_zero=(name == "overlap"))
        return (float(value),)
    base = SearchSpace()
    return SearchSpace(tp=pin("tp", tp, base.tp), chunk=pin("chunk", chunk, base.chunk),
                       tp_prefill=pin("tp_prefill", tp_prefill if tp_prefill is not None else tp, base.tp_prefill),
                       tp_decode=pin("tp_decode", tp_decode if tp_decode is not None else tp, base.tp_decode),
                       overlap=pin("overlap", _overlap_flag(overlap), base.overlap))


def _overlap_flag(overlap):
    """overlap as 1.0/0.0: True/False or 1/0 only (a string such as "no" is truthy, so it is refused)."""
    if overlap is None:
        return None
    if isinstance(overlap, (bool, np.bool_)) or (isinstance(overlap, (int, float, np.integer, np.floating))
                                                  and overlap in (0, 1)):
        return float(bool(overlap))
    raise FrontierError(f"overlap must be True or False (got {overlap!r}); leave it unset to search both")


def space_arrays(space: SearchSpace) -> dict:
    """The search space as the kernel's traced data: each choice padded to the default space's length by repeating
    its candidates (a pin fills the array; the argmin takes the first of equal costs), overlap as the one value
    searched (layer-wise overlap dominates: search.searched_overlaps)."""
    base = SearchSpace()
    dt = jnp.result_type(float)

    def fill(values, n):
        return jnp.asarray([float(values[i % len(values)]) for i in range(max(n, len(values)))], dt)
    return {"tp": fill(space.tp, len(base.tp)), "chunk": fill(space.chunk, len(base.chunk)),
            "tp_prefill": fill(space.tp_prefill, len(base.tp_prefill)),
            "tp_decode": fill(space.tp_decode, len(base.tp_decode)),
            "overlap": jnp.asarray([float(o) for o in searched_overlaps(space)][:1], dt)}


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


def _check_names(hardware, model, engine, precision, percentile, decode_hardware=None, kv_precision=None) -> None:
    """Unknown names end in the nearest known ones (hints.py); a percentile in percent gets its fraction."""
    from . import hints
    from .costmodel.catalog import ENGINES, PRECISIONS, list_hardware, list_models
    for what, name, known in (("GPU", hardware, list_hardware), ("GPU", decode_hardware, list_hardware),
                              ("model", model, list_models)):
        if isinstance(name, str):
            hints.check_name(what, name, known(), " (add NAME.toml to hardware/ or models/ to define one)")
    hints.check_name("engine", engine, list(ENGINES))
    hints.check_name("precision", precision, list(PRECISIONS))
    if kv_precision is not None:
        hints.check_name("kv_precision", kv_precision, list(PRECISIONS))
    if not isinstance(percentile, str):
        hints.check_percentile(np.max(np.asarray(percentile, float)) if np.size(percentile) else percentile)


def _describe(x, fmt="{:g}"):
    """A number, or 'a to b' for an array of them (netCDF attributes are scalars or strings)."""
    arr = np.unique(np.asarray(x, float))
    return float(arr[0]) if arr.size == 1 else f"{fmt.format(arr.min())} to {fmt.format(arr.max())}"


def assumptions(hardware, model, *, engine="current", precision="bf16", percentile=0.99, dispatch="auto",
                arrival_ca2=1.0, kv_bandwidth=None, price=None, rate=None, kv_precision=None) -> dict:
    """The assumptions behind an answer, as netCDF attributes (every dataset and file of evaluate, top-k, Pareto
    and budget answers carries them; `frontier eval` prints them): the GPU price in USD per GPU-hour with its
    source and date, the KV bandwidth per prefill GPU and where it comes from, engine, precision (of the weights
    and of the KV cache), percentile, dispatch, arrivals."""
    from .costmodel.catalog import hardware_info
    from .costmodel.kernel import latency_paths
    if isinstance(hardware, str):
        info = hardware_info(hardware)
        p = info.get("price", {})
        cat_price, p_src, p_date = float(p.get("value")), str(p.get("source", "")), str(p.get("date", ""))
        nic = float(info.get("nic_bandwidth", {}).get("value"))
        nic_src = str(info.get("nic_bandwidth", {}).get("source", ""))
    else:
        cat_price, p_src, p_date = float(np.asarray(hardware.price)), "the Hardware object given", ""
        nic, nic_src = float(np.asarray(hardware.nic_bandwidth)), "the Hardware object given"
    ca2 = np.unique(np.asarray(arrival_ca2, dtype=float))
    arrivals = ("Poisson" if np.all(ca2 == 1.0) else f"renewal, inter-arrival SCV {ca2.min():g} to {ca2.max():g}"
                if ca2.size > 1 else f"renewal, inter-arrival SCV {ca2[0]:g}")
    return {
        "hardware": str(hardware) if isinstance(hardware, str) else "Hardware object",
        "model": str(model) if isinstance(model, str) else "Model object",
        "price": cat_price if price is None else _describe(price),
        "price_units": "USD/GPU-hour",
        "price_source": f"catalogue ({p_src})" if price is None else "given (--price / price=)",
        "price_date": p_date if price is None else "",
        "kv_bandwidth": nic if kv_bandwidth is None else _describe(kv_bandwidth),
        "kv_bandwidth_units": "byte s-1 per prefill GPU",
        "kv_bandwidth_source": (f"the GPU's scale-out NIC ({nic_src})" if kv_bandwidth is None
                                else "given (--kv-bandwidth / kv_bandwidth=)"),
        "engine": str(engine), "precision": str(precision),
        "kv_precision": (str(precision) + " (the weights')") if kv_precision is None else str(kv_precision),
        "percentile": str(percentile) if isinstance(percentile, str) else _describe(percentile),
        "dispatch": str(dispatch) + (" (a central queue for the prefill pool, JSQ elsewhere)"
                                     if dispatch == "auto" else ""),
        "arrivals": arrivals,
        "sizing": "fluid (largest compliant rate per GPU)" if rate is None else f"rate {_describe(rate)} requests/s",
        "latency_path": (latency_paths([hardware], [str(engine)]) if isinstance(hardware, str) else
                         latency_paths(["the Hardware object given"], [str(engine)])),
    }


ASSUMPTION_KEYS = ("price", "price_units", "price_source", "price_date", "kv_bandwidth", "kv_bandwidth_units",
                   "kv_bandwidth_source", "engine", "precision", "kv_precision", "percentile", "dispatch", "arrivals",
                   "sizing",
                   "latency_path")


def _prepare(hardware, model, kw):
    """Validated, flattened (point, demand, price) inputs, the search space, the batch shape and the attributes."""
    _check_names(hardware, model, kw["engine"], kw["precision"], kw["percentile"], kw.get("decode_hardware"),
                 kw.get("kv_precision"))
    pins = {k: kw.pop(k) for k in ("tp", "tp_prefill", "tp_decode", "chunk", "overlap")}
    space = search_space(**pins)
    point, demand, price_arr = inputs.build(hardware, model, **kw)
    shape = price_arr.shape
    if len(shape) > 1:
        raise FrontierError("evaluate takes scalars or 1-D arrays; use a sweep spec for grids")
    flat = jax.tree.map(lambda x: jnp.reshape(jnp.broadcast_to(x, shape), (-1,)), (point, demand, price_arr))
    attrs = {"title": "frontier-jax evaluation",
             **assumptions(hardware, model, engine=kw["engine"], precision=kw["precision"],
                           kv_precision=kw.get("kv_precision"), percentile=kw["percentile"], dispatch=kw["dispatch"],
                           arrival_ca2=kw["arrival_ca2"],
                           kv_bandwidth=kw["kv_bandwidth"], price=kw["price"], rate=kw["rate"]),
             "inputs": json.dumps(dict(hardware=str(hardware), model=str(model), engine=kw["engine"],
                                       precision=kw["precision"], kv_precision=kw.get("kv_precision"),
                                       percentile=str(kw["percentile"]),
                                       rate=None if kw["rate"] is None else str(kw["rate"])))}
    return flat, space, shape, attrs


def _evaluate_configs(hardware, model, **kw):
    """Every configuration's outputs ({name: (N, points, arch...)}), valid (N, 3) and the attributes."""
    from .planning import per_configuration
    kw = {**_EVALUATE_DEFAULTS, **kw}
    flat, space, _, attrs = _prepare(hardware, model, kw)
    out, valid = per_configuration(flat, space)
    return out, valid, attrs


def evaluate(hardware="h100-80gb-sxm", model="llama-3.1-70b", input_len=2048, output_len=256, ttft=2.0, tpot=0.05,
             percentile=0.99, rate=None, kv_bandwidth=None, total_gpus=None, *, engine="current", precision="bf16",
             input_cv=0.0, output_cv=0.0, arrival_ca2=1.0, cache_hit=0.0, slo_scale=1.0, price=None,
             hbm_bandwidth_scale=1.0, flops_scale=1.0, tp=None, tp_prefill=None, tp_decode=None, chunk=None,
             n_prefill=None, n_decode=None, overlap=None, decode_hardware=None, decode_price=None,
             cache_load_bandwidth=None, dispatch="auto", top=None, gpus=None, kv_precision=None) -> xr.Dataset:
    """Cost per SLO-compliant token of colocated, chunked and disaggregated serving for one scenario.

    SI units: lengths in tokens, ttft/tpot in s, rate in requests/s, kv_bandwidth in bytes/s per prefill GPU
    (default: the GPU's scale-out NIC), price in USD per GPU-hour (default: the catalogue's). `rate=None` gives the
    fluid cost at the largest compliant rate per GPU; a rate sizes an integral deployment (capped by total_gpus).
    `decode_hardware` puts the disaggregated decode pool on another GPU (priced at `decode_price`, default its
    catalogue price); `cache_load_bandwidth` (bytes/s per prefill GPU) loads prefix-cache hits from a global cache.
    `precision` is the weights' ("bf16", "fp8"); `kv_precision` the KV cache's (None: the same; vLLM keeps a BF16
    cache for FP8 weights unless started with --kv-cache-dtype fp8, so `kv_precision="bf16"` models its default).
    Numeric inputs may be 1-D arrays of one common length (dimension `point`). Infeasible contracts come back
    with feasible = 0, NaN costs and a reason, never an exception; user mistakes raise FrontierError.

    Pinned choices (tp, tp_prefill, tp_decode, chunk, overlap) are data: new values do not compile again.
    `top=k`: the k cheapest configurations per architecture instead (dimension `rank`, planning.ranked_dataset).
    `gpus=N`: the largest SLO-compliant load each architecture carries on exactly N GPUs (planning.budget).
    Every answer's attributes hold its assumptions (price and its source and date, KV bandwidth, engine,
    precision, percentile, dispatch, arrivals: `assumptions`).
    """
    kw = dict(input_len=input_len, output_len=output_len, ttft=ttft, tpot=tpot, percentile=percentile, rate=rate,
              kv_bandwidth=kv_bandwidth, total_gpus=total_gpus, engine=engine, precision=precision,
              input_cv=input_cv, output_cv=output_cv, arrival_ca2=arrival_ca2, cache_hit=cache_hit,
              slo_scale=slo_scale, n_prefill=n_prefill, n_decode=n_decode, price=price,
              hbm_bandwidth_scale=hbm_bandwidth_scale, flops_scale=flops_scale, decode_hardware=decode_hardware,
              decode_price=decode_price, cache_load_bandwidth=cache_load_bandwidth, dispatch=dispatch, tp=tp,
              tp_prefill=tp_prefill, tp_decode=tp_decode, chunk=chunk, overlap=overlap, kv_precision=kv_precision)
    if gpus is not None:
        if top is not None:
            raise FrontierError("gpus= and top= are separate questions; ask one at a time")
        from .planning import budget
        rest = {k: v for k, v in kw.items() if k not in ("input_len", "output_len", "ttft", "tpot")
                and not (k in ("rate", "total_gpus") and v is None)}
        return budget(gpus, hardware, model, input_len, output_len, ttft, tpot, **rest)
    flat, space, shape, attrs = _prepare(hardware, model, kw)
    if top is not None:
        from .planning import per_configuration, ranked_dataset
        inputs.check_number("top", top, integer=True)
        out, valid = per_configuration(flat, space)
        ds = ranked_dataset(out, valid, int(top), scalar=not shape)
        ds.attrs.update(attrs)
        ds.attrs["title"] = f"frontier-jax: the {int(top)} cheapest configurations per architecture"
        return ds
    out = _kernel(*flat, space_arrays(space))._asdict()
    lead = ("point",) if shape else ()
    out = {k: (np.asarray(v) if shape else np.asarray(v)[0]) for k, v in out.items()}
    return to_dataset(out, lead, {}, attrs)


_EVALUATE_DEFAULTS = dict(percentile=0.99, rate=None, kv_bandwidth=None, total_gpus=None, engine="current",
                          precision="bf16", input_cv=0.0, output_cv=0.0, arrival_ca2=1.0, cache_hit=0.0,
                          slo_scale=1.0, n_prefill=None, n_decode=None, price=None, hbm_bandwidth_scale=1.0,
                          flops_scale=1.0, decode_hardware=None, decode_price=None, cache_load_bandwidth=None,
                          dispatch="auto", tp=None, tp_prefill=None, tp_decode=None, chunk=None, overlap=None,
                          kv_precision=None)


def sweep(spec, out=None, *, overwrite=False, resume=False, chunk=None, progress=False, **run_kw) -> xr.Dataset:
    """Run a sweep spec (a path, TOML text or dict) and return its xarray.Dataset, with the same variables, names
    and units as `frontier sweep`'s file. With `out` the file is written there (overwrite / resume as the CLI's
    --overwrite / --resume) and the dataset is loaded from it; without, a temporary file is used and removed."""
    import shutil
    import tempfile

    from .costmodel.kernel import EXTRA_COORDS, load_sweep_spec, make_kernel, outputs_meta, sweep_assumptions
    from .runner import run_sweep
    s = load_sweep_spec(spec)
    tmp = None
    if out is None:
        tmp = tempfile.mkdtemp(prefix="frontier-sweep-")
        out = os.path.join(tmp, f"{s.name}.nc")
    try:
        summary = run_sweep(s, make_kernel(s), outputs_meta(), out, extra_coords=EXTRA_COORDS, chunk=chunk,
                            resume=resume, overwrite=overwrite, progress=progress, attrs=sweep_assumptions(s), **run_kw)
        with xr.open_dataset(summary.out_path) as ds:
            return ds.load()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _resolve(hardware, model, engine, precision, kv_precision=None):
    """(Hardware, Model, engine terms, FP8 flag of the weights, FP8 flag of the KV cache)."""
    return (load_hardware(hardware), load_model(model), inputs.engine_efficiency(engine), precision_flag(precision),
            kv_precision_flag(precision, kv_precision))


def prefill_time(hardware, model, tokens, tp, batch=1, *, engine="current", precision="bf16", kv_precision=None):
    """Seconds of one prefill iteration over `batch` prompts of `tokens` tokens on a TP group of `tp` GPUs
    (`kv_precision` None: the KV cache in the weights' precision)."""
    hw, md, eff, fp8, kv = _resolve(hardware, model, engine, precision, kv_precision)
    return lat.prefill_seconds(hw, md, eff, jnp.asarray(tokens, float), jnp.asarray(tp, float),
                               jnp.asarray(batch, float), jnp.asarray(fp8), jnp.asarray(kv))


def decode_step_time(hardware, model, batch, context, tp, *, engine="current", precision="bf16", kv_precision=None):
    """Seconds of one decode iteration of `batch` sequences at mean context `context` (tokens) on `tp` GPUs."""
    hw, md, eff, fp8, kv = _resolve(hardware, model, engine, precision, kv_precision)
    return lat.decode_seconds(hw, md, eff, jnp.asarray(batch, float), jnp.asarray(context, float),
                              jnp.asarray(tp, float), jnp.asarray(fp8), jnp.asarray(kv))


@jax.jit
def _closed_loop_batch(hw, md, eff, fp8, kv, i, o, n, g, c):
    """closed_loop over 1-D arrays; the catalogue objects are traced arrays, so this compiles once per length."""
    def one(i, o, n, g, c):
        sc = Scenario.build(input_len=i, output_len=o, ttft=1.0, tpot=1.0, q=0.5, mean_mode=1.0, fp8=fp8,
                            kv_fp8=kv)
        return _closed_loop(Point(hw, md, eff, sc), g, c, n)
    return jax.vmap(one)(i, o, n, g, c)


def closed_loop(hardware, model, input_len, output_len, concurrency, tp, *, engine="current", precision="bf16",
                chunk=2048.0, kv_precision=None):
    """Mean TTFT (s), mean TPOT (s) and throughput (requests/s) of one aggregated (chunked-prefill) instance with
    `concurrency` requests always in flight, as serving benchmarks measure. Every number may be an array."""
    for name, v in (("input_len", input_len), ("output_len", output_len), ("concurrency", concurrency), ("tp", tp)):
        inputs.check_number(name, v)
    hw, md, eff, fp8, kv = _resolve(hardware, model, engine, precision, kv_precision)
    args = [jnp.asarray(x, float) for x in (input_len, output_len, concurrency, tp, chunk)]
    shape = jnp.broadcast_shapes(*(a.shape for a in args))
    flat = [jnp.broadcast_to(a, shape).ravel() for a in args]
    dt = flat[0].dtype
    as_dt = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, dt), tree)  # noqa: E731
    ttft, tpot, x = _closed_loop_batch(as_dt(hw), as_dt(md), as_dt(eff), jnp.asarray(fp8, dt), jnp.asarray(kv, dt),
                                       *flat)
    return ttft.reshape(shape), tpot.reshape(shape), x.reshape(shape)

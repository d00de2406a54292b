"""The capacity planner's view of one scenario: every configuration ranked by cost (`ranked`, `evaluate(top=k)`),
the Pareto view of output tokens/s per GPU against tokens/s per user (`pareto`), the largest SLO-compliant load a
fixed number of GPUs carries (`budget`), and the assumptions behind an answer (`assumptions`).

Each configuration is evaluated by the same model and code path as `evaluate`, with the search space reduced to
that one configuration (api._kernel with the configuration pinned: pins are data, so evaluate's one compiled
program serves every configuration).
Colocated: TP; chunked: TP x chunk; disaggregated: prefill TP x decode TP (with layer-wise overlap, which
dominates: costmodel.search.searched_overlaps). Ranks are by cost per SLO-compliant output token, infeasible
configurations last (NaN). `evaluate`'s answer is the cheapest of its search; rank 1 is the same configuration
with the same numbers (tests/test_planning.py checks it).
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import xarray as xr

from .costmodel.search import searched_overlaps
from .costmodel.types import ARCHS, INFEASIBLE_NAMES, Arch, SearchSpace
from .errors import FrontierError
from .variables import ARCH_COORD, PLANNING, POINT

# What a ranked (or Pareto) row reports, from the model's outputs; tokens_per_user is 1 / tpot_achieved.
RANK_FIELDS = ("cost_per_mtok", "prefill_cost", "decode_cost", "kv_tax", "idle_cost", "ttft_achieved",
               "tpot_achieved", "goodput", "throughput", "gpus", "tp_prefill", "tp_decode", "n_prefill", "n_decode",
               "chunk", "overlap", "feasible", "reason")


def configurations(space: SearchSpace) -> tuple[dict, np.ndarray]:
    """Single-configuration search spaces (a dict of (N, 1) arrays) covering every configuration of each
    architecture, and valid (N, 3): whether entry j is a distinct configuration of architecture a (entries are
    shared between architectures: entry j is chunked configuration j, disaggregated configuration j, and colocated
    configuration j / len(chunk) when j is a multiple of len(chunk))."""
    tp, ch = [float(x) for x in space.tp], [float(x) for x in space.chunk]
    tpp, tpd = [float(x) for x in space.tp_prefill], [float(x) for x in space.tp_decode]
    ov = [float(x) for x in searched_overlaps(space)]
    chunked = [(t, c) for t in tp for c in ch]
    dis = [(a, b, o) for a in tpp for b in tpd for o in ov]
    n = max(len(chunked), len(dis))
    rows = {"tp": [], "chunk": [], "tp_prefill": [], "tp_decode": [], "overlap": []}
    valid = np.zeros((n, len(ARCHS)), bool)
    for j in range(n):
        t, c = chunked[j % len(chunked)]
        a, b, o = dis[j % len(dis)]
        for k, v in zip(rows, (t, c, a, b, o)):
            rows[k].append([v])
        valid[j, Arch.CHUNKED] = j < len(chunked)
        valid[j, Arch.COLOCATED] = j < len(chunked) and j % len(ch) == 0
        valid[j, Arch.DISAGGREGATED] = j < len(dis)
    dt = jnp.result_type(float)
    return {k: jnp.asarray(v, dt) for k, v in rows.items()}, valid


def per_configuration(flat, space: SearchSpace) -> tuple[dict, np.ndarray]:
    """The model's outputs at every configuration: {name: (N, points, ...)} and valid (N, 3). Each configuration
    runs `evaluate`'s own compiled program with that configuration pinned (pins are data: no compilation beyond
    evaluate's one)."""
    from .api import _kernel, search_space, space_arrays
    cfgs, valid = configurations(space)
    outs = []
    for j in range(valid.shape[0]):
        pinned = search_space(tp=float(cfgs["tp"][j, 0]), chunk=float(cfgs["chunk"][j, 0]),
                              tp_prefill=float(cfgs["tp_prefill"][j, 0]), tp_decode=float(cfgs["tp_decode"][j, 0]),
                              overlap=float(cfgs["overlap"][j, 0]))
        outs.append(_kernel(*flat, space_arrays(pinned))._asdict())
    out = {k: np.stack([np.asarray(o[k]) for o in outs]) for k in outs[0]}
    return out, valid


def rank_order(cost: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Indices over the configuration axis (0) of `cost` (N, points, arch), cheapest first; infeasible (NaN) and
    invalid entries last, in configuration order (a stable sort)."""
    c = np.where(valid[:, None, :] & np.isfinite(cost), cost, np.inf)
    return np.argsort(c, axis=0, kind="stable")


def ranked_dataset(out: dict, valid: np.ndarray, k: int, scalar: bool) -> xr.Dataset:
    """The k cheapest configurations per architecture (and point) as a Dataset with a `rank` dimension (1..k);
    rows past the feasible ones are NaN / infeasible."""
    order = rank_order(out["cost_per_mtok"], valid)[:k]             # (k, points, arch)
    nvalid = valid.sum(axis=0)                                       # per arch
    data = {}
    for name in RANK_FIELDS:
        x = np.take_along_axis(out[name], order, axis=0)
        if x.dtype.kind == "f":
            feasible = np.take_along_axis(out["feasible"], order, axis=0).astype(bool)
            keep = feasible if name not in ("reason",) else np.ones_like(feasible)
            x = np.where(keep, x, np.nan) if name not in ("feasible", "reason") else x
        data[name] = x
    # a configuration listed twice (fewer configurations than k): blank the repeats
    real = np.arange(order.shape[0])[:, None, None] < nvalid[None, None, :]
    for name in data:
        if data[name].dtype.kind == "f":
            data[name] = np.where(real, data[name], np.nan)
    data["feasible"] = np.where(real, data["feasible"], 0).astype(np.int8)
    data["reason"] = np.where(real, data["reason"], 0).astype(np.int8)
    with np.errstate(divide="ignore", invalid="ignore"):
        data["tokens_per_user"] = 1.0 / data["tpot_achieved"]
    vars_ = {}
    for name, x in data.items():
        v = POINT.get(name) or PLANNING[name]
        x = np.moveaxis(x, 0, -2)                                    # (points, rank, arch)
        vars_[name] = (("point", "rank", "arch") if not scalar else ("rank", "arch"), x[0] if scalar else x,
                       v.attrs())
    ds = xr.Dataset(vars_, coords={"rank": ("rank", np.arange(1, k + 1), {"long_name": "rank by cost per "
                                                                       "SLO-compliant output token (1: cheapest)"}),
                                   ARCH_COORD[0]: ARCH_COORD})
    return ds


def reason_name(code) -> str:
    """The name of an Infeasible code (`reason` variable)."""
    code = int(code)
    return INFEASIBLE_NAMES[code] if 0 <= code < len(INFEASIBLE_NAMES) else str(code)


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True where (x, y) is not dominated (another point with x' >= x and y' >= y, one strictly): both maximised.
    NaN points are never on the front."""
    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    front = np.zeros(x.shape, bool)
    idx = np.flatnonzero(ok)
    for i in idx:
        dominated = np.any((x[idx] >= x[i]) & (y[idx] >= y[i]) & ((x[idx] > x[i]) | (y[idx] > y[i])))
        front[i] = not dominated
    return front


def pareto(hardware="h100-80gb-sxm", model="llama-3.1-70b", input_len=2048, output_len=256, ttft=2.0,
           tpot=(0.015, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2), **kw) -> xr.Dataset:
    """Output tokens/s per GPU (`throughput`) against output tokens/s per user (`tokens_per_user` = 1 / TPOT at
    the operating point) of every configuration of each architecture, at the largest compliant load under each
    TPOT bound of `tpot` (looser bounds: larger batches, more tokens per GPU, fewer per user). Dims (tpot, config,
    arch); `on_front` marks each architecture's Pareto front over configurations and bounds (both maximised)."""
    from .api import _evaluate_configs
    bounds = np.asarray(tpot, float).ravel()
    if bounds.size < 1:
        raise FrontierError("pareto needs at least one tpot bound")
    out, valid, attrs = _evaluate_configs(hardware=hardware, model=model, input_len=input_len,
                                          output_len=output_len, ttft=ttft, tpot=bounds, **kw)
    n = valid.shape[0]
    data = {}
    for name in ("throughput", "tpot_achieved", "ttft_achieved", "cost_per_mtok", "gpus", "tp_prefill",
                 "tp_decode", "n_prefill", "n_decode", "chunk", "feasible"):
        x = np.moveaxis(out[name], 0, 1).astype(float)               # (tpot, config, arch)
        data[name] = np.where(valid[None], x, np.nan)
    ok = (data["feasible"] == 1) & valid[None]
    for name in data:
        if name != "feasible":
            data[name] = np.where(ok, data[name], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        data["tokens_per_user"] = 1.0 / data["tpot_achieved"]
    front = np.zeros(data["throughput"].shape, bool)
    for a in range(len(ARCHS)):
        front[..., a] = pareto_mask(data["tokens_per_user"][..., a], data["throughput"][..., a]).reshape(
            front[..., a].shape)
    data["on_front"] = front.astype(np.int8)
    data["feasible"] = np.nan_to_num(data["feasible"]).astype(np.int8)
    vars_ = {k: (("tpot", "config", "arch"), v, (POINT.get(k) or PLANNING[k]).attrs()) for k, v in data.items()}
    ds = xr.Dataset(vars_, coords={"tpot": ("tpot", bounds, {"units": "s", "long_name": "time-per-output-token "
                                                             "bound"}),
                                   "config": ("config", np.arange(n), {"long_name": "configuration index"}),
                                   ARCH_COORD[0]: ARCH_COORD})
    ds.attrs.update(attrs)
    ds.attrs["title"] = "frontier-jax Pareto view: output tokens/s per GPU against tokens/s per user"
    return ds


BUDGET_GRID = 40  # rates per refinement pass of `budget`


def budget(gpus: int, hardware="h100-80gb-sxm", model="llama-3.1-70b", input_len=2048, output_len=256, ttft=2.0,
           tpot=0.05, **kw) -> xr.Dataset:
    """With exactly `gpus` GPUs: the largest SLO-compliant request rate each architecture carries (whole instances,
    at most `gpus` GPUs deployed), found on a geometric grid of rates refined once (relative resolution
    `rate_resolution`), with the deployment and its cost there; `budget_cost_per_mtok` charges all `gpus` GPUs.
    `best_arch` is the architecture that carries the most load. At a given rate every configuration's cost is its
    GPU count times one price, so the cheapest deployment is also the one with the fewest GPUs and "fits in N" is
    exact; with `decode_hardware` at another price the cheapest may not be the smallest, and a rate that only a
    dearer, smaller deployment fits is missed (the answer is then a lower bound)."""
    from .api import evaluate
    from .costmodel import inputs as _inputs
    _inputs.check_number("gpus", gpus, integer=True)
    gpus = int(gpus)
    for k in ("rate", "total_gpus"):
        if k in kw:
            raise FrontierError(f"budget finds the rate for a GPU budget: drop {k}=")
    fluid = evaluate(hardware, model, input_len, output_len, ttft, tpot, **kw)
    top = float(np.nanmax(fluid["goodput"].values * 1.0)) if np.any(np.isfinite(fluid["goodput"].values)) else 0.0
    archs = len(ARCHS)
    best_rate = np.full(archs, np.nan)
    rows = [None] * archs
    if top > 0:
        grid = top * gpus * np.geomspace(1e-3, 1.05, BUDGET_GRID)
        for _ in range(2):
            ds = evaluate(hardware, model, input_len, output_len, ttft, tpot, rate=grid, total_gpus=gpus, **kw)
            feas = ds["feasible"].values.astype(bool)                  # (point, arch)
            for a in range(archs):
                hits = np.flatnonzero(feas[:, a])
                if hits.size and not (best_rate[a] >= grid[hits[-1]]):
                    best_rate[a] = grid[hits[-1]]
                    rows[a] = ds.isel(point=hits[-1], arch=a)
            if not np.any(np.isfinite(best_rate)):
                break
            step = grid[1] / grid[0]  # refine between the smallest maximum found and one step past the largest
            grid = np.geomspace(np.nanmin(best_rate), min(np.nanmax(best_rate) * step, grid[-1]), BUDGET_GRID)
        resolution = float(grid[1] / grid[0] - 1.0)
    else:
        resolution = float("nan")
    names = ("cost_per_mtok", "ttft_achieved", "tpot_achieved", "throughput", "gpus", "tp_prefill", "tp_decode",
             "n_prefill", "n_decode", "chunk", "overlap")
    data = {k: np.array([float(rows[a][k]) if rows[a] is not None else np.nan for a in range(archs)])
            for k in names}
    data["max_rate"] = best_rate
    from .costmodel.cost import PER_MTOK, SECONDS_PER_HOUR
    price = float(fluid.attrs["price"])
    data["budget_cost_per_mtok"] = gpus * price / SECONDS_PER_HOUR * PER_MTOK / (best_rate * float(output_len))
    vars_ = {k: (("arch",), v, (POINT.get(k) or PLANNING[k]).attrs()) for k, v in data.items()}
    ok = np.isfinite(best_rate)
    best = int(np.nanargmax(np.where(ok, best_rate, -np.inf))) if ok.any() else -1
    ds = xr.Dataset(vars_, coords={ARCH_COORD[0]: ARCH_COORD})
    ds["best_arch"] = ((), np.int8(best), POINT["best_arch"].attrs())
    ds.attrs.update(fluid.attrs)
    ds.attrs.update(title=f"frontier-jax GPU budget: the most SLO-compliant load on {gpus} GPUs", gpu_budget=gpus,
                    rate_resolution=resolution)
    return ds


def needed_gpus(gpus: float) -> int:
    """Whole GPUs (a fluid deployment's fractional count rounded up)."""
    return int(math.ceil(float(gpus) - 1e-9))

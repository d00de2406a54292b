"""The common frame (MODEL.md section 8.2-8.3): every registered system on the same GPU, model and workload; cost
per SLO-compliant token as a function of the contract (p99 TTFT bound x p99 TPOT bound); the Pareto frontier is
the lower envelope over systems, labelled with the winning system; the same on A100, H100 and H200.

Rules of the frame (also in the dataset's attributes):
- every system runs on the frame's GPU: Splitwise's pools are homogeneous here (its heterogeneous H100/A100
  design is priced in `claims` and by `evaluate_system`), DistServe moves KV over that GPU's NVLink, Splitwise and
  Mooncake over its NIC;
- only systems with the ``prefix_cache`` feature (Mooncake) get the workload's prefix-cache hit ratio (the other
  four, as published, recompute every prompt);
- one engine generation for all (default "current"): the frame compares policies, not implementations.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import xarray as xr

from .claims import workload
from ..variables import POINT, frontier_variables
from .registry import SYSTEMS, get_system, plan_system, run_plans

HARDWARE = ("a100-80gb-sxm", "h100-80gb-sxm", "h200-141gb-sxm")
WORKLOADS = ("sharegpt", "azure_conv_2023", "arxiv_summarization", "mooncake_conversation")
TTFT_RANGE = (0.25, 32.0)   # s, p99 bound
TPOT_RANGE = (0.01, 0.2)    # s, p99 bound
FAMILY = {"colocated": "colocated", "chunked": "colocated", "disaggregated": "disaggregated"}
TIE = 0.01  # relative cost difference below which systems tie on the frontier


def contract_grid(n: int = 8, ttft_range=TTFT_RANGE, tpot_range=TPOT_RANGE):
    """n log-spaced p99 TTFT bounds and n TPOT bounds (s) over the given ranges."""
    return np.geomspace(*ttft_range, n), np.geomspace(*tpot_range, n)


def common_frame(hardware: Sequence[str] = HARDWARE, workloads: Sequence[str] = WORKLOADS, ttft=None, tpot=None,
                 *, n: int = 8, model: str = "llama-3.1-70b", percentile: float = 0.99, engine: str = "current",
                 systems: Sequence[str] | None = None) -> xr.Dataset:
    """Cost per SLO-compliant output token of every system over a contract grid.

    Dims (workload, hardware, ttft, tpot, system); `frontier_cost` and `winner` are the lower envelope over systems.
    ttft/tpot: 1-D arrays of p99 bounds in s (default: n log-spaced values over TTFT_RANGE and TPOT_RANGE).
    """
    names = list(systems) if systems is not None else list(SYSTEMS)
    syss = [get_system(s) for s in names]
    t_grid, p_grid = contract_grid(n)
    ttft = np.asarray(t_grid if ttft is None else ttft, float)
    tpot = np.asarray(p_grid if tpot is None else tpot, float)
    tt, pp = np.meshgrid(ttft, tpot, indexing="ij")
    wls = {w: workload(w) for w in workloads}
    plans, index = [], []
    for w, wl in wls.items():
        for hw in hardware:
            for s in syss:
                kw = dict(hardware=hw, model=model, input_len=wl["input_len"], input_cv=wl["input_cv"],
                          output_len=wl["output_len"], output_cv=wl["output_cv"], ttft=tt.ravel(), tpot=pp.ravel(),
                          percentile=percentile, engine=engine)
                if s.features.get("prefix_cache") and wl["cache_hit"] > 0:
                    kw["cache_hit"] = wl["cache_hit"]
                if s.features.get("pools") is not None:
                    kw["pools"] = None
                plans.append(plan_system(s, **kw))
                index.append((w, hw, s.name))
    results = run_plans(plans)
    shape = (len(wls), len(hardware), len(ttft), len(tpot), len(syss))
    keys = ("cost_per_mtok", "prefill_cost", "decode_cost", "kv_tax", "cost_per_mtok_total", "goodput",
            "ttft_achieved", "tpot_achieved", "feasible")
    arrays = {k: np.full(shape, np.nan) for k in keys}
    pos = {(w, hw, s): (a, b, c) for a, w in enumerate(wls) for b, hw in enumerate(hardware)
           for c, s in enumerate(names)}
    for (w, hw, s), res in zip(index, results):
        a, b, c = pos[(w, hw, s)]
        for name in keys:
            arrays[name][a, b, :, :, c] = np.asarray(res[name], float).reshape(len(ttft), len(tpot))
    cost = arrays["cost_per_mtok"]
    finite = np.isfinite(cost)
    safe = np.where(finite, cost, np.inf)
    winner = np.where(finite.any(-1), np.argmin(safe, -1), -1).astype(np.int8)
    frontier_cost = np.where(finite.any(-1), np.min(safe, -1), np.nan)
    with np.errstate(invalid="ignore"):
        n_tied = np.sum(safe <= frontier_cost[..., None] * (1.0 + TIE), -1).astype(np.int8)
    fam = np.asarray([FAMILY[s.arch] for s in syss])
    best_col = np.min(np.where(fam == "colocated", safe, np.inf), -1)
    best_dis = np.min(np.where(fam == "disaggregated", safe, np.inf), -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        advantage = np.log(best_col) - np.log(best_dis)
    advantage = np.where(np.isfinite(advantage), advantage, np.nan)

    dims5 = ("workload", "hardware", "ttft", "tpot", "system")
    dims4 = dims5[:-1]
    data = {name: (dims5, arrays[name], POINT[name].attrs()) for name in keys if name != "feasible"}
    data["feasible"] = (dims5, np.nan_to_num(arrays["feasible"]).astype(np.int8), POINT["feasible"].attrs())
    values = {"frontier_cost": frontier_cost, "winner": winner, "n_tied": n_tied, "advantage": advantage}
    for v in frontier_variables(names, TIE):
        data[v.name] = (dims4, values[v.name].astype(v.dtype), v.attrs())
    coords = {
        "workload": ("workload", list(wls), {"long_name": "workload (workloads.csv; sharegpt: vLLM paper)"}),
        "hardware": ("hardware", list(hardware), {"long_name": "GPU (catalogue name)"}),
        "ttft": ("ttft", ttft, {"units": "s", "long_name": f"TTFT bound at p{percentile * 100:g}"}),
        "tpot": ("tpot", tpot, {"units": "s", "long_name": f"TPOT bound at p{percentile * 100:g}"}),
        "system": ("system", names, {"long_name": "serving system (papers registry)"}),
        "system_arch": ("system", [s.arch for s in syss], {"long_name": "scheduling policy of the system"}),
        "input_len": ("workload", [wls[w]["input_len"] for w in wls], {"units": "1",
                                                                       "long_name": "mean prompt length in tokens"}),
        "output_len": ("workload", [wls[w]["output_len"] for w in wls], {"units": "1",
                                                                         "long_name": "mean output length in tokens"}),
        "cache_hit": ("workload", [wls[w]["cache_hit"] for w in wls],
                      {"units": "1", "long_name": "prefix-cache hit ratio (applied to prefix_cache systems only)"}),
    }
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update({"title": "cross-system Pareto frontier of cost per SLO-compliant token",
                     "model": model, "engine": engine, "percentile": percentile, "arrivals": "Poisson",
                     "frame": "same GPU for every pool (Splitwise homogeneous), Mooncake alone gets the "
                              "workload's prefix-cache hits, DistServe KV over NVLink, others over the NIC"})
    return ds


def plot_frontier(ds: xr.Dataset, workloads: Sequence[str] | None = None, hardware: Sequence[str] | None = None):
    """The frontier figure of a `common_frame` dataset: `frontier_jax.plotting.plot_frontier` (kept here for
    `from frontier_jax.papers import plot_frontier`)."""
    from .. import plotting
    return plotting.plot_frontier(ds, workloads, hardware)


__all__ = ["common_frame", "plot_frontier", "contract_grid", "HARDWARE", "WORKLOADS"]

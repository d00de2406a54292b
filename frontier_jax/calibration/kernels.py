"""Fitting kernel latencies to measured vLLM kernel tables (issue 18); the evaluation is frontier_jax.costmodel.kernels.

    python3 -m frontier_jax.calibration.kernels --fit      # refit, rewrite frontier_jax/data/kernel_fit.json
    python3 -m frontier_jax.calibration.kernels --report   # held-out error table (every fifth shape left out)

Data: frontier_jax/data/kernels/*.csv.gz (NVIDIA AIConfigurator perf tables; see the README there). One fitted form
per (GPU, operation, dtype) (the form: frontier_jax.costmodel.kernels), fitted in log space (squared log error) by
Levenberg-Marquardt on a jax.jacfwd Jacobian (numpy solves; no scipy).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import functools
import hashlib
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..costmodel.catalog import load_hardware
from ..costmodel import kernels as kn
from ..costmodel.kernels import (  # noqa: F401  (re-exported: the fitting's vocabulary)
    ALLREDUCE_GPUS, COORDS, FEATURES, GPUS, KERNEL_FIT_FILE, MEMORY_FEATURES, RESIDUAL_FILE, SCALARS, GpuKernels,
    OpFit, KernelSet, allreduce_seconds, allreduce_terms, base_seconds, context_seconds, context_terms, evaluate,
    gemm_seconds, gemm_terms, generation_seconds, generation_terms, load_kernel_fit, read_fit_file)
from ..resources import data_file

TABLES = ("gemm", "context_attention", "generation_attention", "allreduce")
DTYPES = ("bfloat16", "fp8")
ALLREDUCE_IMPL = "vLLM_custom_graph"  # vLLM's CUDA-graph custom all-reduce (what a decode step runs)
HOLDOUT_EVERY = 5
FORM = ("t = t0 + (c^p + m^p)^(1/p); c = F / (P eta_c prod_j sat(x_j)), m = B / (W eta_m prod_j sat(y_j)), "
        "sat(x) = x^a / (x^a + s^a); seconds, FLOPs, bytes")


# ---------------------------------------------------------------------------------------------------- data
def table_rows(name: str) -> dict[str, np.ndarray]:
    """The columns of one copied table (frontier_jax/data/kernels/<name>.csv.gz): numeric as float, others str."""
    with gzip.open(data_file(f"kernels/{name}.csv.gz"), "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for key in rows[0]:
        col = [r[key] for r in rows]
        try:
            out[key] = np.asarray(col, dtype=float)
        except ValueError:
            out[key] = np.asarray(col)
    return out


def table_hashes() -> dict[str, str]:
    """sha256 of each copied table file."""
    return {f"kernels/{t}.csv.gz": hashlib.sha256(data_file(f"kernels/{t}.csv.gz").read_bytes()).hexdigest()
            for t in TABLES}


def _dtype_key(op):
    return "allreduce_dtype" if op == "allreduce" else ("gemm_dtype" if op == "gemm" else "kv_cache_dtype")


def group_data(cols, op, gpu, variant):
    """Rows of one (GPU, op, variant) as (inputs dict, latency s, held-out mask). Variant: dtype, or TP degree for
    the all-reduce. Held out: every fifth (n, k) pair (GEMM), (heads, kv_heads, head_dim) (attention) or message size
    (all-reduce), in sorted order."""
    sel = cols["hardware"] == gpu
    if op == "allreduce":
        sel &= (cols["impl"] == ALLREDUCE_IMPL) & (cols["num_gpus"] == variant)
    else:
        sel &= cols[_dtype_key(op)] == variant
    d = {k: v[sel] for k, v in cols.items()}
    keys = {"gemm": ("n", "k"), "allreduce": ("message_size",)}.get(
        op, ("num_heads", "num_key_value_heads", "head_dim"))
    shape = np.stack([d[k] for k in keys], axis=1)
    uniq, inv = np.unique(shape, axis=0, return_inverse=True)
    held = (inv.reshape(-1) % HOLDOUT_EVERY) == HOLDOUT_EVERY - 1
    return d, d["latency_ms"] * 1e-3, held


def terms_of(op, hw, d, variant):
    """The *_terms of a table's rows (variant: dtype or TP degree)."""
    f8 = 1.0 if variant == "fp8" else 0.0
    if op == "gemm":
        return gemm_terms(hw, d["m"], d["n"], d["k"], f8)
    if op == "context_attention":
        return context_terms(hw, d["batch_size"], d["isl"], 0.0, d["num_heads"], d["num_key_value_heads"],
                             d["head_dim"], f8)
    if op == "generation_attention":
        return generation_terms(hw, d["batch_size"], d["step"], d["num_heads"], d["num_key_value_heads"],
                                d["head_dim"], f8)
    return allreduce_terms(hw, d["message_size"], float(variant))


# ---------------------------------------------------------------------------------------------------- fitting
def _unpack(theta, nc, nm) -> OpFit:
    e = lambda x: jnp.exp(jnp.clip(x, -30.0, 30.0))  # noqa: E731  (keeps a diverging direction finite)
    return OpFit(e(theta[0]), e(theta[1]), e(theta[2]), 1.0 + e(theta[3]), e(theta[4:4 + nc]),
                 e(theta[4 + nc:4 + 2 * nc]), e(theta[4 + 2 * nc:4 + 2 * nc + nm]), e(theta[4 + 2 * nc + nm:]))


def fit_op(terms, seconds, iters=200) -> OpFit:
    """Least-squares fit (log residuals) of the form to measured seconds by Levenberg-Marquardt."""
    cf, mf = terms[4], terms[5]
    nc, nm = len(cf), len(mf)
    med = lambda x: np.log(np.median(np.asarray(x)))  # noqa: E731
    theta = np.concatenate([[np.log(0.7 * seconds.min()), np.log(0.7), np.log(0.7), np.log(3.0)],
                            [med(x) for x in cf], np.zeros(nc), [med(x) for x in mf], np.zeros(nm)])
    y = jnp.log(jnp.asarray(seconds))
    resid = jax.jit(lambda th: jnp.log(base_seconds(_unpack(th, nc, nm), terms)) - y)
    jac = jax.jit(jax.jacfwd(lambda th: jnp.log(base_seconds(_unpack(th, nc, nm), terms))))
    r = np.asarray(resid(theta))
    cost, lam = r @ r, 1e-3
    for _ in range(iters):
        J = np.asarray(jac(theta))
        g, H = J.T @ r, J.T @ J
        improved = False
        while lam < 1e10:
            step = np.linalg.solve(H + lam * (np.diag(np.diag(H)) + 1e-9 * np.eye(len(theta))), -g)
            rn = np.asarray(resid(theta + step))
            if np.all(np.isfinite(rn)) and rn @ rn < cost:
                improved = cost - rn @ rn > 1e-12 * cost
                theta, r, cost, lam = theta + step, rn, rn @ rn, max(lam / 5.0, 1e-12)
                break
            lam *= 5.0
        if not improved:
            break
    fit = _unpack(jnp.asarray(theta), nc, nm)
    axes, grid = residual_grid([np.asarray(c) for c in terms[6]], -r)  # log(measured / form)
    return fit._replace(axes=axes, residual=grid)


def residual_grid(coords, resid):
    """(axes, grid): log residuals of the rows on the grid of their coordinates' distinct values (log); a cell
    without a row takes the mean of its filled axis neighbours, repeatedly, until every cell is filled."""
    axes = [np.unique(np.log(c)) for c in coords]
    idx = tuple(np.searchsorted(a, np.log(c)) for a, c in zip(axes, coords))
    total, count = np.zeros([a.size for a in axes]), np.zeros([a.size for a in axes])
    np.add.at(total, idx, resid)
    np.add.at(count, idx, 1.0)
    grid = np.where(count > 0, total / np.maximum(count, 1.0), np.nan)
    while np.isnan(grid).any():
        acc, num = np.zeros_like(grid), np.zeros_like(grid)
        for ax in range(grid.ndim):
            for shift in (1, -1):
                nb = np.roll(grid, shift, axis=ax)
                edge = [slice(None)] * grid.ndim
                edge[ax] = 0 if shift == 1 else -1
                nb[tuple(edge)] = np.nan  # no wrap-around
                ok = ~np.isnan(nb)
                acc += np.where(ok, nb, 0.0)
                num += ok
        grid = np.where(np.isnan(grid) & (num > 0), acc / np.maximum(num, 1.0), grid)
    return tuple(jnp.asarray(a) for a in axes), jnp.asarray(grid)


def _errors(fit, terms, seconds, form_only=False):
    rel = np.abs(np.asarray((base_seconds if form_only else evaluate)(fit, terms)) / seconds - 1.0)
    return float(np.median(rel)), float(np.percentile(rel, 90)), int(rel.size)


def _subset(terms, mask):
    pick = lambda x: x[mask] if np.ndim(x) else x  # noqa: E731
    return (pick(terms[0]), pick(terms[1]), terms[2], terms[3], tuple(pick(x) for x in terms[4]),
            tuple(pick(x) for x in terms[5]), tuple(pick(x) for x in terms[6]))


def _variants(op, gpu):
    if op == "allreduce":
        return ALLREDUCE_GPUS
    return DTYPES if gpu != "a100-80gb-sxm" else ("bfloat16",)


def fit_all(holdout: bool = False, log=print) -> tuple[dict, list[dict]]:
    """Fit every (GPU, op, variant). holdout: fit on the kept rows only and report errors on the held-out rows;
    otherwise fit on all rows and report the in-sample errors. Returns ({gpu: {op/variant: OpFit}}, error rows)."""
    fits, errs = {}, []
    for op in TABLES:
        cols = table_rows(op)
        for gpu in GPUS:
            hw = load_hardware(gpu)
            for v in _variants(op, gpu):
                d, sec, held = group_data(cols, op, gpu, v)
                terms = terms_of(op, hw, d, v)
                train = ~held if holdout else np.ones_like(held)
                fit = fit_op(_subset(terms, train), sec[train])
                test = held if holdout else train
                med, p90, n = _errors(fit, _subset(terms, test), sec[test])
                fmed, fp90, _ = _errors(fit, _subset(terms, test), sec[test], form_only=True)
                fits.setdefault(gpu, {})[f"{op}/{v}"] = fit
                errs.append(dict(gpu=gpu, op=op, variant=str(v), rows=n, median=med, p90=p90, form_median=fmed,
                                 form_p90=fp90))
                log(f"{gpu:15s} {op:21s} {str(v):9s} rows {n:6d}  median {100 * med:5.1f} %  p90 {100 * p90:5.1f} %"
                    f"  (form alone: {100 * fmed:5.1f} %, {100 * fp90:5.1f} %)")
    return fits, errs


# ---------------------------------------------------------------------------------------------------- storage
def _to_json(fit: OpFit) -> dict:
    return {k: np.asarray(getattr(fit, k)).tolist() for k in SCALARS}


@contextlib.contextmanager
def _replacing(path: Path, mode: str):
    """A file written beside `path` and moved onto it only when complete (never a half-written fit)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode) as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_fit(path=None, log=print) -> dict:
    """Fit on all rows, compute the held-out errors, and write kernel_fit.json (form parameters, sources' sha256,
    errors) and kernel_fit_residuals.npz (the residual grids, float16 log residuals) next to it."""
    fits, insample = fit_all(holdout=False, log=log)
    _, heldout = fit_all(holdout=True, log=log)
    path = Path(path or data_file(KERNEL_FIT_FILE))
    grids = {}
    for g, ops in fits.items():
        for k, f in ops.items():
            grids.update({f"{g}|{k}|axis{j}": np.asarray(a) for j, a in enumerate(f.axes)})
            grids[f"{g}|{k}|residual"] = np.asarray(f.residual, dtype=np.float16)
    npz = path.with_name(RESIDUAL_FILE)
    with _replacing(npz, "wb") as f:
        np.savez_compressed(f, **grids)
    doc = {"form": FORM, "sources": table_hashes(),
           "source_package": "aiconfigurator-core 0.12.0 (NVIDIA, Apache-2.0)",
           "residuals": {RESIDUAL_FILE: hashlib.sha256(npz.read_bytes()).hexdigest()},
           "coordinates": COORDS,
           "features": {op: {"compute": FEATURES[op], "memory": MEMORY_FEATURES[op]} for op in TABLES},
           "fits": {g: {k: _to_json(f) for k, f in ops.items()} for g, ops in fits.items()},
           "in_sample_error": insample, "heldout_error": heldout}
    with _replacing(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    kn._read_all.cache_clear()
    kn._stacked_numpy.cache_clear()
    return doc


def report_table(errors: list[dict]) -> str:
    """Markdown table of error rows (median and p90 relative error, in %; with and without the residual grid)."""
    lines = ["| GPU | operation | dtype / TP | rows | median | p90 | form alone: median | p90 |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for e in errors:
        lines.append(f"| {e['gpu']} | {e['op']} | {e['variant']} | {e['rows']} | {100 * e['median']:.1f} % "
                     f"| {100 * e['p90']:.1f} % | {100 * e['form_median']:.1f} % | {100 * e['form_p90']:.1f} % |")
    return "\n".join(lines)


def main(argv=None) -> None:
    """Command line: --fit rewrites kernel_fit.json; --report prints the held-out table (refits)."""
    ap = argparse.ArgumentParser(prog="python3 -m frontier_jax.calibration.kernels")
    ap.add_argument("--fit", action="store_true", help="refit and rewrite frontier_jax/data/kernel_fit.json")
    ap.add_argument("--report", action="store_true", help="refit with every fifth shape held out; print the table")
    a = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    if a.fit:
        doc = write_fit()
        print(report_table(doc["heldout_error"]))
    elif a.report:
        print(report_table(fit_all(holdout=True)[1]))
    else:
        ap.print_help()


if __name__ == "__main__":
    main()

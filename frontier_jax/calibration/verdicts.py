"""What the measured-kernel engines change: the verdicts before and after (issue 18).

    python -m frontier_jax.calibration.verdicts [--out DIR]    # markdown on stdout, the datasets in DIR

The same questions answered twice, once with the roofline engines (`current`, and `vllm-2023` for the published
claims) and once with their measured-kernel forms (`current-kernels`, `vllm-2023-kernels`):

1. the embedded default grid (sweeps/default.toml): the share of cells each architecture wins, per GPU, and the
   share of cells whose winner changes;
2. the break-even KV bandwidth (sweeps/breakeven_kv.toml, without sensitivities): per GPU and workload, the
   median root over the nine contracts and how many contracts have one;
3. the seed paper's three claims (papers.report.seed_evidence / seed_verdicts);
4. the five papers' published claims (papers.claims.predict_claims): the median |log error|.

Nothing here is fitted: it runs the shipped specs and report code with the engine swapped.
"""
from __future__ import annotations

import argparse
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

from ..resources import shipped_dir

PAIRS = (("current", "current-kernels"),)
CLAIM_PAIR = ("vllm-2023", "vllm-2023-kernels")
ARCH_NAMES = ("colocated", "chunked", "disaggregated")
REUSE = False  # --reuse: take the datasets an earlier run left in --out instead of computing them again


def _spec(name: str, engine: str) -> dict:
    raw = tomllib.loads((shipped_dir("sweeps") / f"{name}.toml").read_text())
    raw.setdefault("fixed", {})["engine"] = engine
    raw["sweep"]["name"] = f"{name}_{engine.replace('-', '_')}"
    return raw


def _saved(out: Path | None, name: str):
    """A dataset an earlier run left in `out` (--reuse), else None."""
    import xarray as xr
    if out is None or not REUSE or not (out / name).is_file():
        return None
    with xr.open_dataset(out / name) as ds:
        return ds.load()


def default_grid(engine: str, out: Path | None):
    """The embedded default sweep with `engine` (saved as DIR/default_ENGINE.nc)."""
    from .. import sweep
    saved = _saved(out, f"default_{engine}.nc")
    if saved is not None:
        return saved
    path = None if out is None else out / f"default_{engine}.nc"
    return sweep(_spec("default", engine), path, overwrite=True)


def winners(ds) -> pd.DataFrame:
    """Share of the grid's cells won by each architecture (and infeasible), per GPU."""
    best = ds["best_arch"]
    rows = []
    for hw in best["hardware"].values:
        b = best.sel(hardware=hw).values.ravel()
        row = {"hardware": str(hw)}
        for k, name in enumerate(ARCH_NAMES):
            row[name] = float(np.mean(b == k))
        row["infeasible"] = float(np.mean(b < 0))
        rows.append(row)
    return pd.DataFrame(rows)


def breakeven_kv(engine: str, out: Path | None):
    """The shipped break-even KV bandwidth surface with `engine`, without sensitivities."""
    from .. import breakeven
    saved = _saved(out, f"breakeven_kv_{engine}.nc")
    if saved is not None:
        return saved
    path = None if out is None else out / f"breakeven_kv_{engine}.nc"
    return breakeven(_spec("breakeven_kv", engine), "kv_bandwidth", path, overwrite=True, wrt=[])


def breakeven_table(ds) -> pd.DataFrame:
    """Median break-even KV bandwidth (GB/s per prefill GPU) over the contracts, per GPU and workload."""
    root = ds["breakeven_kv_bandwidth"]
    rows = []
    for hw in root["hardware"].values:
        for i in root["input_len"].values:
            for o in root["output_len"].values:
                v = root.sel(hardware=hw, input_len=i, output_len=o).values.ravel()
                f = v[np.isfinite(v)]
                rows.append(dict(hardware=str(hw), input_len=int(i), output_len=int(o), found=f"{f.size}/{v.size}",
                                 median_gb_s=float(np.median(f)) / 1e9 if f.size else float("nan")))
    return pd.DataFrame(rows)


def seed(engine: str, out: Path | None):
    """The seed paper's verdicts (papers.report.seed_verdicts) with `engine`."""
    from ..papers.report import seed_evidence, seed_verdicts
    saved = _saved(out, f"seed_{engine}.nc")
    if saved is not None:
        return seed_verdicts(saved)[0]
    ds = seed_evidence(engine=engine)
    if out is not None:
        ds.to_netcdf(out / f"seed_{engine}.nc")
    return seed_verdicts(ds)[0]


def claims(engine: str) -> pd.DataFrame:
    """Every published claim predicted with `engine` (papers.claims.predict_claims)."""
    from ..papers.claims import predict_claims
    return predict_claims(engine=engine)


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def report(out: Path | None = None, log=print) -> str:
    """Run every comparison and return the markdown."""
    md = []
    for before, after in PAIRS:
        t0 = time.perf_counter()
        grids = {e: default_grid(e, out) for e in (before, after)}
        log(f"default grid: {time.perf_counter() - t0:.0f} s")
        w = {e: winners(g) for e, g in grids.items()}
        b0, b1 = (grids[e]["best_arch"].values for e in (before, after))
        md += ["### Default grid (sweeps/default.toml): share of cells won, per GPU", "",
               f"| GPU | {' | '.join(f'{a}, {before} / {after}' for a in ARCH_NAMES)} | infeasible, {before} / "
               f"{after} | winner changed |", "|---|" + "---:|" * (len(ARCH_NAMES) + 2)]
        for k, hw in enumerate(w[before]["hardware"]):
            r0, r1 = w[before].iloc[k], w[after].iloc[k]
            sel = grids[before]["hardware"].values == hw
            changed = float(np.mean(np.take(b0, np.flatnonzero(sel), axis=grids[before]["best_arch"].dims.index(
                "hardware")) != np.take(b1, np.flatnonzero(sel), axis=grids[after]["best_arch"].dims.index(
                    "hardware"))))
            md.append(f"| {hw} | " + " | ".join(f"{_pct(r0[a])} / {_pct(r1[a])}" for a in ARCH_NAMES)
                      + f" | {_pct(r0['infeasible'])} / {_pct(r1['infeasible'])} | {_pct(changed)} |")
        md += ["", f"All cells: winner changed in {_pct(float(np.mean(b0 != b1)))} of {b0.size}.", ""]
        log("\n".join(md))  # so far, in case a later step fails

        t0 = time.perf_counter()
        be = {e: breakeven_table(breakeven_kv(e, out)) for e in (before, after)}
        log(f"break-even: {time.perf_counter() - t0:.0f} s")
        md += ["### Break-even KV bandwidth (sweeps/breakeven_kv.toml): median over the 9 contracts, GB/s per "
               "prefill GPU (contracts with a root in 0.1-1000 GB/s)", "",
               f"| GPU | input | output | {before} | {after} |", "|---|---:|---:|---:|---:|"]
        for k in range(len(be[before])):
            r0, r1 = be[before].iloc[k], be[after].iloc[k]
            md.append(f"| {r0.hardware} | {r0.input_len} | {r0.output_len} | {r0.median_gb_s:.3g} ({r0.found}) | "
                      f"{r1.median_gb_s:.3g} ({r1.found}) |")
        md.append("")
        log("\n".join(md))  # so far, in case a later step fails

        t0 = time.perf_counter()
        sv = {e: seed(e, out) for e in (before, after)}
        log(f"seed claims: {time.perf_counter() - t0:.0f} s")
        md += ["### The seed paper's claims (docs/papers.md section 6)", "",
               f"| claim | {before} | {after} |", "|---|---|---|"]
        for v0, v1 in zip(sv[before], sv[after]):
            extra = lambda v: ", ".join(f"{k} {val:.2f}" for k, val in v.items()  # noqa: E731
                                        if k not in ("claim", "verdict") and isinstance(val, float))
            md.append(f"| {v0['claim']} | {v0['verdict']} ({extra(v0)}) | {v1['verdict']} ({extra(v1)}) |")
        md.append("")
        log("\n".join(md))  # so far, in case a later step fails

    t0 = time.perf_counter()
    c = {e: claims(e) for e in CLAIM_PAIR}
    log(f"published claims: {time.perf_counter() - t0:.0f} s")
    a, b = c[CLAIM_PAIR[0]], c[CLAIM_PAIR[1]]
    md += [f"### Published claims (data/published_claims.csv): predicted, {CLAIM_PAIR[0]} / {CLAIM_PAIR[1]}", "",
           "| claim | published | predicted | log error |", "|---|---:|---:|---:|"]
    for k in range(len(a)):
        md.append(f"| {a.id[k]} | {a.published[k]:.3g} | {a.predicted[k]:.3g} / {b.predicted[k]:.3g} | "
                  f"{a.log_error[k]:+.2f} / {b.log_error[k]:+.2f} |")
    md += ["", f"Median |log error|: {np.nanmedian(a.abs_log_error):.3f} ({CLAIM_PAIR[0]}) / "
           f"{np.nanmedian(b.abs_log_error):.3f} ({CLAIM_PAIR[1]}); within a factor 2: "
           f"{int(np.sum(a.abs_log_error <= np.log(2)))} / {int(np.sum(b.abs_log_error <= np.log(2)))} of {len(a)}.",
           ""]
    return "\n".join(md)


def main(argv=None) -> int:
    """The command line: the markdown on stdout, progress on stderr."""
    import jax
    jax.config.update("jax_enable_x64", True)
    p = argparse.ArgumentParser(prog="python -m frontier_jax.calibration.verdicts", description=__doc__.split("\n")[0])
    p.add_argument("--out", help="directory for the datasets (default: none kept)")
    p.add_argument("--reuse", action="store_true", help="take the datasets already in --out (default: recompute)")
    a = p.parse_args(argv)
    global REUSE
    REUSE = a.reuse
    out = None
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
    print(report(out, log=lambda s: print(s, file=sys.stderr)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

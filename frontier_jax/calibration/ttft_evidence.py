"""Why the closed loop misses the serving runs' TTFT: the evidence in docs/model.md section 10 (issue 18).

    python -m frontier_jax.calibration.ttft_evidence [--engine current-kernels]   # markdown on stdout

From data/measured_serving_current.csv and the closed loop's own predictions (fj.closed_loop at the token budget
the engine is calibrated at, calibration.fit.SERVING_BUDGET, and at the other of vLLM's two defaults as a
sensitivity):

1. a bound from the measured throughput alone: each client's cycle (TTFT + (O - 1) TPOT) holds one prefill of each
   of the N requests in flight, so no prefill takes more than cycle / N of GPU time; a TTFT above it is waiting;
2. the wait beyond the closed loop's prediction, in units of one prefill (fj.prefill_time), by source campaign
   and concurrency, next to the prefill share of the GPU N P / cycle;
3. the one-term harness model (each request waits behind kappa (N - 1) / 2 or kappa log2(N) / 2 extra prefills):
   the best kappa, its in-fit and leave-one-group-out mean |relative TTFT error|.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from ..resources import data_file

HARDWARE = "h100-80gb-sxm"
CAMPAIGN = {"llama-3.1-70b": "Llama-3.1-70B FP8 (AIConfigurator database, measured 2025-10-29)",
            "qwen3-32b": "Qwen3-32B (vLLM 0.12.0 gap-analysis runs)"}
KAPPAS = np.linspace(0.0, 1.0, 401)


def predictions(engine: str, chunk: float) -> pd.DataFrame:
    """The serving runs with the closed loop's TTFT/TPOT (ms) and one prompt's prefill on its own (ms)."""
    from .. import closed_loop, prefill_time
    d = pd.read_csv(data_file("measured_serving_current.csv"))
    out = []
    for (model, prec), g in d.groupby(["model", "precision"]):
        i, o = g.input_len.to_numpy(float), g.output_len.to_numpy(float)
        n, tp = g.concurrency.to_numpy(float), g.tp.to_numpy(float)
        ttft, tpot, _ = closed_loop(HARDWARE, model, i, o, n, tp, engine=engine, precision=prec, chunk=chunk)
        g = g.assign(ttft_pred=np.asarray(ttft) * 1e3, tpot_pred=np.asarray(tpot) * 1e3,
                     prefill=np.asarray(prefill_time(HARDWARE, model, i, tp, engine=engine, precision=prec)) * 1e3)
        out.append(g)
    d = pd.concat(out, ignore_index=True)
    d["group"] = d.model + "/" + d.precision + "/TP" + d.tp.astype(str)
    d["cycle"] = d.ttft_ms + (d.output_len - 1) * d.tpot_ms
    d["excess"] = (d.ttft_ms - d.ttft_pred) / d.prefill
    d["share"] = d.concurrency * d.prefill / d.cycle
    return d


def _err(pred, d):
    return (pred / d.ttft_ms - 1.0).abs()


def harness(d: pd.DataFrame, form: str):
    """Best kappa of the one-term harness model, in-fit mean and leave-one-group-out errors (a Series by row)."""
    extra = (d.concurrency - 1.0) if form == "linear" else np.log2(d.concurrency)

    def best(rows):
        e = [_err(rows.ttft_pred + 0.5 * k * extra[rows.index] * rows.prefill, rows).mean() for k in KAPPAS]
        return KAPPAS[int(np.argmin(e))], float(np.min(e))

    kappa, in_fit = best(d)
    logo = pd.concat([_err(g.ttft_pred + 0.5 * best(d[d.group != name])[0] * extra[g.index] * g.prefill, g)
                      for name, g in d.groupby("group")])
    return kappa, in_fit, logo.sort_index()


def report(engine: str = "current-kernels") -> str:
    """The three pieces of evidence and the token-budget sensitivity, as markdown."""
    from .fit import ROOFLINE_SERVING_BUDGET, SERVING_BUDGET, serving_budget
    from ..costmodel.catalog import load_efficiency
    budget = serving_budget(load_efficiency(engine))
    other = ROOFLINE_SERVING_BUDGET if budget == SERVING_BUDGET else SERVING_BUDGET
    d = predictions(engine, budget)
    md = [f"Engine `{engine}`, {len(d)} runs, token budget {budget:.0f} (as calibrated).", ""]
    above = d.ttft_ms > d.cycle / d.concurrency
    md += ["**1. TTFT above the largest prefill the measured throughput allows (cycle / N):**", ""]
    for model, g in d.groupby("model"):
        md.append(f"- {CAMPAIGN.get(model, model)}: {int(above[g.index].sum())} of {len(g)} runs")
    ex = d[(d.model == "qwen3-32b") & (d.precision == "bf16") & (d.tp == 2) & (d.input_len == 4096)
           & (d.concurrency == 8)]
    for _, r in ex.iterrows():
        md.append(f"- Qwen3-32B BF16 TP2, 4096/{r.output_len}, N = 8: cycle {r.cycle / 1e3:.2f} s, bound "
                  f"{r.cycle / 8 / 1e3:.3f} s, TTFT {r.ttft_ms / 1e3:.3f} s, composed prefill {r.prefill / 1e3:.3f} s, "
                  f"prefill share {100 * r.share:.0f} %")
    md += ["", "**2. Wait beyond the closed loop's prediction, in prefills (median over runs with 512 or more output "
           "tokens), and the prefill share of the GPU:**", ""]
    s = d[d.output_len >= 512]
    ns = sorted(s.concurrency.unique())
    md += ["| campaign | " + " | ".join(f"N = {n}" for n in ns) + " |", "|---|" + "---:|" * len(ns)]
    for (model, prec), g in s.groupby(["model", "precision"]):
        cells = []
        for n in ns:
            h = g[g.concurrency == n]
            cells.append(f"{h.excess.median():+.2f} ({100 * h.share.median():.0f} %)" if len(h) else "")
        md.append(f"| {CAMPAIGN.get(model, model)}, {prec} | " + " | ".join(cells) + " |")
    md += ["", "**3. One-term harness model:**", "",
           f"- none: in-fit mean |TTFT error| {_err(d.ttft_pred, d).mean():.3f}"]
    for form in ("linear", "log2"):
        kappa, in_fit, logo = harness(d, form)
        by = logo.groupby(d.group).mean()
        md.append(f"- kappa {'(N - 1)' if form == 'linear' else 'log2(N)'} / 2 prefills: kappa = {kappa:.3f}, in-fit "
                  f"mean {in_fit:.3f}, leave-one-group-out mean {logo.mean():.3f} (by group: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in by.items()) + ")")
    d8 = predictions(engine, other)
    md += ["", f"**Token budget {other:.0f}** (the stored terms kept): in-fit mean |TTFT error| "
           f"{_err(d8.ttft_pred, d8).mean():.3f} ({budget:.0f}: {_err(d.ttft_pred, d).mean():.3f}), TPOT "
           f"{(d8.tpot_pred / d8.tpot_ms - 1).abs().mean():.3f} "
           f"({budget:.0f}: {(d.tpot_pred / d.tpot_ms - 1).abs().mean():.3f})", ""]
    return "\n".join(md)


def main(argv=None) -> int:
    """The command line: the markdown on stdout."""
    import jax
    jax.config.update("jax_enable_x64", True)
    p = argparse.ArgumentParser(prog="python -m frontier_jax.calibration.ttft_evidence",
                                description=__doc__.split("\n")[0])
    p.add_argument("--engine", default="current-kernels")
    a = p.parse_args(argv)
    print(report(a.engine))
    return 0


if __name__ == "__main__":
    sys.exit(main())

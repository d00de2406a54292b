"""Closed-loop predictions for a model with no calibration rows, next to its composed iteration times (issue 18).

    python -m frontier_jax.calibration.consistency [--model llama-3.1-8b]   # a markdown table on stdout

Llama-3.1-8B has no row in measured_serving_current.csv, so its closed-loop TTFT and TPOT are pure predictions.
They are set next to a time budget built from the two latency primitives alone, independent of the chunked and
closed-loop code: with throughput X (requests/s) and P the time of one request's prefill run on its own, the
instance spends a fraction X P of its time on prefill and runs decode iterations in the rest, so

    TPOT_budget = D(b) / (1 - X P),   b = N (O - 1) TPOT / (TTFT + (O - 1) TPOT)

where D(b) is the decode step at b running sequences (mean context I + O/2) and N the concurrency. The budget
ignores what chunking saves (prefill tokens that ride on a decode iteration's weight read), so it should sit at or
above the closed loop's TPOT, by at most the weight read's share of a prefill.
"""
from __future__ import annotations

import argparse
import sys
from typing import NamedTuple

import numpy as np

INPUT_LEN, OUTPUT_LEN = 1024.0, 512.0
CONCURRENCY = (8.0, 64.0)
TPS = (1.0, 2.0, 4.0, 8.0)
CASES = (("h100-80gb-sxm", "bf16"), ("h200-141gb-sxm", "fp8"))


class Row(NamedTuple):
    """One row of the table: the closed loop's answer and the time budget from the primitives."""

    hardware: str
    precision: str
    engine: str
    tp: float
    concurrency: float
    ttft: float  # s, closed loop
    tpot: float  # s, closed loop
    throughput: float  # requests/s, closed loop
    prefill: float  # s, one prompt's prefill on its own
    decode_step: float  # s, one decode iteration at the closed loop's running batch
    tpot_budget: float  # s, D(b) / (1 - X P)


def rows(model="llama-3.1-8b", engines=("current-kernels", "current"), input_len=INPUT_LEN, output_len=OUTPUT_LEN):
    """Every (case, engine, TP, concurrency) row of the consistency table."""
    import frontier_jax as fj
    tp = np.repeat(np.asarray(TPS), len(CONCURRENCY))
    conc = np.tile(np.asarray(CONCURRENCY), len(TPS))
    out = []
    for hw, prec in CASES:
        for engine in engines:
            ttft, tpot, x = (np.asarray(v) for v in fj.closed_loop(hw, model, input_len, output_len, conc, tp,
                                                                     engine=engine, precision=prec))
            steps = output_len - 1.0
            b = conc * steps * tpot / (ttft + steps * tpot)
            pre = np.asarray(fj.prefill_time(hw, model, input_len, tp, engine=engine, precision=prec))
            dec = np.asarray(fj.decode_step_time(hw, model, b, input_len + output_len / 2, tp, engine=engine,
                                                 precision=prec))
            budget = dec / (1.0 - x * pre)
            out += [Row(hw, prec, engine, *(float(a[i]) for a in (tp, conc, ttft, tpot, x, pre, dec, budget)))
                    for i in range(len(tp))]
    return out


def table(rs) -> str:
    """The rows as a markdown table (times in ms)."""
    head = ("| GPU, precision | engine | TP | N | TTFT ms | TPOT ms | X req/s | prefill ms | D(b) ms | "
            "TPOT budget ms | TPOT / budget |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rs:
        lines.append(f"| {r.hardware}, {r.precision} | {r.engine} | {r.tp:g} | {r.concurrency:g} | "
                     f"{1e3 * r.ttft:.1f} | {1e3 * r.tpot:.2f} | {r.throughput:.2f} | {1e3 * r.prefill:.1f} | "
                     f"{1e3 * r.decode_step:.2f} | {1e3 * r.tpot_budget:.2f} | {r.tpot / r.tpot_budget:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    """Print the consistency table for one model (default Llama-3.1-8B) as markdown."""
    ap = argparse.ArgumentParser(prog="python -m frontier_jax.calibration.consistency")
    ap.add_argument("--model", default="llama-3.1-8b")
    a = ap.parse_args(argv)
    print(f"{a.model}: input {INPUT_LEN:g}, output {OUTPUT_LEN:g} tokens", file=sys.stderr)
    print(table(rows(a.model)))


if __name__ == "__main__":
    main()

"""The serving runs against what the GPU's peak FLOP/s and HBM bandwidth allow (issue 18; docs/model.md section 10).

    python -m frontier_jax.calibration.peak_bound [--budget 8192]   # markdown on stdout

A lower bound on a closed-loop client's cycle, TTFT + (O - 1) TPOT, from the run's recorded configuration (N clients,
I prompt and O output tokens, TP degree), the model's shapes and the catalogue's peaks alone: no latency model, no
fitted number. In steady state one cycle holds N prompts and N (O - 1) decode tokens, and at least O iterations (the
client's own). An iteration runs its kernels one after another on one stream; its GEMMs read every weight once
(at least w seconds at peak HBM bandwidth) and its prompt tokens' GEMM FLOPs take at least g_i at peak FLOP/s, so
the GEMMs take at least max(w, g_i). The decodes' attention is a kernel of its own that reads their KV cache at
most at peak bandwidth. Summed over the cycle's iterations, with at most |P| of them carrying prompt tokens:

    cycle >= (O - |P|) w + G + KV / HBM,  G = N 2 p_linear I / (tp F),  KV = N [(O - 1) I + (O - 1)(O - 2) / 2] kv / tp

(p_linear the parameters of the projections, MLP and LM head, kv the cache's bytes per token). vLLM schedules the
waiting prompts first come, first served into a token budget B shared with the N or fewer running decodes, so a
prompt spans at most 1 + ceil(I / (B - N)) iterations and |P| <= N (1 + ceil(I / (B - N))). Everything left out
(all-reduces, norms, the prompts' attention, KV writes, the framework's own time) only adds time, and every choice
left open is taken in the run's favour (an FP8 run's cache in FP8, every weight in the run's precision). A measured
cycle near the bound needs every kernel at its peak; one below it is not possible with the recorded configuration.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from ..resources import data_file

HARDWARE = "h100-80gb-sxm"


def linear_params(model) -> float:
    """Weights a dense iteration's GEMMs read: per layer the QKV and output projections and the three MLP matrices,
    and the LM head (the input embedding is a gather, not read whole)."""
    h, hd = float(model.hidden), float(model.head_dim)
    q, kv, f = float(model.q_heads), float(model.kv_heads), float(model.ffn)
    per_layer = h * (q + 2 * kv) * hd + q * hd * h + 3 * h * f
    return float(model.layers) * per_layer + h * float(model.vocab)


def bounds(d: pd.DataFrame, budget: float = 8192.0) -> pd.DataFrame:
    """`d` (the serving runs' columns) with the bound's parts in seconds and `ratio` = bound / measured cycle."""
    from ..costmodel import catalog
    hw = catalog.load_hardware(HARDWARE)
    bw = float(hw.hbm_bandwidth)
    out = []
    for _, r in d.iterrows():
        md = catalog.load_model(r.model)
        fp8 = r.precision == "fp8"
        width = 1.0 if fp8 else 2.0
        flops = float(hw.fp8_flops if fp8 else hw.bf16_flops)
        kv_token = 2.0 * float(md.layers) * float(md.kv_heads) * float(md.head_dim) * width
        n, i, o, tp = float(r.concurrency), float(r.input_len), float(r.output_len), float(r.tp)
        w = linear_params(md) * width / tp / bw
        g = n * 2.0 * linear_params(md) * i / tp / flops
        kv = n * ((o - 1) * i + (o - 1) * (o - 2) / 2) * kv_token / tp / bw
        pieces = n * (1.0 + np.ceil(i / (budget - n)))
        bound = max(o - pieces, 0.0) * w + g + kv
        cycle = (r.ttft_ms + (o - 1) * r.tpot_ms) / 1e3
        out.append(dict(weights_s=w, prompt_gemm_s=g, kv_read_s=kv, prompt_iterations=pieces, bound_s=bound,
                        cycle_s=cycle, ratio=bound / cycle))
    return pd.concat([d.reset_index(drop=True), pd.DataFrame(out)], axis=1)


def serving_bounds(budget: float = 8192.0) -> pd.DataFrame:
    """The bound for every run of data/measured_serving_current.csv, with its (model, precision, TP) group."""
    d = pd.read_csv(data_file("measured_serving_current.csv"))
    d = bounds(d, budget)
    d["group"] = d.model + "/" + d.precision + "/TP" + d.tp.astype(str)
    return d


def report(budget: float = 8192.0) -> str:
    """The runs closest to their bound and each group's largest ratio, as markdown."""
    d = serving_bounds(budget)
    md = [f"{len(d)} runs, token budget {budget:.0f}; ratio = peak bound / measured cycle (1 = every kernel at peak).",
          "", "| group | runs | largest ratio | its run (I/O, N) | cycle s | bound s (weights + prompt GEMMs + KV) |",
          "|---|---:|---:|---|---:|---|"]
    for name, g in d.groupby("group"):
        r = g.loc[g.ratio.idxmax()]
        md.append(f"| {name} | {len(g)} | {r.ratio:.3f} | {r.input_len}/{r.output_len}, {r.concurrency} | "
                  f"{r.cycle_s:.2f} | {r.bound_s:.2f} ({max(r.output_len - r.prompt_iterations, 0):.0f} x "
                  f"{1e3 * r.weights_s:.2f} ms + {r.prompt_gemm_s:.2f} + {r.kv_read_s:.2f}) |")
    return "\n".join(md + [""])


def main(argv=None) -> int:
    """The command line: the markdown on stdout."""
    p = argparse.ArgumentParser(prog="python -m frontier_jax.calibration.peak_bound",
                                description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=float, default=8192.0, help="the server's token budget per iteration")
    a = p.parse_args(argv)
    most = int(pd.read_csv(data_file("measured_serving_current.csv")).concurrency.max())
    if not a.budget > most:
        p.exit(2, f"error: --budget {a.budget:g} must exceed the runs' largest concurrency, {most}\n")
    print(report(a.budget))
    return 0


if __name__ == "__main__":
    sys.exit(main())

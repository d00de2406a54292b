"""The serving runs predicted through a simulation of their benchmark harness (issue 18's TTFT).

    python -m frontier_jax.calibration.harness [--engine current-kernels] [--chunk 8192] [--rounds 20]
                                               [--no-burst --warmup 2] [--logo] [--csv FILE]   # markdown on stdout

The closed-loop model (costmodel/arch/closed_loop.py) is a steady state: N requests in flight, arrivals spread
out. A benchmark is not: its N clients start together on an empty server, and with equal prompt and output
lengths they come back together, so prompts arrive in waves. This runs the benchmark itself against the
simulator's chunked-prefill server (frontier_jax.sim.run_closed_loop): each client sends `rounds` requests back
to back, the iterations priced by the measured kernels and the engine's fitted terms (nothing here is fitted),
and the server's KV cache managed as vLLM V1 manages it (admission on a prompt's blocks, preemption of the newest
running request when a decode needs a block: sim.run_closed_loop's kv_tokens).

The runs do not record their harness. The defaults are what their source publishes: AIConfigurator's generated
benchmark (`aiperf --concurrency N --num-requests 20 N --warmup-request-count 2 N`, a warmup that ends before
the measured phase starts, so the measured phase starts with a burst of N; `bench_run.sh.j2` in
ai-dynamo/aiconfigurator) and vLLM's default token budget on an H100 for the OpenAI server, 8192
(`EngineArgs.get_batch_defaults`, vllm/engine/arg_utils.py). With --logo each group's rows are predicted with the
engine terms fitted without that group (calibration.fit.fit, as in its report).
"""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..costmodel import kernels as kn
from ..costmodel import latency as lat
from ..costmodel import operations as ops
from ..costmodel.catalog import load_efficiency, load_hardware, load_model, precision_flag
from ..errors import FrontierError
from ..resources import data_file
from ..sim import run_closed_loop
from .fit import run_kv_precision

HARDWARE = "h100-80gb-sxm"
CHUNK = 8192         # vLLM's default max_num_batched_tokens, OpenAI server, GPUs of >= 70 GiB other than A100
ROUNDS = 20          # AIConfigurator's benchmark: --num-requests 20 N at --concurrency N
PIECES = 16          # distinct prompt pieces one iteration can carry (3 with equal lengths; more with recomputations)
LONG_PROMPT = 4000.0


@functools.lru_cache(maxsize=None)
def _cost_fn(model: str, precision: str):
    hw, md, fp8 = load_hardware(HARDWARE), load_model(model), precision_flag(precision)
    kv = precision_flag(run_kv_precision(model, precision))
    fit = kn.kernel_set(hw)

    @jax.jit
    def seconds(eng, tp, b, context, seqs, tokens, prefix, sampled):
        o = ops.pieces_iteration_ops(hw, md, fit, seqs, tokens, prefix, b, context, sampled, tp, fp8, kv)
        return ops.total_seconds(md, o) + lat.engine_seconds(hw, md, eng, b + jnp.sum(seqs * tokens))
    return seconds


def iteration_cost(model: str, precision: str, tp: int, eng):
    """The simulator's iteration cost (s) of one TP group: measured kernels (pieces_iteration_ops) plus the
    engine terms `eng` (a KernelEngine). Decodes read their mean KV length rounded to a token; memoised."""
    seconds = _cost_fn(model, precision)
    eng = jax.tree.map(lambda x: jnp.asarray(x, float), eng)
    cache: dict = {}

    def cost(b, total_context, pieces, sampled):
        ctx = round(total_context / b) if b else 0
        key = (b, ctx, pieces, sampled)
        t = cache.get(key)
        if t is None:
            if len(pieces) > PIECES:
                raise FrontierError(f"{len(pieces)} distinct prompt pieces in one iteration; at most {PIECES}")
            pad = list(pieces) + [(0, 0, 0)] * (PIECES - len(pieces))
            s, q, p = (np.array([x[j] for x in pad], float) for j in range(3))
            t = cache[key] = float(seconds(eng, float(tp), float(b), float(ctx), s, q, p, float(sampled)))
        return t
    return cost


def kv_tokens(model: str, precision: str, tp: int) -> int:
    """The TP group's KV cache in tokens (vLLM's gpu_memory_utilization 0.9, in the run's cache precision), which the
    simulated server manages as vLLM V1 does: admission on a prompt's blocks, preemption when a decode needs one."""
    cap = lat.kv_capacity_tokens(load_hardware(HARDWARE), load_model(model), float(tp), precision_flag(precision),
                                 kv_fp8=precision_flag(run_kv_precision(model, precision)))
    return int(float(cap))


def simulate_runs(d: pd.DataFrame, engines, chunk=CHUNK, rounds=ROUNDS, burst=True, warmup=0) -> pd.DataFrame:
    """Mean TTFT and TPOT (ms) of each serving run through the harness; `engines` maps row index -> KernelEngine."""
    out = d.copy()
    ttft, tpot = [], []
    for i, r in d.iterrows():
        cost = iteration_cost(r.model, r.precision, int(r.tp), engines[i])
        res = run_closed_loop(cost, int(r.concurrency), int(r.input_len), int(r.output_len), int(chunk),
                              rounds=rounds, warmup=warmup, burst=burst,
                              kv_tokens=kv_tokens(r.model, r.precision, int(r.tp)))
        ttft.append(res.mean_ttft * 1e3)
        tpot.append(res.mean_tpot * 1e3)
    out["ttft_sim"], out["tpot_sim"] = ttft, tpot
    return out


def serving_runs() -> pd.DataFrame:
    """The H100 closed-loop serving runs (data/measured_serving_current.csv) with their calibration group."""
    d = pd.read_csv(data_file("measured_serving_current.csv"))
    d["group"] = d.model + "/" + d.precision + "/TP" + d.tp.astype(str)
    return d


def logo_engines(engine: str, d: pd.DataFrame, steps=300) -> dict:
    """Row index -> the engine terms fitted without the row's group."""
    from .fit import fit
    out = {}
    for g in sorted(d.group.unique()):
        m = (d.group == g).to_numpy()
        held, _ = fit(engine, mask=jnp.asarray(~m), steps=steps)
        out.update({i: held for i in d.index[m]})
    return out


def errors(r: pd.DataFrame) -> dict:
    """Mean |relative error| of TTFT and TPOT, and the median TTFT error of prompts of 4000 tokens or more."""
    e1 = (r.ttft_sim / r.ttft_ms - 1.0).abs()
    e2 = (r.tpot_sim / r.tpot_ms - 1.0).abs()
    long = r.input_len >= LONG_PROMPT
    return {"ttft_mean": float(e1.mean()), "ttft_median": float(e1.median()), "tpot_mean": float(e2.mean()),
            "long_ttft_median": float(e1[long].median()), "rows": len(r), "long_rows": int(long.sum())}


def report(r: pd.DataFrame, label: str) -> str:
    """Per group and overall errors as markdown."""
    md = [f"**{label}**", "", "| group (rows) | TTFT mean | TTFT median (signed) | TPOT mean |", "|---|---:|---:|---:|"]
    for g, x in r.groupby("group"):
        e = errors(x)
        signed = float((x.ttft_sim / x.ttft_ms - 1.0).median())
        md.append(f"| {g} ({len(x)}) | {e['ttft_mean']:.1%} | {signed:+.1%} | {e['tpot_mean']:.1%} |")
    e = errors(r)
    md += ["", f"All {e['rows']} rows: TTFT mean {e['ttft_mean']:.1%} (median {e['ttft_median']:.1%}), TPOT mean "
               f"{e['tpot_mean']:.1%}; prompts >= 4000 tokens ({e['long_rows']} rows): median TTFT "
               f"{e['long_ttft_median']:.1%}.", ""]
    return "\n".join(md)


def _run(a) -> str:
    d = serving_runs()
    kw = dict(chunk=a.chunk, rounds=a.rounds, burst=not a.no_burst, warmup=a.warmup)
    what = (f"engine `{a.engine}`, token budget {a.chunk}, {a.rounds} measured requests per client"
            f"{'' if a.no_burst else ', clients start together'}"
            f"{f', {a.warmup} warmup requests per client' if a.warmup else ''}")
    stored = load_efficiency(a.engine)
    fitted = simulate_runs(d, {i: stored for i in d.index}, **kw)
    out = [report(fitted, f"In fit ({what})")]
    frames = [fitted.assign(terms="fit")]
    if a.logo:
        held = simulate_runs(d, logo_engines(a.engine, d), **kw)
        out.append(report(held, f"Leave one group out ({what})"))
        frames.append(held.assign(terms="leave one group out"))
    if a.csv:  # whole or not at all
        path = Path(a.csv)
        tmp = path.with_name(path.name + ".tmp")
        pd.concat(frames).to_csv(tmp, index=False)
        tmp.replace(path)
    return "\n".join(out)


def main(argv=None):
    """The command: in-fit (and with --logo, leave-one-group-out) errors of the harness simulation, as markdown.
    A bad argument is one line on stderr and exit status 2."""
    ap = argparse.ArgumentParser(prog="python -m frontier_jax.calibration.harness", description=__doc__.split("\n")[0])
    ap.add_argument("--engine", default="current-kernels")
    ap.add_argument("--chunk", type=int, default=CHUNK)
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--warmup", type=int, default=0, help="requests per client before the measured ones")
    ap.add_argument("--no-burst", action="store_true", help="clients do not start together")
    ap.add_argument("--logo", action="store_true", help="also leave-one-group-out engine terms")
    ap.add_argument("--csv", help="write the per-run predictions here")
    a = ap.parse_args(argv)
    if not a.engine.endswith("-kernels"):
        ap.exit(2, f"error: --engine {a.engine!r}: the harness prices iterations with measured kernels; "
                   "use a '-kernels' engine\n")
    for name in ("chunk", "rounds"):
        if getattr(a, name) < 1:
            ap.exit(2, f"error: --{name} {getattr(a, name)} must be at least 1\n")
    if a.warmup < 0:
        ap.exit(2, f"error: --warmup {a.warmup} must be at least 0\n")
    try:
        print(_run(a))
    except FrontierError as e:
        ap.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    main(sys.argv[1:])

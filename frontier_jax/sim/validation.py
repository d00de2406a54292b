"""Closed form against the discrete-event simulator: the same iteration costs, the same scenario, p_q compared.

    python -m frontier_jax.validation [--scenarios 60] [--seed 0]   # prints the error distribution

Used by tests/test_closed_form_vs_sim.py and docs/model.md. Scenarios are drawn at random: GPU, model, TP, input
and output lengths (with or without a lognormal spread), chunk, KV bandwidth, overlap, and a load between 10 % and
90 % of the closed form's stability limit for that configuration.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ..costmodel import latency as lat
from ..costmodel import operating_point as op
from ..costmodel import search
from ..costmodel.arch import chunked, colocated, disaggregated
from ..costmodel.arch.disaggregated import Link
from ..costmodel.catalog import load_efficiency, load_hardware, load_model
from ..costmodel.types import Point, Scenario
from . import IterationCosts, simulate

GPUS = ("a100-80gb-sxm", "h100-80gb-sxm", "h200-141gb-sxm")
MODELS = ("llama-3.1-8b", "llama-2-13b", "qwen3-32b", "llama-3.1-70b")


@dataclass(frozen=True)
class Case:
    """One random scenario of the closed-form-vs-simulator check: architecture, GPU, model, configuration, load
    (a fraction of the closed form's stability limit) and percentile."""

    arch: str
    gpu: str
    model: str
    tp: float
    input_len: float
    output_len: float
    cv: float
    chunk: float
    kv_bandwidth: float
    overlap: float
    load: float
    q: float = 0.99


def _np_tree(tree):
    return type(tree)(*(np.float64(x) for x in tree))


def iteration_costs(point: Point, tp: float) -> IterationCosts:
    """The simulator's iteration times (s) from the same roofline the closed form uses, evaluated in numpy."""
    hw, md, eff = _np_tree(point.hw), _np_tree(point.model), _np_tree(point.eff)
    fp8 = float(point.sc.fp8)

    def t(cost):
        return lat.iteration_time(hw, md, eff, *cost, tp, fp8, xp=np)

    return IterationCosts(
        prefill=lambda n: t(lat.prefill_cost(md, np.asarray(n, float), 1.0, fp8)),
        decode=lambda b, ctx: float(t(lat.decode_cost(md, b, ctx / max(b, 1), fp8))),
        mixed=lambda b, ctx, k, pre: float(t(lat.mixed_cost(md, b, ctx / max(b, 1), k, pre, fp8))))


def point_for(case: Case, q=None) -> Point:
    """The cost model's Point of a case (loose contract; percentile q or the case's)."""
    hw, md = load_hardware(case.gpu), load_model(case.model)
    f = lambda x: jnp.asarray(float(x))  # noqa: E731
    sc = Scenario.build(input_len=f(case.input_len), output_len=f(case.output_len), input_cv=f(case.cv),
                        output_cv=f(case.cv), ttft=f(1e9), tpot=f(1e9), q=f(case.q if q is None else q),
                        kv_bandwidth=f(case.kv_bandwidth))
    return Point(hw, md, load_efficiency("current"), sc)


@partial(jax.jit, static_argnames="arch")
def _closed_form_jit(arch, p, tp, chunk, overlap, lam):
    if arch == "colocated":
        r = colocated.latency(p, tp, lam)
        return r.ttft, r.tpot, r.batch
    if arch == "chunked":
        r = chunked.latency(p, tp, chunk, lam)
        return r.ttft, r.tpot, r.batch
    pre = disaggregated.prefill_latency(p, tp, overlap, Link.FULL, lam)
    dec = disaggregated.decode_latency(p, tp, lam)
    return pre.ttft, dec.tpot, dec.batch


@partial(jax.jit, static_argnames="arch")
def _stability_jit(arch, p, tp, chunk, overlap):
    if arch == "colocated":
        return op.max_rate(search._coloc_fn, search._coloc_upper, (p, tp))
    if arch == "chunked":
        return op.max_rate(search._chunk_fn, search._chunk_upper, (p, tp, chunk))
    fn, upper = search._PREFILL[Link.FULL]
    a = op.max_rate(fn, upper, (p, tp, overlap))
    return jnp.minimum(a, op.max_rate(search._decode_fn, search._decode_upper, (p, tp)))


def _cfg(case: Case):
    return tuple(jnp.asarray(x) for x in (case.tp, case.chunk, case.overlap))


def _closed_form(case: Case, p: Point, lam):
    ttft, tpot, b = _closed_form_jit(case.arch, p, *_cfg(case), jnp.asarray(lam))
    return float(ttft), float(tpot), float(b)


def stability_limit(case: Case) -> float:
    """Largest rate at which the closed form is stable with memory to spare (loose contract)."""
    return float(_stability_jit(case.arch, point_for(case), *_cfg(case)))


def draw_cases(n: int, seed: int = 0) -> list[Case]:
    """n random cases whose closed form is stable and whose model fits in memory."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < n:
        arch = ("colocated", "chunked", "disaggregated")[len(cases) % 3]
        gpu, model = GPUS[rng.integers(3)], MODELS[rng.integers(4)]
        tp = float(rng.choice([1, 2, 4, 8]))
        case = Case(arch, gpu, model, tp, float(np.round(np.exp(rng.uniform(np.log(128), np.log(8192))))),
                    float(np.round(np.exp(rng.uniform(np.log(16), np.log(512))))),
                    float(rng.choice([0.0, 0.0, 0.5, 1.0])), float(rng.choice([512, 1024, 2048])),
                    float(np.exp(rng.uniform(np.log(5e9), np.log(4e11)))), float(rng.integers(2)),
                    float(rng.uniform(0.1, 0.9)))
        if np.isfinite(stability_limit(case)) and float(lat.kv_capacity_tokens(load_hardware(gpu), load_model(model), tp)) > 0:
            cases.append(case)
    return cases


def _length(mean, cv):
    return int(mean) if cv == 0 else ("lognormal", mean, cv)


ITERATION_BUDGET = 4e5  # simulated decode iterations per scenario (about 5 s of simulator time at most)


def compare(case: Case, n_requests=20000, seed=0) -> dict:
    """One scenario: closed form vs simulator. The request count is cut so that requests x output / batch stays
    within ITERATION_BUDGET (never below 3000 requests: the p99 then rests on >= 27 tail samples)."""
    p = point_for(case)
    lam = case.load * stability_limit(case)
    ttft, tpot, b = _closed_form(case, p, lam)
    n_requests = int(np.clip(ITERATION_BUDGET * max(b, 1.0) / case.output_len, 3000, n_requests))
    costs = iteration_costs(p, case.tp)
    kw = dict(rate=lam, input_len=_length(case.input_len, case.cv), output_len=_length(case.output_len, case.cv),
              n_requests=n_requests, seed=seed)
    if case.arch == "chunked":
        kw["chunk"] = int(case.chunk)
    if case.arch == "disaggregated":
        kvb = float(lat.kv_bytes_per_token(_np_tree(p.model)))
        kw.update(transfer_time=lambda n: np.asarray(n) * kvb / (case.tp * case.kv_bandwidth),
                  overlap=bool(case.overlap), layers=int(p.model.layers))
    res = simulate(case.arch, costs, **kw)
    sim_ttft, sim_tpot = res.quantile("ttft", case.q), res.quantile("tpot", case.q)
    return dict(case=case, rate=lam, requests=n_requests, ttft=ttft, tpot=tpot, sim_ttft=sim_ttft, sim_tpot=sim_tpot,
                err_ttft=ttft / sim_ttft - 1.0, err_tpot=tpot / sim_tpot - 1.0)


def run(n=60, seed=0, n_requests=20000):
    """Compare closed form and simulation on n random cases; one result dict per case."""
    return [compare(c, n_requests=n_requests, seed=seed + i) for i, c in enumerate(draw_cases(n, seed))]


def summarise(results) -> dict:
    """Median, 90th percentile and max relative error of p_q TTFT and TPOT, per architecture and overall."""
    out = {}
    for arch in ("all", "colocated", "chunked", "disaggregated"):
        rs = [r for r in results if arch == "all" or r["case"].arch == arch]
        for m in ("ttft", "tpot"):
            e = np.abs([r[f"err_{m}"] for r in rs])
            out[f"{arch}/{m}"] = dict(n=len(rs), median=float(np.median(e)), p90=float(np.quantile(e, 0.9)),
                                      max=float(np.max(e)))
    return out


def main(argv=None):
    """`frontier validate`: print the error summary (JSON, or Markdown with --markdown)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--markdown", action="store_true", help="print the summary as a Markdown table")
    a = ap.parse_args(argv)
    results = run(a.scenarios, a.seed, a.requests)
    if a.markdown:
        print("| architecture / metric | scenarios | median abs error | 90th pct abs error | max abs error |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for k, v in summarise(results).items():
            print(f"| {k} | {v['n']} | {v['median']:.1%} | {v['p90']:.1%} | {v['max']:.1%} |")
        return
    for r in results:
        c = r["case"]
        print(f"{c.arch:13s} {c.gpu:15s} {c.model:13s} tp{int(c.tp)} I={int(c.input_len):5d} O={int(c.output_len):4d} "
              f"cv={c.cv} load={c.load:.2f} ttft {r['ttft']:.4f}/{r['sim_ttft']:.4f} ({r['err_ttft']:+.2f}) "
              f"tpot {r['tpot']:.5f}/{r['sim_tpot']:.5f} ({r['err_tpot']:+.2f})")
    for k, v in summarise(results).items():
        print(f"{k:22s} n={v['n']:3d} median |err| {v['median']:.3f}  p90 {v['p90']:.3f}  max {v['max']:.3f}")


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    main()

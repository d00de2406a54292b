"""Closed form against the discrete-event simulator: the same iteration costs, the same scenario, p_q compared.

    python -m frontier_jax.sim.validation [--scenarios 60] [--seed 0]   # prints the error distribution
    python -m frontier_jax.sim.validation --pools [--per-size 3] [--markdown]   # pools of c instances

Used by tests/test_closed_form_vs_sim.py and docs/model.md. Scenarios are drawn at random: GPU, model, TP, input
and output lengths (with or without a lognormal spread), chunk, KV bandwidth, overlap, and a load between 10 % and
90 % of the closed form's stability limit for that configuration. The random-scenario comparison is one instance
(its own queue); the pools comparison (`run_pools`) puts c in POOL_SIZES instances behind each dispatch policy
(random, central, jsq; the simulator's semantics are in frontier_jax.sim.simulate; its "lor" has no closed form
and is not compared) for every architecture: the closed form with Pool(c, Dispatch.X) at the per-instance rate,
the simulator with the pool at c times that rate (disaggregated: c prefill and c decode instances, both pools
under the policy).
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
from ..costmodel.arch.common import Pool
from ..costmodel.arch.disaggregated import Link
from ..costmodel.catalog import load_efficiency, load_hardware, load_model
from ..costmodel.queueing import Dispatch
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


def iteration_costs(point: Point, tp: float, fast: bool = True) -> IterationCosts:
    """The simulator's iteration times (s) from the same roofline the closed form uses, evaluated in numpy.

    fast: decode and mixed, called once per simulated iteration, as the max of their compute and memory branches,
    each an exact polynomial in the iteration's totals (decode: 1, b, context; mixed: also chunk tokens k, prefix,
    k x prefix, k^2) whose coefficients are read off the roofline; used only where they reproduce the roofline
    to 1e-9 at random iterations (else the direct evaluation, ~8 us a call)."""
    hw, md, eff = _np_tree(point.hw), _np_tree(point.model), _np_tree(point.eff)
    fp8, kv = float(point.sc.fp8), float(point.sc.kv_fp8)

    def t(cost):
        return lat.iteration_time(hw, md, eff, *cost, tp, fp8, xp=np)

    def decode(b, ctx):
        return float(t(lat.decode_cost(md, b, ctx / max(b, 1), fp8, kv)))

    def mixed(b, ctx, k, pre):
        return float(t(lat.mixed_cost(md, b, ctx / max(b, 1), k, pre, fp8, kv)))

    costs = IterationCosts(prefill=lambda n: t(lat.prefill_cost(md, np.asarray(n, float), 1.0, fp8, kv)),
                           decode=decode, mixed=mixed)
    if not fast:
        return costs

    def branches(cost):  # (compute + rest, memory + rest): their max is the iteration time
        flops, hbm, tokens = cost
        return (float(lat.iteration_time(hw, md, eff, flops, 0.0, tokens, tp, fp8, xp=np)),
                float(lat.iteration_time(hw, md, eff, 0.0, hbm, tokens, tp, fp8, xp=np)))

    rng = np.random.default_rng(0)

    def fit(features, cost_of, draw, direct):
        pts = [draw() for _ in range(40)]
        x = np.array([features(*q) for q in pts])
        scale = np.abs(x).max(axis=0)
        y = np.array([branches(cost_of(*q)) for q in pts])
        coef = np.linalg.lstsq(x / scale, y, rcond=None)[0] / scale[:, None]
        c1, c2 = [tuple(float(v) for v in coef[:, j]) for j in (0, 1)]
        checks = [draw() for _ in range(200)]
        got = np.array([max(sum(a * f for a, f in zip(c1, features(*q))), sum(a * f for a, f in zip(c2, features(*q))))
                        for q in checks])
        ok = np.allclose(got, [direct(*q) for q in checks], rtol=1e-9, atol=0.0)
        return (c1, c2) if ok else None

    def draw_decode():
        b = int(rng.integers(0, 512))
        return b, float(b * rng.uniform(1, 32768))

    dec = fit(lambda b, ctx: (1.0, b, ctx), lambda b, ctx: lat.decode_cost(md, b, ctx / max(b, 1), fp8, kv),
              draw_decode, decode)

    def draw_mixed():
        b, ctx = draw_decode()
        return b, ctx, int(rng.integers(0, 8192)), int(rng.integers(0, 32768))

    mix = fit(lambda b, ctx, k, pre: (1.0, b, ctx, k, pre, k * pre, k * k),
              lambda b, ctx, k, pre: lat.mixed_cost(md, b, ctx / max(b, 1), k, pre, fp8, kv), draw_mixed, mixed)
    if dec is not None:
        (a0, a1, a2), (m0, m1, m2) = dec

        def decode_fast(b, ctx):
            x, y = a0 + a1 * b + a2 * ctx, m0 + m1 * b + m2 * ctx
            return x if x > y else y
        costs = IterationCosts(costs.prefill, decode_fast, costs.mixed)
    if mix is not None:
        (a0, a1, a2, a3, a4, a5, a6), (m0, m1, m2, m3, m4, m5, m6) = mix

        def mixed_fast(b, ctx, k, pre):
            kp, kk = k * pre, k * k
            x = a0 + a1 * b + a2 * ctx + a3 * k + a4 * pre + a5 * kp + a6 * kk
            y = m0 + m1 * b + m2 * ctx + m3 * k + m4 * pre + m5 * kp + m6 * kk
            return x if x > y else y
        costs = IterationCosts(costs.prefill, costs.decode, mixed_fast)
    return costs


def point_for(case: Case, q=None) -> Point:
    """The cost model's Point of a case (loose contract; percentile q or the case's)."""
    hw, md = load_hardware(case.gpu), load_model(case.model)
    f = lambda x: jnp.asarray(float(x))  # noqa: E731
    sc = Scenario.build(input_len=f(case.input_len), output_len=f(case.output_len), input_cv=f(case.cv),
                        output_cv=f(case.cv), ttft=f(1e9), tpot=f(1e9), q=f(case.q if q is None else q),
                        kv_bandwidth=f(case.kv_bandwidth))
    return Point(hw, md, load_efficiency("current"), sc)


@partial(jax.jit, static_argnames="arch")
def _closed_form_jit(arch, p, tp, chunk, overlap, lam, servers, dispatch):
    pool = Pool(servers, dispatch)
    if arch == "colocated":
        r = colocated.latency(p, tp, lam, pool)
        return r.ttft, r.tpot, r.batch
    if arch == "chunked":
        r = chunked.latency(p, tp, chunk, lam, pool)
        return r.ttft, r.tpot, r.batch
    pre = disaggregated.prefill_latency(p, tp, overlap, Link.FULL, lam, pool)
    dec = disaggregated.decode_latency(p, tp, lam, pool)
    return pre.ttft, dec.tpot, dec.batch


@partial(jax.jit, static_argnames="arch")
def _stability_jit(arch, p, tp, chunk, overlap, servers, dispatch):
    pinned = search.Sizing(servers, servers, dispatch)  # `servers` instances behind `dispatch`
    if arch == "colocated":
        return op.max_rate(search._coloc_fn, search._coloc_upper, (p, pinned, tp, None))
    if arch == "chunked":
        return op.max_rate(search._chunk_fn, search._chunk_upper, (p, pinned, tp, chunk))
    fn, upper = search._PREFILL[Link.FULL]
    a = op.max_rate(fn, upper, (p, pinned, tp, overlap, None))
    return jnp.minimum(a, op.max_rate(search._decode_fn, search._decode_upper, (p, pinned, tp, None)))


def _cfg(case: Case):
    return tuple(jnp.asarray(x) for x in (case.tp, case.chunk, case.overlap))


def _pool_args(servers, dispatch):
    return jnp.asarray(float(servers)), jnp.asarray(float(Dispatch[dispatch.upper()]))


def _closed_form(case: Case, p: Point, lam, servers=1, dispatch="random"):
    ttft, tpot, b = _closed_form_jit(case.arch, p, *_cfg(case), jnp.asarray(lam), *_pool_args(servers, dispatch))
    return float(ttft), float(tpot), float(b)


def stability_limit(case: Case, servers=1, dispatch="random") -> float:
    """Largest per-instance rate at which the closed form is stable with memory to spare (loose contract), for one
    instance (its own queue) or `servers` instances behind `dispatch`."""
    return float(_stability_jit(case.arch, point_for(case), *_cfg(case), *_pool_args(servers, dispatch)))


def _random_case(rng, arch) -> Case:
    gpu, model = GPUS[rng.integers(3)], MODELS[rng.integers(4)]
    tp = float(rng.choice([1, 2, 4, 8]))
    return Case(arch, gpu, model, tp, float(np.round(np.exp(rng.uniform(np.log(128), np.log(8192))))),
                float(np.round(np.exp(rng.uniform(np.log(16), np.log(512))))),
                float(rng.choice([0.0, 0.0, 0.5, 1.0])), float(rng.choice([512, 1024, 2048])),
                float(np.exp(rng.uniform(np.log(5e9), np.log(4e11)))), float(rng.integers(2)),
                float(rng.uniform(0.1, 0.9)))


def _usable(case: Case) -> bool:
    hw, md = load_hardware(case.gpu), load_model(case.model)
    return np.isfinite(stability_limit(case)) and float(lat.kv_capacity_tokens(hw, md, case.tp)) > 0


def draw_cases(n: int, seed: int = 0) -> list[Case]:
    """n random cases whose closed form is stable and whose model fits in memory."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < n:
        case = _random_case(rng, ("colocated", "chunked", "disaggregated")[len(cases) % 3])
        if _usable(case):
            cases.append(case)
    return cases


def _length(mean, cv):
    return int(mean) if cv == 0 else ("lognormal", mean, cv)


ITERATION_BUDGET = 4e5  # simulated decode iterations per scenario (about 5 s of simulator time at most)


def _sim_kwargs(case: Case, p: Point) -> dict:
    kw = dict(input_len=_length(case.input_len, case.cv), output_len=_length(case.output_len, case.cv))
    if case.arch == "chunked":
        kw["chunk"] = int(case.chunk)
    if case.arch == "disaggregated":
        kvb = float(lat.kv_bytes_per_token(_np_tree(p.model)))
        kw.update(transfer_time=lambda n: np.asarray(n) * kvb / (case.tp * case.kv_bandwidth),
                  overlap=bool(case.overlap), layers=int(p.model.layers))
    return kw


def compare(case: Case, n_requests=20000, seed=0) -> dict:
    """One scenario: closed form vs simulator. The request count is cut so that requests x output / batch stays
    within ITERATION_BUDGET (never below 3000 requests: the p99 then rests on >= 27 tail samples)."""
    p = point_for(case)
    lam = case.load * stability_limit(case)
    ttft, tpot, b = _closed_form(case, p, lam)
    n_requests = int(np.clip(ITERATION_BUDGET * max(b, 1.0) / case.output_len, 3000, n_requests))
    res = simulate(case.arch, iteration_costs(p, case.tp), rate=lam, n_requests=n_requests, seed=seed,
                   **_sim_kwargs(case, p))
    sim_ttft, sim_tpot = res.quantile("ttft", case.q), res.quantile("tpot", case.q)
    return dict(case=case, rate=lam, requests=n_requests, ttft=ttft, tpot=tpot, sim_ttft=sim_ttft, sim_tpot=sim_tpot,
                err_ttft=ttft / sim_ttft - 1.0, err_tpot=tpot / sim_tpot - 1.0)


def run(n=60, seed=0, n_requests=20000):
    """Compare closed form and simulation on n random cases; one result dict per case."""
    return [compare(c, n_requests=n_requests, seed=seed + i) for i, c in enumerate(draw_cases(n, seed))]


# ---------------------------------------------------------------------------------------------------- pools

POOL_SIZES = (1, 2, 4, 8, 16, 64)
POOL_DISPATCHES = ("random", "central", "jsq")
ARCHS = ("colocated", "chunked", "disaggregated")
WARMUP_RESIDENCES = 3.0  # warm-up: this many mean decode residences of every instance (the pool starts empty)


def draw_pool_cases(per_size: int = 2, seed: int = 0, sizes=POOL_SIZES, archs=ARCHS) -> list[tuple[Case, int]]:
    """per_size random configurations (as draw_cases, load 10-90 %) for every architecture and pool size; each is
    compared under every dispatch policy (paired)."""
    rng = np.random.default_rng(seed)
    out = []
    for arch in archs:
        for c in sizes:
            k = 0
            while k < per_size:
                case = _random_case(rng, arch)
                if _usable(case):
                    out.append((case, int(c)))
                    k += 1
    return out


def compare_pool(case: Case, servers: int, dispatch: str, n_requests=20000, seed=0) -> dict:
    """One configuration in a pool of `servers` instances behind `dispatch`: the closed form with
    Pool(servers, Dispatch[dispatch]) at the per-instance rate lam = load x its stability limit, the simulator with
    the pool at servers x lam. Measured requests as in `compare`; the warm-up covers WARMUP_RESIDENCES mean decode
    residences of each instance (servers x batch requests each) and at least 10 % of the run."""
    p = point_for(case)
    lam = case.load * stability_limit(case, servers, dispatch)
    ttft, tpot, b = _closed_form(case, p, lam, servers, dispatch)
    measured = int(np.clip(ITERATION_BUDGET * max(b, 1.0) / case.output_len, 3000, n_requests))
    warm = int(max(measured / 9.0, WARMUP_RESIDENCES * servers * max(b, 1.0)))
    total = measured + warm
    pool = (dict(n_prefill=servers, n_decode=servers) if case.arch == "disaggregated" else dict(n_instances=servers))
    res = simulate(case.arch, iteration_costs(p, case.tp), rate=servers * lam, n_requests=total, warmup=warm / total,
                   seed=seed, dispatch=dispatch, **pool, **_sim_kwargs(case, p))
    sim_ttft, sim_tpot = res.quantile("ttft", case.q), res.quantile("tpot", case.q)
    return dict(case=case, servers=servers, dispatch=dispatch, rate=lam, requests=total, ttft=ttft, tpot=tpot,
                sim_ttft=sim_ttft, sim_tpot=sim_tpot, err_ttft=ttft / sim_ttft - 1.0, err_tpot=tpot / sim_tpot - 1.0)


def run_pools(per_size=2, seed=0, n_requests=20000, sizes=POOL_SIZES, dispatches=POOL_DISPATCHES, archs=ARCHS):
    """Closed form against simulation for pools: every architecture x pool size x dispatch policy, per_size random
    configurations each (the same ones for every policy); one result dict per comparison."""
    out = []
    for i, (case, c) in enumerate(draw_pool_cases(per_size, seed, sizes, archs)):
        for d in dispatches:
            out.append(compare_pool(case, c, d, n_requests=n_requests, seed=seed + i))
    return out


def summarise_pools(results) -> dict:
    """Median, 90th percentile and max absolute relative error of p_q TTFT and TPOT per dispatch policy x
    architecture (over pool sizes and configurations), per policy, and over all."""
    def stats(rs, m):
        e = np.abs([r[f"err_{m}"] for r in rs])
        return dict(n=len(rs), median=float(np.median(e)), p90=float(np.quantile(e, 0.9)), max=float(np.max(e)))

    out = {}
    for d in ("all",) + POOL_DISPATCHES:
        for arch in ("all",) + ARCHS:
            rs = [r for r in results if d in ("all", r["dispatch"]) and arch in ("all", r["case"].arch)]
            if rs:
                for m in ("ttft", "tpot"):
                    out[f"{d}/{arch}/{m}"] = stats(rs, m)
    return out


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


def _print_summary(summary, markdown, label):
    if markdown:
        print(f"| {label} / metric | cases | median abs error | 90th pct abs error | max abs error |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for k, v in summary.items():
            print(f"| {k} | {v['n']} | {v['median']:.1%} | {v['p90']:.1%} | {v['max']:.1%} |")
        return
    for k, v in summary.items():
        print(f"{k:28s} n={v['n']:3d} median |err| {v['median']:.3f}  p90 {v['p90']:.3f}  max {v['max']:.3f}")


def _print_pools_table(summary, markdown):
    """One row per dispatch policy x architecture (and the totals): p99 TTFT and TPOT |error| median and p90."""
    head = ("dispatch", "architecture", "cases", "TTFT median", "TTFT p90", "TPOT median", "TPOT p90")
    rows = []
    for key in summary:
        d, arch, m = key.split("/")
        if m == "ttft":
            t, o = summary[key], summary[f"{d}/{arch}/tpot"]
            rows.append((d, arch, str(t["n"]), f"{t['median']:.1%}", f"{t['p90']:.1%}", f"{o['median']:.1%}",
                         f"{o['p90']:.1%}"))
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return
    print(" ".join(f"{h:>13s}" for h in head))
    for r in rows:
        print(" ".join(f"{x:>13s}" for x in r))


def _line(r):
    c = r["case"]
    pool = f"c={r['servers']:2d} {r['dispatch']:7s} " if "servers" in r else ""
    return (f"{pool}{c.arch:13s} {c.gpu:15s} {c.model:13s} tp{int(c.tp)} I={int(c.input_len):5d} "
            f"O={int(c.output_len):4d} cv={c.cv} load={c.load:.2f} ttft {r['ttft']:.4f}/{r['sim_ttft']:.4f} "
            f"({r['err_ttft']:+.2f}) tpot {r['tpot']:.5f}/{r['sim_tpot']:.5f} ({r['err_tpot']:+.2f})")


def main(argv=None):
    """`frontier validate`: print the error summary (text, or Markdown with --markdown); --pools for pools."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--pools", action="store_true",
                    help="compare pools: every architecture x pool size x dispatch policy (--per-size configurations)")
    ap.add_argument("--per-size", type=int, default=2, help="random configurations per architecture and pool size")
    ap.add_argument("--sizes", type=str, default=",".join(map(str, POOL_SIZES)), help="pool sizes, comma-separated")
    ap.add_argument("--markdown", action="store_true", help="print the summary as a Markdown table")
    a = ap.parse_args(argv)
    if a.pools:
        sizes = tuple(int(x) for x in a.sizes.split(","))
        results = run_pools(a.per_size, a.seed, a.requests, sizes)
        summary, label = summarise_pools(results), None
    else:
        results = run(a.scenarios, a.seed, a.requests)
        summary, label = summarise(results), "architecture"
    if not a.markdown:
        for r in results:
            print(_line(r))
    if a.pools:
        _print_pools_table(summary, a.markdown)
    else:
        _print_summary(summary, a.markdown, label)


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    main()

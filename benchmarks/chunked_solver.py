"""The chunked search's rate solver alone, per point: the roofline and the measured-kernel engine side by side.

    taskset -c 1 python benchmarks/chunked_solver.py [points]     # default 600; ~2 min on one core

Llama-3.1-70B BF16 on H100, random (input, output) lengths (64-32,768 and 16-4,096, log-uniform), p99 TTFT 2 s /
TPOT 50 ms, fluid; the GPU, model and engine traced per point as a sweep gathers them. For the 16 (TP, chunk)
configurations of the default SearchSpace: one latency evaluation at half the solver's upper rate, and the whole
rate solver (operating_point.max_rate, 36 evaluations), the kernel engine's MixedTables built beforehand. Best of 7
warm calls, microseconds per point. Pin it to one core (taskset): with two threads the times vary by a third.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from frontier_jax import api  # noqa: E402
from frontier_jax.costmodel import operating_point as op  # noqa: E402
from frontier_jax.costmodel import search as se  # noqa: E402
from frontier_jax.costmodel.arch import chunked, common as c  # noqa: E402
from frontier_jax.costmodel.types import Demand, Point, Scenario, SearchSpace  # noqa: E402
from frontier_jax.tracing import inline_jnp  # noqa: E402


def _best(f, *args, n_points: int) -> float:
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return min(times) / n_points * 1e6


def measure(engine: str, il, ol) -> tuple[float, float]:
    """(one latency evaluation, the rate solver) in us per point for the 16 configurations."""
    n, sp = il.shape[0], SearchSpace()
    hw, md, eff, fp8, _ = api._resolve("h100-80gb-sxm", "llama-3.1-70b", engine, "bf16")
    tables = tuple(jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (n,) + jnp.shape(x)), t)
                   for t in (hw, md, eff))

    def point(i, o, h, m, e):
        sc = Scenario.build(input_len=i, output_len=o, ttft=2.0, tpot=0.05, q=0.99, mean_mode=0.0, fp8=fp8)
        tp, ch = jnp.meshgrid(jnp.asarray(sp.tp, float), jnp.asarray(sp.chunk, float), indexing="ij")
        return Point(h, m, e, sc), Demand(jnp.nan * i, jnp.inf + 0 * i, 0 * i, 0 * i), tp.ravel(), ch.ravel()

    def prepare(i, o, *t):
        p, _, tp, ch = point(i, o, *t)
        with inline_jnp():
            return (jax.vmap(lambda a, b: chunked.tabulate(p, a, b))(tp, ch) if lat_kernels else
                    jax.vmap(lambda a, b: chunked.rate_upper(p, a, b))(tp, ch))

    def one(i, o, prep, *t):
        p, _, tp, ch = point(i, o, *t)
        upper, tabs = (prep.upper, (prep,)) if lat_kernels else (prep, ())
        with inline_jnp():
            lat = jax.vmap(lambda a, b, r, *x: chunked.latency(p, a, b, r, c.LONE, *x))(tp, ch, 0.5 * upper, *tabs)
        return lat.ttft + lat.tpot

    def solve(i, o, prep, *t):
        p, d, tp, ch = point(i, o, *t)
        sz = se._sizing(d, d.n_prefill * 0.0, se.Dispatch.JSQ)
        cfg = (tp, ch, prep) if lat_kernels else (tp, ch)
        with inline_jnp():
            return jax.vmap(lambda a: op.max_rate(se._chunk_fn, se._chunk_upper, (p, sz) + a))(cfg)

    lat_kernels = engine.endswith("-kernels")
    prep = jax.jit(jax.vmap(prepare))(il, ol, *tables)
    return (_best(jax.jit(jax.vmap(one)), il, ol, prep, *tables, n_points=n),
            _best(jax.jit(jax.vmap(solve)), il, ol, prep, *tables, n_points=n))


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    n = int(argv[0]) if argv else 600
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(0)
    il = jnp.asarray(np.exp(rng.uniform(np.log(64), np.log(32768), n)))
    ol = jnp.asarray(np.exp(rng.uniform(np.log(16), np.log(4096), n)))
    for engine in ("current", "current-kernels"):
        lat, solver = measure(engine, il, ol)
        print(f"{engine:16s} one latency evaluation {lat:7.1f} us/point   rate solver {solver:8.1f} us/point",
              flush=True)


if __name__ == "__main__":
    main()

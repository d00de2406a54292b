"""Where the measured-kernel engine's extra cost goes: each stage of the configuration search timed with engine
"current" (roofline) and "current-kernels" side by side in one run.

    python benchmarks/kernel_stages.py [points] [--traced]
        # default 200 random (input, output) points, Llama-3.1-70B on H100; --traced: the GPU, model and engine
        # as per-point inputs, as a sweep gathers them (not closure constants XLA may fold)

Each stage is one jit(vmap) over the points, fluid demand, p99 TTFT 2 s / TPOT 50 ms; cold = first call with its
compile, warm = the better of two calls after it, per point. A last line times the kernel engine's iteration
tables of the four TP degrees alone (built once per point by the chunked search; the roofline has none).
"""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from frontier_jax import api  # noqa: E402
from frontier_jax.costmodel import search as se  # noqa: E402
from frontier_jax.costmodel.types import Demand, Point, Scenario, SearchSpace  # noqa: E402

STAGES = ("search_colocated", "search_chunked", "search_decode_pool", "search_prefill_pool",
          "search_prefill_free_link")


def time_stage(engine: str, stage: str, il, ol, traced: bool = False) -> tuple[float, float]:
    """(cold seconds, warm seconds per point) of one search stage over the points."""
    hw, md, eff, fp8, _ = api._resolve("h100-80gb-sxm", "llama-3.1-70b", engine, "bf16")
    n = il.shape[0]
    per_point = lambda t: jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (n,) + jnp.shape(x)), t)  # noqa: E731
    tables = tuple(per_point(t) for t in (hw, md, eff)) if traced else ()

    def one(i, o, *t):
        h, m, e = t if traced else (hw, md, eff)
        sc = Scenario.build(input_len=i, output_len=o, ttft=2.0, tpot=0.05, q=0.99, mean_mode=0.0, fp8=fp8)
        d = Demand(jnp.nan * i, jnp.inf + 0 * i, 0 * i, 0 * i)
        return getattr(se, stage)(Point(h, m, e, sc), d, SearchSpace()).gpus_per_rate

    f = jax.jit(jax.vmap(one))
    t0 = time.perf_counter()
    f(il, ol, *tables).block_until_ready()
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(2):
        t0 = time.perf_counter()
        f(il, ol, *tables).block_until_ready()
        warm.append(time.perf_counter() - t0)
    return cold, min(warm) / il.shape[0]


def time_tables(il, ol) -> tuple[float, float]:
    """(cold seconds, warm seconds per point) of the kernel engine's iteration tables of the four TP degrees
    (costmodel/iteration_table.py, built once per point and TP degree by the chunked search), GPU, model and engine
    traced per point."""
    from frontier_jax.costmodel.arch.common import mean_context
    from frontier_jax.costmodel.iteration_table import iteration_table
    n = il.shape[0]
    per_point = lambda t: jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (n,) + jnp.shape(x)), t)  # noqa: E731
    hw, md, eff, fp8, _ = api._resolve("h100-80gb-sxm", "llama-3.1-70b", "current-kernels", "bf16")
    hw, md, eff = (per_point(t) for t in (hw, md, eff))

    def one(i, o, h, m, e):
        sc = Scenario.build(input_len=i, output_len=o, ttft=2.0, tpot=0.05, q=0.99, mean_mode=0.0, fp8=fp8)
        p = Point(h, m, e, sc)
        t = jax.vmap(lambda tp: iteration_table(p, tp, mean_context(sc)))(jnp.asarray(SearchSpace().tp, il.dtype))
        return t.linear.sum() + t.decode.sum() + t.riding.sum()

    f = jax.jit(jax.vmap(one))
    t0 = time.perf_counter()
    f(il, ol, hw, md, eff).block_until_ready()
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(3):
        t0 = time.perf_counter()
        f(il, ol, hw, md, eff).block_until_ready()
        warm.append(time.perf_counter() - t0)
    return cold, min(warm) / n


def main(argv=None) -> None:
    args = list(argv if argv is not None else sys.argv[1:])
    traced = "--traced" in args
    args = [a for a in args if a != "--traced"]
    n = int((args or ["200"])[0])
    rng = np.random.default_rng(0)
    il, ol = jnp.asarray(rng.uniform(500, 8000, n)), jnp.asarray(rng.uniform(100, 1000, n))
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__} on {jax.default_backend()}, {n} points"
          + (", GPU/model/engine traced per point" if traced else ""))
    for stage in STAGES:
        (rc, rw), (kc, kw) = (time_stage(e, stage, il, ol, traced) for e in ("current", "current-kernels"))
        print(f"{stage:26s} roofline cold {rc:6.1f} s, warm {1e6 * rw:8.1f} us/pt | kernels cold {kc:6.1f} s, "
              f"warm {1e6 * kw:8.1f} us/pt | warm x{kw / rw:.1f}", flush=True)
    tc, tw = time_tables(il, ol)
    print(f"{'iteration tables (4 TP)':26s} kernels only: cold {tc:6.1f} s, warm {1e6 * tw:8.1f} us/pt", flush=True)


if __name__ == "__main__":
    main()

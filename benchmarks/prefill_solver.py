"""The two rate solvers of frontier_jax/costmodel/operating_point.py on the prefill pool with the link (the per-point
work of a KV-bandwidth sweep): time per solve and agreement, side by side in one process.

    python benchmarks/prefill_solver.py [N_POINTS]      # default 4096 random points of sweeps/bench_1e6.toml

Each solver is jit-compiled and vmapped over the same N points (random TP, layer-wise overlap on, Link.FULL),
warmed up once, then timed 7 times with block_until_ready; the median is reported per solve, on one XLA CPU device.
"""
from __future__ import annotations

import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from frontier_jax.costmodel import operating_point as op  # noqa: E402
from frontier_jax.costmodel import search  # noqa: E402
from frontier_jax.costmodel.arch.disaggregated import Link  # noqa: E402
from frontier_jax.costmodel.kernel import load_sweep_spec, make_kernel, point_inputs  # noqa: E402
from frontier_jax.resources import shipped_dir  # noqa: E402
from frontier_jax.runner.grid import decode_points, layout, point_arrays  # noqa: E402


def main(n: int = 4096) -> None:
    spec = load_sweep_spec(shipped_dir("sweeps") / "bench_1e6.toml")
    kernel, lay = make_kernel(spec), layout(spec)
    rng = np.random.default_rng(0)
    arrays = {k: jnp.asarray(v) for k, v in point_arrays(spec).items()}
    pts = decode_points(lay, arrays, jnp.asarray(rng.integers(0, lay.size, n)))
    p, _, _ = point_inputs(pts, kernel.tables)
    sz = search.Sizing(jnp.full(n, jnp.nan), jnp.zeros(n), jnp.ones(n))  # fluid, no pinned count, central queue
    args = (p, sz, jnp.asarray(rng.choice([1.0, 2.0, 4.0, 8.0], n)), jnp.ones(n), None)
    fn, upper = search._PREFILL[Link.FULL]

    def timed(f):
        f = jax.jit(f)
        out = jax.block_until_ready(f(*args))
        ts = []
        for _ in range(7):
            t = time.perf_counter()
            jax.block_until_ready(f(*args))
            ts.append(time.perf_counter() - t)
        return np.asarray(out), float(np.median(ts)) / n * 1e6

    illinois, t_ill = timed(jax.vmap(lambda *a: op.max_rate(fn, upper, a)))
    chandru, t_ch = timed(jax.vmap(lambda *a: op.max_rate(fn, upper, a, continuous=True)))
    _, t_eval = timed(jax.vmap(lambda *a: fn(upper(a) * 0.5, a)))
    ok = np.isfinite(illinois)
    rel = np.abs(chandru[ok] / illinois[ok] - 1.0)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
          f"{n} points, {ok.sum()} feasible")
    print(f"one constraint evaluation: {t_eval:6.2f} us")
    print(f"Illinois (log-rate, {op.BISECTION_STEPS} steps + polish): {t_ill:6.2f} us per solve")
    print(f"Chandrupatla (utilisation logit, {op.CONTINUOUS_STEPS} steps): {t_ch:6.2f} us per solve "
          f"({t_ill / t_ch:.2f}x)")
    print(f"same NaN pattern: {np.array_equal(np.isnan(chandru), np.isnan(illinois))}; relative difference "
          f"median {np.median(rel):.1e}, max {rel.max():.1e}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4096)

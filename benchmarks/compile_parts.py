"""How big the sweep's chunk program is and what each part costs to trace and compile.

    python benchmarks/compile_parts.py [SPEC.toml]     (default sweeps/bench_1e6.toml; ~2 min on a 2-core CPU)

Prints the jaxpr equation count of the whole chunk program (1,024 points per device, 2 CPU devices, nested jaxprs
counted once each) and, for each search of `costmodel.cost.evaluate_point` on 1,024 points of the grid, the trace +
lowering and the XLA compile times. docs/performance.md records the numbers.
"""
from __future__ import annotations

import functools
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

jax.config.update("jax_enable_x64", True)

from frontier_jax.costmodel import search as S  # noqa: E402
from frontier_jax.costmodel.kernel import load_sweep_spec, make_kernel, point_inputs  # noqa: E402
from frontier_jax.costmodel.types import SearchSpace  # noqa: E402
from frontier_jax.runner import run as engine  # noqa: E402
from frontier_jax.runner import sharing  # noqa: E402
from frontier_jax.runner.grid import decode_points, index_dtype, layout, point_arrays  # noqa: E402
from frontier_jax.tracing import inline_jnp  # noqa: E402

PER_DEVICE = 1024


def count_eqns(jaxpr) -> int:
    n = 0
    for e in jaxpr.eqns:
        n += 1
        for v in e.params.values():
            for q in v if isinstance(v, (list, tuple)) else [v]:
                inner = getattr(q, "jaxpr", q)
                if hasattr(inner, "eqns"):
                    n += count_eqns(inner)
    return n


def inlined(f):
    def g(*a):
        with inline_jnp():
            return f(*a)
    return g


def main(path: str) -> None:
    spec = load_sweep_spec(path)
    kernel, lay, host = make_kernel(spec), layout(spec), point_arrays(spec)
    mesh = Mesh(np.array(jax.local_devices()), (engine.AXIS,))
    parts = sharing.plan(kernel, lay, PER_DEVICE)
    fn = functools.partial(engine._eval_chunk, kernel=kernel, lay=lay, mesh=mesh, per_dev=PER_DEVICE, parts=parts)
    start = jax.ShapeDtypeStruct((), index_dtype())
    specs = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in host.items()}
    t0 = time.perf_counter()
    jaxpr = jax.make_jaxpr(fn)(start, specs)
    print(f"{spec.name}: chunk program ({PER_DEVICE} points x {mesh.size} devices) {count_eqns(jaxpr.jaxpr):,} jaxpr "
          f"equations, traced in {time.perf_counter() - t0:.1f} s")

    pts = decode_points(lay, {k: jnp.asarray(v) for k, v in host.items()}, jnp.arange(PER_DEVICE) % lay.size)
    P, D, _ = point_inputs(pts, kernel.tables)
    sp = SearchSpace()
    parts = (("colocated", jax.vmap(lambda p, d: S.search_colocated(p, d, sp)), (P, D)),
             ("chunked", jax.vmap(lambda p, d: S.search_chunked(p, d, sp)), (P, D)),
             ("disaggregated, link-blind", jax.vmap(lambda p, d: (S.search_prefill_free_link(p, d, sp),
                                                                  S.search_decode_pool(p, d, sp))), (P, D)),
             ("disaggregated, linked", jax.vmap(lambda p, d: S.search_prefill_pool(p, d, sp)), (P, D)))
    print(f"{'part':28s} {'trace + lower s':>16s} {'XLA compile s':>14s}")
    for name, g, args in parts:
        t0 = time.perf_counter()
        lowered = jax.jit(inlined(g)).lower(*args)
        t1 = time.perf_counter()
        lowered.compile()
        print(f"{name:28s} {t1 - t0:16.1f} {time.perf_counter() - t1:14.1f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sweeps/bench_1e6.toml")

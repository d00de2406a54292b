"""What the chunked model's table lookups cost inside a loop, against the roofline's iteration times.

    taskset -c 1 python benchmarks/lookup_cost.py      # ~1 min on one core

16,384 random (prompt length, TP, chunk, batch) elements of Llama-3.1-70B BF16 on H100, a 50-step loop (the
rate solver's kind: tracing.scan) whose body takes the forward-mode derivative of a batch-dependent quantity, as the
chunked model's Newton iteration does. Rows: the mixed and plain iteration times of `chunked._mixed_step` (roofline:
composed directly; kernels: from the configuration's MixedTable), then each lookup alone, a pair, and all three
together. Best of 7 warm calls, nanoseconds per element and step.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from frontier_jax import api  # noqa: E402
from frontier_jax.costmodel import iteration_table as it  # noqa: E402
from frontier_jax.costmodel.arch import chunked, common as c  # noqa: E402
from frontier_jax.costmodel.types import Point, Scenario  # noqa: E402
from frontier_jax.tracing import inline_jnp, scan  # noqa: E402
from chunked_solver import _best  # noqa: E402

N, STEPS = 16384, 50


def _point(engine):
    hw, md, eff, fp8, _ = api._resolve("h100-80gb-sxm", "llama-3.1-70b", engine, "bf16")
    return lambda i: Point(hw, md, eff, Scenario.build(input_len=i, output_len=300.0, ttft=2.0, tpot=0.05, q=0.99,
                                                       mean_mode=0.0, fp8=fp8))


def _ns(fn, *args) -> float:
    """Best of 7 warm calls (chunked_solver._best), nanoseconds per element and step."""
    return _best(fn, *args, n_points=N * STEPS) * 1e3


def _loop(g):
    """jit(vmap) of STEPS steps b <- b + 1e-3 g(b) / (1 + g'(b)), g(element arguments..., b)."""
    def f(*args):
        *rest, b = args

        def body(b, _):
            v, dv = jax.jvp(lambda x: g(*rest, x), (b,), (jnp.ones_like(b),))
            return b + 1e-3 * v / (1.0 + dv), None
        with inline_jnp():
            return scan(body, b, STEPS)[0]
    return jax.jit(jax.vmap(f))


def _three(chunk, t, b):
    """The three lookups of a mixed and a plain iteration as chunked._mixed_step makes them, on a 3000-token prompt."""
    k = jnp.minimum(jnp.clip(chunk - 1.0 - b, 1.0, None), 3000.0)
    return sum(it.mixed_and_decode_seconds(t.iters, 1.0 + b, k, it.lookup(t.step, t.attention, b)))


def main() -> None:
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(0)
    il = jnp.asarray(np.exp(rng.uniform(np.log(64), np.log(32768), N)))
    b0 = jnp.asarray(rng.uniform(0, 500, N))
    tp = jnp.asarray(rng.choice([1.0, 2.0, 4.0, 8.0], N))
    ch = jnp.asarray(rng.choice([512.0, 1024.0, 2048.0, 8192.0], N))
    roof, kern = _point("current"), _point("current-kernels")
    tabs = jax.jit(jax.vmap(lambda i, t, k: chunked.tabulate(kern(i), t, k)))(il, tp, ch)

    def step(P, tabled):
        def g(i, t, k, tab, b):
            p = P(i)
            _, t_mix, t_plain = chunked._mixed_step(p, t, k, b, c.mean_context(p.sc), tab if tabled else None)
            return t_mix + t_plain
        return g

    rows = [("mixed + plain iteration, roofline", _loop(step(roof, False)), (il, tp, ch, tabs, b0)),
            ("mixed + plain iteration, kernels (tables)", _loop(step(kern, True)), (il, tp, ch, tabs, b0)),
            ("  chunk attention lookup", _loop(lambda t, b: it.lookup(t.step, t.attention, b)), (tabs, b0)),
            ("  decode + riding at the batch", _loop(lambda t, b: sum(it._at(1.0 + b, t.iters.decode,
                                                                             t.iters.riding))), (tabs, b0)),
            ("  linear at batch + 300 tokens", _loop(lambda t, b: it._at(301.0 + b, t.iters.linear)[0]), (tabs, b0)),
            ("  attention + decode and riding", _loop(lambda t, b: it.lookup(t.step, t.attention, b) + sum(
                it._at(1.0 + b, t.iters.decode, t.iters.riding))), (tabs, b0)),
            ("  all three lookups (no point, no Scenario)", _loop(_three), (ch, tabs, b0))]
    for name, fn, args in rows:
        print(f"{name:45s} {_ns(fn, *args):7.1f} ns per element and step", flush=True)


if __name__ == "__main__":
    main()

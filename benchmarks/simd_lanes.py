"""What a short trailing axis costs XLA's CPU loops: the last chunk's attention (kernels.context_seconds_prepared,
two logarithms and four exponentials or logarithms per entry) on the same number of entries laid out with a
trailing axis of 6 (the TTFT's quantile and five quadrature lengths), of 8 (padded to the SIMD lanes) and flat.

    taskset -c 1 python benchmarks/simd_lanes.py      # ~20 s on one core

XLA vectorises the trailing axis of an elementwise loop; with 6 entries two of them run outside the vectors, and
a log or exp there costs several times one inside. Best of 20 warm calls, nanoseconds per entry.
docs/performance.md records the numbers.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from frontier_jax.costmodel import kernels as kn  # noqa: E402


def _prepared(shape, rng) -> tuple[kn.PreparedContext, jax.Array]:
    """A PreparedContext of H100-like magnitudes (70B at TP 4, lengths 1-32k) and new-token counts of `shape`."""
    u = lambda lo, hi: jnp.asarray(rng.uniform(lo, hi, shape))  # noqa: E731
    length = u(1e3, 3.2e4)
    prep = kn.PreparedContext(t0=u(0.0, 2e-5), p=u(1.0, 2.0), twice_length=2.0 * length,
                              compute=u(1e-12, 3e-12), bytes_fixed=256.0 * length, bytes_per_token=u(4096.0, 8192.0),
                              log_memory=u(27.5, 28.5), log_m_scale=u(10.0, 14.0), m_exp=u(0.05, 1.0),
                              factor=u(0.9, 1.1))
    return prep, length * u(0.01, 1.0)


def main() -> None:
    jax.config.update("jax_enable_x64", True)
    f = jax.jit(kn.context_seconds_prepared)
    for name, shape in (("trailing axis 6", (300, 16, 6)), ("trailing axis 8", (300, 16, 8)),
                        ("flat, as many entries as 6", (300 * 16 * 6,))):
        prep, tokens = _prepared(shape, np.random.default_rng(0))
        jax.block_until_ready(f(prep, tokens))
        best = min(_timed(f, prep, tokens) for _ in range(20))
        print(f"{name:28s} {best / tokens.size * 1e9:6.1f} ns per entry", flush=True)


def _timed(f, *args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()

"""Closed-loop serving (what benchmarks measure): N requests always in flight on one colocated instance.

The throughput X solves Little's law N = X (TTFT(X) + (O - 1) TPOT(X)) with the open-loop mean latencies of the
chunked-prefill model at rate X (vLLM >= 0.6 schedules chunked prefill by default). When the KV cache cannot hold
all N requests, only b_max run and the rest wait: TTFT grows by (N - b_max) / X.
"""
from __future__ import annotations

import jax.numpy as jnp

from .. import operating_point as op
from . import chunked
from . import common as c


def _cycle_fn(x, args):
    p, tp, chunk, n_run, table = args
    lat = chunked.latency(p, tp, chunk, x, table=table)
    cycle = lat.ttft + c.decode_steps(p.sc) * lat.tpot
    return jnp.log(jnp.where(jnp.isfinite(cycle), x * cycle, jnp.inf)) - jnp.log(n_run)


def _cycle_upper(args):
    p, tp, chunk, _, table = args
    return chunked.rate_upper(p, tp, chunk, table)


def closed_loop(p: c.Point, tp, chunk, concurrency):
    """Mean (TTFT, TPOT, throughput X in requests/s) with `concurrency` requests in flight (p.sc in mean mode)."""
    ctx = c.mean_context(p.sc)
    b_max = c.kv_batch_limit(p, tp, ctx)
    n_run = jnp.clip(concurrency, 1.0, jnp.maximum(b_max, 1.0))
    table = chunked.tabulate(p, tp, chunk)
    x = op.max_rate(_cycle_fn, _cycle_upper, (p, tp, chunk, n_run, table))
    lat = chunked.latency(p, tp, chunk, x, table=table)
    ttft = lat.ttft + (concurrency - n_run) / x
    return ttft, lat.tpot, x

"""Colocated continuous batching with prefill priority (vLLM 2023), one instance of TP degree `tp` at Poisson
rate `lam`. A prefill iteration (one prompt) stalls every running decode (MODEL.md section 4.1).

TPOT of a request: its decode life L must fit n decode steps of time t between prefills. Prefills have priority,
so L is a delay busy period of an M/G/1 queue started by the work X0 = n t + B0, where B0 is the prefill backlog
that queued behind the request while it waited (arrivals during its TTFT). Busy-period moments give the mean,
variance and skewness of L; the q-quantile of TPOT = L / n follows by Cornish-Fisher (docs/model.md).
"""
from __future__ import annotations

import jax.numpy as jnp

from .. import queueing as qu
from . import common as c


def latency(p: c.Point, tp, lam, pool: c.Pool = c.LONE, prims: c.Primitives | None = None) -> c.Latency:
    """TTFT and TPOT of one colocated instance (TP tp) at Poisson rate lam requests/s, in `pool` (`prims`: its
    primitives, where computed already)."""
    sc = p.sc
    s, w, s_q = c.prefill_of(p, tp, prims)
    es, es2, es3 = qu.expect(s, w), qu.expect(s**2, w), qu.expect(s**3, w)
    rho = lam * es
    stable = rho < 1.0
    g = jnp.where(stable, 1.0 - rho, 1.0)
    n = c.decode_steps(sc)
    ctx = c.mean_context(sc)
    br = c.branches_of(p, tp, prims)
    tail = qu.pool_tail(lam, s, w, pool.servers, pool.dispatch, sc.arrival_ca2, sc.q)
    sojourn_mean = tail.wait_mean + es
    # Stalls reach a running request only from prompts that land on its instance: in a routed pool, only while no
    # other instance is idle (others_busy, read at the batch with every prompt stalling); and they do not pile up into
    # busy periods there (a prompt arriving during a stall goes elsewhere), so the compounding 1/g^k of one
    # instance's priority queue fades as 1/g^(k - 1 + share), share = 1 alone, 1/c in a pool of c.
    share = c.spread(pool)
    occupied = c.others_busy(c.batch_fixed_point(br, lam * n / g), pool)
    lam_s = lam * occupied
    rho_s = lam_s * es
    g = jnp.where(stable, 1.0 - rho_s, 1.0)
    backlog = rho_s * sojourn_mean  # prefill work queued behind the request when its first token comes out
    b = jnp.where(stable, c.batch_fixed_point(br, lam * n / g, lam * backlog / g), jnp.inf)
    step = c.affine_time(br, 1.0 + b)
    x0 = n * step + backlog
    life = x0 / g
    var = (x0 * lam_s * es2 / g ** (2.0 + share) + lam_s * es2 * sojourn_mean / g ** (1.0 + share)
           + (n * c.affine_slope(br, 1.0 + b)) ** 2 * c.batch_variance_over_lifetime(b) * share)
    mu3 = (x0 * (lam_s * es3 / g ** (3.0 + share) + 3.0 * (lam_s * es2) ** 2 / g ** (4.0 + share))
           + lam_s * es3 * sojourn_mean / g ** (2.0 + share))
    spread_ok = var > jnp.finfo(var.dtype).tiny  # none where no stall reaches a decode (a large routed pool)
    skew = jnp.where(spread_ok, mu3 / jnp.where(spread_ok, var, 1.0) ** 1.5, 0.0)
    tpot = jnp.where(stable, qu.cornish_fisher(life / n, var / n**2, skew, c.normal_z(sc), sc.mean_mode,
                                                       c.affine_time(br, 1.0)), jnp.inf)
    # TTFT: the pool's prefill queue with decode iterations as vacations (residual uniform on [0, step]) where the
    # prompt lands on an instance that is decoding.
    busy = c.all_busy(b, pool)
    ttft = qu.sojourn(lam, s, w, sc.q, sc.mean_mode, s_q, extra_mean=0.5 * busy * step,
                      extra_log_mgf=lambda th: qu.log_mixture_mgf(busy, qu.log_uniform_mgf(th, step)),
                      extra_quantile=busy * sc.q * step, arrival_ca2=sc.arrival_ca2, servers=pool.servers,
                      dispatch=pool.dispatch)
    return c.Latency(ttft, tpot, b, c.batch_quantile(b, c.normal_z(sc), sc.mean_mode, share),
                     c.kv_batch_limit(p, tp, ctx), rho, (1.0 - rho) * (1.0 - jnp.exp(-b)))


def rate_upper(p: c.Point, tp, prims: c.Primitives | None = None):
    """An upper bound on the instance's rate: prefill saturation or twice the KV-memory limit."""
    s, w, _ = c.prefill_of(p, tp, prims)
    ctx = c.mean_context(p.sc)
    br = c.branches_of(p, tp, prims)
    mem = 2.0 * (c.kv_batch_limit(p, tp, ctx) + 1.0) / (c.decode_steps(p.sc) * c.affine_time(br, 1.0))
    return jnp.minimum(1.0 / qu.expect(s, w), mem)

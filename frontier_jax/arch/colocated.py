"""Colocated continuous batching with prefill priority (vLLM 2023), one instance of TP degree `tp` at Poisson
rate `lam`. A prefill iteration (one prompt) stalls every running decode (MODEL.md section 4.1)."""
from __future__ import annotations

import jax.numpy as jnp

from .. import queueing as qu
from . import common as c


def latency(p: c.Point, tp, lam) -> c.Latency:
    sc = p.sc
    s, w, s_q = c.prefill_nodes(p, tp)
    es, es2, es3 = qu.expect(s, w), qu.expect(s**2, w), qu.expect(s**3, w)
    rho = lam * es
    n = c.decode_steps(sc)
    ctx = c.mean_context(sc)
    br = c.decode_affine(p, tp, ctx)
    # A decoding request is stalled by every prefill that arrives while it decodes: residence L = n t / (1 - rho).
    r = lam * n / (1.0 - rho)
    b = jnp.where(rho < 1.0, c.batch_fixed_point(br, r), jnp.inf)
    step = c.affine_time(br, 1.0 + b)
    life = n * step / (1.0 - rho)
    stalls = lam * life
    tpot_mean = step / (1.0 - rho)
    var = c.affine_slope(br, 1.0 + b) ** 2 * c.batch_variance_over_lifetime(b) + stalls * es2 / n**2
    skew = stalls * es3 / n**3 / jnp.maximum(var, 1e-300) ** 1.5
    tpot = qu.cornish_fisher(tpot_mean, var, skew, sc.q, sc.mean_mode)
    # TTFT: M/G/1 prefill queue with decode iterations as vacations (residual uniform on [0, step]).
    busy = 1.0 - jnp.exp(-b)
    ttft = qu.sojourn(lam, s, w, sc.q, sc.mean_mode, s_q, extra_mean=0.5 * busy * step,
                      extra_mgf=lambda th: busy * qu.uniform_mgf(th, step) + 1.0 - busy,
                      extra_quantile=busy * sc.q * step, arrival_ca2=sc.arrival_ca2)
    return c.Latency(ttft, tpot, b, c.batch_quantile(b, sc.q, sc.mean_mode), c.kv_batch_limit(p, tp, ctx), rho)


def rate_upper(p: c.Point, tp):
    s, w, _ = c.prefill_nodes(p, tp)
    ctx = c.mean_context(p.sc)
    br = c.decode_affine(p, tp, ctx)
    mem = 2.0 * (c.kv_batch_limit(p, tp, ctx) + 1.0) / (c.decode_steps(p.sc) * c.affine_time(br, 1.0))
    return jnp.minimum(1.0 / qu.expect(s, w), mem)

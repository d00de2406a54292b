"""Chunked-prefill colocation (Sarathi-Serve, stall-free), one instance of TP degree `tp`, token budget `chunk`,
at Poisson rate `lam` (MODEL.md section 4.2). Every iteration carries the b running decodes plus up to
k = chunk - b prompt tokens; a prompt of I tokens takes ceil(I / k) mixed iterations."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import latency as lat
from .. import queueing as qu
from . import common as c

_FIXED_POINT_STEPS = 16


def _mixed_step(p: c.Point, tp, chunk, b, ctx):
    """(k, t_mix, t_plain) at mean batch b: prompt tokens per mixed iteration and the two iteration times."""
    sc = p.sc
    new = (1.0 - sc.cache_hit) * sc.input_len
    k = jnp.clip(chunk - b, 1.0, None)
    k_eff = jnp.minimum(k, new)
    prefix = sc.cache_hit * sc.input_len + 0.5 * jnp.maximum(new - k_eff, 0.0)  # mean KV re-read per chunk
    t_mix = lat.mixed_seconds(p.hw, p.model, p.eff, b, ctx, k_eff, prefix, tp, sc.fp8)
    t_plain = lat.decode_seconds(p.hw, p.model, p.eff, b, ctx, tp, sc.fp8)
    return k_eff, t_mix, t_plain


def latency(p: c.Point, tp, chunk, lam) -> c.Latency:
    sc = p.sc
    n = c.decode_steps(sc)
    ctx = c.mean_context(sc)
    new = (1.0 - sc.cache_hit) * sc.input_len
    new2 = new**2 * (1.0 + sc.input_cv**2)
    new3 = new**3 * (1.0 + sc.input_cv**2) ** 3

    def tpot_mean(b):
        k, t_mix, t_plain = _mixed_step(p, tp, chunk, b, ctx)
        extra = lam * (new / k) * (t_mix - t_plain)  # fraction of time added by prompt tokens
        return t_plain / (1.0 - extra), extra

    def body(b, _):
        t, extra = tpot_mean(1.0 + b)
        return jnp.where(extra < 1.0, lam * n * t, jnp.inf), None

    b, _ = jax.lax.scan(body, jnp.zeros_like(lam), None, length=_FIXED_POINT_STEPS)
    b_next = lam * n * tpot_mean(1.0 + b)[0]
    converged = jnp.abs(b_next - b) <= 1e-3 * (1.0 + b)
    b = jnp.where(converged & (b < chunk - 1.0), b, jnp.inf)

    k, t_mix, t_plain = _mixed_step(p, tp, chunk, 1.0 + b, ctx)
    mean, extra = tpot_mean(1.0 + b)
    life = n * mean
    prompts = lam * life
    delta = (t_mix - t_plain) / k
    slope = (lat.decode_seconds(p.hw, p.model, p.eff, 2.0 + b, ctx, tp, sc.fp8) - t_plain)
    var = slope**2 * c.batch_variance_over_lifetime(b) + prompts * new2 * delta**2 / n**2
    skew = prompts * new3 * delta**3 / n**3 / jnp.maximum(var, 1e-300) ** 1.5
    tpot = qu.cornish_fisher(mean, var, skew, sc.q, sc.mean_mode)

    # TTFT: FCFS queue of prompt work, each prompt needing I/k mixed iterations; its own prompt takes ceil(I/k).
    nodes, w = qu.length_nodes(new, sc.input_cv)
    service = nodes / k * t_mix
    new_q = qu.lognormal_quantile(new, sc.input_cv, sc.q)
    own_q = jnp.ceil(new_q / k) * t_mix
    busy = 1.0 - jnp.exp(-b)
    ttft = qu.sojourn(lam, service, w, sc.q, sc.mean_mode, own_q,
                      extra_mean=0.5 * busy * t_plain + qu.expect(jnp.ceil(nodes / k) - nodes / k, w) * t_mix,
                      extra_mgf=lambda th: (busy * qu.uniform_mgf(th, t_plain) + 1.0 - busy)
                      * qu.mgf(th, (jnp.ceil(nodes / k) - nodes / k) * t_mix, w),
                      extra_quantile=busy * sc.q * t_plain, arrival_ca2=sc.arrival_ca2)
    return c.Latency(ttft, tpot, b, c.batch_quantile(b, sc.q, sc.mean_mode), c.kv_batch_limit(p, tp, ctx), extra)


def rate_upper(p: c.Point, tp, chunk):
    sc = p.sc
    ctx = c.mean_context(sc)
    new = (1.0 - sc.cache_hit) * sc.input_len
    k, t_mix, t_plain = _mixed_step(p, tp, chunk, 0.0, ctx)
    prefill_limit = 1.5 * k / (new * t_mix)
    mem = 2.0 * (c.kv_batch_limit(p, tp, ctx) + 1.0) / (c.decode_steps(sc) * lat.decode_seconds(
        p.hw, p.model, p.eff, 1.0, ctx, tp, sc.fp8))
    return jnp.minimum(prefill_limit, mem)

"""Chunked-prefill colocation (Sarathi-Serve, stall-free), one instance of TP degree `tp`, token budget `chunk`,
at Poisson rate `lam` (MODEL.md section 4.2). Every iteration carries the b running decodes plus up to
k = chunk - b prompt tokens; a prompt of I tokens takes ceil(I / k) mixed iterations."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import latency as lat
from .. import queueing as qu
from ...tracing import scan
from . import common as c

_FIXED_POINT_STEPS = 6


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


def _last_chunk(p: c.Point, tp, k, b, ctx, tokens):
    """Seconds of the mixed iteration that carries the last chunk of a prompt of `tokens` new tokens (k per chunk):
    (ceil(tokens / k) - 1) full chunks come first; the last has the rest and re-reads the KV of all before it."""
    sc = p.sc
    full = jnp.maximum(jnp.ceil(tokens / k) - 1.0, 0.0)
    rest = tokens - full * k
    prefix = sc.cache_hit * sc.input_len + full * k
    return full, lat.mixed_seconds(p.hw, p.model, p.eff, b, ctx, rest, prefix, tp, sc.fp8), rest


def latency(p: c.Point, tp, chunk, lam, pool: c.Pool = c.LONE) -> c.Latency:
    """TPOT: a decode advances one token per iteration; an iteration is mixed (t_mix) while prompt work is queued,
    plain (t_plain) otherwise. The mixed iterations in a request's life are those of the prompts queued behind it
    at its first token and of those arriving during its life: M = sum of I_j / k, a compound Poisson count with
    mean lambda (T + L) E[I] / k. TPOT = t_plain + (t_mix - t_plain) min(M, n) / n."""
    sc = p.sc
    n = c.decode_steps(sc)
    ctx = c.mean_context(sc)
    new = (1.0 - sc.cache_hit) * sc.input_len
    new2 = new**2 * (1.0 + sc.input_cv**2)
    new3 = new**3 * (1.0 + sc.input_cv**2) ** 3

    def state(b):
        k, t_mix, t_plain = _mixed_step(p, tp, chunk, 1.0 + b, ctx)
        es, es2 = new / k * t_mix, new2 / k**2 * t_mix**2
        rho = lam * es
        wait = qu.pool_wait_mean(lam, es, es2, pool.servers, pool.dispatch, sc.arrival_ca2)
        sojourn_mean = jnp.where(rho < 1.0, wait, 0.0) + es + 0.5 * t_mix
        # mixed iterations per second of prompt work on this instance while it decodes (in a routed pool only the
        # prompts that find no idle instance: common.others_busy)
        a = lam * c.others_busy(b, pool) * new / k
        delta = t_mix - t_plain
        tpot = jnp.minimum((t_plain + delta * a * sojourn_mean / n) / jnp.maximum(1.0 - delta * a, 1e-12), t_mix)
        ok = (rho < 1.0) & (delta * a < 1.0)
        return jnp.where(ok, tpot, jnp.inf), sojourn_mean, k, t_mix, t_plain, rho

    def gap(b):
        return lam * n * state(b)[0] - b

    def newton(b, _):  # b = lam n TPOT(1 + b): Newton on the gap, forward-mode derivative, kept in [0, chunk]
        g, dg = jax.jvp(gap, (b,), (jnp.ones_like(b),))
        step = jnp.where(jnp.isfinite(g) & (dg < 0.0), -g / jnp.where(dg < 0.0, dg, -1.0), chunk)
        return jnp.clip(b + step, 0.0, chunk), None

    b0 = c.batch_fixed_point(c.decode_affine(p, tp, ctx), lam * n)  # warm start: decode with no prompt work
    b, _ = scan(newton, jnp.clip(b0, 0.0, chunk), _FIXED_POINT_STEPS)
    converged = jnp.abs(gap(b)) <= 1e-6 * (1.0 + b)
    b = jnp.where(converged & (b < chunk - 1.0), b, jnp.inf)
    mean, sojourn_mean, k, t_mix, t_plain, rho = state(b)

    life = n * mean
    window = lam * c.others_busy(b, pool) * (sojourn_mean + life)
    delta = t_mix - t_plain
    share = c.spread(pool)
    slope = lat.decode_seconds(p.hw, p.model, p.eff, 2.0 + b, ctx, tp, sc.fp8) - t_plain
    batch_var = slope**2 * c.batch_variance_over_lifetime(b) * share
    var = (delta / (n * k)) ** 2 * window * new2 + batch_var
    spread_ok = var > jnp.finfo(var.dtype).tiny
    skew = jnp.where(spread_ok, (delta / (n * k)) ** 3 * window * new3 / jnp.where(spread_ok, var, 1.0) ** 1.5, 0.0)
    cap = t_mix + slope * jnp.where(sc.mean_mode, 0.0, c.normal_z(sc) * qu.safe_sqrt(2.0 / 3.0 * b * share))
    floor = lat.decode_seconds(p.hw, p.model, p.eff, 1.0, ctx, tp, sc.fp8)
    tpot = jnp.minimum(qu.cornish_fisher(mean, var, skew, c.normal_z(sc), sc.mean_mode, floor), jnp.maximum(cap, mean))

    # TTFT: FCFS queue of prompt work, each prompt needing I/k mixed iterations of work; its own prompt is done when
    # its last chunk is, which rides in an iteration of its own size (the rest of the budget carries the next prompt).
    nodes, w = qu.length_nodes(new, sc.input_cv)
    service = nodes / k * t_mix
    i_q = qu.lognormal_quantile(new, sc.input_cv, c.normal_z(sc))
    full_q, last_q, _ = _last_chunk(p, tp, k, 1.0 + b, ctx, i_q)
    own_q = full_q * t_mix + last_q
    full_n, last_n, rest_n = _last_chunk(p, tp, k[..., None], 1.0 + b[..., None], ctx[..., None], nodes)
    remainder = jnp.maximum(last_n - rest_n / k[..., None] * t_mix[..., None], 0.0)  # beyond the fluid work
    busy = c.all_busy(b, pool)
    ttft = qu.sojourn(lam, service, w, sc.q, sc.mean_mode, own_q,
                      extra_mean=0.5 * busy * t_plain + qu.expect(remainder, w),
                      extra_log_mgf=lambda th: (qu.log_mixture_mgf(busy, qu.log_uniform_mgf(th, t_plain))
                                                + qu.log_mgf(th, remainder, w)),
                      extra_quantile=busy * sc.q * t_plain, arrival_ca2=sc.arrival_ca2, servers=pool.servers,
                      dispatch=pool.dispatch)
    prefill_busy = lam * (new / k) * delta
    running = 1.0 - jnp.exp(-b) * (1.0 - jnp.minimum(rho, 1.0))  # iterations run while decodes or prompts wait
    return c.Latency(ttft, tpot, b, c.batch_quantile(b, c.normal_z(sc), sc.mean_mode, share),
                     c.kv_batch_limit(p, tp, ctx), prefill_busy, jnp.maximum(running - prefill_busy, 0.0))


def rate_upper(p: c.Point, tp, chunk):
    """An upper bound on the chunked instance's rate: 1.5x prompt-token saturation or twice the KV-memory limit."""
    sc = p.sc
    ctx = c.mean_context(sc)
    new = (1.0 - sc.cache_hit) * sc.input_len
    k, t_mix, t_plain = _mixed_step(p, tp, chunk, 0.0, ctx)
    prefill_limit = 1.5 * k / (new * t_mix)
    mem = 2.0 * (c.kv_batch_limit(p, tp, ctx) + 1.0) / (c.decode_steps(sc) * lat.decode_seconds(
        p.hw, p.model, p.eff, 1.0, ctx, tp, sc.fp8))
    return jnp.minimum(prefill_limit, mem)

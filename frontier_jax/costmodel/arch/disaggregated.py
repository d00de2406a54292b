"""Disaggregated prefill and decode pools (DistServe, Splitwise, Mooncake), MODEL.md section 4.3.

A prefill instance (TP g_p) at Poisson rate lam: M/G/1 prefill queue, then the KV of the prompt crosses a link of
g_p * kv_bandwidth bytes/s (one NIC per GPU), itself an FCFS queue. With layer-wise overlap only the part of the
transfer that cannot hide behind the remaining layers is exposed. A decode instance (TP g_d) is a continuous-
batching decode pool with no prefill interference. The two pools are sized separately.

`link` (a Link) selects what the transfer costs: FREE = infinite bandwidth (the reference of the KV tax), EXPOSED =
the exposed transfer only (TTFT slack it eats, the indirect tax), FULL = exposed transfer plus link queueing and the
link's capacity limit (the full model; the difference from EXPOSED is the direct tax).
"""
from __future__ import annotations

import enum

import jax.numpy as jnp

from .. import latency as lat
from .. import queueing as qu
from . import common as c


class Link(enum.IntEnum):
    """What the KV transfer costs the prefill pool (see the module docstring)."""

    FREE = 0
    EXPOSED = 1
    FULL = 2


def transfer_nodes(p: c.Point, tp, nodes):
    """Seconds to move the KV of prompts of `nodes` tokens over the instance's tp links."""
    return nodes * lat.kv_bytes_per_token(p.model, p.sc.kv_fp8) / (tp * p.sc.kv_bandwidth)


def exposed_transfer(transfer, prefill, layers, overlap):
    """The part of a transfer not hidden behind the prefill: with layer-wise overlap, what the last layer's share
    or the transfer's excess over the remaining layers' prefill leaves exposed; without it, all of it."""
    hidden = jnp.maximum(transfer / layers, transfer - prefill * (layers - 1.0) / layers)
    return jnp.where(overlap > 0.5, hidden, transfer)


def _link_at_least(link, level):
    """1 where the link mode is at least `level` (0, 1 or 2); a Python number decides at trace time, so the parts a
    fixed mode does not use are never traced (the same values: they would add exactly 0)."""
    if isinstance(link, (int, float)):
        return link > level - 0.5
    return jnp.where(link > level - 0.5, 1.0, 0.0)


def prefill_latency(p: c.Point, tp, overlap, link, lam, pool: c.Pool = c.LONE,
                    prims: c.Primitives | None = None) -> c.Latency:
    """TTFT of a prefill instance (TP tp, overlap 0/1) at Poisson rate lam in `pool`, with the KV link priced as
    `link` (`prims`: its primitives, where computed already)."""
    sc = p.sc
    s, w, s_q = c.prefill_of(p, tp, prims)
    nodes, _ = qu.length_nodes(sc.input_len, sc.input_cv)
    on, queue = _link_at_least(link, 1), _link_at_least(link, 2)
    if on is False:
        ttft = qu.sojourn(lam, s, w, sc.q, sc.mean_mode, s_q, arrival_ca2=sc.arrival_ca2, servers=pool.servers,
                          dispatch=pool.dispatch)
    else:
        iq = qu.lognormal_quantile(sc.input_len, sc.input_cv, c.normal_z(sc))
        x = on * exposed_transfer(transfer_nodes(p, tp, nodes), s, p.model.layers, overlap)
        x_q = on * exposed_transfer(transfer_nodes(p, tp, iq), s_q, p.model.layers, overlap)
        ttft = qu.sojourn(lam, s, w, sc.q, sc.mean_mode, s_q, extra_mean=qu.expect(x, w),
                          extra_log_mgf=lambda th: qu.log_mgf(th, x, w), extra_quantile=x_q,
                          arrival_ca2=sc.arrival_ca2, servers=pool.servers, dispatch=pool.dispatch)
    if queue is not False:
        # The wait before a transfer starts, at the sender's links and again at the receiver's: the join sizes the
        # decode pool so that its links keep the receiver's wait within this reserve plus the TTFT's slack
        # (cost.receive_utilization_cap), a conservative sum of quantiles.
        ttft = ttft + jnp.where(queue, 2.0 * link_wait(p, tp, lam, prims), 0.0)
    ttft = ttft + cache_load_time(p, tp)
    rho = lam * qu.expect(s, w)
    zero = jnp.zeros_like(rho)
    # The instance must hold its weights and at least one prompt's KV.
    room = lat.kv_capacity_tokens(p.hw, p.model, tp, sc.fp8, kv_fp8=sc.kv_fp8) / sc.input_len
    return c.Latency(ttft, zero, zero, zero + 1.0, room, rho, zero)


def link_wait(p: c.Point, tp, lam, prims: c.Primitives | None = None):
    """p_q (or mean) wait of a prompt's KV for the instance's links: an FCFS queue fed by its prefill completions,
    with arrival SCV from Whitt's departure approximation rho^2 cs^2 + (1 - rho^2) ca^2 (near deterministic for a
    busy instance of fixed prompts: it then rarely queues)."""
    sc = p.sc
    s, w, _ = c.prefill_of(p, tp, prims)
    nodes, _ = qu.length_nodes(sc.input_len, sc.input_cv)
    es, es2 = qu.expect(s, w), qu.expect(s**2, w)
    rho = jnp.minimum(lam * es, 1.0)
    departures = rho**2 * (es2 / es**2 - 1.0) + (1.0 - rho**2) * sc.arrival_ca2
    return qu.wait_quantile(lam, transfer_nodes(p, tp, nodes), w, sc.q, sc.mean_mode, arrival_ca2=departures)


def mean_transfer(p: c.Point, tp):
    """Mean seconds a prompt's KV occupies the instance's tp links (the whole transfer, at the sender's bandwidth)."""
    nodes, w = qu.length_nodes(p.sc.input_len, p.sc.input_cv)
    return qu.expect(transfer_nodes(p, tp, nodes), w)


def cache_load_time(p: c.Point, tp):
    """Seconds to load the prefix-cache hits of a contract-percentile prompt (the mean one in mean mode) from a
    global KV cache over the instance's tp links (Mooncake), added to TTFT as a deterministic delay: a pure latency,
    not GPU time (the load is prefetched while the request queues and proceeds layer by layer). 0 when
    cache_load_bandwidth is NO_LINK_LIMIT (a local prefix cache)."""
    sc = p.sc
    i_q = jnp.where(sc.mean_mode, sc.input_len, qu.lognormal_quantile(sc.input_len, sc.input_cv, c.normal_z(sc)))
    # Divided in turn, never by tp * bandwidth: at NO_LINK_LIMIT a zero tangent of tp would give 0 * inf = NaN.
    return sc.cache_hit * i_q * lat.kv_bytes_per_token(p.model, sc.kv_fp8) / tp / sc.cache_load_bandwidth


def prefill_rate_upper(p: c.Point, tp, overlap, link, prims: c.Primitives | None = None):
    """The prefill instance's stability limit in requests/s (service, and the link's capacity under Link.FULL)."""
    s, w, _ = c.prefill_of(p, tp, prims)
    service_limit = 1.0 / qu.expect(s, w)
    queue = _link_at_least(link, 2)
    if queue is False:
        return service_limit
    nodes, _ = qu.length_nodes(p.sc.input_len, p.sc.input_cv)
    link_limit = jnp.where(queue, 1.0 / qu.expect(transfer_nodes(p, tp, nodes), w), jnp.inf)
    return jnp.minimum(service_limit, link_limit)


def decode_latency(p: c.Point, tp, lam, pool: c.Pool = c.LONE, prims: c.Primitives | None = None) -> c.Latency:
    """TPOT of a decode instance (TP tp) fed at lam requests/s in `pool`, free of prefill interference."""
    sc = p.sc
    n = c.decode_steps(sc)
    ctx = c.mean_context(sc)
    br = c.branches_of(p, tp, prims)
    b = c.batch_fixed_point(br, lam * n)
    mean = c.affine_time(br, 1.0 + b)
    share = c.spread(pool)
    var = c.affine_slope(br, 1.0 + b) ** 2 * c.batch_variance_over_lifetime(b) * share
    tpot = qu.cornish_fisher(mean, var, jnp.zeros_like(mean), c.normal_z(sc), sc.mean_mode, c.affine_time(br, 1.0))
    zero = jnp.zeros_like(b)
    return c.Latency(zero, tpot, b, c.batch_quantile(b, c.normal_z(sc), sc.mean_mode, share),
                     c.kv_batch_limit(p, tp, ctx), zero, 1.0 - jnp.exp(-b))


def decode_rate_upper(p: c.Point, tp, prims: c.Primitives | None = None):
    """An upper bound on the decode instance's rate (twice the KV-memory-limited rate at a batch step of one)."""
    ctx = c.mean_context(p.sc)
    br = c.branches_of(p, tp, prims)
    return 2.0 * (c.kv_batch_limit(p, tp, ctx) + 1.0) / (c.decode_steps(p.sc) * c.affine_time(br, 1.0))

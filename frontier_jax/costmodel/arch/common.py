"""What every architecture needs: the per-point inputs, the pool an instance belongs to, the decode-batch fixed
point and the TPOT tail."""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import latency as lat
from .. import queueing as qu
from ..types import Latency, Point, Scenario

__all__ = ["Latency", "Point", "Scenario", "Pool", "LONE", "spread", "all_busy", "others_busy", "decode_steps",
           "mean_context", "decode_affine", "affine_time",
           "affine_slope", "batch_fixed_point", "normal_z", "batch_quantile", "batch_variance_over_lifetime",
           "kv_batch_limit", "prefill_nodes", "Primitives", "primitives", "prefill_of", "branches_of"]


class Pool(NamedTuple):
    """The pool an instance serves in: how many instances share its arrivals and how they are dispatched."""

    servers: jax.Array    # instances (real >= 1 while sizing; inf: the large-deployment limit)
    dispatch: jax.Array   # queueing.Dispatch


LONE = Pool(1.0, qu.Dispatch.RANDOM)  # one instance with its own queue (or random dispatch: the same)


def spread(pool: Pool):
    """How much of a lone instance's occupancy fluctuation remains in a pool: 1 with random dispatch (each
    instance's batch is its own Poisson occupancy), 1/c when a router balances c instances (JSQ or a central
    queue: the pool's M/G/inf occupancy shared evenly), 0 in the large-deployment limit."""
    pooled = pool.dispatch != qu.Dispatch.RANDOM
    c = jnp.maximum(jnp.asarray(pool.servers, float), 1.0)
    return jnp.where(pooled, 1.0 / c, 1.0)


POOL_CAP = 1000.0  # pools larger than this behave as this one in all_busy (a smooth, steep step at b = 1)


def _occupied(instances, b):
    """P(N >= m) for N ~ Poisson(m b): m instances sharing an occupancy of b each all hold decodes (m >= 1)."""
    return jnp.clip(1.0 - qu.upper_gamma_ratio(instances, jnp.maximum(instances * b, 1e-300)), 0.0, 1.0)


def _pool_size(pool: Pool):
    pooled = pool.dispatch != qu.Dispatch.RANDOM
    return jnp.where(pooled, jnp.clip(jnp.asarray(pool.servers, float), 1.0, POOL_CAP), 1.0)


def all_busy(b, pool: Pool):
    """The probability that a new prompt lands on an instance with running decodes (an arrival's view). Alone (or
    with random dispatch) that is the instance's own P(batch > 0) = 1 - e^-b. A router (JSQ, a central queue)
    sends it to an idle instance while there is one, so only when all c instances hold decodes: P(N >= c),
    N ~ Poisson(c b) the pool's occupancy shared evenly (= 1 - e^-b at c = 1; a step at b = 1 as c grows)."""
    c = _pool_size(pool)
    return jnp.where(jnp.isfinite(b), _occupied(c, b), 1.0)


def others_busy(b, pool: Pool):
    """The probability that a prompt arriving while a request decodes lands on that request's instance's side of
    the router (a present request's view): 1 alone; in a routed pool, only when the other c - 1 instances all hold
    decodes, P(N' >= c - 1), N' ~ Poisson((c - 1) b). Between one and two instances the two ends are joined
    linearly (the gamma expansion is used from one instance up)."""
    c = _pool_size(pool)
    two = 1.0 - jnp.exp(-b)
    more = _occupied(jnp.maximum(c - 1.0, 1.0), b)
    return jnp.where(jnp.isfinite(b), jnp.where(c < 2.0, (2.0 - c) + (c - 1.0) * two, more), 1.0)


def decode_steps(sc: Scenario):
    """Decode iterations per request after the first token (at least one, so O = 1 stays finite)."""
    return jnp.maximum(sc.output_len - 1.0, 1.0)


def mean_context(sc: Scenario):
    """Time-averaged context of a decoding request: prompt plus half the (length-biased) output."""
    return sc.input_len + 0.5 * sc.output_len * (1.0 + sc.output_cv**2)


DECODE_KNOTS = tuple(2.0**j for j in range(13))  # 1, 2, 4, ..., 4096
"""Batches at which a kernel-composed decode step is evaluated for `decode_affine` (beyond the last: its slope)."""


def decode_affine(p: Point, tp, context, step_time=None):
    """Decode step time as the max of increasing affine maps of the batch b, ((a1, s1), (a2, s2), ...).
    `step_time(batch)`: the kernel engine's decode step where already tabulated (else composed here).

    Roofline: the compute and the memory branch (exact). Measured kernels: the slopes of the secants between
    consecutive DECODE_KNOTS (floored at 0, capped at the envelope's last edge), each line lowered until no knot
    lies below it. Their max is the lower
    convex envelope of the knots (at the slopes present): the piecewise-linear interpolant where the step time is
    convex in b, below it where a measured bump makes it locally concave."""
    if lat.uses_kernels(p.eff):
        last = lambda x: jnp.asarray(x)[..., None]  # noqa: E731  (knots on a new last axis: one evaluation)
        hw, md, eff = (jax.tree.map(last, t) for t in (p.hw, p.model, p.eff))
        b = np.asarray(DECODE_KNOTS)
        knots = jnp.asarray(b, jnp.result_type(float))
        t_all = (lat.decode_seconds(hw, md, eff, knots, last(context), last(tp), last(p.sc.fp8),
                                     last(p.sc.kv_fp8)) if step_time is None
                 else step_time(knots))
        # The envelope's last edge, into the last knot: no supporting line needs a steeper slope. A steeper secant
        # (a bump at small batches) would only matter beyond the last knot, where its line would overtake the
        # envelope and set a false stability edge for the batch fixed point (lam n slope = 1).
        final = functools.reduce(jnp.maximum, [(t_all[..., -1] - t_all[..., j]) / (b[-1] - b[j])
                                               for j in range(b.size - 1)])
        s = jnp.clip(jnp.diff(t_all, axis=-1) / np.diff(b), 0.0, jnp.maximum(final, 0.0)[..., None])
        # each secant lowered until it passes below every knot: a supporting line of the knots' lower convex
        # envelope (secants on one axis, knots on the next). The lowest knot is picked, then read: a min reduction's
        # derivative divides by the number of entries equal to its result, which XLA may round differently (0/0)
        gap = t_all[..., None, :] - s[..., None] * b
        a = jnp.take_along_axis(gap, jnp.argmin(gap, axis=-1)[..., None], axis=-1)[..., 0]
        return tuple((a[..., i], s[..., i]) for i in range(len(DECODE_KNOTS) - 1))
    t0 = lat.decode_seconds(p.hw, p.model, p.eff, 0.0, context, tp, p.sc.fp8, p.sc.kv_fp8)
    f1, m1, _ = lat.decode_cost(p.model, 1.0, context, p.sc.fp8, p.sc.kv_fp8)
    eta_f = p.eff.eta_flops * tp ** (-p.eff.eta_flops_decay)
    eta_b = p.eff.eta_hbm * tp ** (-p.eff.eta_hbm_decay)
    s_compute = f1 / (tp * lat.peak_flops(p.hw, p.sc.fp8) * eta_f)
    mem0 = lat.weight_bytes(p.model, p.sc.fp8) / (tp * p.hw.hbm_bandwidth * eta_b)
    s_memory = m1 / (tp * p.hw.hbm_bandwidth * eta_b) - mem0
    extra0 = t0 - mem0  # overhead and all-reduce latency at b = 0 (memory-bound at b = 0)
    s_extra = _ring_slope(p, tp)
    return (extra0, s_compute + s_extra), (extra0 + mem0, s_memory + s_extra)


def _ring_slope(p: Point, tp):
    ring = 2.0 * (tp - 1.0) / tp * p.model.hidden * lat.ACTIVATION_BYTES / p.hw.nvlink_bandwidth
    return jnp.where(tp > 1.0, 2.0 * p.model.layers * ring, 0.0)


def affine_time(branches, b):
    """Decode step time at batch b from decode_affine's branches."""
    return functools.reduce(jnp.maximum, [a + s * b for a, s in branches])


def affine_slope(branches, b):
    """d(step time)/d(batch) of the active branch at batch b (the first of the highest)."""
    best, slope = None, None
    for a, s in branches:
        t = a + s * b
        if best is None:
            best, slope = t, s + 0.0 * t
        else:
            slope = jnp.where(t > best, s, slope)
            best = jnp.maximum(best, t)
    return slope


def batch_fixed_point(branches, arrivals_per_step, constant=0.0):
    """Mean occupancy b of an M/G/infinity decode pool whose residence is n steps of t(1 + b) each, plus a constant:
    b = c + r t(1 + b) with r = lambda n / (1 - stall fraction). For t the max of increasing affine maps the fixed
    point is the max of the branches' fixed points."""
    out = []
    for a, s in branches:
        den = 1.0 - arrivals_per_step * s
        b = (constant + arrivals_per_step * (a + s)) / jnp.where(den > 0.0, den, 1.0)
        out.append(jnp.where(den > 0.0, b, jnp.inf))
    return functools.reduce(jnp.maximum, out)


def normal_z(sc: Scenario):
    """The standard normal quantile of the contract percentile. The latency model needs it in every evaluation, inside
    the rate solvers' loops; computed once per point (Scenario.z) it is not traced again at each use."""
    return sc.z


def batch_quantile(b, z, mean_mode, share=1.0):
    """Instantaneous quantile of the batch (Poisson occupancy, normal approximation, z = ndtri(q)) plus the tagged
    request; `share` (spread(pool)) scales the occupancy's variance."""
    return jnp.where(mean_mode, b + 1.0, b + 1.0 + z * qu.safe_sqrt(b * share))



def batch_variance_over_lifetime(b):
    """Variance of the time-average of an M/D/infinity occupancy over one residence time: (2/3) b."""
    return 2.0 / 3.0 * b


def kv_batch_limit(p: Point, tp, context):
    """Sequences of mean context `context` whose KV cache fits on a TP group of `tp` GPUs."""
    return lat.kv_capacity_tokens(p.hw, p.model, tp, p.sc.fp8, kv_fp8=p.sc.kv_fp8) / context


def _prompt_lengths(p: Point):
    """(lengths, weights): the input-length quadrature nodes and, last (weight none), the q-quantile prompt."""
    nodes, w = qu.length_nodes(p.sc.input_len, p.sc.input_cv)
    i_q = qu.lognormal_quantile(p.sc.input_len, p.sc.input_cv, normal_z(p.sc))
    return jnp.concatenate([nodes, jnp.broadcast_to(i_q, nodes.shape[:-1])[..., None]], axis=-1), w


def _iteration_seconds(p: Point, tp, lengths, context=0.0, batches=()):
    """Seconds of the prefill iterations of one prompt of each of `lengths` (its prefix-cache hits attended to, not
    computed) and then of the decode iterations of each of `batches` sequences at KV length `context`, on a
    trailing axis: one evaluation, because with measured kernels each call site of an iteration time is a program
    of ~2,000 lookup operations to compile. A decode iteration is a mixed one without prompt tokens."""
    last = lambda x: jnp.asarray(x)[..., None]  # noqa: E731
    h = last(p.sc.cache_hit)
    b = jnp.broadcast_to(jnp.asarray(batches, lengths.dtype), lengths.shape[:-1] + (len(batches),))
    zl, zb = jnp.zeros_like(lengths), jnp.zeros_like(b)

    def cat(prompts, decodes):
        lead = jnp.broadcast_shapes(prompts.shape[:-1], decodes.shape[:-1])
        return jnp.concatenate([jnp.broadcast_to(a, lead + a.shape[-1:]) for a in (prompts, decodes)], axis=-1)

    hw, md, eff = (jax.tree.map(last, t) for t in (p.hw, p.model, p.eff))
    return lat.mixed_seconds(hw, md, eff, cat(zl, b), cat(zl, zb + last(context)), cat((1.0 - h) * lengths, zb),
                             cat(h * lengths, zb), last(tp), last(p.sc.fp8), last(p.sc.kv_fp8))


def prefill_nodes(p: Point, tp):
    """Prefill service times at the input-length quadrature nodes (prefix-cache hits skip their compute but the
    new tokens still attend to them), and the q-quantile of the own prefill."""
    lengths, w = _prompt_lengths(p)
    s = _iteration_seconds(p, tp, lengths)
    return s[..., :-1], w, s[..., -1]


class Primitives(NamedTuple):
    """A configuration's rate-independent latency primitives, computed once outside the rate solver where each
    costs many measured-kernel lookups (the `-kernels` engines); None where a search does not use the part."""

    prefill: tuple | None    # prefill_nodes(p, tp): (s, w, s_q)
    branches: tuple | None   # decode_affine(p, tp, mean_context(p.sc))


def primitives(p: Point, tp, prefill: bool = True, decode: bool = True) -> Primitives:
    """The Primitives of one configuration (TP degree tp) at point p (with measured kernels, the prompts' and the
    decode knots' iterations in one evaluation)."""
    if prefill and decode and lat.uses_kernels(p.eff):
        lengths, w = _prompt_lengths(p)
        ctx = mean_context(p.sc)
        t = _iteration_seconds(p, tp, lengths, ctx, DECODE_KNOTS)
        n = lengths.shape[-1]
        return Primitives((t[..., :n - 1], w, t[..., n - 1]), decode_affine(p, tp, ctx, lambda _: t[..., n:]))
    return Primitives(prefill_nodes(p, tp) if prefill else None,
                      decode_affine(p, tp, mean_context(p.sc)) if decode else None)


def prefill_of(p: Point, tp, prims: Primitives | None = None):
    """prefill_nodes(p, tp), from `prims` where given."""
    return prefill_nodes(p, tp) if prims is None or prims.prefill is None else prims.prefill


def branches_of(p: Point, tp, prims: Primitives | None = None):
    """decode_affine at the mean context, from `prims` where given."""
    if prims is None or prims.branches is None:
        return decode_affine(p, tp, mean_context(p.sc))
    return prims.branches

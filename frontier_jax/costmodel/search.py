"""Configuration search and sizing for one point (MODEL.md section 6), vectorised over every configuration.

For each architecture every configuration of the (static) SearchSpace gets its largest compliant per-instance rate
from the rate solver (operating_point.max_rate); sizing turns that into GPUs per unit request rate, the quantity
the cost is proportional to; the cheapest configuration wins. Each stage returns a NamedTuple. Pure and
scalar-in, scalar-out per architecture; `jax.vmap` it for many points.

The stages are split by what they read, so that a sweep can share them between points (runner/sharing.py):
`search_link_blind` never reads the KV link or the price, `search_prefill_pool` never reads the decode side.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import latency as lat
from . import operating_point as op
from . import queueing as qu
from .arch import chunked, colocated, disaggregated
from .arch.common import Pool, mean_context, prefill_of, primitives as prims_of
from .arch.disaggregated import Link
from .iteration_table import iteration_table
from .queueing import Dispatch
from .types import Demand, Infeasible, Latency, Point, SearchSpace


class InstanceChoice(NamedTuple):
    """The cheapest configuration of a colocated architecture (one kind of instance)."""

    gpus_per_rate: jax.Array   # GPUs per unit request rate (requests/s); NaN where nothing is compliant
    prefill_busy: jax.Array    # fraction of instance time spent on prefill (the cost split)
    decode_busy: jax.Array     # fraction spent on decode; the rest is idle
    ttft: jax.Array            # s, at the operating point
    tpot: jax.Array            # s, at the operating point
    goodput: jax.Array         # requests/s per GPU at the largest compliant rate
    tp: jax.Array
    chunk: jax.Array           # tokens (0: not chunked)
    instances: jax.Array       # fluid: 1
    rate: jax.Array            # largest compliant rate per instance, requests/s
    reason: jax.Array          # Infeasible


class DecodePool(NamedTuple):
    """The cheapest decode pool of the disaggregated architecture."""

    gpus_per_rate: jax.Array
    tp: jax.Array
    instances: jax.Array
    rate: jax.Array            # largest compliant rate per decode instance
    tpot: jax.Array            # s, at the operating point
    busy: jax.Array            # fraction of decode-instance time spent decoding at the operating point
    reason: jax.Array


class PrefillPool(NamedTuple):
    """The cheapest prefill pool of the disaggregated architecture, with the KV link."""

    gpus_per_rate: jax.Array           # with the full link model
    gpus_per_rate_exposed: jax.Array   # the same configuration with only the exposed transfer (indirect tax)
    tp: jax.Array
    overlap: jax.Array
    instances: jax.Array
    rate: jax.Array
    ttft: jax.Array                    # s, at the operating point
    link_utilization: jax.Array        # of each prefill instance's KV link at the operating point
    link_wait: jax.Array               # s, its p_q wait there (reserved again in ttft for the receiving end)
    reason: jax.Array


class FreeLinkPrefill(NamedTuple):
    """The cheapest prefill pool at infinite link bandwidth: the KV tax's reference."""

    gpus_per_rate: jax.Array
    busy: jax.Array                    # fraction of prefill-instance time spent prefilling at the operating point


class LinkBlind(NamedTuple):
    """Every part of a point that reads neither the KV link nor the price."""

    colocated: InstanceChoice
    chunked: InstanceChoice
    prefill_free_link: FreeLinkPrefill
    decode: DecodePool


# Inputs `search_link_blind` never reads: points that differ only in them share it (runner/sharing.py).
LINK_ONLY_INPUTS = frozenset({"kv_bandwidth", "price_scale"})
# Inputs `search_prefill_pool` never reads (the decode side, the price, the GPU cap that only the final join
# checks): points that differ only in them share the linked prefill search, most of the work of a point.
DECODE_ONLY_INPUTS = frozenset({"output_len", "output_cv", "tpot", "price_scale", "total_gpus"})


class Sizing(NamedTuple):
    """What the size of a pool depends on: the total rate (NaN: fluid), a pinned instance count (0: free) and the
    dispatch policy."""

    rate: jax.Array
    pin: jax.Array
    dispatch: jax.Array


def _sizing(demand: Demand, pin, default: Dispatch) -> Sizing:
    return Sizing(demand.rate, pin, jnp.where(demand.dispatch < 0, float(default), demand.dispatch))


POOL_MAX = 1e6  # a pool this large waits as a larger one would (not at all): the queueing formulas stop here


def pool_at(sizing: Sizing, lam) -> Pool:
    """The pool an instance fed lam per second belongs to: the pinned count, else rate / lam instances (real, >= 1:
    what the integral sizing rounds up), or the large-deployment limit (inf) in fluid mode."""
    fluid = jnp.isnan(sizing.rate)
    rate = jnp.where(fluid, 1.0, sizing.rate)
    servers = jnp.where(sizing.pin > 0, sizing.pin, jnp.where(fluid, jnp.inf, jnp.clip(rate / lam, 1.0, POOL_MAX)))
    return Pool(servers, sizing.dispatch)


# ---- the per-configuration constraint functions handed to the rate solver (module level: static for jit) ----
def _coloc_fn(lam, args):
    p, sz, tp, prims = args  # prims: the configuration's arch.common.Primitives, or None (computed inside)
    return op.violation(colocated.latency(p, tp, lam, pool_at(sz, lam), prims), p.sc)


def _coloc_upper(args):
    p, _, tp, prims = args
    return colocated.rate_upper(p, tp, prims)


def _coloc_latency(p, tp, prims, lam, pool):
    return colocated.latency(p, tp, lam, pool, prims)


def _chunk_fn(lam, args):
    p, sz, tp, ch, *table = args  # table: the configuration's chunked.MixedTable where given
    return op.violation(chunked.latency(p, tp, ch, lam, pool_at(sz, lam), *table), p.sc)


def _chunk_upper(args):
    p, _, tp, ch, *table = args
    return chunked.rate_upper(p, tp, ch, *table)


def _chunk_latency(p, tp, ch, table, lam, pool):
    return chunked.latency(p, tp, ch, lam, pool, table)


def _prefill_violation(link, lam, args):
    p, sz, tp, ov, prims = args
    return op.violation(disaggregated.prefill_latency(p, tp, ov, link, lam, pool_at(sz, lam), prims), p.sc)


def _prefill_rate_upper(link, args):
    p, _, tp, ov, prims = args
    return disaggregated.prefill_rate_upper(p, tp, ov, link, prims)


def _prefill_full_latency(p, tp, ov, prims, lam, pool):
    return disaggregated.prefill_latency(p, tp, ov, Link.FULL, lam, pool, prims)


# The prefill pool's constraint and upper rate with the link mode fixed at trace time (module-level objects: the
# rate solver takes them as static arguments).
_PREFILL = {link: (partial(_prefill_violation, link), partial(_prefill_rate_upper, link)) for link in Link}


def _decode_fn(lam, args):
    p, sz, tp, prims = args
    return op.violation(disaggregated.decode_latency(p, tp, lam, pool_at(sz, lam), prims), p.sc)


def _decode_upper(args):
    p, _, tp, prims = args
    return disaggregated.decode_rate_upper(p, tp, prims)


def _decode_latency(p, tp, prims, lam, pool):
    return disaggregated.decode_latency(p, tp, lam, pool, prims)


def _primitives(p: Point, tps, prefill=True, decode=True):
    """Each configuration's Primitives (vmapped over `tps`) for the measured-kernel engines, whose prefill and
    decode times are many table lookups: computed once here, not at every step of the rate solver. None for the
    roofline, whose primitives are a few flops (and stay inside, as traced before)."""
    if not lat.uses_kernels(p.eff):
        return None
    return jax.vmap(lambda t: prims_of(p, t, prefill, decode))(tps)


def _reason(lat: Latency, p: Point):
    """The constraint that fails worst, as an Infeasible code (TTFT, TPOT, KV memory in constraint_terms' order)."""
    t = jnp.stack(op.constraint_terms(lat, p.sc))
    return jnp.argmax(t).astype(jnp.int32) + Infeasible.TTFT_UNREACHABLE


def _size(demand: Demand, lam_star, gpus_per_instance, pin):
    """GPUs per unit request rate (what the cost is proportional to), instance count and per-instance rate."""
    fluid = jnp.isnan(demand.rate)
    n_int = jnp.where(pin > 0, pin, jnp.maximum(1.0, jnp.ceil(demand.rate / lam_star * (1.0 - 1e-12))))
    n = jnp.where(fluid, 1.0, n_int)
    per_rate = jnp.where(fluid, gpus_per_instance / lam_star, n * gpus_per_instance / demand.rate)
    lam_op = jnp.where(fluid, lam_star, demand.rate / n)
    ok = jnp.isfinite(lam_star) & (lam_op <= lam_star * (1.0 + 1e-9))
    return per_rate, n, lam_op, ok


def _pick(cost, *arrays):
    """argmin of cost over the configuration axis (NaN counts as infinitely expensive) and the gathered arrays."""
    c = jnp.where(jnp.isnan(cost), jnp.inf, cost)
    i = jnp.argmin(c)
    return i, c[i], tuple(a[i] for a in arrays)


def _at_rates(lat_fn, upper, p: Point, sz: Sizing, cfg_args: tuple, rates: list):
    """Latencies of every configuration at each array of `rates` and near zero load (RANGE x its upper rate, where
    the reason for infeasibility is read), in one vmapped call: the latency model is traced once."""
    near_zero = jax.vmap(lambda a: upper((p, sz) + a))(cfg_args) * op.RANGE
    every = jnp.concatenate(list(rates) + [near_zero])
    args = jax.tree.map(lambda a: jnp.concatenate([a] * (len(rates) + 1)), cfg_args)
    lat = jax.vmap(lambda a, r: lat_fn(p, *a, r, pool_at(sz, r)))(args, every)
    m = near_zero.shape[0]
    return [jax.tree.map(lambda x, k=k: x[k * m:(k + 1) * m], lat) for k in range(len(rates) + 1)]


def _deploy(p: Point, demand: Demand, sz: Sizing, lat_fn, upper, cfg_args, gpus, pin, lam):
    """Each configuration's deployment at its largest compliant rate lam: (cost in GPUs per unit rate, NaN where
    none; instances; per-instance rate; latencies there; latencies near zero load). The rate solver's root meets
    the contract by construction; whole instances, n = ceil(rate / lam), meet it too wherever the latency falls as
    the pool grows at a fixed total rate, which holds but for small bumps (the chunked batch moves the chunk's
    prompt tokens): there one more instance is tried, and a deployment that still misses is not offered."""
    per_rate, n, lam_op, ok = _size(demand, lam, gpus, pin)
    fluid = jnp.isnan(demand.rate)
    rate = jnp.where(fluid, 1.0, demand.rate)
    lam_next = jnp.where(fluid, lam_op, rate / (n + 1.0))
    lat_op, lat_next, lat_zero = _at_rates(lat_fn, upper, p, sz, cfg_args, [jnp.where(ok, lam_op, lam), lam_next])
    tol = max(op.POLISH_TOL, 64.0 * float(jnp.finfo(lam.dtype).eps))  # the rounding of a root found in this dtype
    meets = lambda lats: jax.vmap(lambda lat: op.violation(lat, p.sc))(lats) <= tol  # noqa: E731
    now, later = fluid | meets(lat_op), meets(lat_next)  # fluid: the root itself
    bump = ~fluid & (pin <= 0) & ~now & later
    lat_op = jax.tree.map(lambda a, b: jnp.where(bump, b, a), lat_op, lat_next)
    per_rate = jnp.where(bump, (n + 1.0) * gpus / rate, per_rate)
    cost = jnp.where(ok & (now | bump), per_rate, jnp.nan)
    return cost, jnp.where(bump, n + 1.0, n), jnp.where(bump, lam_next, lam_op), lat_op, lat_zero


def _closest_reason(p: Point, lat_zero: Latency):
    """Why the configuration closest to compliance at vanishing load fails."""
    closest = jnp.argmin(jax.vmap(lambda l: op.violation(l, p.sc))(lat_zero))
    return _reason(jax.tree.map(lambda x: x[closest], lat_zero), p)


def _instance_search(p: Point, demand: Demand, lat_fn, fn, upper, cfg_args, tps, chunk_of_cfg) -> InstanceChoice:
    sz = _sizing(demand, demand.n_prefill * 0.0, Dispatch.JSQ)
    lam = jax.vmap(lambda a: op.max_rate(fn, upper, (p, sz) + a))(cfg_args)
    cost, n, _, lat_op, lat_zero = _deploy(p, demand, sz, lat_fn, upper, cfg_args, tps, demand.n_prefill * 0.0, lam)
    i, best, (tp, ch, n_i, lam_i) = _pick(cost, tps, chunk_of_cfg, n, lam)
    lat_i = jax.tree.map(lambda x: x[i], lat_op)
    reason = jnp.where(jnp.isfinite(best), Infeasible.FEASIBLE, _closest_reason(p, lat_zero))
    return InstanceChoice(gpus_per_rate=best, prefill_busy=lat_i.prefill_busy, decode_busy=lat_i.decode_busy,
                          ttft=lat_i.ttft, tpot=lat_i.tpot, goodput=lam_i / tp, tp=tp, chunk=ch, instances=n_i,
                          rate=lam_i, reason=reason)


def search_colocated(p: Point, demand: Demand, space: SearchSpace, prims=None) -> InstanceChoice:
    """Colocated continuous batching over TP degrees (`prims`: their Primitives where already computed)."""
    tps = jnp.asarray(space.tp, dtype=p.sc.q.dtype)
    prims = _primitives(p, tps) if prims is None else prims
    return _instance_search(p, demand, _coloc_latency, _coloc_fn, _coloc_upper, (tps, prims), tps,
                            jnp.zeros_like(tps))


def search_chunked(p: Point, demand: Demand, space: SearchSpace) -> InstanceChoice:
    """Chunked-prefill colocation over TP degrees x chunk sizes."""
    tp, ch = jnp.meshgrid(jnp.asarray(space.tp, p.sc.q.dtype), jnp.asarray(space.chunk, p.sc.q.dtype), indexing="ij")
    tp, ch = tp.ravel(), ch.ravel()
    table = None
    if lat.uses_kernels(p.eff):  # measured kernels: iteration tables once per TP degree and configuration
        tps = jnp.asarray(space.tp, p.sc.q.dtype)
        iters = jax.vmap(lambda t: iteration_table(p, t, mean_context(p.sc)))(tps)
        iters = jax.tree.map(lambda a: jnp.repeat(a, len(space.chunk), axis=0), iters)  # tp-major, as the meshgrid
        table = jax.vmap(lambda t, k, i: chunked.tabulate(p, t, k, i))(tp, ch, iters)
    return _instance_search(p, demand, _chunk_latency, _chunk_fn, _chunk_upper, (tp, ch, table), tp, ch)


def _pool(p, demand, sz, fn, upper, cfg_args, gpus, pin, continuous=False):
    lam = jax.vmap(lambda a: op.max_rate(fn, upper, (p, sz) + a, continuous))(cfg_args)
    per_rate, n, lam_op, ok = _size(demand, lam, gpus, pin)
    return jnp.where(ok, per_rate, jnp.nan), n, lam_op, lam


def search_decode_pool(p: Point, demand: Demand, space: SearchSpace, prims=None) -> DecodePool:
    """The disaggregated decode pool over its TP degrees, on the decode side's GPU (`prims`: their Primitives
    there, where already computed)."""
    p = p.decode_side()
    sz = _sizing(demand, demand.n_decode, Dispatch.JSQ)
    tpd = jnp.asarray(space.tp_decode, p.sc.q.dtype)
    cfg = (tpd, _primitives(p, tpd, prefill=False) if prims is None else prims)
    lam_d = jax.vmap(lambda a: op.max_rate(_decode_fn, _decode_upper, (p, sz) + a))(cfg)
    c_d, n_d, _, lat_d, lat0_d = _deploy(p, demand, sz, _decode_latency, _decode_upper, cfg, tpd, demand.n_decode,
                                         lam_d)
    i_d, best_d, (g_d, nd_i, lam_di) = _pick(c_d, tpd, n_d, lam_d)
    return DecodePool(gpus_per_rate=best_d, tp=g_d, instances=nd_i, rate=lam_di, tpot=lat_d.tpot[i_d],
                      busy=lat_d.decode_busy[i_d], reason=_closest_reason(p, lat0_d))


def search_prefill_free_link(p: Point, demand: Demand, space: SearchSpace, prims=None) -> FreeLinkPrefill:
    """The cheapest prefill pool at infinite link bandwidth (the KV tax's reference) and how busy it is (`prims`:
    its configurations' Primitives where already computed)."""
    tpp_inf = jnp.asarray(space.tp_prefill, p.sc.q.dtype)
    zero = jnp.zeros_like(tpp_inf)
    sz = _sizing(demand, demand.n_prefill, Dispatch.CENTRAL)
    fn, upper = _PREFILL[Link.FREE]
    prims = _primitives(p, tpp_inf, decode=False) if prims is None else prims
    c_inf, _, lamop, _ = _pool(p, demand, sz, fn, upper, (tpp_inf, zero, prims), tpp_inf, demand.n_prefill,
                               continuous=True)
    i, best, (g, lam) = _pick(c_inf, tpp_inf, lamop)
    s, w, _ = prefill_of(p, g, None if prims is None else jax.tree.map(lambda x: x[i], prims))
    return FreeLinkPrefill(gpus_per_rate=best, busy=jnp.minimum(lam * qu.expect(s, w), 1.0))


def searched_overlaps(space) -> tuple:
    """Layer-wise overlap only hides transfer time (the exposed transfer is at most the whole one, at every rate),
    so a prefill instance with it meets the TTFT bound at every rate the one without it does, and never costs more.
    When the search may use it, the configurations without it are dominated and not evaluated."""
    concrete = all(isinstance(o, (int, float, np.integer, np.floating)) for o in space.overlap)
    return (1.0,) if concrete and any(o > 0.5 for o in space.overlap) else tuple(space.overlap)


def _prefill_configs(p: Point, space: SearchSpace):
    """(TP degrees, overlaps) of the linked prefill pool's configurations."""
    dt = p.sc.q.dtype
    tpp, ov = jnp.meshgrid(jnp.asarray(space.tp_prefill, dt), jnp.asarray(searched_overlaps(space), dt),
                           indexing="ij")
    return tpp.ravel(), ov.ravel()


# Inputs the linked prefill pool's Primitives never read (its prompts' prefill times): points that differ only in
# them share those (runner/sharing.py), for the measured-kernel engines, whose primitives are many lookups.
PREFILL_PRIMITIVES_IGNORE = DECODE_ONLY_INPUTS | LINK_ONLY_INPUTS


def prefill_primitives(p: Point, space: SearchSpace = SearchSpace()):
    """The linked prefill pool's per-configuration Primitives (prefill times only; None for the roofline), as
    search_prefill_pool computes them."""
    return _primitives(p, _prefill_configs(p, space)[0], decode=False)


def search_prefill_pool(p: Point, demand: Demand, space: SearchSpace = SearchSpace(), prims=None) -> PrefillPool:
    """The prefill pool with the link: its configuration search, the indirect tax's solve at the chosen
    configuration, the TTFT at the operating point and why it fails when it does. Reads no decode-side input.
    `prims`: prefill_primitives(p, space) where already computed (at a point differing only in
    PREFILL_PRIMITIVES_IGNORE)."""
    tpp, ov = _prefill_configs(p, space)
    sz = _sizing(demand, demand.n_prefill, Dispatch.CENTRAL)
    fn, upper = _PREFILL[Link.FULL]
    prims = prefill_primitives(p, space) if prims is None else prims
    lam_p = jax.vmap(lambda a: op.max_rate(fn, upper, (p, sz) + a, True))((tpp, ov, prims))
    c_p, n_p, lamop_p, lat_p, lat0_p = _deploy(p, demand, sz, _prefill_full_latency, upper, (tpp, ov, prims), tpp,
                                               demand.n_prefill, lam_p)
    i_p, best_p, (g_p, o_p, np_i, lam_pi, lamop_pi) = _pick(c_p, tpp, ov, n_p, lam_p, lamop_p)
    # The indirect tax: the chosen prefill configuration with the exposed transfer but no link queue or cap.
    fn_x, upper_x = _PREFILL[Link.EXPOSED]
    prims_i = jax.tree.map(lambda x: x[i_p][None], prims)
    c_nl, _, _, _ = _pool(p, demand, sz, fn_x, upper_x, (g_p[None], o_p[None], prims_i), g_p[None],
                          demand.n_prefill, continuous=True)
    return PrefillPool(gpus_per_rate=best_p, gpus_per_rate_exposed=jnp.where(jnp.isnan(c_nl[0]), jnp.inf, c_nl[0]),
                       tp=g_p, overlap=o_p, instances=np_i, rate=lam_pi, ttft=lat_p.ttft[i_p],
                       link_utilization=lamop_pi * disaggregated.mean_transfer(p, g_p),
                       link_wait=disaggregated.link_wait(p, g_p, lamop_pi, jax.tree.map(lambda x: x[i_p], prims)),
                       reason=_closest_reason(p, lat0_p))


def _shared_primitives(p: Point, space: SearchSpace):
    """(colocated, decode pool, free-link prefill pool) Primitives from one computation over their TP degrees
    (each degree once where the degrees are concrete), where the three read the same GPU. For the measured-kernel
    engines, whose primitives are programs of kernel lookups: one such program instead of three to compile and
    run. (None, None, None) otherwise."""
    if not lat.uses_kernels(p.eff) or p.hw_decode is not None:
        return None, None, None
    groups = (space.tp, space.tp_decode, space.tp_prefill)
    if all(isinstance(t, (int, float, np.integer, np.floating)) for g in groups for t in g):
        entries = sorted({float(t) for g in groups for t in g})
        index = [[entries.index(float(t)) for t in g] for g in groups]
    else:  # pinned degrees as data (api.evaluate): every entry, in order
        entries = [t for g in groups for t in g]
        starts = np.cumsum([0] + [len(g) for g in groups])
        index = [list(range(a, a + len(g))) for a, g in zip(starts, groups)]
    every = _primitives(p, jnp.asarray(jnp.stack([jnp.asarray(t, p.sc.q.dtype) for t in entries])))
    pick = lambda i, **drop: jax.tree.map(lambda a: a[np.asarray(i)], every._replace(**drop))  # noqa: E731
    return pick(index[0]), pick(index[1], prefill=None), pick(index[2], branches=None)


def search_link_blind(p: Point, demand: Demand, space: SearchSpace = SearchSpace()) -> LinkBlind:
    """Both colocated searches, the decode pool and the infinite-bandwidth prefill pool: every part of a point
    that reads neither the KV link nor the price. Points that differ only in LINK_ONLY_INPUTS share it."""
    coloc, decode, free = _shared_primitives(p, space)
    return LinkBlind(colocated=search_colocated(p, demand, space, coloc), chunked=search_chunked(p, demand, space),
                     prefill_free_link=search_prefill_free_link(p, demand, space, free),
                     decode=search_decode_pool(p, demand, space, decode))

"""Configuration search and sizing for one point, vectorised over every configuration (MODEL.md section 6).

`evaluate_point` is pure and scalar-in, scalar-out (per architecture); `jax.vmap` it for many points. The search
space is static (a hashable dataclass) so pinning a choice changes the compiled shapes, while every swept
quantity stays an array input.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import operating as op
from .arch import chunked, colocated, disaggregated
from .arch.common import Latency, Point

ARCHS = ("colocated", "chunked", "disaggregated")
SECONDS_PER_HOUR = 3600.0
PER_MTOK = 1e6

# Reason codes for infeasible points (flag_values / flag_meanings of the `reason` variable).
REASONS = ("feasible", "ttft_unreachable", "tpot_unreachable", "kv_memory", "exceeds_total_gpus",
           "pinned_instances_too_few", "invalid_input")


@dataclass(frozen=True)
class SearchSpace:
    tp: tuple = (1, 2, 4, 8)           # colocated and chunked instances
    chunk: tuple = (512, 1024, 2048, 8192)
    tp_prefill: tuple = (1, 2, 4, 8)
    tp_decode: tuple = (1, 2, 4, 8)
    overlap: tuple = (0, 1)


class Demand(NamedTuple):
    """Sizing inputs of one point: rate NaN = fluid (per-GPU goodput); pins 0 = free; total_gpus inf = no cap."""

    rate: jax.Array
    total_gpus: jax.Array
    n_prefill: jax.Array
    n_decode: jax.Array


# ---- the per-configuration constraint functions handed to the rate solver (module level: static for jit) ----
def _coloc_fn(lam, args):
    p, tp = args
    return op.violation(colocated.latency(p, tp, lam), p.sc)


def _coloc_upper(args):
    return colocated.rate_upper(*args)


def _chunk_fn(lam, args):
    p, tp, ch = args
    return op.violation(chunked.latency(p, tp, ch, lam), p.sc)


def _chunk_upper(args):
    return chunked.rate_upper(*args)


def _prefill_violation(link, lam, args):
    p, tp, ov = args
    return op.violation(disaggregated.prefill_latency(p, tp, ov, link, lam), p.sc)


def _prefill_rate_upper(link, args):
    return disaggregated.prefill_rate_upper(*args, link)


# The prefill pool's constraint and upper rate with the link mode fixed at trace time (module-level objects: the
# rate solver takes them as static arguments): 2 the full model (exposed transfer, link queue, link capacity), 1
# the exposed transfer only (the indirect tax), 0 infinite bandwidth (the reference of the KV tax).
_prefill_fn, _prefill_upper = partial(_prefill_violation, 2), partial(_prefill_rate_upper, 2)
_prefill_exposed_fn, _prefill_exposed_upper = partial(_prefill_violation, 1), partial(_prefill_rate_upper, 1)
_prefill_blind_fn, _prefill_blind_upper = partial(_prefill_violation, 0), partial(_prefill_rate_upper, 0)


def _prefill_link_fn(lam, args):  # the link mode as an array (0, 1 or 2): any mode in one traced program
    p, tp, ov, link = args
    return op.violation(disaggregated.prefill_latency(p, tp, ov, link, lam), p.sc)


def _prefill_link_upper(args):
    return disaggregated.prefill_rate_upper(*args)


def _decode_fn(lam, args):
    p, tp = args
    return op.violation(disaggregated.decode_latency(p, tp, lam), p.sc)


def _decode_upper(args):
    return disaggregated.decode_rate_upper(*args)


def _reason(lat: Latency, p: Point):
    t = jnp.stack(op.constraint_terms(lat, p.sc))
    return jnp.argmax(t).astype(jnp.int32) + 1


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


def _at_rates(lat_fn, upper, p: Point, cfg_args: tuple, rates):
    """Latencies of every configuration at `rates` and near zero load (RANGE x its upper rate, where the reason
    for infeasibility is read), in one vmapped call: the latency model is traced once, not twice."""
    both = jnp.concatenate([rates, jax.vmap(lambda a: upper((p,) + a))(cfg_args) * op.RANGE])
    args2 = tuple(jnp.concatenate([a, a]) for a in cfg_args)
    lat = jax.vmap(lambda a, r: lat_fn(p, *a, r))(args2, both)
    n = rates.shape[0]
    return jax.tree.map(lambda x: x[:n], lat), jax.tree.map(lambda x: x[n:], lat)


def _colocated_like(p: Point, demand: Demand, lat_fn, fn, upper, cfg_args, tps, chunk_of_cfg):
    lam = jax.vmap(lambda a: op.max_rate(fn, upper, (p,) + a))(cfg_args)
    per_rate, n, lam_op, ok = _size(demand, lam, tps, demand.n_prefill * 0.0)
    cost = jnp.where(ok, per_rate, jnp.nan)
    lat_op, lat_zero = _at_rates(lat_fn, upper, p, cfg_args, jnp.where(ok, lam_op, lam))
    i, best, (tp, ch, n_i, lam_i) = _pick(cost, tps, chunk_of_cfg, n, lam)
    closest = jnp.argmin(jax.vmap(lambda l: op.violation(l, p.sc))(lat_zero))
    lat_i = jax.tree.map(lambda x: x[i], lat_op)
    reason = jnp.where(jnp.isfinite(best), 0, _reason(jax.tree.map(lambda x: x[closest], lat_zero), p))
    return dict(per_rate=best, share=lat_i.prefill_share, ttft=lat_i.ttft, tpot=lat_i.tpot, goodput=lam_i / tp,
                tp_prefill=tp, tp_decode=tp, n_prefill=n_i, n_decode=n_i, chunk=ch, overlap=jnp.zeros_like(tp),
                reason=reason, lam_star=lam_i)


def _colocated(p, demand, space):
    tps = jnp.asarray(space.tp, dtype=p.sc.q.dtype)
    return _colocated_like(p, demand, colocated.latency, _coloc_fn, _coloc_upper, (tps,), tps, jnp.zeros_like(tps))


def _chunked(p, demand, space):
    tp, ch = jnp.meshgrid(jnp.asarray(space.tp, p.sc.q.dtype), jnp.asarray(space.chunk, p.sc.q.dtype), indexing="ij")
    tp, ch = tp.ravel(), ch.ravel()
    return _colocated_like(p, demand, chunked.latency, _chunk_fn, _chunk_upper, (tp, ch), tp, ch)


def _pool(p, demand, fn, upper, cfg_args, gpus, pin, continuous=False):
    lam = jax.vmap(lambda a: op.max_rate(fn, upper, (p,) + a, continuous))(cfg_args)
    per_rate, n, lam_op, ok = _size(demand, lam, gpus, pin)
    return jnp.where(ok, per_rate, jnp.nan), n, lam_op, lam


def _disaggregated_unlinked(p: Point, demand: Demand, space):
    """The parts of the disaggregated search that never see the link: the prefill pool at infinite bandwidth (the
    reference of the KV tax) and the decode pool with its choice."""
    dt = p.sc.q.dtype
    tpp_inf = jnp.asarray(space.tp_prefill, dt)
    zero = jnp.zeros_like(tpp_inf)
    c_inf, _, _, _ = _pool(p, demand, _prefill_blind_fn, _prefill_blind_upper, (tpp_inf, zero), tpp_inf,
                           demand.n_prefill, continuous=True)
    tpd = jnp.asarray(space.tp_decode, dt)
    c_d, n_d, lamop_d, lam_d = _pool(p, demand, _decode_fn, _decode_upper, (tpd,), tpd, demand.n_decode)
    _, best_inf, _ = _pick(c_inf)
    i_d, best_d, (g_d, nd_i, lam_di) = _pick(c_d, tpd, n_d, lam_d)
    lat_d, lat0_d = _at_rates(disaggregated.decode_latency, _decode_upper, p, (tpd,), lamop_d)
    cd = jnp.argmin(jax.vmap(lambda l: op.violation(l, p.sc))(lat0_d))
    return dict(best_inf=best_inf, best_d=best_d, g_d=g_d, nd_i=nd_i, lam_di=lam_di, tpot=lat_d.tpot[i_d],
                reason_d=_reason(jax.tree.map(lambda x: x[cd], lat0_d), p))


def searched_overlaps(space) -> tuple:
    """Layer-wise overlap only hides transfer time (the exposed transfer is at most the whole one, at every rate),
    so a prefill instance with it meets the TTFT bound at every rate the one without it does, and never costs more.
    When the search may use it, the configurations without it are dominated and not evaluated. (A space given as
    traced arrays, as papers/registry.py builds, is searched as given.)"""
    concrete = all(isinstance(o, (int, float, np.integer, np.floating)) for o in space.overlap)
    return (1.0,) if concrete and any(o > 0.5 for o in space.overlap) else tuple(space.overlap)


def _disaggregated_prefill(p: Point, demand: Demand, space):
    """The prefill pool with the link: its configuration search, the indirect tax's solve at the chosen
    configuration, the TTFT at the operating point and why it fails when it does. Reads no decode-side input."""
    dt = p.sc.q.dtype
    tpp, ov = jnp.meshgrid(jnp.asarray(space.tp_prefill, dt), jnp.asarray(searched_overlaps(space), dt),
                           indexing="ij")
    tpp, ov = tpp.ravel(), ov.ravel()
    c_p, n_p, lamop_p, lam_p = _pool(p, demand, _prefill_fn, _prefill_upper, (tpp, ov), tpp, demand.n_prefill,
                                      continuous=True)
    i_p, best_p, (g_p, o_p, np_i, lam_pi) = _pick(c_p, tpp, ov, n_p, lam_p)
    # The indirect tax: the chosen prefill configuration with the exposed transfer but no link queue or cap.
    c_nl, _, _, _ = _pool(p, demand, _prefill_exposed_fn, _prefill_exposed_upper, (g_p[None], o_p[None]), g_p[None],
                          demand.n_prefill, continuous=True)
    lat_p, lat0_p = _at_rates(lambda p, a, b, r: disaggregated.prefill_latency(p, a, b, 2, r), _prefill_upper, p,
                              (tpp, ov), lamop_p)
    cp = jnp.argmin(jax.vmap(lambda l: op.violation(l, p.sc))(lat0_p))
    return dict(best_p=best_p, g_p=g_p, o_p=o_p, np_i=np_i, lam_pi=lam_pi, ttft=lat_p.ttft[i_p],
                best_nl=jnp.where(jnp.isnan(c_nl[0]), jnp.inf, c_nl[0]),
                reason_p=_reason(jax.tree.map(lambda x: x[cp], lat0_p), p))


def _disaggregated(demand: Demand, u: dict, pre: dict):
    """The linked prefill pool `pre` joined with the link-blind parts `u`."""
    best_p, g_p, np_i, lam_pi = pre["best_p"], pre["g_p"], pre["np_i"], pre["lam_pi"]
    best_inf, best_d, g_d, nd_i, lam_di = u["best_inf"], u["best_d"], u["g_d"], u["nd_i"], u["lam_di"]
    fluid = jnp.isnan(demand.rate)
    # Fluid: one prefill instance and the matching fractional number of decode instances (the P:D ratio).
    n_dec = jnp.where(fluid, lam_pi / lam_di, nd_i)
    gpus = np_i * g_p + n_dec * g_d
    reason = jnp.where(jnp.isfinite(best_p), jnp.where(jnp.isfinite(best_d), 0, u["reason_d"]), pre["reason_p"])
    total = best_p + best_d
    return dict(per_rate=total, prefill_per_rate=jnp.minimum(best_inf, best_p), decode_per_rate=best_d,
                indirect_per_rate=pre["best_nl"] - best_inf, ttft=pre["ttft"], tpot=u["tpot"],
                goodput=1.0 / (g_p / lam_pi + g_d / lam_di), tp_prefill=g_p, tp_decode=g_d, n_prefill=np_i,
                n_decode=n_dec, chunk=jnp.zeros_like(g_p), overlap=pre["o_p"], reason=reason, gpus=gpus)


# Inputs no part of `evaluate_unlinked` reads: a sweep over them shares its link-blind work (sweep/engine.py).
LINK_ONLY_INPUTS = frozenset({"kv_bandwidth", "price_scale"})
# Inputs `evaluate_prefill` never reads (the decode side, the price, the GPU cap that only the final join checks):
# a sweep over them shares the linked prefill search, most of the work of a point.
DECODE_ONLY_INPUTS = frozenset({"output_len", "output_cv", "tpot", "price_scale", "total_gpus"})


def evaluate_unlinked(p: Point, demand: Demand, space: SearchSpace = SearchSpace()) -> dict:
    """Every part of a point that does not read the KV link or the price: both colocated searches, the decode pool
    and the infinite-bandwidth prefill pool. Points that differ only in LINK_ONLY_INPUTS share it."""
    return dict(colocated=_colocated(p, demand, space), chunked=_chunked(p, demand, space),
                disaggregated=_disaggregated_unlinked(p, demand, space))


def evaluate_prefill(p: Point, demand: Demand, space: SearchSpace = SearchSpace()) -> dict:
    """The disaggregated prefill pool with the KV link. Points that differ only in DECODE_ONLY_INPUTS share it."""
    return _disaggregated_prefill(p, demand, space)


def evaluate_point(p: Point, demand: Demand, price, space: SearchSpace = SearchSpace(), unlinked=None, prefill=None):
    """Everything the public API reports for one point, stacked over ARCHS on the last axis. `unlinked` is
    `evaluate_unlinked` of this point (or of one differing only in LINK_ONLY_INPUTS), `prefill` its
    `evaluate_prefill` (or one differing only in DECODE_ONLY_INPUTS); None computes them."""
    u = evaluate_unlinked(p, demand, space) if unlinked is None else unlinked
    pre = evaluate_prefill(p, demand, space) if prefill is None else prefill
    o = p.sc.output_len
    usd_per_mtok = price / SECONDS_PER_HOUR * PER_MTOK / o  # times GPUs per (request/s)
    fluid = jnp.isnan(demand.rate)
    results = []
    for r in (u["colocated"], u["chunked"]):
        total = r["per_rate"] * usd_per_mtok
        gpus = jnp.where(fluid, r["tp_prefill"], r["n_prefill"] * r["tp_prefill"])
        r = dict(r, cost=total, prefill=total * r["share"], decode=total * (1.0 - r["share"]), kv_tax=0.0 * total,
                 kv_direct=0.0 * total, kv_indirect=0.0 * total, gpus=gpus)
        results.append(r)
    d = _disaggregated(demand, u["disaggregated"], pre)
    total = d["per_rate"] * usd_per_mtok
    prefill = d["prefill_per_rate"] * usd_per_mtok
    decode = d["decode_per_rate"] * usd_per_mtok
    tax = jnp.maximum(total - prefill - decode, 0.0)  # an infinite link is never dearer: < 0 is rounding
    indirect = jnp.clip(d["indirect_per_rate"] * usd_per_mtok, 0.0, tax)
    results.append(dict(d, cost=total, prefill=prefill, decode=decode, kv_tax=tax, kv_direct=tax - indirect,
                        kv_indirect=indirect))

    keys = ("cost", "prefill", "decode", "kv_tax", "kv_direct", "kv_indirect", "ttft", "tpot", "goodput", "gpus",
            "tp_prefill", "tp_decode", "n_prefill", "n_decode", "chunk", "overlap")
    out = {k: jnp.stack([jnp.asarray(r[k], dtype=o.dtype) for r in results]) for k in keys}
    out["reason"] = jnp.stack([jnp.asarray(r["reason"], jnp.int32) for r in results])
    cap_ok = jnp.where(fluid, True, out["gpus"] <= demand.total_gpus)
    feasible = jnp.isfinite(out["cost"]) & cap_ok
    out["reason"] = jnp.where(feasible, 0, jnp.where(out["reason"] > 0, out["reason"],
                                                      jnp.where(cap_ok, 5, 4))).astype(jnp.int32)
    out["feasible"] = feasible
    nan_if = lambda x: jnp.where(feasible, x, jnp.nan)  # noqa: E731
    for k in ("cost", "prefill", "decode", "kv_tax", "kv_direct", "kv_indirect", "ttft", "tpot", "goodput"):
        out[k] = nan_if(out[k])
    rate = jnp.where(fluid, out["goodput"] * out["gpus"], demand.rate)
    out["throughput"] = nan_if(rate * o / out["gpus"])
    out["cost_total"] = out["cost"] * o / (p.sc.input_len + o)
    c = jnp.where(feasible, out["cost"], jnp.inf)
    best = jnp.argmin(c)
    out["best_arch"] = jnp.where(jnp.any(feasible), best, -1).astype(jnp.int32)
    out["advantage"] = jnp.log(jnp.minimum(c[0], c[1])) - jnp.log(c[2])
    out["advantage"] = jnp.where(jnp.isfinite(out["advantage"]), out["advantage"], jnp.nan)
    return out

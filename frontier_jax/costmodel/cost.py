"""The cost decomposition (MODEL.md section 1): cost per SLO-compliant output token of each architecture, split
exactly into a prefill term, a decode term and the KV-transfer tax, and the comparison between architectures.

    cost [USD / 1e6 output tokens] = price [USD / GPU-hour] / 3600 * 1e6 / O * (GPUs per unit request rate)

`evaluate_point` is the whole model for one point: the searches of costmodel.search, the disaggregated join, the
cost terms, feasibility and the winner. It returns a PointResult whose fields are the output variables
(frontier_jax.variables).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..tracing import scan
from ..variables import POINT_VARIABLES
from . import latency as lat
from .search import LinkBlind, PrefillPool, search_link_blind, search_prefill_pool
from .types import NO_ARCH, Arch, Demand, Infeasible, Point, SearchSpace

SECONDS_PER_HOUR = 3600.0
PER_MTOK = 1e6


class ArchCost(NamedTuple):
    """One architecture's cheapest deployment and its cost terms (USD / 1e6 output tokens)."""

    cost: jax.Array
    prefill: jax.Array
    decode: jax.Array
    kv_tax: jax.Array
    kv_direct: jax.Array
    kv_indirect: jax.Array
    idle: jax.Array
    ttft: jax.Array
    tpot: jax.Array
    goodput: jax.Array
    gpus: jax.Array
    tp_prefill: jax.Array
    tp_decode: jax.Array
    n_prefill: jax.Array
    n_decode: jax.Array
    chunk: jax.Array
    overlap: jax.Array
    receive_utilization: jax.Array
    reason: jax.Array


# Everything reported for one point, one field per output variable of frontier_jax.variables (in its order);
# per-architecture fields have a trailing axis over Arch.
PointResult = NamedTuple("PointResult", [(v.name, jax.Array) for v in POINT_VARIABLES])
PointResult.__doc__ = ("Everything reported for one point: one field per output variable (frontier_jax.variables), "
                       "per-architecture ones with a trailing axis over Arch.")


def usd_per_mtok(price, output_len):
    """USD per 1e6 output tokens per (GPU per unit request rate): price in USD per GPU-hour."""
    return price / SECONDS_PER_HOUR * PER_MTOK / output_len


def _colocated_cost(r, usd, fluid) -> ArchCost:
    """Colocated instances: the prefill and decode terms are their shares of instance time, idle the rest."""
    total = r.gpus_per_rate * usd
    zero = 0.0 * total
    prefill, decode = total * r.prefill_busy, total * r.decode_busy
    return ArchCost(cost=total, prefill=prefill, decode=decode, kv_tax=zero, kv_direct=zero, kv_indirect=zero,
                    idle=total - prefill - decode, ttft=r.ttft, tpot=r.tpot, goodput=r.goodput,
                    gpus=jnp.where(fluid, r.tp, r.instances * r.tp), tp_prefill=r.tp, tp_decode=r.tp,
                    n_prefill=r.instances, n_decode=r.instances, chunk=r.chunk, overlap=jnp.zeros_like(r.tp),
                    receive_utilization=zero, reason=r.reason)


_RECEIVE_STEPS = 40


def receive_wait(p: Point, tp_decode, utilization):
    """p_q (or mean) wait of a KV transfer at its decode instance's links, an M/G/1 queue fed by many prefill
    instances (Poisson) at `utilization`, with service T = I x KV bytes / (tp_decode x B_kv): the exponential tail
    P(W > t) = rho exp(-t / m), m = E[W | W > 0] = E[T^2] / (2 E[T] (1 - rho)) (Pollaczek-Khinchine)."""
    sc = p.sc
    t_mean = sc.input_len * lat.kv_bytes_per_token(p.model, sc.kv_fp8) / tp_decode / sc.kv_bandwidth
    m = t_mean * (1.0 + sc.input_cv**2) / (2.0 * (1.0 - utilization))
    rho = jnp.maximum(utilization, 1e-300)
    quant = m * jnp.maximum(jnp.log(rho) - jnp.log1p(-sc.q), 0.0)
    return jnp.where(sc.mean_mode, rho * m, quant)


def receive_utilization_cap(p: Point, tp_decode, pre: PrefillPool):
    """The busiest the decode instances' links may be, so that a transfer's wait there fits what the TTFT keeps for
    it: the reserve the prefill pool counted (its own link's wait again) plus the slack it leaves at its operating
    point (bisection on the utilisation); never below 1 - q, where a p_q request does not wait. With the reserve
    equal to the sender's wait, the receiving links run about as busy as the sending ones where the TTFT leaves no
    slack, and busier where it does. The decode pool is sized to the cap: its links take every KV its requests
    bring."""
    sc = p.sc
    budget = jnp.maximum(sc.ttft - pre.ttft, 0.0) + pre.link_wait
    floor = jnp.where(sc.mean_mode, 1e-12, jnp.clip(1.0 - sc.q, 1e-12, 0.5))

    def step(bracket, _):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        fits = receive_wait(p, tp_decode, mid) <= budget
        return (jnp.where(fits, mid, lo), jnp.where(fits, hi, mid)), None

    (lo, hi), _ = scan(step, (jnp.minimum(floor, 1.0 - 1e-9), jnp.ones_like(floor) - 1e-9), _RECEIVE_STEPS)
    # The derivative by the implicit function theorem where the cap is interior (wait = budget): a Newton step from
    # the bisection's (constant) point has the cap's tangent, -(d gap) / (d gap / d cap). Only its tangent is used:
    # the value stays the bisection's feasible end (in float32 the step itself can land past the root).
    cap = jax.lax.stop_gradient(lo)
    gap, slope = jax.jvp(lambda u: receive_wait(p, tp_decode, u) - budget, (cap,), (jnp.ones_like(cap),))
    interior = (cap > floor) & (hi < 1.0 - 2e-9) & (slope > 0.0)
    newton = cap - gap / jnp.where(interior, slope, 1.0)
    return jnp.where(interior, lo + (newton - jax.lax.stop_gradient(newton)), lo)


def receive_seconds(p: Point, cap):
    """Decode-GPU seconds of KV receiving per request at a link utilisation of `cap`."""
    sc = p.sc
    return sc.input_len * lat.kv_bytes_per_token(p.model, sc.kv_fp8) / sc.kv_bandwidth / cap


def _disaggregated_cost(p: Point, demand: Demand, blind: LinkBlind, pre: PrefillPool, usd, usd_decode) -> ArchCost:
    """The linked prefill pool `pre` joined with the link-blind decode pool and free-link prefill pool; `usd` and
    `usd_decode` convert each pool's GPUs per unit rate to USD per 1e6 output tokens (each pool at its GPU's
    price). The decode pool is enlarged where its links could not receive the KV (receive_seconds)."""
    d, free = blind.decode, blind.prefill_free_link
    fluid = jnp.isnan(demand.rate)
    cap = receive_utilization_cap(p, d.tp, pre)
    recv = receive_seconds(p, cap)
    rate = jnp.where(fluid, 1.0, demand.rate)
    n_recv = jnp.ceil(rate * recv / d.tp * (1.0 - 1e-12))
    n_d = jnp.where(demand.n_decode > 0, d.instances, jnp.maximum(d.instances, n_recv))
    d_gpr = jnp.where(fluid, jnp.maximum(d.gpus_per_rate, recv), n_d * d.tp / rate)
    d_gpr = jnp.where(jnp.isfinite(d.gpus_per_rate), d_gpr, jnp.nan)  # no compliant decode pool
    # Fluid: one prefill instance and the matching fractional number of decode instances (the P:D ratio).
    n_dec = jnp.where(fluid, pre.rate * d_gpr / d.tp, n_d)
    gpus = pre.instances * pre.tp + n_dec * d.tp
    receive_ok = (demand.n_decode <= 0) | (n_d >= n_recv)
    reason = jnp.where(jnp.isfinite(pre.gpus_per_rate), jnp.where(jnp.isfinite(d.gpus_per_rate) & receive_ok,
                                                                   Infeasible.FEASIBLE, d.reason), pre.reason)
    utilization = recv * cap / d_gpr  # of the decode instances' links
    usd_d = usd if usd_decode is None else usd_decode
    # One GPU type: a sum then one product (a product feeding a sum may be fused into an FMA or not, depending on
    # how XLA vectorises the chunk, and results would depend on the chunk size).
    gpr_total = (pre.gpus_per_rate + d_gpr) * usd if usd_decode is None else pre.gpus_per_rate * usd + d_gpr * usd_d
    total = jnp.where(receive_ok, gpr_total, jnp.nan)
    prefill_all = jnp.minimum(free.gpus_per_rate, pre.gpus_per_rate) * usd  # the prefill pool at B_kv = infinity
    decode_all = d.gpus_per_rate * usd_d
    tax = jnp.maximum(total - prefill_all - decode_all, 0.0)  # an infinite link is never dearer: < 0 is rounding
    indirect = jnp.clip((pre.gpus_per_rate_exposed - free.gpus_per_rate) * usd, 0.0, tax)
    prefill, decode = prefill_all * free.busy, decode_all * d.busy
    return ArchCost(cost=total, prefill=prefill, decode=decode, kv_tax=tax, kv_direct=tax - indirect,
                    kv_indirect=indirect, idle=prefill_all - prefill + decode_all - decode,
                    ttft=pre.ttft - pre.link_wait + receive_wait(p, d.tp, jnp.minimum(utilization, 1.0 - 1e-12)),
                    tpot=d.tpot, goodput=1.0 / (pre.tp / pre.rate + d_gpr), gpus=gpus, tp_prefill=pre.tp,
                    tp_decode=d.tp, n_prefill=pre.instances, n_decode=n_dec, chunk=jnp.zeros_like(pre.tp),
                    overlap=pre.overlap, receive_utilization=utilization, reason=reason)


def evaluate_point(p: Point, demand: Demand, price, space: SearchSpace = SearchSpace(),
                   link_blind: LinkBlind | None = None, prefill: PrefillPool | None = None) -> PointResult:
    """Everything reported for one point, per architecture on the last axis. `link_blind` is `search_link_blind`
    of this point (or of one differing only in LINK_ONLY_INPUTS), `prefill` its `search_prefill_pool` (or one
    differing only in DECODE_ONLY_INPUTS); None computes them. `price`: USD per GPU-hour of the point's GPU; a
    decode pool on another GPU (p.hw_decode) is priced at that GPU's `price` field."""
    blind = search_link_blind(p, demand, space) if link_blind is None else link_blind
    pre = search_prefill_pool(p, demand, space) if prefill is None else prefill
    o = p.sc.output_len
    usd = usd_per_mtok(price, o)
    fluid = jnp.isnan(demand.rate)
    archs = {Arch.COLOCATED: _colocated_cost(blind.colocated, usd, fluid),
             Arch.CHUNKED: _colocated_cost(blind.chunked, usd, fluid),
             Arch.DISAGGREGATED: _disaggregated_cost(p, demand, blind, pre, usd,
                                                     None if p.hw_decode is None else usd_per_mtok(p.hw_decode.price, o))}
    rows = [archs[a] for a in Arch]
    out = ArchCost(*(jnp.stack([jnp.asarray(x, dtype=o.dtype) for x in field]) for field in zip(*rows)))
    reason = jnp.stack([jnp.asarray(r.reason, jnp.int32) for r in rows])
    cap_ok = jnp.where(fluid, True, out.gpus <= demand.total_gpus)
    feasible = jnp.isfinite(out.cost) & cap_ok
    reason = jnp.where(feasible, Infeasible.FEASIBLE,
                       jnp.where(reason > 0, reason, jnp.where(cap_ok, Infeasible.PINNED_INSTANCES_TOO_FEW,
                                                                Infeasible.EXCEEDS_TOTAL_GPUS))).astype(jnp.int32)
    nan_if = lambda x: jnp.where(feasible, x, jnp.nan)  # noqa: E731
    cost = nan_if(out.cost)
    goodput = nan_if(out.goodput)
    rate = jnp.where(fluid, goodput * out.gpus, demand.rate)
    c = jnp.where(feasible, cost, jnp.inf)
    best = jnp.argmin(c)
    advantage = (jnp.log(jnp.minimum(c[Arch.COLOCATED], c[Arch.CHUNKED])) - jnp.log(c[Arch.DISAGGREGATED]))
    return PointResult(
        cost_per_mtok=cost, prefill_cost=nan_if(out.prefill), decode_cost=nan_if(out.decode),
        kv_tax=nan_if(out.kv_tax), kv_tax_direct=nan_if(out.kv_direct), kv_tax_indirect=nan_if(out.kv_indirect),
        idle_cost=nan_if(out.idle),
        cost_per_mtok_total=cost * o / (p.sc.input_len + o), ttft_achieved=nan_if(out.ttft),
        tpot_achieved=nan_if(out.tpot), goodput=goodput, throughput=nan_if(rate * o / out.gpus), gpus=out.gpus,
        tp_prefill=out.tp_prefill, tp_decode=out.tp_decode, n_prefill=out.n_prefill, n_decode=out.n_decode,
        chunk=out.chunk, overlap=out.overlap, kv_receive_utilization=nan_if(out.receive_utilization),
        feasible=feasible, reason=reason,
        best_arch=jnp.where(jnp.any(feasible), best, NO_ARCH).astype(jnp.int32),
        advantage=jnp.where(jnp.isfinite(advantage), advantage, jnp.nan))

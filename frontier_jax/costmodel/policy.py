"""The numerical policy at the extremes, as one function applied to the kernel's output: a (point, architecture)
is feasible only if every reported latency and cost is finite and positive. A point the model called feasible
that fails this (a TPOT of inf at a rate of 1e-300 req/s, a cost of 0 at a denormal price) becomes infeasible with
reason `invalid_input`, NaN in its costs and latencies, and `best_arch` / `advantage` are recomputed from the
costs that remain."""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from .types import NO_ARCH, Arch, Infeasible

# per-architecture outputs (last axis: arch) that a feasible point must report finite and > 0
MUST_BE_POSITIVE = ("cost_per_mtok", "prefill_cost", "decode_cost", "cost_per_mtok_total", "ttft_achieved",
                    "tpot_achieved", "goodput", "throughput")
NAN_WHEN_INFEASIBLE = MUST_BE_POSITIVE + ("kv_tax", "kv_tax_direct", "kv_tax_indirect")


def enforce(res: dict[str, Any]) -> dict[str, Any]:
    """`res`: the kernel's outputs as a dict (arrays with the arch axis last, as `PointResult._asdict()`); returns
    a new dict with points that break the policy marked infeasible (reason INVALID_INPUT)."""
    feasible = res["feasible"].astype(bool)
    ok = feasible
    for k in MUST_BE_POSITIVE:
        if k in res:
            x = res[k]
            ok = ok & jnp.isfinite(x) & (x > 0)
    broke = feasible & ~ok
    out = dict(res)
    out["feasible"] = ok.astype(res["feasible"].dtype)
    out["reason"] = jnp.where(broke, Infeasible.INVALID_INPUT, res["reason"]).astype(res["reason"].dtype)
    for k in NAN_WHEN_INFEASIBLE:
        if k in res:
            out[k] = jnp.where(ok, res[k], jnp.nan)
    c = jnp.where(ok, out["cost_per_mtok"], jnp.inf)
    best = jnp.argmin(c, axis=-1)
    out["best_arch"] = jnp.where(jnp.any(ok, axis=-1), best, NO_ARCH).astype(res["best_arch"].dtype)
    adv = (jnp.log(jnp.minimum(c[..., Arch.COLOCATED], c[..., Arch.CHUNKED])) - jnp.log(c[..., Arch.DISAGGREGATED]))
    out["advantage"] = jnp.where(jnp.isfinite(adv), adv, jnp.nan).astype(res["advantage"].dtype)
    return out

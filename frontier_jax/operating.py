"""The operating point: the largest per-instance Poisson rate that meets the contract (fluid goodput), found by
bisection in log-rate on the monotone SLO constraints, with its derivative from the implicit function theorem
(MODEL.md section 6). The violation is max over constraints of log(value / bound): <= 0 means compliant."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from .arch.common import Latency, Scenario

BISECTION_STEPS = 40
RANGE = 1e-9  # search rates in [RANGE * upper, upper]


def _log_ratio(value, bound):
    ok = (value > 0.0) & (bound > 0.0)
    r = jnp.log(jnp.where(ok, value, 1.0)) - jnp.log(jnp.where(ok, bound, 1.0))
    return jnp.where(ok, r, jnp.where(value > 0.0, jnp.inf, -jnp.inf))


def constraint_terms(lat: Latency, sc: Scenario):
    """(ttft, tpot, memory) violations as log ratios; non-finite latencies count as violated."""
    def finite(x):
        return jnp.where(jnp.isfinite(x), x, jnp.inf)
    return (_log_ratio(finite(lat.ttft), sc.ttft), _log_ratio(finite(lat.tpot), sc.tpot),
            _log_ratio(finite(lat.batch_q), lat.batch_max))


def violation(lat: Latency, sc: Scenario):
    t1, t2, t3 = constraint_terms(lat, sc)
    return jnp.maximum(jnp.maximum(t1, t2), t3)


def _bisect(fn, upper_fn, args):
    hi = upper_fn(args)
    lo = hi * RANGE
    ok_lo = fn(lo, args) <= 0.0

    def step(carry, _):
        a, b = carry
        mid = jnp.sqrt(a * b)
        good = fn(mid, args) <= 0.0
        return (jnp.where(good, mid, a), jnp.where(good, b, mid)), None

    (a, _), _ = jax.lax.scan(step, (lo, hi), None, length=BISECTION_STEPS)
    return jnp.where(ok_lo & jnp.isfinite(hi) & (hi > 0.0), a, jnp.nan)


@partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def max_rate(fn, upper_fn, args):
    """Largest rate with fn(rate, args) <= 0 (NaN if none, even at vanishing load). fn must increase in rate.
    Differentiable in args through the implicit function theorem at the active constraint."""
    return _bisect(fn, upper_fn, args)


@max_rate.defjvp
def _max_rate_jvp(fn, upper_fn, primals, tangents):
    (args,), (dargs,) = primals, tangents
    lam = max_rate(fn, upper_fn, args)
    safe = jnp.where(jnp.isfinite(lam), lam, 1.0)
    _, dc_dargs = jax.jvp(lambda a: fn(safe, a), (args,), (dargs,))
    _, dc_dlam = jax.jvp(lambda r: fn(r, args), (safe,), (jnp.ones_like(safe),))
    ok = jnp.isfinite(lam) & (dc_dlam > 0.0)
    dlam = jnp.where(ok, -dc_dargs / jnp.where(ok, dc_dlam, 1.0), 0.0)
    return lam, dlam

"""The operating point: the largest per-instance Poisson rate that meets the contract (fluid goodput), found by
bisection in log-rate on the monotone SLO constraints, with its derivative from the implicit function theorem
(MODEL.md section 6). The violation is max over constraints of log(value / bound): <= 0 means compliant."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from .arch.common import Latency, Scenario

BISECTION_STEPS = 30
POLISH_STEPS = 2
POLISH_TOL = 1e-10  # a log-ratio violation this small counts as meeting the bound (rounding of the polish)
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
    """Safeguarded Illinois false position in log-rate: bracket [a, b] with f(a) <= 0 < f(b); a secant step when
    both ends are finite and the step lands inside the middle 90 % of the bracket, bisection otherwise."""
    hi = upper_fn(args)
    lo = hi * RANGE
    f_lo = fn(lo, args)
    ok_lo = f_lo <= 0.0
    x_lo, x_hi = jnp.log(lo), jnp.log(hi)
    f_hi = fn(hi, args)

    def step(carry, _):
        a, fa, b, fb, side = carry
        finite = jnp.isfinite(fa) & jnp.isfinite(fb) & (fb > fa)
        t = jnp.where(finite, fa / jnp.where(finite, fa - fb, 1.0), 0.5)
        t = jnp.where((t > 0.05) & (t < 0.95), t, 0.5)
        x = a + t * (b - a)
        fx = fn(jnp.exp(x), args)
        good = fx <= 0.0
        # Illinois: halve the value kept at an end that survives twice in a row, so the bracket closes on both sides
        fa_new = jnp.where(good, fx, jnp.where(side == -1, 0.5 * fa, fa))
        fb_new = jnp.where(good, jnp.where(side == 1, 0.5 * fb, fb), fx)
        side_new = jnp.where(good, 1, -1).astype(jnp.int32)
        return (jnp.where(good, x, a), fa_new, jnp.where(good, b, x), fb_new, side_new), None

    init = (x_lo, f_lo, x_hi, f_hi, jnp.zeros_like(f_lo, dtype=jnp.int32))
    (a, _, b, _, _), _ = jax.lax.scan(step, init, None, length=BISECTION_STEPS)

    def polish(carry, _):
        # Newton on the active constraint, kept inside the final bracket. Each step evaluates f where it stands and
        # keeps the last point found feasible (f <= POLISH_TOL): on a convex constraint Newton lands just past the
        # root, and at a stability edge (f = inf beyond it) the clip to b would land on an unstable rate.
        x, best = carry
        fx, dfx = jax.jvp(lambda u: fn(jnp.exp(u), args), (x,), (jnp.ones_like(x),))
        best = jnp.where(fx <= POLISH_TOL, x, best)
        ok = jnp.isfinite(fx) & jnp.isfinite(dfx) & (dfx > 0.0)
        new = jnp.clip(x - fx / jnp.where(ok, dfx, 1.0), a, b)
        return (jnp.where(ok, new, x), best), None

    (_, x), _ = jax.lax.scan(polish, (a, a), None, length=POLISH_STEPS + 1)
    return jnp.where(ok_lo & jnp.isfinite(hi) & (hi > 0.0), jnp.exp(x), jnp.nan)


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

"""The operating point: the largest per-instance Poisson rate that meets the contract (fluid goodput), found by a
bracketing root-finder on the monotone SLO constraints, with its derivative from the implicit function theorem
(MODEL.md section 6). The violation is max over constraints of log(value / bound): <= 0 means compliant.

Two solvers: safeguarded Illinois in log-rate for violations with jumps inside the bracket (stability edges of a
decode batch, the ceil of the chunked prefill's iteration count), and Chandrupatla's method in the logit of the
utilisation for violations that are continuous below the rate's upper bound (the prefill pools)."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from ..tracing import scan
from .types import Latency, Scenario

BISECTION_STEPS = 30
POLISH_STEPS = 4  # false-position steps on the final bracket (with POLISH_TOL, see _bisect)
POLISH_TOL = 1e-10  # a log-ratio violation this small counts as meeting the bound (rounding of the polish)
RANGE = 1e-9  # search rates in [RANGE * upper, upper]
CONTINUOUS_STEPS = 20  # Chandrupatla steps: none of 4,341 random prefill roots falls short of the Illinois root from 20 on
UTIL_MAX = 1e-12  # the continuous solver's bracket ends at utilisation 1 - UTIL_MAX (float32: 16 eps, see below)


def batched_zeros(x, dtype=None):
    """Zeros like x that vmap sees as batched wherever x is. Under vmap jnp.zeros_like(x) is an unbatched constant,
    and a scan whose carry starts unbatched but comes out batched makes vmap batch the loop body twice (its
    fixpoint on which carries are batched), at every nesting level of scans and vmaps (measured on the bench_1e6
    chunk program: trace 20 -> 17 s). The select is folded away by XLA."""
    return jnp.where(jnp.isnan(x), 0, 0).astype(x.dtype if dtype is None else dtype)


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
    """The largest of the constraint terms: <= 0 means the latency meets the contract and the KV cache fits."""
    t1, t2, t3 = constraint_terms(lat, sc)
    return jnp.maximum(jnp.maximum(t1, t2), t3)


def _by_step(k, first, second, rest):
    """The solvers' loop state after step k: step 0 evaluates the lower end, step 1 the upper end, then the search."""
    return jax.tree.map(lambda u, v, w: jnp.where(k == 0, u, jnp.where(k == 1, v, w)), first, second, rest)


def _bisect(fn, upper_fn, args):
    """Safeguarded Illinois false position in log-rate: bracket [a, b] with f(a) <= 0 < f(b); a secant step when
    both ends are finite and the step lands inside the middle 90 % of the bracket, bisection otherwise. Then
    POLISH_STEPS of plain false position on the final bracket with the true end values (Illinois keeps scaled ones):
    on a bracket ~1e-8 wide in log-rate a smooth violation is linear to ~1e-16, so one step lands on the root; with
    an infinite end (a stability edge) the step is a bisection.

    One loop does it all, the two ends first: the constraint `fn`, most of the program, is traced once."""
    hi = upper_fn(args)
    lo = hi * RANGE
    x_lo, x_hi = jnp.log(lo), jnp.log(hi)
    polish_from = 2 + BISECTION_STEPS

    def step(carry, _):
        k, a, fa, b, fb, side, fa_true, fb_true, ok_lo = carry
        finite = jnp.isfinite(fa) & jnp.isfinite(fb) & (fb > fa)
        t = jnp.where(finite, fa / jnp.where(finite, fa - fb, 1.0), 0.5)
        t = jnp.where((t > 0.05) & (t < 0.95), t, 0.5)
        secant = jnp.isfinite(fa_true) & jnp.isfinite(fb_true) & (fb_true > fa_true)
        t_polish = jnp.where(secant, jnp.clip(fa_true / jnp.where(secant, fa_true - fb_true, 1.0), 0.0, 1.0), 0.5)
        polish = k >= polish_from
        x = a + jnp.where(polish, t_polish, t) * (b - a)
        fx = fn(jnp.where(k == 0, lo, jnp.where(k == 1, hi, jnp.exp(x))), args)
        # the point kept is always one with f <= 0 (in the polish: <= POLISH_TOL, its rounding counts as meeting
        # the bound)
        good = fx <= jnp.where(polish, POLISH_TOL, 0.0)
        # Illinois: halve the value kept at an end that survives twice in a row, so the bracket closes on both sides
        fa_new = jnp.where(good, fx, jnp.where(side == -1, 0.5 * fa, fa))
        fb_new = jnp.where(good, jnp.where(side == 1, 0.5 * fb, fb), fx)
        search = (jnp.where(good, x, a), fa_new, jnp.where(good, b, x), fb_new, jnp.where(good, 1, -1).astype(jnp.int32),
                  jnp.where(good, fx, fa_true), jnp.where(good, fb_true, fx), ok_lo)
        first = (a, fx, b, fb, side, fx, fb_true, fx <= 0.0)
        second = (a, fa, b, fx, side, fa_true, fx, ok_lo)
        return (k + 1,) + _by_step(k, first, second, search), None

    zero = batched_zeros(hi)
    init = (jnp.int32(0), x_lo, zero, x_hi, zero, batched_zeros(hi, jnp.int32), zero, zero,
            batched_zeros(hi, jnp.bool_))
    (_, x, _, _, _, _, _, _, ok_lo), _ = scan(step, init, polish_from + POLISH_STEPS)
    return jnp.where(ok_lo & jnp.isfinite(hi) & (hi > 0.0), jnp.exp(x), jnp.nan)


def _logit(x):
    return jnp.log(x) - jnp.log1p(-x)


def _chandrupatla(fn, upper_fn, args):
    """Chandrupatla's method (Adv. Eng. Software 28, 1997): inverse quadratic interpolation through the last three
    points when the data say it is safe (the xi/phi test), bisection otherwise, the step kept tlim inside the
    bracket. It works in u = logit(rho), rho = rate / upper: the stability pole at rho = 1 goes to u = +inf, so the
    violation is finite at both ends of [logit(RANGE), logit(1 - UTIL_MAX)], flat in light traffic and nearly
    linear in heavy traffic (a queueing delay grows like 1 / (1 - rho) = 1 + e^u). For violations continuous on
    (0, upper) only: at a jump it falls back to bisection, too few steps to locate it."""
    hi = upper_fn(args)
    rate = lambda u: hi / (1.0 + jnp.exp(-u))  # noqa: E731
    f = lambda u: fn(rate(u), args)  # noqa: E731
    zero = batched_zeros(hi)
    util_max = max(UTIL_MAX, 16.0 * float(jnp.finfo(hi.dtype).eps))  # 1 - util_max must round below 1
    lo_u, hi_u = zero + _logit(RANGE), zero + _logit(1.0 - util_max)

    def safe(x):
        return jnp.where(x != 0.0, x, 1.0)

    def step(carry, _):
        # x1: newest point; [x1, x2] brackets the root (f1, f2 of opposite signs); x3: the point dropped last.
        # Steps 0 and 1 evaluate the ends (one loop, so the constraint is traced once).
        k, x1, f1, x2, f2, x3, f3, t, f_lo = carry
        xt = jnp.where(k == 0, lo_u, jnp.where(k == 1, hi_u, x1 + t * (x2 - x1)))
        ft = f(xt)
        same = (ft > 0.0) == (f1 > 0.0)
        x3n, f3n = jnp.where(same, x1, x2), jnp.where(same, f1, f2)
        x2n, f2n = jnp.where(same, x2, x1), jnp.where(same, f2, f1)
        x1n, f1n = xt, ft
        xi = (x1n - x2n) / safe(x3n - x2n)
        phi = (f1n - f2n) / safe(f3n - f2n)
        iqi = ((phi**2 < xi) & ((1.0 - phi) ** 2 < 1.0 - xi) & jnp.isfinite(f1n) & jnp.isfinite(f2n)
               & jnp.isfinite(f3n))
        t_iqi = (f1n / safe(f2n - f1n) * f3n / safe(f2n - f3n)
                 + (x3n - x1n) / safe(x2n - x1n) * f1n / safe(f3n - f1n) * f2n / safe(f3n - f2n))
        tlim = jnp.minimum(1e-14 * (1.0 + jnp.abs(x1n)) / safe(jnp.abs(x2n - x1n)), 0.5)
        tn = jnp.clip(jnp.where(iqi, t_iqi, 0.5), tlim, 1.0 - tlim)
        first = (x1, ft, x2, f2, x3, f3, t, ft)
        second = (x1, f1, x2, ft, x3, ft, t, f_lo)
        search = (x1n, f1n, x2n, f2n, x3n, f3n, tn, f_lo)
        return (k + 1,) + _by_step(k, first, second, search), None

    init = (jnp.int32(0), lo_u, zero, hi_u, zero, hi_u, zero, zero + 0.5, zero)
    (_, x1, f1, x2, f2, _, _, _, f_lo), _ = scan(step, init, 2 + CONTINUOUS_STEPS)
    # the largest point that meets the bound (to POLISH_TOL); with no sign change (f <= 0 up to the logit's end) x2
    # is still the upper end and f2 <= 0
    ok1, ok2 = f1 <= POLISH_TOL, f2 <= POLISH_TOL
    x = jnp.where(ok1 & ok2, jnp.maximum(x1, x2), jnp.where(ok1, x1, x2))
    return jnp.where((f_lo <= 0.0) & jnp.isfinite(hi) & (hi > 0.0), rate(x), jnp.nan)


@partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _max_rate(fn, upper_fn, continuous, args):
    return (_chandrupatla if continuous else _bisect)(fn, upper_fn, args)


def max_rate(fn, upper_fn, args, continuous: bool = False):
    """Largest rate with fn(rate, args) <= 0 (NaN if none, even at vanishing load). fn must increase in rate;
    `continuous=True` promises that it is continuous below upper_fn(args) (faster solver). Differentiable in args
    through the implicit function theorem at the active constraint."""
    return _max_rate(fn, upper_fn, continuous, args)


@_max_rate.defjvp
def _max_rate_jvp(fn, upper_fn, continuous, primals, tangents):
    (args,), (dargs,) = primals, tangents
    lam = _max_rate(fn, upper_fn, continuous, args)
    safe = jnp.where(jnp.isfinite(lam), lam, 1.0)
    value, dc_dargs = jax.jvp(lambda a: fn(safe, a), (args,), (dargs,))
    _, dc_dlam = jax.jvp(lambda r: fn(r, args), (safe,), (jnp.ones_like(safe),))
    ok = jnp.isfinite(lam) & (dc_dlam > 0.0)
    dlam = jnp.where(ok, -dc_dargs / jnp.where(ok, dc_dlam, 1.0), 0.0)
    # No constraint active: the rate is the top of the bracket, a fixed fraction of the upper rate (a pooled queue
    # in the large-deployment limit waits no more, so the instance may run to saturation), which moves with it.
    hi, dhi = jax.jvp(upper_fn, (args,), (dargs,))
    top = jnp.isfinite(lam) & (value < -POLISH_TOL) & (lam >= hi * (1.0 - 1e-6))
    dlam = jnp.where(top, dhi * safe / jnp.where(top, hi, 1.0), dlam)
    return lam, dlam

"""A safeguarded Newton solver for the lowest root of a scalar function in a bracket, with kink detection and
implicit-function-theorem sensitivities, written as a small ask/tell state machine (see `_root_find`).

Phases, in order, each a bounded number of evaluations (forward-mode jvps of f):

1. SCAN (``samples`` evaluations): f at evenly spaced points of [lower, upper]. Counts the sign changes between
   samples and keeps the lowest one; NaN samples have no sign, and a change across NaN samples is not trusted.
2. REFINE (at most ``max_steps``): Newton steps from the secant (regula falsi) point of the lowest sign change,
   kept inside the shrinking bracket; a step that would leave the bracket, or that does not at least halve the
   step before last, is replaced by bisection (Numerical Recipes' rtsafe rule). Ends when |f| <= ftol
   (converged), the bracket is narrower than xtol times the original one (collapsed: a jump), f is NaN, or steps
   run out.
3. BELOW, ABOVE (2): f, f' and the branch signature at y* -/+ probe * (upper - lower). A kink is a collapsed
   bracket, a non-finite side, a change of signature, one-sided slopes that differ by more than kink_rtol, a
   jump that the slopes do not explain, or a zero slope at the root (a plateau of ties).
4. SENS (m): at a smooth root, the jvp of f along each parameter direction e_j gives df/dtheta_j; then
   dy*/dtheta_j = -(df/dtheta_j) / (df/dy) (implicit function theorem; nothing is differentiated through the
   iterations).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from frontier_jax.solvers._outcomes import CONVERGED, KINK, MAX_STEPS, NO_SIGN_CHANGE, NON_FINITE
from frontier_jax.solvers._root_find import Solution

SCAN, REFINE, BELOW, ABOVE, SENS, DONE = range(6)


class State(NamedTuple):
    """The solver's loop state for one point: phase, bracket scan, bracket, Newton refinement, kink probes,
    parameter derivatives."""

    phase: jax.Array
    k: jax.Array                 # sample index (SCAN) or parameter index (SENS)
    evaluations: jax.Array
    lower: jax.Array
    upper: jax.Array
    # bracket scan
    prev_valid: jax.Array        # the previous sample was not NaN
    last_pos: jax.Array          # sign (f > 0) of the last non-NaN sample
    seen: jax.Array              # some sample was not NaN
    crossings: jax.Array
    found: jax.Array             # 0: no sign change yet, 1: between adjacent samples, 2: across NaN samples
    prev_y: jax.Array
    prev_f: jax.Array
    prev_df: jax.Array
    aux_first: Any
    aux_last: Any
    # the bracket [a, b], f(a) and f(b) of opposite signs once found == 1
    a: jax.Array
    fa: jax.Array
    dfa: jax.Array
    b: jax.Array
    fb: jax.Array
    dfb: jax.Array
    # refinement
    x: jax.Array                 # next iterate
    dx: jax.Array                # last step
    dx_old: jax.Array            # the step before
    steps: jax.Array
    best_y: jax.Array            # evaluated point with the smallest |f|: the reported root
    best_f: jax.Array
    best_df: jax.Array
    collapsed: jax.Array
    outcome: jax.Array            # -1 until decided
    # kink probes
    f_minus: jax.Array
    df_minus: jax.Array
    sig_minus: jax.Array
    aux_minus: Any
    f_plus: jax.Array
    df_plus: jax.Array
    sig_plus: jax.Array
    aux_plus: Any
    # parameter derivatives of f at the root
    grads: jax.Array


def _where(cond, new, old):
    return jax.tree.map(lambda n, o: jnp.where(cond, n, o), new, old)


@dataclass(frozen=True)
class BracketedNewton:
    """Configuration (static, hashable). Tolerances are in the units of y and f.

    samples: bracket samples of the coarse scan (>= 2); a pair of roots closer than one sample spacing is missed.
    max_steps: refinement steps before giving up (outcome max_steps).
    ftol: converged when |f| <= ftol (pick it above the noise floor of f).
    xtol: the bracket collapsed when its width <= xtol * (upper - lower) with |f| still > ftol: a jump (kink);
        the root is then the bracket's midpoint.
    probe: kink probes at y* +- probe * (upper - lower).
    kink_rtol: relative tolerance of the one-sided slope comparison and of the jump test.
    """

    samples: int = 16
    max_steps: int = 40
    ftol: float = 1e-10
    xtol: float = 1e-9
    probe: float = 1e-5
    kink_rtol: float = 1e-2

    def __post_init__(self):
        if self.samples < 2:
            raise ValueError(f"samples={self.samples}; the bracket scan needs at least 2")
        if self.max_steps < 1:
            raise ValueError(f"max_steps={self.max_steps}; need at least 1")
        for name in ("ftol", "xtol", "probe", "kink_rtol"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)}; it must be > 0")

    def max_evaluations(self, m: int) -> int:
        """The most evaluations one solve can take with m sensitivity parameters."""
        return self.samples + self.max_steps + 2 + m

    # ---- protocol ----
    def init(self, lower, upper, theta, aux_like) -> State:
        """The state before the first evaluation: scan phase, bracket [lower, upper], m = len(theta) parameters."""
        dt = lower.dtype
        m = theta.shape[0]
        sig_like, aux_like = aux_like
        zeros = lambda like: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), like)  # noqa: E731
        sig0, aux0 = zeros(sig_like), zeros(aux_like)
        nan, inf = jnp.asarray(jnp.nan, dt), jnp.asarray(jnp.inf, dt)
        i0, f = jnp.int32(0), jnp.asarray(False)
        width = upper - lower
        return State(phase=jnp.int32(SCAN), k=i0, evaluations=i0, lower=lower, upper=upper,
                     prev_valid=f, last_pos=f, seen=f, crossings=i0, found=i0, prev_y=lower, prev_f=nan,
                     prev_df=nan, aux_first=aux0, aux_last=aux0, a=lower, fa=nan, dfa=nan, b=upper, fb=nan,
                     dfb=nan, x=lower, dx=width, dx_old=width, steps=i0, best_y=nan, best_f=inf, best_df=nan,
                     collapsed=f, outcome=jnp.int32(-1), f_minus=nan, df_minus=nan, sig_minus=sig0, aux_minus=aux0,
                     f_plus=nan, df_plus=nan, sig_plus=sig0, aux_plus=aux0, grads=jnp.zeros((m,), dt))

    def _scan_y(self, s: State):
        t = jnp.minimum(s.k, self.samples - 1).astype(s.lower.dtype) / (self.samples - 1)
        return jnp.where(s.k >= self.samples - 1, s.upper, s.lower + (s.upper - s.lower) * t)

    def _probe_y(self, s: State, sign):
        y = s.best_y + sign * self.probe * (s.upper - s.lower)
        return jnp.clip(y, s.lower, s.upper)

    def query(self, s: State):
        """(y, dy, dtheta): where to evaluate next and along which tangent."""
        m = s.grads.shape[0]
        root = jnp.where(jnp.isfinite(s.best_y), s.best_y, s.lower)
        ph = s.phase
        y = jnp.select([ph == SCAN, ph == REFINE, ph == BELOW, ph == ABOVE],
                       [self._scan_y(s), s.x, self._probe_y(s, -1.0), self._probe_y(s, 1.0)], root)
        sens = ph == SENS
        dy = jnp.where(sens, 0.0, 1.0).astype(y.dtype)
        dtheta = jax.nn.one_hot(s.k, m, dtype=y.dtype) * sens if m else jnp.zeros((0,), y.dtype)
        return y, dy, dtheta

    def step(self, s: State, f, df, sig, aux) -> State:
        """The state after evaluating f (value, derivative, branch signature, aux) at the queried point."""
        ph = s.phase
        s = s._replace(evaluations=s.evaluations + 1)
        new = _where(ph == SCAN, self._scan(s, f, df, aux), s)
        new = _where(ph == REFINE, self._refine(s, f, df), new)
        new = _where(ph == BELOW, s._replace(phase=jnp.int32(ABOVE), f_minus=f, df_minus=df, sig_minus=sig,
                                             aux_minus=aux), new)
        new = _where(ph == ABOVE, self._classify(s, f, df, sig, aux), new)
        if s.grads.shape[0]:
            new = _where(ph == SENS, self._sens(s, df), new)
        return new

    def terminate(self, s: State):
        """True once the solve is done (outcome decided, sensitivities taken)."""
        return s.phase == DONE

    def postprocess(self, s: State) -> Solution:
        """The Solution (root, outcome, diagnostics, IFT sensitivities) from the final state."""
        dt = s.lower.dtype
        nan = jnp.asarray(jnp.nan, dt)
        located = (s.outcome == CONVERGED) | (s.outcome == KINK)
        smooth = s.outcome == CONVERGED
        slope = jnp.where(located, s.best_df, nan)
        safe = jnp.where(smooth & (s.best_df != 0), s.best_df, 1.0)
        sens = jnp.where(smooth & (s.best_df != 0), -s.grads / safe, nan)
        value = jnp.where(located | (s.outcome == MAX_STEPS), s.best_f, nan)
        return Solution(root=jnp.where(located, s.best_y, nan), value=value, slope=slope, outcome=s.outcome,
                        steps=s.steps, evaluations=s.evaluations, crossings=s.crossings, sensitivities=sens,
                        aux_below=_where(located, s.aux_minus, s.aux_first),
                        aux_above=_where(located, s.aux_plus, s.aux_last))

    # ---- phases ----
    def _scan(self, s: State, f, df, aux) -> State:
        y = self._scan_y(s)
        valid = ~jnp.isnan(f)
        pos = f > 0
        change = valid & s.seen & (pos != s.last_pos)
        adjacent = change & s.prev_valid
        first = change & (s.found == 0)
        take = first & adjacent
        a, fa, dfa = _where(take, (s.prev_y, s.prev_f, s.prev_df), (s.a, s.fa, s.dfa))
        b, fb, dfb = _where(take, (y, f, df), (s.b, s.fb, s.dfb))
        found = jnp.where(first, jnp.where(adjacent, 1, 2), s.found).astype(jnp.int32)
        seen = s.seen | valid
        r = s._replace(k=s.k + 1, prev_valid=valid, last_pos=jnp.where(valid, pos, s.last_pos), seen=seen,
                       crossings=s.crossings + change.astype(jnp.int32), found=found, prev_y=y, prev_f=f,
                       prev_df=df, a=a, fa=fa, dfa=dfa, b=b, fb=fb, dfb=dfb,
                       aux_first=_where(s.k == 0, aux, s.aux_first), aux_last=aux)
        # End of the scan: start the refinement from the secant point of the lowest sign change.
        last = s.k + 1 >= self.samples
        finite = jnp.isfinite(fa) & jnp.isfinite(fb)
        secant = a - fa * (b - a) / jnp.where(finite & (fb != fa), fb - fa, 1.0)
        lo, hi = a + 1e-3 * (b - a), b - 1e-3 * (b - a)
        x0 = jnp.where(finite, jnp.clip(secant, lo, hi), 0.5 * (a + b))
        a_best = jnp.abs(fa) <= jnp.abs(fb)
        best = _where(a_best, (a, fa, dfa), (b, fb, dfb))
        at_sample = jnp.abs(best[1]) <= self.ftol
        go = last & (found == 1)
        start = r._replace(phase=jnp.where(at_sample, BELOW, REFINE).astype(jnp.int32), x=x0, best_y=best[0],
                           best_f=best[1], best_df=best[2], dx=b - a, dx_old=b - a)
        r = _where(go, start, r)
        stop = jnp.where((found == 2) | ~seen, NON_FINITE, NO_SIGN_CHANGE).astype(jnp.int32)
        return _where(last & ~go, r._replace(phase=jnp.int32(DONE), outcome=stop), r)

    def _refine(self, s: State, f, df) -> State:
        x = s.x
        nan = jnp.isnan(f)
        steps = s.steps + 1
        better = jnp.abs(f) < jnp.abs(s.best_f)
        best_y, best_f, best_df = _where(better, (x, f, df), (s.best_y, s.best_f, s.best_df))
        same_a = (f > 0) == (s.fa > 0)
        a, fa, dfa = _where(~nan & same_a, (x, f, df), (s.a, s.fa, s.dfa))
        b, fb, dfb = _where(~nan & ~same_a, (x, f, df), (s.b, s.fb, s.dfb))
        # rtsafe: Newton unless the step leaves the bracket or does not halve the step before last.
        usable = jnp.isfinite(f) & jnp.isfinite(df) & (df != 0.0)
        inside = ((x - b) * df - f) * ((x - a) * df - f) < 0.0
        fast = jnp.abs(2.0 * f) <= jnp.abs(s.dx_old * df)
        newton = usable & inside & fast
        dx_newton = f / jnp.where(usable, df, 1.0)
        dx_bisect = 0.5 * (b - a)
        x_new = jnp.where(newton, x - dx_newton, a + dx_bisect)
        dx_new = jnp.where(newton, dx_newton, dx_bisect)
        r = s._replace(steps=steps, a=a, fa=fa, dfa=dfa, b=b, fb=fb, dfb=dfb, best_y=best_y, best_f=best_f,
                       best_df=best_df, x=x_new, dx=dx_new, dx_old=s.dx)
        converged = jnp.abs(best_f) <= self.ftol
        collapsed = ~converged & ((b - a) <= self.xtol * (s.upper - s.lower))
        out_of_steps = steps >= self.max_steps
        # A collapsed bracket straddles a jump: report its midpoint (no slope there).
        r = _where(collapsed, r._replace(best_y=0.5 * (a + b), best_df=jnp.asarray(jnp.nan, x.dtype)), r)
        phase = jnp.select([nan, converged, collapsed, out_of_steps], [DONE, BELOW, BELOW, DONE], REFINE)
        outcome = jnp.select([nan, converged | collapsed, out_of_steps], [NON_FINITE, -1, MAX_STEPS], -1)
        return r._replace(phase=phase.astype(jnp.int32), outcome=outcome.astype(jnp.int32),
                          collapsed=~nan & collapsed)

    def _classify(self, s: State, f, df, sig, aux) -> State:
        fm, dfm, fp, dfp = s.f_minus, s.df_minus, f, df
        ym, yp = self._probe_y(s, -1.0), self._probe_y(s, 1.0)
        finite = jnp.isfinite(fm) & jnp.isfinite(fp) & jnp.isfinite(dfm) & jnp.isfinite(dfp)
        finite &= jnp.isfinite(s.best_df)
        scale = jnp.maximum(jnp.maximum(jnp.abs(dfm), jnp.abs(dfp)), jnp.abs(s.best_df))
        slopes_differ = (jnp.abs(dfp - dfm) > self.kink_rtol * scale) | \
                        (jnp.abs(s.best_df - 0.5 * (dfm + dfp)) > self.kink_rtol * scale)
        predicted = 0.5 * (dfm + dfp) * (yp - ym)
        jump = jnp.abs((fp - fm) - predicted) > self.kink_rtol * jnp.abs(predicted) + 2.0 * self.ftol
        switched = jnp.any(jnp.asarray(sig) != jnp.asarray(s.sig_minus))
        degenerate = ~(jnp.abs(s.best_df) > 0.0)  # a zero slope (a tie on a plateau): the IFT does not apply
        kink = s.collapsed | ~finite | slopes_differ | jump | switched | degenerate
        m = s.grads.shape[0]
        phase = jnp.where(~kink & (m > 0), SENS, DONE).astype(jnp.int32)
        return s._replace(phase=phase, k=jnp.int32(0), outcome=jnp.where(kink, KINK, CONVERGED).astype(jnp.int32),
                          f_plus=fp, df_plus=dfp, sig_plus=sig, aux_plus=aux)

    def _sens(self, s: State, df) -> State:
        m = s.grads.shape[0]
        grads = s.grads.at[s.k].set(df, mode="drop")
        k = s.k + 1
        return s._replace(grads=grads, k=k, phase=jnp.where(k >= m, DONE, SENS).astype(jnp.int32))

"""The driver: one `lax.while_loop` whose body evaluates the function exactly once.

The solver is asked where to evaluate next (a point and a tangent direction), the driver evaluates the function
there with one forward-mode `jax.jvp`, and the solver is told the value, the directional derivative and the
auxiliary outputs. Every evaluation the solve needs (bracket samples, Newton steps, kink probes and the implicit
sensitivities) goes through that single call site, so the function appears once in the compiled program: for the
cost model, whose forward-mode derivative takes about a minute to compile on a CPU, that is the difference between
one and four minutes of compilation.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from frontier_jax.solvers._outcomes import CONVERGED, KINK

# fn(y, theta, args) -> (f, (signature, aux)): scalar f; `signature` an array of the discrete choices that define
# the smooth branch f is on (a change between the two kink probes flags a kink); `aux` any pytree carried to the
# solution (its value just below and just above the root).
RootFn = Callable[[jax.Array, jax.Array, Any], tuple[jax.Array, tuple[jax.Array, Any]]]


class Solution(NamedTuple):
    """The result of one scalar solve (vmapped solves give arrays with a leading batch axis)."""

    root: jax.Array           # y*: the lowest root in the bracket; NaN unless outcome is converged or kink
    value: jax.Array          # f(y*), the residual; for max_steps the smallest |f| seen; NaN otherwise
    slope: jax.Array          # df/dy at y* (NaN when there is no root)
    outcome: jax.Array         # int32 code, an index into OUTCOMES
    steps: jax.Array          # refinement steps (Newton or bisection), int32
    evaluations: jax.Array    # evaluations of f, each one forward-mode jvp, int32
    crossings: jax.Array      # sign changes of f between the bracket samples (a lower bound on the roots), int32
    sensitivities: jax.Array  # (m,) dy*/dtheta_j = -(df/dtheta_j)/(df/dy) at y*; NaN unless outcome is converged
    aux_below: Any            # aux just below the root, or at the bracket's lower end when there is no root
    aux_above: Any            # aux just above the root, or at the bracket's upper end when there is no root

    @property
    def located(self) -> jax.Array:
        """True where the root is located to tolerance (outcome converged or kink)."""
        return (self.outcome == CONVERGED) | (self.outcome == KINK)


def root_find(fn: RootFn, solver: Any, lower: jax.Array, upper: jax.Array, theta: jax.Array, args: Any = None, *,
              aux_like: Any = None) -> Solution:
    """Solve fn(y, theta, args) = 0 for the lowest root y in [lower, upper] (one point; `jax.vmap` for many).

    `theta` is a 1-D array of the parameters the root's sensitivities are taken with respect to (may be empty);
    `args` is anything else fn needs (a pytree of arrays, not differentiated). `aux_like` is the structure of fn's
    second output `(signature, aux)` (arrays or ShapeDtypeStructs); by default it is found with `jax.eval_shape`,
    which traces fn once more. Never raises for a bad point: the outcome is `Solution.outcome`."""
    dtype = jnp.result_type(lower, upper, float)
    lower, upper = jnp.asarray(lower, dtype), jnp.asarray(upper, dtype)
    theta = jnp.asarray(theta, dtype)
    if theta.ndim != 1:
        raise ValueError(f"theta must be a 1-D array of parameters, got shape {theta.shape}")
    if aux_like is None:
        aux_like = jax.eval_shape(lambda: fn(lower, theta, args)[1])

    def evaluate(y, dy, dtheta):
        f, df, extra = jax.jvp(lambda y_, th_: fn(y_, th_, args), (y, theta), (dy, dtheta), has_aux=True)
        return f, df, extra

    def body(state):
        y, dy, dtheta = solver.query(state)
        f, df, (signature, aux) = evaluate(y, dy, dtheta)
        return solver.step(state, f, df, signature, aux)

    state = solver.init(lower, upper, theta, aux_like)
    state = jax.lax.while_loop(lambda s: ~solver.terminate(s), body, state)
    return solver.postprocess(state)

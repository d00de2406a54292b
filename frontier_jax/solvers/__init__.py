"""Vectorised, safeguarded scalar root finding with implicit (IFT) sensitivities.

The public names are re-exported from private modules:

- `root_find(fn, solver, lower, upper, theta, args)`: the driver, one `lax.while_loop` per point; `jax.vmap` it.
- `BracketedNewton`: the solver (coarse bracket scan, safeguarded Newton with a bisection fallback, kink probes,
  implicit-function-theorem sensitivities), an immutable configuration with `init/query/step/terminate/postprocess`.
- `Solution`: what one solve returns (root, reason code, diagnostics, sensitivities).
- `REASONS` and the integer codes `CONVERGED, NO_SIGN_CHANGE, NON_FINITE, MAX_STEPS, KINK`.

See docs/breakeven.md for the method.
"""
from frontier_jax.solvers._bracketed_newton import BracketedNewton as BracketedNewton
from frontier_jax.solvers._reasons import CONVERGED as CONVERGED
from frontier_jax.solvers._reasons import KINK as KINK
from frontier_jax.solvers._reasons import MAX_STEPS as MAX_STEPS
from frontier_jax.solvers._reasons import NO_SIGN_CHANGE as NO_SIGN_CHANGE
from frontier_jax.solvers._reasons import NON_FINITE as NON_FINITE
from frontier_jax.solvers._reasons import REASON_DOCS as REASON_DOCS
from frontier_jax.solvers._reasons import REASONS as REASONS
from frontier_jax.solvers._root_find import Solution as Solution
from frontier_jax.solvers._root_find import root_find as root_find

"""Vectorised, safeguarded scalar root finding with implicit (IFT) sensitivities.

The public names are re-exported from private modules:

- `root_find(fn, solver, lower, upper, theta, args)`: the driver, one `lax.while_loop` per point; `jax.vmap` it.
- `BracketedNewton`: the solver (coarse bracket scan, safeguarded Newton with a bisection fallback, kink probes,
  implicit-function-theorem sensitivities), an immutable configuration with `init/query/step/terminate/postprocess`.
- `Solution`: what one solve returns (root, outcome code, diagnostics, sensitivities).
- `Outcome` (IntEnum), `OUTCOMES` (names) and the codes `CONVERGED, NO_SIGN_CHANGE, NON_FINITE, MAX_STEPS, KINK`.

See docs/breakeven.md for the method.
"""
from frontier_jax.solvers._bracketed_newton import BracketedNewton as BracketedNewton
from frontier_jax.solvers._outcomes import CONVERGED as CONVERGED
from frontier_jax.solvers._outcomes import KINK as KINK
from frontier_jax.solvers._outcomes import MAX_STEPS as MAX_STEPS
from frontier_jax.solvers._outcomes import NO_SIGN_CHANGE as NO_SIGN_CHANGE
from frontier_jax.solvers._outcomes import NON_FINITE as NON_FINITE
from frontier_jax.solvers._outcomes import OUTCOME_DOCS as OUTCOME_DOCS
from frontier_jax.solvers._outcomes import OUTCOMES as OUTCOMES
from frontier_jax.solvers._outcomes import Outcome as Outcome
from frontier_jax.solvers._root_find import Solution as Solution
from frontier_jax.solvers._root_find import root_find as root_find

"""Outcome codes of a root solve (the `solver_outcome` flag variable: flag_values 0..4, flag_meanings OUTCOMES).
Distinct from the cost model's infeasibility reasons (costmodel.types.Infeasible)."""
from __future__ import annotations

import enum


class Outcome(enum.IntEnum):
    """How a root solve ended."""

    CONVERGED = 0
    NO_SIGN_CHANGE = 1
    NON_FINITE = 2
    MAX_STEPS = 3
    KINK = 4


OUTCOMES = tuple(o.name.lower() for o in Outcome)
CONVERGED, NO_SIGN_CHANGE, NON_FINITE, MAX_STEPS, KINK = Outcome

OUTCOME_DOCS = {
    "converged": "a smooth root: |f| <= ftol; sensitivities are valid",
    "no_sign_change": "f has one sign at every non-NaN bracket sample: no root in the bracket",
    "non_finite": "f is NaN at every sample, at an iterate, or between the samples where its sign changes",
    "max_steps": "the refinement ran out of steps before |f| <= ftol (the root is reported as NaN)",
    "kink": "the root is located, but f is not smooth there (a jump, a derivative mismatch, a change of the "
            "branch signature within the probe distance, or a zero slope); sensitivities are NaN",
}

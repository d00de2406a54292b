"""Outcome codes of a root solve (the `reason` flag variable: flag_values 0..4, flag_meanings REASONS)."""
from __future__ import annotations

REASONS = ("converged", "no_sign_change", "non_finite", "max_steps", "kink")
CONVERGED, NO_SIGN_CHANGE, NON_FINITE, MAX_STEPS, KINK = range(len(REASONS))

REASON_DOCS = {
    "converged": "a smooth root: |f| <= ftol; sensitivities are valid",
    "no_sign_change": "f has one sign at every non-NaN bracket sample: no root in the bracket",
    "non_finite": "f is NaN at every sample, at an iterate, or between the samples where its sign changes",
    "max_steps": "the refinement ran out of steps before |f| <= ftol (the root is reported as NaN)",
    "kink": "the root is located, but f is not smooth there (a jump, a derivative mismatch, a change of the "
            "branch signature within the probe distance, or a zero slope); sensitivities are NaN",
}

"""`frontier calibrate`: refit the efficiency terms (optax) and rewrite frontier_jax/data/calibration.json;
`--kernels`: refit the kernel latencies from frontier_jax/data/kernels/ and rewrite data/kernel_fit.json."""
from __future__ import annotations

from .common import jax_setup


def register(sub) -> None:
    """Add the `calibrate` command to the parser's subcommands."""
    c = sub.add_parser("calibrate", help="refit the efficiency terms (optax) and rewrite data/calibration.json")
    c.add_argument("--kernels", action="store_true",
                   help="instead: refit the measured kernel latencies (data/kernels/) and rewrite data/kernel_fit.json")
    c.add_argument("--engine", action="append", default=None, metavar="NAME",
                   help="refit only this engine (repeatable; default: every engine)")
    c.add_argument("--report-only", action="store_true",
                   help="keep the stored engine terms; recompute only their error report")
    c.set_defaults(run=run)


def run(a) -> None:
    """Refit every engine and write the calibration file (or, with --kernels, the kernel fit)."""
    jax_setup()
    if getattr(a, "kernels", False):
        from ..calibration import kernels
        kernels.main(["--fit"])
        return
    from ..calibration import fit
    fit.main((a.engine or []) + (["--report-only"] if a.report_only else []))

"""`frontier validate`: closed-form p99 TTFT/TPOT against the discrete-event simulator on random scenarios."""
from __future__ import annotations

from .common import jax_setup


def register(sub) -> None:
    """Add the `validate` command to the parser's subcommands."""
    v = sub.add_parser("validate", help="closed-form p99 TTFT/TPOT against the discrete-event simulator")
    v.add_argument("--scenarios", type=int, default=60)
    v.add_argument("--seed", type=int, default=0)
    v.set_defaults(run=run)


def run(a) -> None:
    """Draw scenarios, simulate them and print the error table."""
    jax_setup()
    from ..sim import validation
    validation.main(["--scenarios", str(a.scenarios), "--seed", str(a.seed)])

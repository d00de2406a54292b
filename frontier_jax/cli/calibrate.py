"""`frontier calibrate`: refit the efficiency terms (optax) and rewrite frontier_jax/data/calibration.json."""
from __future__ import annotations

from .common import jax_setup


def register(sub) -> None:
    """Add the `calibrate` command to the parser's subcommands."""
    c = sub.add_parser("calibrate", help="refit the efficiency terms (optax) and rewrite data/calibration.json")
    c.set_defaults(run=run)


def run(a) -> None:
    """Refit every engine and write the calibration file."""
    jax_setup()
    from ..calibration import fit
    fit.main([])

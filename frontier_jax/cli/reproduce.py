"""`frontier reproduce`: the whole report of the five papers in one command."""
from __future__ import annotations


def register(sub) -> None:
    """Add the `reproduce` command to the parser's subcommands."""
    r = sub.add_parser("reproduce", help="re-derive the papers' claims, frontiers, break-even maps; write REPORT.md")
    r.add_argument("--out", default="reproduce_out", help="output directory (default: reproduce_out)")
    r.add_argument("--quick", action="store_true", help="smaller grids (about two minutes on 2 CPU cores)")
    r.set_defaults(run=run)


def run(a) -> None:
    """Write the report and print where REPORT.md is."""
    import jax
    jax.config.update("jax_enable_x64", True)
    from ..crossover.report import report_steps
    from ..papers.report import reproduce
    out = reproduce(a.out, quick=a.quick, extra_steps=report_steps())
    print(f"wrote {out}")

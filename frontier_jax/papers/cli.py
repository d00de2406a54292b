"""`frontier reproduce`: the whole report of the five papers in one command."""
from __future__ import annotations


def register(sub):
    r = sub.add_parser("reproduce", help="re-derive the papers' claims, frontiers, break-even maps; write REPORT.md")
    r.add_argument("--out", default="reproduce_out", help="output directory (default: reproduce_out)")
    r.add_argument("--quick", action="store_true", help="smaller grids (about two minutes on 2 CPU cores)")
    r.set_defaults(run=_run)


def _run(a):
    import jax
    jax.config.update("jax_enable_x64", True)
    from .report import reproduce
    from ..breakeven_report import report_steps
    out = reproduce(a.out, quick=a.quick, extra_steps=report_steps())
    print(f"wrote {out}")

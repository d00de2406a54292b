"""`frontier reproduce`: the whole report of the five papers in one command."""
from __future__ import annotations


def register(sub) -> None:
    """Add the `reproduce` command to the parser's subcommands."""
    r = sub.add_parser("reproduce", help="re-derive the papers' claims, frontiers, break-even maps; write REPORT.md")
    r.add_argument("--out", default="reproduce_out", help="output directory (default: reproduce_out)")
    r.add_argument("--quick", action="store_true", help="smaller grids (about two minutes on 2 CPU cores)")
    r.set_defaults(run=run)


def check_out_dir(path: str) -> None:
    """FrontierError unless `path` is (or can be made) a writable directory; creates it. Before any computing."""
    import os
    import tempfile

    from ..errors import FrontierError
    if not path or not path.strip():
        raise FrontierError("--out is empty; give a directory path such as reproduce_out")
    if os.path.exists(path) and not os.path.isdir(path):
        raise FrontierError(f"--out {path!r} is an existing file, not a directory; give a directory path")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        why = "file name too long" if getattr(e, "errno", None) == 36 else (e.strerror or str(e))
        raise FrontierError(f"--out {path!r} cannot be used as the report directory ({why}); "
                            "choose another path") from None


def run(a) -> None:
    """Write the report and print where REPORT.md is."""
    check_out_dir(a.out)
    import jax
    jax.config.update("jax_enable_x64", True)
    from ..crossover.report import report_steps
    from ..papers.report import reproduce
    import sys
    out = reproduce(a.out, quick=a.quick, extra_steps=report_steps(),
                    say=lambda line: print(f"reproduce: {line}", file=sys.stderr, flush=True))
    print(f"wrote {out}")

"""The `frontier` command line: one module per command, each with `register(subparsers)` and `run(args)`. User
mistakes print one line and exit 2; no traceback, no half-written file."""
from __future__ import annotations

import argparse
import os
import signal
import sys

from ..errors import FrontierError
from ..runner import signals
from . import breakeven, calibrate, catalog, evaluate, merge, pareto, plot, reproduce, sweep, validate

COMMANDS = (sweep, evaluate, catalog, merge, calibrate, validate, breakeven, plot, pareto, reproduce)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    p = argparse.ArgumentParser(prog="frontier", description="Cost per SLO-compliant token of colocated, chunked-"
                                "prefill and disaggregated LLM serving; million-point sweeps in JAX. With no "
                                "arguments: run the default sweep (sweeps/default.toml) and write (or replace) default.nc.")
    sub = p.add_subparsers(dest="command")
    for command in COMMANDS:
        command.register(sub)
    return p


def main(argv=None) -> int:
    """Run `frontier ARGS`; returns the exit status (0, 1 for a closed pipe, 2 for a user mistake, 130 on Ctrl-C,
    143 on SIGTERM). Signals are handled at every phase (runner/signals.py): before a sweep's partial file is open
    the process exits at once with the one line; while it is open, at the next chunk boundary."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.command is None:  # the main job, re-runnable as written: it replaces its own default output
        a = parser.parse_args(["sweep", "--overwrite"])
    took_signals = signals.install()
    try:
        a.run(a)
    except FrontierError as err:
        print(f"frontier: error: {err.cli_message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        signals.flush_std()
        print(signals.message(signum), file=sys.stderr)
        return signals.exit_status(signum)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        if took_signals:
            signals.uninstall()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`frontier plot FILE.nc`: the best-architecture map of a sweep file or the surface of a break-even file."""
from __future__ import annotations

from pathlib import Path

from ..errors import FrontierError


def register(sub) -> None:
    """Add the `plot` command to the parser's subcommands."""
    p = sub.add_parser("plot", help="plot a sweep (best-architecture map) or break-even file (surface map)")
    p.add_argument("file", help="netCDF written by `frontier sweep` or `frontier breakeven`")
    p.add_argument("-o", "--output", help="figure path (default: FILE with .png)")
    p.add_argument("--x", help="x axis (default: the first continuous axis)")
    p.add_argument("--y", help="y axis of a sweep map (default: the second continuous axis)")
    p.add_argument("--facet", help="one panel per value of this axis (default: hardware when it is an axis; "
                                   "'none' for one panel)")
    p.add_argument("--sel", action="append", default=[], metavar="AXIS=VALUE",
                   help="fix another axis at a value (nearest); repeatable. Unfixed extra axes take their first "
                        "value, reported on stderr and in the title")
    p.set_defaults(run=run)


def run(a) -> None:
    """Draw the figure and print its path."""
    from ..plotting import plot_file

    sel = {}
    for item in a.sel:
        if "=" not in item:
            raise FrontierError(f"--sel {item!r}: write AXIS=VALUE")
        k, v = item.split("=", 1)
        sel[k.strip()] = v.strip()
    if not Path(a.file).is_file() and not str(a.file).lower().endswith(".toml"):
        raise FrontierError(f"{a.file!r} not found; check the path")
    out = plot_file(a.file, a.output, x=a.x, y=a.y, facet=a.facet, sel=sel)
    import sys
    if plot_file.notes:
        print("fixed: " + ", ".join(plot_file.notes), file=sys.stderr)
    print(out)

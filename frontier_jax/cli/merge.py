"""`frontier merge PARTS -o OUT`: join the part files of a multi-process sweep."""
from __future__ import annotations


def register(sub) -> None:
    """Add the `merge` command to the parser's subcommands."""
    m = sub.add_parser("merge", help="join the part files of a multi-process sweep")
    m.add_argument("parts", nargs="+")
    m.add_argument("-o", "--output", required=True)
    m.add_argument("--overwrite", action="store_true")
    m.set_defaults(run=run)


def run(a) -> None:
    """Merge the parts and print the output path."""
    from ..runner import merge_parts
    print(merge_parts(a.parts, a.output, overwrite=a.overwrite))

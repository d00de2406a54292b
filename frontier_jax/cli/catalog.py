"""`frontier hardware|models [list|show NAME]`: the catalogue, every number with its source."""
from __future__ import annotations

from ..errors import FrontierError


def register(sub) -> None:
    """Add the `hardware` and `models` commands to the parser's subcommands."""
    for kind in ("hardware", "models"):
        c = sub.add_parser(kind, help=f"list or show the {kind} catalogue")
        c.add_argument("action", nargs="?", choices=["list", "show"], default="list")
        c.add_argument("name", nargs="?")
        c.set_defaults(run=lambda a, k=kind: run(a, k))


def run(a, kind) -> None:
    """List the catalogue, or show one entry with every number's source."""
    from ..costmodel import catalog
    folder = "hardware" if kind == "hardware" else "models"
    if a.action == "list" or a.action is None:
        names = catalog.list_hardware(False) if kind == "hardware" else catalog.list_models(False)
        for n in names:
            why = catalog.problem(folder, n)
            if why is not None:  # one bad file names itself and does not hide the others
                print(f"{n:18s} (unusable: {why})")
                continue
            info = catalog.hardware_info(n) if kind == "hardware" else catalog.model_info(n)
            print(f"{n:18s} {info.get('long_name', '')}")
        return
    if not a.name:
        raise FrontierError(f"`frontier {kind} show` needs a NAME; see `frontier {kind} list`")
    info = catalog.hardware_info(a.name) if kind == "hardware" else catalog.model_info(a.name)
    for k, v in info.items():
        if isinstance(v, dict):
            extra = ", ".join(f"{kk}={vv}" for kk, vv in v.items() if kk not in ("value", "units", "source"))
            print(f"{k:18s} {v.get('value')} {v.get('units', '')}" + (f" ({extra})" if extra else ""))
            if "source" in v:
                print(f"{'':18s}   source: {v['source']}")
        else:
            print(f"{k:18s} {v}")

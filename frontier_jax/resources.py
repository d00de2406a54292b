"""Where the shipped data lives, in a source checkout and in an installed wheel.

- `hardware/`, `models/` and `sweeps/` sit at the repository's top level (the user's layout). The wheel build maps
  them into the package as `frontier_jax/_shipped/{hardware,models,sweeps}` (setup.py); a source checkout or an
  editable install reads them where they are.
- `frontier_jax/data/` holds the calibration, the measured latencies and the published claims, one copy each.

User additions come first: each directory named in $FRONTIER_JAX_PATH (os.pathsep-separated; its `hardware/`,
`models/` and `sweeps/` subfolders), then the working directory's, then the shipped ones.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

ENV_VAR = "FRONTIER_JAX_PATH"
SHIPPED_KINDS = ("hardware", "models", "sweeps")
_PACKAGE = Path(str(resources.files("frontier_jax")))


def shipped_dir(kind: str) -> Path:
    """The shipped `hardware`, `models` or `sweeps` folder: inside the installed package, else the checkout's."""
    if kind not in SHIPPED_KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {SHIPPED_KINDS}")
    inside = _PACKAGE / "_shipped" / kind
    return inside if inside.is_dir() else _PACKAGE.parent / kind


def search_roots() -> list[Path]:
    """Roots searched in order for `hardware/NAME.toml` and `models/NAME.toml`: $FRONTIER_JAX_PATH entries, then
    the working directory (the shipped folders are searched after these)."""
    extra = [Path(p).expanduser() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    return [*extra, Path.cwd()]


def search_dirs(kind: str) -> list[Path]:
    """Every folder searched for files of `kind`, first match wins: user roots, then the shipped folder."""
    shipped = shipped_dir(kind)
    dirs = [root / kind for root in search_roots()]
    return [d for d in dirs if d.resolve() != shipped.resolve()] + [shipped]


def data_file(name: str) -> Path:
    """A file of the packaged data folder (frontier_jax/data)."""
    return _PACKAGE / "data" / name

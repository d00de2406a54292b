"""Limits checked from the spec alone, before anything is compiled or written: grid points (a product of axis
lengths, in Python integers, nothing allocated), the bytes the output needs against the free disk space.

MAX_POINTS (1e9; $FRONTIER_JAX_MAX_POINTS or `frontier sweep --max-points` change it) bounds the grid; MAX_AXIS
(1e6) bounds one linspace/logspace axis, checked when the spec is read."""
from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping
from typing import Any

import numpy as np

from frontier_jax.errors import FrontierError, option

MAX_POINTS = 10**9
MAX_AXIS = 10**6
ENV = "FRONTIER_JAX_MAX_POINTS"
FILE_OVERHEAD = 1.05  # HDF5 metadata and chunk padding, roughly


def max_points(given: int | None = None) -> int:
    """The grid limit: `given`, else $FRONTIER_JAX_MAX_POINTS, else MAX_POINTS."""
    if given is not None:
        value: Any = given
    else:
        value = os.environ.get(ENV)
        if value is None or not value.strip():
            return MAX_POINTS
        try:
            value = int(float(value))
        except ValueError:
            raise FrontierError(f"{ENV}={os.environ[ENV]!r} is not a number; set it to a point count such as "
                                "1e10") from None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise FrontierError(f"the point limit must be a positive integer, got {value!r}")
    return int(value)


def bytes_per_point(outputs: Mapping[str, Any], extra: Mapping[str, Any]) -> int:
    """Bytes of output one grid point takes (every variable, its extra dims included)."""
    total = 0
    for m in outputs.values():
        total += np.dtype(m.dtype).itemsize * math.prod(len(extra[d][0]) for d in m.dims_extra)
    return total


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"


def check_grid(spec: Any, outputs: Mapping[str, Any], extra: Mapping[str, Any], limit: int | None = None) -> None:
    """FrontierError when the grid has more points than the limit, with the count and the output size."""
    size = math.prod(a.size for a in spec.axes)
    cap = max_points(limit)
    if size > cap:
        shape = " x ".join(str(a.size) for a in spec.axes)
        need = size * bytes_per_point(outputs, extra)
        raise FrontierError(f"the grid has {size:,} points ({shape}), about {_size(need)} of output; the limit is "
                            f"{cap:,} points: shrink the axes, split the sweep, or raise the limit with "
                            f"{option('--max-points N', 'max_points=N')} or {ENV}")


def check_disk(final: str, spec: Any, outputs: Mapping[str, Any], extra: Mapping[str, Any]) -> None:
    """FrontierError when the output clearly cannot fit on its file system."""
    need = spec.size * bytes_per_point(outputs, extra) * FILE_OVERHEAD
    try:
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(final))).free
    except OSError:
        return
    if need > free:
        raise FrontierError(f"the output needs about {_size(need)} but only {_size(free)} is free where "
                            f"{final!r} goes; free space, choose another output path, or shrink the grid")

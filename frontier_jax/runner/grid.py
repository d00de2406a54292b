"""Flat C-order grid index -> per-point input arrays, computed on device.

Axis values travel as (small) array arguments, never as constants baked into the executable, so a sweep with
different values of the same lengths reuses the compiled program."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from frontier_jax.runner.spec import SweepSpec


@dataclass(frozen=True)
class Layout:
    """The static (hashable) part of a grid: shape, input names and kinds, derived-axis switch."""

    shape: tuple[int, ...]
    axes: tuple[tuple[str, str], ...]   # (name, kind) in C order
    fixed: tuple[tuple[str, str], ...]
    derived: bool

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def layout(spec: SweepSpec) -> Layout:
    """The static part of a spec's grid (what the compiled chunk program depends on)."""
    return Layout(spec.shape, tuple((a.name, a.kind) for a in spec.axes),
                  tuple((f.name, f.kind) for f in spec.fixed), spec.derived)


def float_dtype() -> np.dtype:
    """float64 when jax_enable_x64 is on, else float32: the library follows the global mode, never sets it."""
    return np.dtype(jnp.result_type(float))


def index_dtype() -> np.dtype:
    """The integer dtype of flat grid indices (int64 with jax_enable_x64, else int32)."""
    return np.dtype(jnp.result_type(int))


def point_arrays(spec: SweepSpec) -> dict[str, np.ndarray]:
    """Host arrays holding each axis's values (1-D) and each fixed value (0-D). Categorical inputs become int32
    indices into `spec.choices[name]`; continuous and integer inputs use the default float dtype."""
    fdt = float_dtype()

    def encode(name: str, kind: str, values: list) -> np.ndarray:
        if kind == "categorical":
            return np.array([spec.choices[name].index(v) for v in values], dtype=np.int32)
        return np.array(values, dtype=fdt)

    out = {a.name: encode(a.name, a.kind, list(a.values)) for a in spec.axes}
    out.update({f.name: encode(f.name, f.kind, [f.value]).reshape(()) for f in spec.fixed})
    return out


def decode_points(lay: Layout, arrays: Mapping[str, jax.Array], idx: jax.Array) -> dict[str, jax.Array]:
    """Per-point inputs for flat indices `idx` (shape (n,), integer, 0 <= idx < size)."""
    points: dict[str, jax.Array] = {}
    if lay.axes:
        subs = jnp.unravel_index(idx, lay.shape)
        for (name, _), sub in zip(lay.axes, subs):
            points[name] = jnp.take(arrays[name], sub, mode="clip")
    for name, _ in lay.fixed:
        points[name] = jnp.broadcast_to(arrays[name], idx.shape)
    if lay.derived:
        r, total = points["io_ratio"], points["total_len"]
        points["input_len"] = total * r / (1 + r)
        points["output_len"] = total / (1 + r)
    return points


def make_point_fn(spec: SweepSpec) -> Callable[[jax.Array], dict[str, jax.Array]]:
    """idx -> {input name: (n,) array}. Closes over device copies of the axis values (convenient for tests and
    notebooks); the engine calls `decode_points` with the arrays as jit arguments instead."""
    lay = layout(spec)
    arrays = {k: jnp.asarray(v) for k, v in point_arrays(spec).items()}
    return lambda idx: decode_points(lay, arrays, idx)

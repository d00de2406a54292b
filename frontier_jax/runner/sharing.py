"""Shared parts of a chunk: work a part of the kernel does once per distinct combination of the inputs it reads.

A kernel may declare parts that ignore some inputs (`kernel.shared_parts`: name -> the input names it ignores;
the cost model's link-blind searches ignore the KV bandwidth and the price, its linked prefill search ignores the
decode side). Points of a chunk that differ only in axes a part ignores have the same value of that part, so the
engine evaluates it once per distinct *representative*, the point's flat index with those axes' sub-indices set to
0, and gathers it back (`kernel.shared`).

The number of distinct representatives among `n` consecutive flat indices depends only on the grid's shape, so it
is a static bound and the shared evaluation has a fixed shape (`distinct_bound`). Within the chunk the distinct
representatives are found with a sort (`jnp.unique` with a static size), which costs nothing next to the model.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from frontier_jax.runner.grid import Layout


def _span(window: int, group: int) -> int:
    """Most groups of `group` consecutive items that `window` consecutive items can touch."""
    return -(-(window - 1) // group) + 1


def distinct_bound(shape: tuple[int, ...], ignored: tuple[bool, ...], n: int) -> int:
    """The most distinct representatives (flat index with the `ignored` axes' sub-indices set to 0) among any `n`
    consecutive flat indices of a C-order grid of this shape.

    Let j be the last ignored axis and K the number of points in the axes after it. The window touches at most
    R = span(n, K) consecutive rows of the grid of axes 0..j, and those at most P = span(R, shape[j]) consecutive
    rows of axes 0..j-1. A representative is (its row of axes 0..j-1 reduced the same way, its sub-indices after
    j), so there are at most bound(axes 0..j-1, P) * K of them; and never more than n or the grid's kept points.
    """
    n = min(n, math.prod(shape))
    kept = math.prod(s for s, ign in zip(shape, ignored) if not ign)
    if not any(ignored):
        return n
    j = max(i for i, ign in enumerate(ignored) if ign)
    inner = math.prod(shape[j + 1:])
    rows = min(_span(n, inner), math.prod(shape[: j + 1]))
    prefixes = min(_span(rows, shape[j]), math.prod(shape[:j]))
    outer = distinct_bound(shape[:j], ignored[:j], prefixes) if j > 0 else 1
    return min(n, kept, outer * inner)


@dataclass(frozen=True)
class SharedPart:
    """A part evaluated once per distinct representative: `axes` are the grid axes it ignores (True), `size` the
    static number of representatives per device chunk."""

    name: str
    ignored: tuple[bool, ...]
    size: int


def plan(kernel, lay: Layout, per_dev: int, share: bool = True) -> tuple[SharedPart, ...]:
    """The kernel's shared parts that save work on this grid and chunk: those with at least one swept axis they
    ignore and fewer representatives than points per device. Empty when sharing is off or the kernel has none."""
    parts: Mapping[str, frozenset[str]] = getattr(kernel, "shared_parts", {}) if share else {}
    if not callable(getattr(kernel, "shared", None)):
        return ()
    out = []
    for name, ignores in parts.items():
        ignored = tuple(axis in ignores for axis, _ in lay.axes)
        size = distinct_bound(lay.shape, ignored, per_dev)
        if any(ignored) and size < per_dev:
            out.append(SharedPart(name, ignored, size))
    return tuple(out)


def representatives(lay: Layout, part: SharedPart, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(the distinct representatives of `idx`, padded to part.size with the smallest, and each point's position
    among them). `idx` are consecutive flat indices (clamped at the grid's end)."""
    subs = jnp.unravel_index(idx, lay.shape)
    strides = [math.prod(lay.shape[i + 1:]) for i in range(len(lay.shape))]
    rep = idx
    for sub, stride, ign in zip(subs, strides, part.ignored):
        if ign:
            rep = rep - sub * jnp.asarray(stride, idx.dtype)
    heads, which = jnp.unique(rep, size=part.size, return_inverse=True)
    return heads, which.reshape(idx.shape)

"""Kernel-composed iteration times tabulated in the token count, for the chunked-prefill model (issue 18).

A mixed iteration of B running decodes (KV length `context`) and one prompt chunk of r tokens after P cached ones
splits, on a TP group, into parts that each depend on one count (costmodel/operations.py):

    mixed(B, r, P) = linear(B + r) + generation(B) + head(B + 1) + context(r, P)
    decode(B)      = linear(B)     + generation(B) + head(B)

linear(T): the four token GEMMs and the two all-reduces of every layer plus the engine's own seconds at T tokens;
generation(B): every layer's KV read of B decodes; head(s): the LM head over s sampled tokens; context(r, P): every
layer's causal attention of the chunk. The first three are tabulated once per point and TP degree at fixed token
counts up to the largest the configurations reach, and interpolated linearly in the count between knots. The knots
are the GEMM tables' measured m values (of every tabled GPU) and the powers 2^(j / 4): the composed time is smooth
between measured m values (the fitted form times a residual interpolated between them), and the measured GEMMs do
change speed steeply across some of them (m = 4096 to 4097 is a new tile), which knots elsewhere would smear. So the
error is the form's curvature within a knot interval, tested against the direct composition in
tests/test_iteration_table.py; powers of two, the usual chunk sizes, are knots. The chunk's attention, which depends
on two counts, is evaluated by its fitted form with its measured residual cut once per point along its one varying
coordinate (kernels.context_slice: exact). A lookup costs a search of the knots and a few flops against a composition's
kernel-grid interpolations.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import kernels as kn
from . import latency as lat
from . import operations as ops
from .types import Point

KNOTS_PER_OCTAVE = 4
MAX_COUNT = 2.0**15  # token counts the default table reaches (extrapolated beyond)


@functools.lru_cache(maxsize=8)
def count_knots(max_tokens: float = MAX_COUNT) -> np.ndarray:
    """The token counts at which a table holds its values (static, shared by every point): the measured GEMM m
    values and the powers 2^(j / KNOTS_PER_OCTAVE) up to `max_tokens`."""
    top = max(float(max_tokens), 2.0)
    measured = np.exp(np.asarray(kn.stacked_gemm_m_axes()).ravel())
    powers = 2.0 ** (np.arange(int(np.ceil(KNOTS_PER_OCTAVE * np.log2(top))) + 1) / KNOTS_PER_OCTAVE)
    k = np.unique(np.round(np.concatenate([measured[measured < top], powers]), 6))
    return k[k >= 1.0]


class IterationTable(NamedTuple):
    """The count-dependent parts of a kernel-composed iteration at the token counts `count_knots`."""

    linear: jax.Array      # (..., K) s
    generation: jax.Array  # (..., K) s
    head: jax.Array        # (..., K) s
    context_cut: tuple     # kernels.context_slice: the chunk attention's residual along its total length


def knots(step, n: int):
    """Counts minus one, expm1(j step) for j < n, on a trailing axis (step: any shape)."""
    return jnp.expm1(jnp.asarray(step)[..., None] * jnp.arange(n, dtype=jnp.result_type(step)))


def _interpolate(at, x, *tables):
    """Linear interpolation of each of `tables` (knots on the last axis, leading shape the tables') at x, the knot
    interval `at(x)` = (j, x_j, x_j+1) found once; x of the tables' leading shape or that and trailing axes of its
    own (several queries per table)."""
    lead = tables[0].shape[:-1]
    x = jnp.asarray(x)
    if x.ndim < len(lead):
        x = jnp.broadcast_to(x, lead)
    x = jnp.broadcast_to(x, lead + x.shape[len(lead):])
    j, x0, x1 = at(x)
    i = jnp.reshape(j, lead + (-1,))
    w = (x - x0) / (x1 - x0)
    out = []
    for values in tables:
        v0 = jnp.reshape(jnp.take_along_axis(values, i, axis=-1), x.shape)
        v1 = jnp.reshape(jnp.take_along_axis(values, i + 1, axis=-1), x.shape)
        out.append(v0 + w * (v1 - v0))
    return out


def lookup(step, values, x):
    """The linear interpolant of `values` at count 1 + x, x >= 0, the knots at counts 1 + expm1(j step) on the last
    axis (`step` of the leading shape), extrapolated from the last interval beyond them. x has the table's leading
    shape, or that and trailing axes of its own."""
    n = values.shape[-1]

    def at(x):
        s = jnp.reshape(step, jnp.shape(step) + (1,) * (x.ndim - jnp.ndim(step)))
        j = jnp.clip(jnp.floor(jnp.log1p(jnp.maximum(x, 0.0)) / s), 0.0, n - 2.0)
        return j.astype(jnp.int32), jnp.expm1(j * s), jnp.expm1((j + 1.0) * s)
    return _interpolate(at, x, values)[0]


CELLS_PER_OCTAVE = 32  # of the knot index: cell floor(32 log2 count) holds few knots, so few compares find one


@functools.lru_cache(maxsize=1)
def _knot_index():
    """(first knot index of each cell, most knots inside one cell): the static index that finds a count's knot
    interval with a gather and a few compares instead of a search over every knot."""
    k = count_knots()
    cells = int(np.ceil(CELLS_PER_OCTAVE * np.log2(k[-1]))) + 1
    edges = 2.0 ** (np.arange(cells + 1) / CELLS_PER_OCTAVE)
    start = np.clip(np.searchsorted(k, edges[:-1], side="right") - 1, 0, k.size - 2)
    inside = np.searchsorted(k, edges[1:], side="left") - 1 - start
    return start.astype(np.int32), int(max(inside.max(), 0))


def _at(count, *tables):
    """The tables' values at `count` tokens (knots: count_knots()), the knot interval found once for all."""
    k = count_knots()
    start, extra = _knot_index()

    def at(x):
        kx = jnp.asarray(k, x.dtype)
        cell = jnp.clip(jnp.floor(CELLS_PER_OCTAVE * jnp.log2(jnp.maximum(x, 1.0))), 0, start.size - 1)
        j0 = jnp.asarray(start)[cell.astype(jnp.int32)]
        j = j0 + sum((kx[jnp.minimum(j0 + t, k.size - 1)] <= x).astype(jnp.int32) for t in range(1, extra + 1))
        j = jnp.minimum(j, k.size - 2)
        return j, kx[j], kx[j + 1]
    return _interpolate(at, count, *tables)


def iteration_table(p: Point, tp, context) -> IterationTable:
    """The table of point p's measured-kernel iterations on a TP group of `tp` at decode KV length `context` (one
    decode-iteration composition per knot)."""
    last = lambda v: jnp.asarray(v)[..., None]  # noqa: E731  (knots on a new last axis: one evaluation)
    hw, md, eng = (jax.tree.map(last, t) for t in (p.hw, p.model, p.eff))
    x = jnp.asarray(count_knots(), jnp.result_type(float))
    o = ops.iteration_ops(hw, md, kn.kernel_set(hw), 0.0, 0.0, 0.0, x, last(context), x, last(tp), last(p.sc.fp8))
    linear = (md.layers * (o.qkv + o.out_proj + o.gate_up + o.down + o.allreduce)
              + lat.engine_seconds(hw, md, eng, x))
    hq, hkv = ops.heads_per_gpu(p.model, tp)
    cut = kn.context_slice(kn.kernel_set(p.hw), hq, hkv, p.model.head_dim, p.sc.fp8)
    return IterationTable(linear, md.layers * o.attention, o.lm_head, cut)


def context_seconds(p: Point, tp, tokens, prefix, table: IterationTable | None = None):
    """Every layer's causal attention of one prompt chunk of `tokens` new tokens after `prefix` cached ones (its
    residual from the table's cut where given: the same number)."""
    hq, hkv = ops.heads_per_gpu(p.model, tp)
    on = tokens > 0
    kern, safe = kn.kernel_set(p.hw), jnp.where(on, tokens, 1.0)
    if table is None:
        t = kn.context_seconds(kern, p.hw, 1.0, safe, prefix, hq, hkv, p.model.head_dim, p.sc.fp8)
    else:
        t = kn.context_seconds_on_slice(kern, p.hw, table.context_cut, safe, prefix, hq, hkv, p.model.head_dim,
                                        p.sc.fp8)
    return jnp.where(on, p.model.layers * t, 0.0)


def decode_seconds(table: IterationTable, batch):
    """A decode iteration of `batch` (>= 1) sequences from the table."""
    return sum(_at(batch, table.linear, table.generation, table.head))


def mixed_seconds(p: Point, tp, table: IterationTable, batch, chunk_tokens, chunk_prefix, attention=None):
    """A mixed iteration (`batch` >= 1 decodes plus a prompt chunk) from the table and the chunk's attention
    (`attention`: its seconds where already known, else context_seconds)."""
    attention = context_seconds(p, tp, chunk_tokens, chunk_prefix, table) if attention is None else attention
    sampled = batch + jnp.where(chunk_tokens > 0, 1.0, 0.0)
    return (_at(batch + chunk_tokens, table.linear)[0] + _at(batch, table.generation)[0] + _at(sampled, table.head)[0]
            + attention)

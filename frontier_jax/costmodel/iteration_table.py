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

    linear: jax.Array      # (..., K) s, linear(T)
    decode: jax.Array      # (..., K) s, decode(B) = linear(B) + generation(B) + head(B)
    riding: jax.Array      # (..., K) s, what B decodes add to a mixed iteration: generation(B) + head(B + 1)
    context_cut: kn.Cut    # kernels.context_slice: the chunk attention's residual along its total length


def knots(step, n: int):
    """Counts minus one, expm1(j step) for j < n, on a trailing axis (step: any shape)."""
    return jnp.expm1(jnp.asarray(step)[..., None] * jnp.arange(n, dtype=jnp.result_type(step)))


def _interpolate(at, x, *tables):
    """Linear interpolation of each of `tables` (knots on the last axis, leading shape the tables') at x, the knot
    interval `at(x)` = (j, x_j, x_j+1) found once and both ends of each table read in one gather; x of the tables'
    leading shape or that and trailing axes of its own (several queries per table)."""
    lead = tables[0].shape[:-1]
    x = jnp.asarray(x)
    if x.ndim < len(lead):
        x = jnp.broadcast_to(x, lead)
    x = jnp.broadcast_to(x, lead + x.shape[len(lead):])
    j, x0, x1 = at(x)
    i = jnp.reshape(j, lead + (-1,))
    i = jnp.concatenate([i, i + 1], axis=-1)
    w = (x - x0) / (x1 - x0)
    out = []
    for values in tables:
        v0, v1 = jnp.split(jnp.take_along_axis(values, i, axis=-1), 2, axis=-1)
        v0, v1 = jnp.reshape(v0, x.shape), jnp.reshape(v1, x.shape)
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


CELL_BITS = 5  # the knot index's cells: 2^5 per octave of the count, uniform within it, so few compares find a knot


def _cell_edges(cells: int) -> np.ndarray:
    """The counts where cells 0, ..., cells begin: cell c spans 2^o (1 + t / 2^CELL_BITS) to the next, o = c >>
    CELL_BITS, t its low bits (what `_cell` reads off a float's exponent and leading mantissa bits)."""
    c = np.arange(cells + 1)
    return 2.0 ** (c >> CELL_BITS) * (1.0 + (c & (2**CELL_BITS - 1)) / 2.0**CELL_BITS)


def _cell(x):
    """The cell of counts x >= 1 (`_cell_edges`): the float's unbiased exponent and its CELL_BITS leading mantissa
    bits, read from its bits (a shift and a subtraction, where floor(log2(x)) would cost a logarithm)."""
    if x.dtype == jnp.float64:
        bits, mantissa, bias = jax.lax.bitcast_convert_type(x, jnp.int64), 52, 1023
    else:
        bits, mantissa, bias = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32), 23, 127
    return ((bits >> (mantissa - CELL_BITS)) - (bias << CELL_BITS)).astype(jnp.int32)


@functools.lru_cache(maxsize=1)
def _knot_index():
    """The static index that finds a count's knot interval with one gather and a few compares instead of a search
    over every knot: a row per cell (`_cell_edges`), its first knot index j0 (as a float) and the knots j0, ...,
    j0 + extra + 1 (clamped to the last), extra the most knots inside one cell."""
    k = count_knots()
    cells = (int(np.floor(np.log2(k[-1]))) + 1) << CELL_BITS
    edges = _cell_edges(cells)
    start = np.clip(np.searchsorted(k, edges[:-1], side="right") - 1, 0, k.size - 2)
    extra = int(max((np.searchsorted(k, edges[1:], side="left") - 1 - start).max(), 0))
    near = k[np.minimum(start[:, None] + np.arange(extra + 2), k.size - 1)]
    return np.concatenate([start[:, None].astype(float), near], axis=1), extra


def _at(count, *tables):
    """The tables' values at `count` tokens (knots: count_knots()), the knot interval found once for all."""
    rows, extra = _knot_index()
    last = count_knots().size - 2

    def at(x):
        cell = jnp.clip(_cell(jnp.maximum(x, 1.0)), 0, rows.shape[0] - 1)
        row = jnp.asarray(rows, x.dtype)[cell]  # (..., extra + 3)
        j0 = row[..., 0].astype(jnp.int32)
        j = jnp.minimum(j0 + sum((row[..., 1 + t] <= x).astype(jnp.int32) for t in range(1, extra + 1)), last)
        o = j - j0
        x0 = sum(jnp.where(o == t, row[..., 1 + t], 0.0) for t in range(extra + 1))
        x1 = sum(jnp.where(o == t, row[..., 2 + t], 0.0) for t in range(extra + 1))
        return j, x0, x1
    return _interpolate(at, count, *tables)


@functools.lru_cache(maxsize=4)
def _knot_cells(op: str, j: int):
    """Where every count knot falls on each stacked entry's measured axis j of `op` (kernels.static_cells)."""
    return kn.static_cells(kn.stacked_axis(op, j), count_knots())


def iteration_table(p: Point, tp, context) -> IterationTable:
    """The table of point p's measured-kernel iterations on a TP group of `tp` at decode KV length `context`: the
    decode iteration's operations at every knot. Each kernel's residual grid is cut once along its one varying
    coordinate (the GEMMs' m, the KV read's batch: kernels.cut, exact), so a knot costs the fitted form and a
    one-axis interpolation."""
    kern = kn.kernel_set(p.hw)
    md = p.model
    x = jnp.asarray(count_knots(), jnp.result_type(float))
    tp = jnp.asarray(tp, x.dtype)
    last = lambda v, n=1: jnp.reshape(v, jnp.shape(v) + (1,) * n)  # noqa: E731
    # the GEMMs (trailing axis: QKV, out proj, gate+up, down, LM head), knots on a further axis
    n, k, f8 = ops.token_gemms(md, tp, p.sc.fp8)
    g = kn._dtype_entry(kern, f8)
    shape = jnp.broadcast_shapes(jnp.shape(g), jnp.shape(n), jnp.shape(k))
    g, n, k, f8 = (jnp.broadcast_to(a, shape) for a in (g, n, k, f8))
    gemm_cut = kn.cut(kern.tables.gemm, g, 0, (None, n, k))
    hw2 = jax.tree.map(lambda v: last(v, 2), p.hw)
    m = jnp.broadcast_to(x, shape + x.shape)
    terms = kn.gemm_terms(hw2, m, last(n), last(k), last(f8))
    i, w = (jnp.asarray(a)[g] for a in _knot_cells("gemm", 0))
    gemm = kn.base_seconds(kern.tables.gemm, terms, last(g)) * jnp.exp(kn.on_cut_cells(gemm_cut, i, w))
    # the decodes' KV read along the batch
    hq, hkv = ops.heads_per_gpu(md, tp)
    gg = kn._dtype_entry(kern, p.sc.kv_fp8)
    gen_cut = kn.cut(kern.tables.generation, gg, 0, (None, context, hq, hkv, md.head_dim))
    hw1 = jax.tree.map(last, p.hw)
    terms = kn.generation_terms(hw1, x, last(context), last(hq), last(hkv), last(md.head_dim), last(p.sc.kv_fp8))
    i, w = (jnp.asarray(a)[gg] for a in _knot_cells("generation", 0))
    gen = kn.base_seconds(kern.tables.generation, terms, last(gg)) * jnp.exp(kn.on_cut_cells(gen_cut, i, w))
    allreduce = 2.0 * kn.allreduce_seconds(kern, hw1, x * last(md.hidden), last(tp))
    linear = (last(md.layers) * (gemm[..., 0, :] + gemm[..., 1, :] + gemm[..., 2, :] + gemm[..., 3, :] + allreduce)
              + lat.engine_seconds(hw1, jax.tree.map(last, md), jax.tree.map(last, p.eff), x))
    gen, head = last(md.layers) * gen, gemm[..., 4, :]
    riding = gen + _at(x + 1.0, head)[0]  # the LM head also samples the chunk's token: the head table at B + 1
    cut = kn.context_slice(kern, hq, hkv, md.head_dim, p.sc.kv_fp8)
    return IterationTable(linear, linear + gen + head, riding, cut)


def context_seconds(p: Point, tp, tokens, prefix, table: IterationTable | None = None,
                    length: kn.PreparedContext | None = None):
    """Every layer's causal attention of one prompt chunk of `tokens` new tokens after `prefix` cached ones (its
    residual from the table's cut where given, or from its total length's `length_terms` where known: the same
    number, the length then taken to be tokens + prefix and `prefix` not read)."""
    on = tokens > 0
    safe = jnp.where(on, tokens, 1.0)
    if length is not None:
        return jnp.where(on, p.model.layers * kn.context_seconds_prepared(length, safe), 0.0)
    hq, hkv = ops.heads_per_gpu(p.model, tp)
    kern = kn.kernel_set(p.hw)
    args = (safe, prefix, hq, hkv, p.model.head_dim, p.sc.kv_fp8)
    if table is None:
        t = kn.context_seconds(kern, p.hw, 1.0, *args)
    else:
        t = kn.context_seconds_on_slice(kern, p.hw, table.context_cut, *args)
    return jnp.where(on, p.model.layers * t, 0.0)


def length_terms(p: Point, tp, table: IterationTable, length) -> kn.PreparedContext:
    """What a chunk's attention reads of its total length `length` (tokens + prefix) alone, prepared once
    (kernels.PreparedContext; tp, the point and the table with a trailing size-1 axis where `length` has a trailing
    axis of its own)."""
    hq, hkv = ops.heads_per_gpu(p.model, tp)
    return kn.prepare_context(kn.kernel_set(p.hw), p.hw, kn.on_cut(table.context_cut, length), length, hq, hkv,
                              p.model.head_dim, p.sc.kv_fp8)


def decode_seconds(table: IterationTable, batch):
    """A decode iteration of `batch` (>= 1) sequences from the table."""
    return _at(batch, table.decode)[0]


def mixed_seconds(p: Point, tp, table: IterationTable, batch, chunk_tokens, chunk_prefix, attention=None,
                  length: kn.PreparedContext | None = None):
    """A mixed iteration (`batch` >= 1 decodes plus a prompt chunk) from the table and the chunk's attention
    (`attention`: its seconds where already known, else context_seconds, with its `length` terms where known). The
    parts in the batch alone are looked up at the batch's own shape (once for chunks on trailing axes of their
    own)."""
    if attention is None:
        attention = context_seconds(p, tp, chunk_tokens, chunk_prefix, table, length)
    return mixed_and_decode_seconds(table, batch, chunk_tokens, attention)[0]


def mixed_and_decode_seconds(table: IterationTable, batch, chunk_tokens, attention):
    """(mixed, decode) iteration seconds at `batch` >= 1 decodes, the mixed one with a chunk of `chunk_tokens`
    tokens whose attention takes `attention` s: mixed_seconds and decode_seconds, the batch's own parts looked up
    once for both (two knot searches: the batch's and the mixed iteration's token count)."""
    decode, riding = _at(batch, table.decode, table.riding)
    mixed = jnp.where(chunk_tokens > 0, _at(batch + chunk_tokens, table.linear)[0] + riding + attention, decode)
    return mixed, decode

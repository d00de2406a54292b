"""Kernel latencies from the fitted measured vLLM kernel tables (issue 18): the evaluation half. The fitting (and
`frontier calibrate --kernels`) lives in frontier_jax.calibration.kernels; this module reads its output,
frontier_jax/data/kernel_fit.json and kernel_fit_residuals.npz.

One fitted form per (GPU, operation, dtype), smooth in every argument and cheap to evaluate in JAX:

    t = (t0 + smoothmax_p(F / (P eta_c), B / (W eta_m))) * exp(r(coords)),   smoothmax_p(x, y) = (x^p + y^p)^(1/p)
    eta_c = eta_c_max * prod_j sat(x_j; s_j, a_j),        sat(x; s, a) = x^a / (x^a + s^a)   (same for eta_m)

F and B are the operation's FLOPs and HBM (or, for the all-reduce, NVLink) bytes; P and W the GPU's own peak FLOP/s
and bandwidth from hardware/*.toml; x_j its size features (`FEATURES`); r the log residual of the measured rows,
interpolated multilinearly on the log grid of their coordinates (`COORDS`) and clamped at its edges.

The tabled GPUs' fits are stacked (`stacked_tables`), each grid padded to a common shape by repeating its edge, so a
GPU is a traced index (`Hardware.kernel_gpu`) and a GPU sweep stays one program. A GPU without tables (A40, A100
PCIe, a user TOML) uses the fit of the closest tabled GPU (`closest_tabled`) with its own peaks: the spec-sheet
roofline with that GPU's fitted efficiencies.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..resources import data_file
from .types import Hardware

KERNEL_FIT_FILE = "kernel_fit.json"
RESIDUAL_FILE = "kernel_fit_residuals.npz"
GPUS = ("a100-80gb-sxm", "h100-80gb-sxm", "h200-141gb-sxm")  # the tabled GPUs; Hardware.kernel_gpu indexes this
ALLREDUCE_GPUS = (2, 4, 8)
OUT_BYTES = 2.0  # bf16 activations and outputs


class OpFit(NamedTuple):
    """Fitted latency form of one (GPU, operation, dtype): t0 in s; efficiencies dimensionless; s in the units of
    their size feature (`FEATURES`)."""

    t0: jax.Array
    eta_c: jax.Array        # asymptotic fraction of peak FLOP/s
    eta_m: jax.Array        # asymptotic fraction of peak bandwidth
    p: jax.Array            # smooth-max exponent
    c_scale: jax.Array      # (n_c,) half-saturation sizes of the compute efficiency
    c_exp: jax.Array        # (n_c,) their exponents
    m_scale: jax.Array      # (n_m,) ... of the memory efficiency
    m_exp: jax.Array
    axes: tuple = ()        # log of the measured grid's values per coordinate (`COORDS`)
    residual: jax.Array = 0.0  # log(measured / form) on that grid; cells without a row filled from neighbours


class GpuKernels(NamedTuple):
    """The fitted kernels of one GPU. `*_fp8` on A100 repeats the bf16 fit (no FP8 rows measured there);
    `allreduce` is a tuple over TP degree 2, 4, 8."""

    gemm_bf16: OpFit
    gemm_fp8: OpFit
    context_bf16: OpFit
    context_fp8: OpFit
    generation_bf16: OpFit
    generation_fp8: OpFit
    allreduce: tuple


# ---------------------------------------------------------------------------------------------------- physics
def gemm_terms(hw: Hardware, m, n, k, fp8):
    """(FLOPs, bytes, peak FLOP/s, bandwidth, compute features, memory features) of one [m,k]x[k,n] GEMM."""
    e = 2.0 - fp8
    flops = 2.0 * m * n * k
    nbytes = e * (m * k + k * n) + OUT_BYTES * m * n
    peak = jnp.where(fp8 > 0.5, hw.fp8_flops, hw.bf16_flops)
    return flops, nbytes, peak, hw.hbm_bandwidth, (m, n, k), (nbytes,), (m, n, k)


def context_terms(hw: Hardware, batch, tokens, prefix, heads, kv_heads, head_dim, fp8):
    """Terms of causal prefill attention: `batch` sequences of `tokens` new query tokens after `prefix` cached ones
    (per-GPU head counts). Each new token i attends to prefix + i keys: 4 h d (prefix + i) FLOPs."""
    flops = 2.0 * batch * heads * head_dim * tokens * (2.0 * prefix + tokens)
    kv = (2.0 - fp8) * batch * 2.0 * kv_heads * head_dim * (prefix + tokens)
    nbytes = kv + OUT_BYTES * batch * 2.0 * heads * head_dim * tokens
    return (flops, nbytes, hw.bf16_flops, hw.hbm_bandwidth, (tokens + prefix, batch * heads, head_dim), (nbytes,),
            (batch, tokens + prefix, heads, kv_heads, head_dim))


def generation_terms(hw: Hardware, batch, context, heads, kv_heads, head_dim, fp8):
    """Terms of one decode step's attention: `batch` sequences reading `context` cached tokens each."""
    flops = 4.0 * batch * heads * head_dim * context
    nbytes = (2.0 - fp8) * batch * 2.0 * kv_heads * head_dim * context + OUT_BYTES * 2.0 * batch * heads * head_dim
    return (flops, nbytes, hw.bf16_flops, hw.hbm_bandwidth, (batch * heads,), (nbytes, batch * kv_heads, context),
            (batch, context, heads, kv_heads, head_dim))


def allreduce_terms(hw: Hardware, elements, gpus):
    """Terms of a bf16 all-reduce of `elements` on `gpus` GPUs: ring traffic 2 (g-1)/g * bytes over NVLink."""
    nbytes = 2.0 * (gpus - 1.0) / gpus * 2.0 * elements
    return jnp.zeros_like(nbytes), nbytes, hw.bf16_flops, hw.nvlink_bandwidth, (), (nbytes,), (elements,)


COORDS = {"gemm": ("m", "n", "k"), "context_attention": ("batch", "isl", "heads", "kv_heads", "head_dim"),
          "generation_attention": ("batch", "step", "heads", "kv_heads", "head_dim"), "allreduce": ("elements",)}
FEATURES = {"gemm": ("m", "n", "k"), "context_attention": ("prefix+tokens", "batch*heads", "head_dim"),
            "generation_attention": ("batch*heads",),
            "allreduce": ()}
MEMORY_FEATURES = {"gemm": ("bytes",), "context_attention": ("bytes",),
                   "generation_attention": ("bytes", "batch*kv_heads", "context"), "allreduce": ("bytes",)}


SCALARS = ("t0", "eta_c", "eta_m", "p", "c_scale", "c_exp", "m_scale", "m_exp")




def _log_sat(x, scale, a):
    return jax.nn.log_sigmoid(a * (jnp.log(x) - jnp.log(scale)))


def _unsigned(i):
    """Gather indices as uint32: known in bounds, and JAX traces no wrapping of negative values for them."""
    return jnp.asarray(i).astype(jnp.uint32)


def _cell(a, lx, g, shape):
    """(lower knot index, weight in [0, 1]) of log-coordinates `lx` (broadcast to `shape`) on the sorted log axis
    `a`, clamped to its edges; `g` indexes a stacked axis (its row gathered once per entry, then broadcast)."""
    lx = jnp.broadcast_to(lx, shape)
    n = a.shape[-1]
    if n == 1:
        return jnp.zeros(shape, int), jnp.zeros(shape)
    if g is None:
        i = jnp.clip(jnp.searchsorted(a, lx) - 1, 0, n - 2)
        x0, x1 = a[i], a[i + 1]
    else:  # the row of entry g, searched by comparison (rows differ per element)
        g = _unsigned(g)
        row = jnp.reshape(a[g], (1,) * (len(shape) - jnp.ndim(g)) + jnp.shape(g) + (n,))
        i = jnp.clip(jnp.sum(row <= lx[..., None], axis=-1) - 1, 0, n - 2)
        gb, iu = jnp.broadcast_to(g, shape), _unsigned(i)
        x0, x1 = a[gb, iu], a[gb, iu + 1]
    return i, jnp.clip((lx - x0) / (x1 - x0), 0.0, 1.0)


def _corner_sum(grid, g, axes, cells):
    """The multilinear interpolation's sum over corners: sum of weight x grid value over the corners of `axes` (each
    axis's (lower index, weight) in `cells`; axes with a single knot contribute none). `grid` is (entries, *axes,
    *rest) with the entry index `g`, or (*axes, *rest) without; the result is (..., *rest). The grid is read flat:
    one gather of every corner at a static offset from the cell's first corner, the weights an outer product."""
    lead = () if g is None else (g,)
    off = len(lead)
    dims = grid.shape[:off + len(axes)]
    rest = grid.shape[off + len(axes):]
    strides = [int(np.prod(dims[d + 1:])) for d in range(len(dims))]
    first = sum(_unsigned(i) * strides[d] for d, i in enumerate(list(lead) + [i for i, _ in cells]))
    offsets, weights = np.zeros(1, np.int64), None
    for (_, w), a, st in zip(cells, axes, strides[off:]):
        if a.shape[-1] == 1:
            continue
        offsets = (offsets[:, None] + np.array([0, st])).ravel()
        pair = jnp.stack([1.0 - w, w], axis=-1)
        weights = pair if weights is None else jnp.reshape(weights[..., :, None] * pair[..., None, :],
                                                           jnp.shape(pair)[:-1] + (-1,))
    flat = jnp.reshape(grid, (-1,) + rest)
    values = flat[jnp.asarray(first)[..., None] + offsets.astype(np.uint32)]  # (..., corners, *rest)
    if weights is None:
        return values[..., 0, *(slice(None),) * len(rest)]
    return jnp.sum(jnp.reshape(weights, weights.shape + (1,) * len(rest)) * values, axis=-1 - len(rest))


def _interp(axes, grid, coords, g=None):
    """Multilinear interpolation of `grid` at log(coords), clamped to the grid's edges. With `g` (an index array)
    the axes and grid are stacked (`stacked_tables`) and entry g's are read: only the corners are gathered."""
    if not axes:
        return 0.0
    shape = jnp.broadcast_shapes(jnp.shape(g) if g is not None else (), *(jnp.shape(x) for x in coords))
    cells = [_cell(a, jnp.log(x), g, shape) for a, x in zip(axes, coords)]
    return _corner_sum(grid, None if g is None else jnp.broadcast_to(g, shape), axes, cells)


class Cut(NamedTuple):
    """A stacked fit's log residual cut at every coordinate but one: `row` the log knots of that coordinate and
    `residual` the residual there (both (..., n)). Multilinear interpolation is linear along each axis between its
    knots, so interpolating the cut (`on_cut`) is the full interpolation: exact, and cheap when many evaluations
    share the fixed coordinates."""

    row: jax.Array
    residual: jax.Array


def cut(fit: OpFit, g, keep: int, coords) -> Cut:
    """The Cut of stacked entry g of `fit` along coordinate `keep`, the others at `coords` (a tuple in `COORDS`
    order; its entry at `keep` is ignored). Only rows along `keep` are gathered, one per corner of the others."""
    others = [j for j in range(len(fit.axes)) if j != keep]
    shape = jnp.broadcast_shapes(jnp.shape(g), *(jnp.shape(coords[j]) for j in others))
    cells = [_cell(fit.axes[j], jnp.log(coords[j]), g, shape) for j in others]
    grid = jnp.moveaxis(fit.residual, 1 + keep, -1)  # (entries, the other axes..., n along keep)
    residual = _corner_sum(grid, jnp.broadcast_to(g, shape), [fit.axes[j] for j in others], cells)
    row = fit.axes[keep][g]
    return Cut(jnp.broadcast_to(row, shape + row.shape[-1:]), residual)


def static_cells(axis_rows: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower index, weight) of fixed coordinates x (K,) on each entry's row of a stacked log axis (entries, n),
    each (entries, K), computed once in numpy: what `on_cut` searches for, when the queries are static."""
    n = axis_rows.shape[-1]
    lx = np.log(np.asarray(x, float))
    i = np.clip(np.sum(axis_rows[:, None, :] <= lx[None, :, None], axis=-1) - 1, 0, n - 2)
    x0, x1 = np.take_along_axis(axis_rows, i, -1), np.take_along_axis(axis_rows, i + 1, -1)
    return i.astype(np.int32), np.clip((lx - x0) / (x1 - x0), 0.0, 1.0)


def _along(values, i):
    """values (..., n) at indices i (..., K) of their last axis, the leading shapes broadcast."""
    lead = jnp.broadcast_shapes(values.shape[:-1], i.shape[:-1])
    return jnp.take_along_axis(jnp.broadcast_to(values, lead + values.shape[-1:]),
                               jnp.broadcast_to(i, lead + i.shape[-1:]), axis=-1)


def on_cut_cells(c: Cut, i, w):
    """The log residual along a Cut at the queries whose (index, weight) are given (`static_cells`, gathered at the
    cut's entries: the cut's leading shape and a trailing query axis)."""
    return (1.0 - w) * _along(c.residual, i) + w * _along(c.residual, i + 1)


def on_cut(c: Cut, x):
    """The log residual at coordinate x along a Cut (clamped to its ends): x of the cut's leading shape, or that and
    trailing query axes of its own."""
    row, res = c
    lx = jnp.log(x)
    n = row.shape[-1]
    lead = row.shape[:-1]
    if lx.ndim < len(lead):
        lx = jnp.broadcast_to(lx, lead)
    extra = lx.ndim - len(lead)  # trailing query axes of x beyond the cut's own leading shape
    if extra > 0:
        row, res = (jnp.reshape(a, a.shape[:-1] + (1,) * extra + (n,)) for a in (row, res))
    i = jnp.clip(jnp.sum(row <= lx[..., None], axis=-1, keepdims=True) - 1, 0, n - 2)
    x0, x1 = _along(row, i), _along(row, i + 1)
    w = jnp.clip((lx[..., None] - x0) / (x1 - x0), 0.0, 1.0)
    return on_cut_cells(Cut(row, res), i, w)[..., 0]


def evaluate(fit: OpFit, terms, g=None):
    """Seconds of one kernel: the fitted form times exp(interpolated log residual on the measured grid).
    `terms` is the output of one of the *_terms functions; `g` indexes a stacked fit (`stacked_tables`)."""
    return base_seconds(fit, terms, g) * jnp.exp(_interp(fit.axes, fit.residual, terms[6], g))


def _selected(fit: OpFit, g):
    """The fit's scalars of stacked entry g (an index array; unsigned: no wrapping of negative indices to trace)."""
    if g is None:
        return fit
    g = _unsigned(g)
    return fit._replace(**{k: getattr(fit, k)[g] for k in SCALARS})


def log_compute_efficiency(fit: OpFit, terms, g=None):
    """log eta_c of the fitted form at these terms (`base_seconds`)."""
    fit = _selected(fit, g)
    return jnp.log(fit.eta_c) + sum(_log_sat(x, fit.c_scale[..., j], fit.c_exp[..., j])
                                    for j, x in enumerate(terms[4]))


def base_seconds(fit: OpFit, terms, g=None, log_ec=None):
    """Seconds of one kernel from the fitted smooth form alone (no residual grid); `log_ec`: its log compute
    efficiency where already known (log_compute_efficiency: it reads only the compute features)."""
    flops, nbytes, peak, bw, cf, mf = terms[:6]
    fit = _selected(fit, g)
    if cf and log_ec is None:
        log_ec = log_compute_efficiency(fit, terms)
    log_em = jnp.log(fit.eta_m) + sum(_log_sat(x, fit.m_scale[..., j], fit.m_exp[..., j]) for j, x in enumerate(mf))
    log_m = jnp.log(nbytes) - jnp.log(bw) - log_em
    if not cf:  # no compute term (all-reduce)
        return fit.t0 + jnp.exp(log_m)
    log_c = jnp.log(jnp.maximum(flops, 1e-30)) - jnp.log(peak) - log_ec
    return fit.t0 + jnp.exp(jnp.logaddexp(fit.p * log_c, fit.p * log_m) / fit.p)


def _dtype_entry(kern: KernelSet, fp8):
    """Index of (GPU, dtype) in a stacked GEMM or attention fit: 2 gpu + (1 where fp8)."""
    return 2 * kern.gpu + jnp.where(jnp.asarray(fp8) > 0.5, 1, 0)


def gemm_seconds(kern: KernelSet, hw: Hardware, m, n, k, fp8=0.0):
    """Seconds of one GEMM [m,k]x[k,n] (bf16, or FP8 per-tensor scaled where fp8 = 1)."""
    return evaluate(kern.tables.gemm, gemm_terms(hw, m, n, k, fp8), _dtype_entry(kern, fp8))


def context_seconds(kern: KernelSet, hw: Hardware, batch, tokens, prefix, heads, kv_heads, head_dim, fp8=0.0):
    """Seconds of prefill attention (per-GPU heads); fp8 = 1: FP8 KV cache."""
    terms = context_terms(hw, batch, tokens, prefix, heads, kv_heads, head_dim, fp8)
    return evaluate(kern.tables.context, terms, _dtype_entry(kern, fp8))


def context_slice(kern: KernelSet, heads, kv_heads, head_dim, fp8=0.0) -> Cut:
    """The Cut of one prompt's prefill attention (batch 1) with these per-GPU heads along its total length
    isl = tokens + prefix."""
    one = jnp.ones_like(jnp.asarray(heads, jnp.result_type(float)))
    return cut(kern.tables.context, _dtype_entry(kern, fp8), 1, (one, one, heads, kv_heads, head_dim))


def context_seconds_on_slice(kern: KernelSet, hw: Hardware, c: Cut, tokens, prefix, heads, kv_heads, head_dim,
                             fp8=0.0):
    """context_seconds of one prompt (batch 1) with the residual read from `c` = context_slice(...) of the same
    heads and precision (the same number, cheaper when many lengths share the heads)."""
    return context_seconds_with_residual(kern, hw, on_cut(c, tokens + prefix), tokens, prefix, heads, kv_heads,
                                         head_dim, fp8)


def context_seconds_with_residual(kern: KernelSet, hw: Hardware, residual, tokens, prefix, heads, kv_heads,
                                  head_dim, fp8=0.0, log_ec=None):
    """context_seconds of one prompt (batch 1) whose log residual at its total length tokens + prefix is already
    known (`residual`, e.g. on_cut of its context_slice), and its log compute efficiency where known (`log_ec`,
    context_length_efficiency): both depend on the total length alone, so chunkings of one prompt share them."""
    terms = context_terms(hw, 1.0, tokens, prefix, heads, kv_heads, head_dim, fp8)
    return base_seconds(kern.tables.context, terms, _dtype_entry(kern, fp8), log_ec) * jnp.exp(residual)


def context_length_efficiency(kern: KernelSet, hw: Hardware, length, heads, kv_heads, head_dim, fp8=0.0):
    """log compute efficiency of one prompt's prefill attention (batch 1) at total length `length` (its compute
    features are the total length, the heads and the head size: context_terms)."""
    terms = context_terms(hw, 1.0, length, 0.0, heads, kv_heads, head_dim, fp8)
    return log_compute_efficiency(kern.tables.context, terms, _dtype_entry(kern, fp8))


class PreparedContext(NamedTuple):
    """One prompt's prefill attention (batch 1) at a given total length L on a GPU, precision and head count,
    prepared once as a function of the split alone: r new tokens after L - r cached ones take

        (t0 + smoothmax_p(compute r (2 L - r), (bytes_fixed + bytes_per_token r) / memory_efficiency)) factor,

    the fitted form (`base_seconds`) with its constants, its compute efficiency at L and its residual at L
    (`factor`) folded in. Inside a rate solver's loop a split then costs two logarithms and four exponentials or
    logarithms of its own arguments, none of the GPU's, the model's or the fit's (context_seconds_prepared)."""

    t0: jax.Array
    p: jax.Array
    twice_length: jax.Array     # 2 L, tokens
    compute: jax.Array          # s per token pair: 2 heads head_dim / (peak FLOP/s x compute efficiency at L)
    bytes_fixed: jax.Array      # the KV cache of the L tokens, bytes
    bytes_per_token: jax.Array  # the output of one new token, bytes
    log_memory: jax.Array       # log(bandwidth x asymptotic memory efficiency)
    log_m_scale: jax.Array      # log of the memory efficiency's half-saturation bytes
    m_exp: jax.Array            # its exponent
    factor: jax.Array           # exp(residual at L)


def prepare_context(kern: KernelSet, hw: Hardware, residual, length, heads, kv_heads, head_dim,
                    fp8=0.0) -> PreparedContext:
    """The PreparedContext of prompts of total length `length` whose log residual there is `residual`."""
    g = _dtype_entry(kern, fp8)
    fit = _selected(kern.tables.context, g)
    log_ec = context_length_efficiency(kern, hw, length, heads, kv_heads, head_dim, fp8)
    shape = jnp.shape(log_ec)
    b = lambda v: jnp.broadcast_to(v, shape)  # noqa: E731
    assert len(MEMORY_FEATURES["context_attention"]) == 1  # context_seconds_prepared writes out one
    # context_terms at batch 1, written in the new tokens r with prefix = L - r: flops 2 h d r (2 L - r), bytes
    # (2 - fp8) 2 kv_heads d L + OUT_BYTES 2 h d r
    zero_tokens = context_terms(hw, 1.0, 0.0, length, heads, kv_heads, head_dim, fp8)[1]
    per_token = OUT_BYTES * 2.0 * heads * head_dim
    return PreparedContext(b(fit.t0), b(fit.p), b(2.0 * length),
                           b(2.0 * heads * head_dim / hw.bf16_flops * jnp.exp(-log_ec)),  # context_terms' peak
                           b(zero_tokens), b(per_token), b(jnp.log(hw.hbm_bandwidth) + jnp.log(fit.eta_m)),
                           b(jnp.log(fit.m_scale[..., 0])), b(fit.m_exp[..., 0]), b(jnp.exp(residual)))


def context_seconds_prepared(prep: PreparedContext, tokens):
    """context_seconds_with_residual of `tokens` new tokens after the rest of a prepared length: the same form,
    base_seconds with its one memory feature written out."""
    nbytes = prep.bytes_fixed + prep.bytes_per_token * tokens
    log_bytes = jnp.log(nbytes)
    # log memory efficiency = log eta_m + log_sigmoid(a (log bytes - log s)) = log eta_m - log1p((s / bytes)^a)
    log_m = log_bytes - prep.log_memory + jnp.log1p(jnp.exp(prep.m_exp * (prep.log_m_scale - log_bytes)))
    log_c = jnp.log(jnp.maximum(prep.compute * tokens * (prep.twice_length - tokens), 1e-30))
    return (prep.t0 + jnp.exp(jnp.logaddexp(prep.p * log_c, prep.p * log_m) / prep.p)) * prep.factor


def generation_seconds(kern: KernelSet, hw: Hardware, batch, context, heads, kv_heads, head_dim, fp8=0.0):
    """Seconds of one decode step's attention over `context` cached tokens per sequence; fp8 = 1: FP8 KV cache."""
    terms = generation_terms(hw, batch, context, heads, kv_heads, head_dim, fp8)
    return evaluate(kern.tables.generation, terms, _dtype_entry(kern, fp8))


def allreduce_seconds(kern: KernelSet, hw: Hardware, elements, gpus):
    """Seconds of one bf16 all-reduce of `elements` on a TP group of `gpus` (2, 4 or 8 measured; 0 s at 1 GPU and
    at any other degree, which the tables do not cover)."""
    covered = functools.reduce(jnp.logical_or, [gpus == n for n in ALLREDUCE_GPUS])
    slot = sum(jnp.where(gpus == n, i, 0) for i, n in enumerate(ALLREDUCE_GPUS))
    g = jnp.where(covered, gpus, float(ALLREDUCE_GPUS[0]))
    t = evaluate(kern.tables.allreduce, allreduce_terms(hw, elements, g), len(ALLREDUCE_GPUS) * kern.gpu + slot)
    return jnp.where(covered, t, 0.0)


def read_fit_file(path=None) -> dict:
    """The parsed kernel_fit.json."""
    with open(path or data_file(KERNEL_FIT_FILE)) as f:
        return json.load(f)


@functools.lru_cache(maxsize=4)
def _read_all(path):
    doc = read_fit_file(path)
    with np.load(Path(path).with_name(RESIDUAL_FILE)) as z:
        grids = {k: z[k] for k in z.files}
    return doc, grids


def gpu_fit(gpu: str, path=None) -> GpuKernels:
    """The fitted kernels of one tabled GPU (hardware name as in hardware/*.toml) from kernel_fit.json and its
    residual grids. A GPU without FP8 rows (A100) gets its bf16 fits for the FP8 entries."""
    doc, grids = _read_all(str(path or data_file(KERNEL_FIT_FILE)))
    ops = doc["fits"][gpu]

    def get(key):
        d = ops[key]
        n_axes = sum(1 for k in grids if k.startswith(f"{gpu}|{key}|axis"))
        axes = tuple(np.asarray(grids[f"{gpu}|{key}|axis{j}"], dtype=float) for j in range(n_axes))
        return OpFit(*(np.asarray(d[k], dtype=float) for k in SCALARS), axes=axes,
                     residual=np.asarray(grids[f"{gpu}|{key}|residual"], dtype=float))

    dt = lambda op, v: get(f"{op}/{v}" if f"{op}/{v}" in ops else f"{op}/bfloat16")  # noqa: E731
    return GpuKernels(dt("gemm", "bfloat16"), dt("gemm", "fp8"), dt("context_attention", "bfloat16"),
                      dt("context_attention", "fp8"), dt("generation_attention", "bfloat16"),
                      dt("generation_attention", "fp8"), tuple(get(f"allreduce/{g}") for g in ALLREDUCE_GPUS))


class KernelTables(NamedTuple):
    """Every tabled GPU's fits, stacked: GEMM and attention entries (GPU, dtype) at 2 gpu + fp8, all-reduce entries
    (GPU, TP degree) at 3 gpu + position of the degree in ALLREDUCE_GPUS."""

    gemm: OpFit
    context: OpFit
    generation: OpFit
    allreduce: OpFit


class KernelSet(NamedTuple):
    """Fitted kernels to evaluate: the stacked `tables` and the index `gpu` of a GPU in GPUS (a traced integer)."""

    tables: KernelTables
    gpu: jax.Array


def _pad_axis(a: np.ndarray, n: int) -> np.ndarray:
    """A sorted log axis extended to n values by unit steps past its end (the grid repeats its edge there)."""
    return np.concatenate([a, a[-1] + np.arange(1, n - a.size + 1)]) if a.size < n else a


def _stack_fits(fits: list[OpFit]) -> OpFit:
    sizes = [max(np.asarray(f.axes[j]).size for f in fits) for j in range(len(fits[0].axes))]
    axes = tuple(np.stack([_pad_axis(np.asarray(f.axes[j]), n) for f in fits]) for j, n in enumerate(sizes))
    grids = [np.pad(np.asarray(f.residual), [(0, n - s) for n, s in zip(sizes, np.shape(f.residual))], mode="edge")
             for f in fits]
    scal = {k: np.stack([np.asarray(getattr(f, k)) for f in fits]) for k in SCALARS}
    return OpFit(**scal, axes=axes, residual=np.stack(grids))


@functools.lru_cache(maxsize=4)
def _stacked_numpy(path: str) -> KernelTables:
    per_gpu = [gpu_fit(g, path) for g in GPUS]
    pairs = lambda bf, f8: _stack_fits([x for k in per_gpu for x in (getattr(k, bf), getattr(k, f8))])  # noqa: E731
    return KernelTables(pairs("gemm_bf16", "gemm_fp8"), pairs("context_bf16", "context_fp8"),
                        pairs("generation_bf16", "generation_fp8"), _stack_fits([x for k in per_gpu for x in k.allreduce]))


def stacked_axis(op: str, j: int, path=None) -> np.ndarray:
    """The stacked log axis j of operation `op` (a KernelTables field), in numpy (entries, n)."""
    return np.asarray(getattr(_stacked_numpy(str(path or data_file(KERNEL_FIT_FILE))), op).axes[j])


def stacked_gemm_m_axes(path=None) -> np.ndarray:
    """log m of every tabled GPU's measured GEMM rows, stacked (padded rows repeat unit steps past the end)."""
    return np.asarray(_stacked_numpy(str(path or data_file(KERNEL_FIT_FILE))).gemm.axes[0])


def stacked_tables(path=None) -> KernelTables:
    """Every tabled GPU's fits, stacked (`KernelTables`), as arrays of the current default float dtype."""
    dt = jnp.result_type(float)
    tree = _stacked_numpy(str(path or data_file(KERNEL_FIT_FILE)))
    return jax.tree.map(lambda x: jnp.asarray(x, dt), tree)


def load_kernel_fit(gpu: str, path=None) -> KernelSet:
    """The fitted kernels of one tabled GPU, ready for the *_seconds functions."""
    return KernelSet(stacked_tables(path), jnp.asarray(GPUS.index(gpu)))


@functools.lru_cache(maxsize=1)
def _tabled_peaks() -> tuple[tuple[float, float], ...]:
    from .catalog import hardware_info
    return tuple((float(i["bf16_flops"]["value"]), float(i["hbm_bandwidth"]["value"]))
                 for i in map(hardware_info, GPUS))


def closest_tabled(bf16_flops, hbm_bandwidth, xp=jnp):
    """Index into GPUS of the tabled GPU closest to a GPU with these peaks: least |log F/F_i| + |log W/W_i|. A
    tabled GPU's own peaks pick itself."""
    dist = xp.stack([xp.abs(xp.log(bf16_flops / f)) + xp.abs(xp.log(hbm_bandwidth / w)) for f, w in _tabled_peaks()])
    return xp.argmin(dist, axis=0)


def kernel_set(hw: Hardware) -> KernelSet:
    """The kernels of a GPU: its `kernel_gpu` index, or (where that is negative: no catalogue entry) the closest
    tabled GPU by peaks."""
    g = jnp.where(hw.kernel_gpu >= 0, hw.kernel_gpu, closest_tabled(hw.bf16_flops, hw.hbm_bandwidth))
    return KernelSet(stacked_tables(), jnp.asarray(g).astype(jnp.int32))

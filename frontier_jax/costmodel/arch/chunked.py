"""Chunked-prefill colocation (Sarathi-Serve, stall-free), one instance of TP degree `tp`, token budget `chunk`,
at Poisson rate `lam` (MODEL.md section 4.2). Every iteration carries the b running decodes plus up to
k = chunk - b prompt tokens; a prompt of I tokens takes ceil(I / k) mixed iterations."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import iteration_table as it
from .. import kernels as kn
from .. import latency as lat
from .. import queueing as qu
from ...tracing import scan
from . import common as c

_FIXED_POINT_STEPS = 6
BATCH_KNOTS = 65  # of a MixedTable's chunk attention, log-spaced in the batch from 1 to chunk + 2


def _last(v):
    """v with a new trailing axis (of knots or lengths)."""
    return jnp.asarray(v)[..., None]


LANES = 8  # SIMD lanes of float64 (AVX-512; two AVX2 vectors)


def _lanes(v):
    """v with its last axis padded to a multiple of LANES by copies of its first entry. XLA's CPU loops vectorise
    the last axis: one of 6 entries runs 2 of them outside the vectors, and a log or exp there costs several times
    one inside (the last chunk's attention, benchmarks/simd_lanes.py: about 75 ns per entry at 6, 42-55 at 8)."""
    n = v.shape[-1]
    pad = -n % LANES
    return jnp.concatenate([v] + [v[..., :1]] * pad, axis=-1) if pad else v


def _chunk_tokens(p: c.Point, chunk, batch):
    """(k, prefix): prompt tokens per mixed iteration at `batch` running decodes and the mean KV re-read per chunk."""
    sc = p.sc
    new = (1.0 - sc.cache_hit) * sc.input_len
    k_eff = jnp.minimum(jnp.clip(chunk - batch, 1.0, None), new)
    return k_eff, sc.cache_hit * sc.input_len + 0.5 * jnp.maximum(new - k_eff, 0.0)


def _direct_step(p: c.Point, tp, chunk, batch, ctx):
    k_eff, prefix = _chunk_tokens(p, chunk, batch)
    t_mix = lat.mixed_seconds(p.hw, p.model, p.eff, batch, ctx, k_eff, prefix, tp, p.sc.fp8, p.sc.kv_fp8)
    return k_eff, t_mix, lat.decode_seconds(p.hw, p.model, p.eff, batch, ctx, tp, p.sc.fp8, p.sc.kv_fp8)


class MixedTable(NamedTuple):
    """A chunked instance's iteration times where they come from measured kernels, prepared once per point and
    configuration (they depend on the rate only through the running batch, so the rate solver and the batch's
    Newton iteration look them up instead of composing kernels; costmodel/iteration_table.py): the count-dependent
    parts of any iteration (`iters`) and the attention of the mean chunk tabulated in the batch (the chunk's size
    and prefix move with it)."""

    iters: it.IterationTable
    step: jax.Array       # of the batch knots (iteration_table.knots)
    attention: jax.Array  # (..., BATCH_KNOTS) s, every layer's attention of the mean chunk at batch 1 + knots
    warm: tuple           # decode_affine branches (the Newton iteration's warm start)
    upper: jax.Array      # rate_upper(p, tp, chunk): the rate solver's bracket
    last_chunk: kn.PreparedContext  # (..., LANES) the last chunk's attention at _lanes(ttft_lengths)


def tabulate(p: c.Point, tp, chunk, iters: it.IterationTable | None = None):
    """The MixedTable of configuration (tp, chunk) where iterations come from measured kernels (None for the
    roofline, cheap enough to evaluate directly). `iters`: the point's iteration table for this TP degree (built
    here when not given)."""
    if not lat.uses_kernels(p.eff):
        return None
    ctx = c.mean_context(p.sc)
    chunk = jnp.asarray(chunk, jnp.result_type(float))
    iters = it.iteration_table(p, tp, ctx) if iters is None else iters
    step = jnp.log1p(chunk + 1.0) / (BATCH_KNOTS - 1)
    batch = 1.0 + it.knots(step, BATCH_KNOTS)
    k_eff, prefix = _chunk_tokens(p, chunk[..., None], batch)
    attention = it.context_seconds(jax.tree.map(_last, p), _last(tp), k_eff, prefix, iters)
    warm = c.decode_affine(p, tp, ctx, lambda b: it.decode_seconds(iters, b))  # DECODE_KNOTS are table knots
    # a prompt's last chunk ends at the prompt's full length whatever the chunking: what its attention reads of
    # that length alone is computed once per TTFT length
    last_chunk = it.length_terms(jax.tree.map(_last, p), _last(tp), iters,
                                 _last(p.sc.cache_hit * p.sc.input_len) + _lanes(ttft_lengths(p)[0]))
    return MixedTable(iters, step, attention, warm, rate_upper(p, tp, chunk), last_chunk)


def ttft_lengths(p: c.Point):
    """(lengths, quadrature weights) of new prompt tokens in the TTFT: the requested quantile's length, then the
    length quadrature's nodes (weight 0 for the quantile)."""
    sc = p.sc
    new = (1.0 - sc.cache_hit) * sc.input_len
    nodes, w = qu.length_nodes(new, sc.input_cv)
    i_q = qu.lognormal_quantile(new, sc.input_cv, c.normal_z(sc))
    return jnp.concatenate([i_q[..., None], nodes], axis=-1), w


def _mixed_step(p: c.Point, tp, chunk, b, ctx, table=None):
    """(k, t_mix, t_plain) at batch 1 + b: prompt tokens per mixed iteration and the two iteration times."""
    if table is None:
        return _direct_step(p, tp, chunk, 1.0 + b, ctx)
    k_eff, _ = _chunk_tokens(p, chunk, 1.0 + b)
    attention = it.lookup(table.step, table.attention, b)
    return (k_eff, *it.mixed_and_decode_seconds(table.iters, 1.0 + b, k_eff, attention))


def _plain(p: c.Point, tp, b, ctx, table=None):
    """Seconds of a decode-only iteration at batch 1 + b."""
    if table is None:
        return lat.decode_seconds(p.hw, p.model, p.eff, 1.0 + b, ctx, tp, p.sc.fp8, p.sc.kv_fp8)
    return it.decode_seconds(table.iters, 1.0 + b)


def _plain_alone(p: c.Point, tp, ctx, table=None):
    """Seconds of a decode iteration of one sequence (the table's first knot: count 1)."""
    return _plain(p, tp, 0.0, ctx) if table is None else table.iters.decode[..., 0]


def _mixed(p: c.Point, tp, batch, ctx, tokens, prefix, table=None, length=None):
    """Seconds of a mixed iteration (`length`: the chunk attention's iteration_table.length_terms, where known)."""
    if table is None:
        return lat.mixed_seconds(p.hw, p.model, p.eff, batch, ctx, tokens, prefix, tp, p.sc.fp8, p.sc.kv_fp8)
    return it.mixed_seconds(p, tp, table.iters, batch, tokens, prefix, length=length)


def _last_chunk(p: c.Point, tp, k, b, ctx, tokens, table=None):
    """(full chunks, seconds, rest) of the mixed iteration that carries the last chunk of a prompt of `tokens` new
    tokens (k per chunk; tokens = ttft_lengths on a trailing axis, `_lanes` of them where `table` is given, the
    other arguments with a size-1 axis there):
    (ceil(tokens / k) - 1) full chunks come first; the last has the rest and re-reads the KV of all before it."""
    sc = p.sc
    full = jnp.maximum(jnp.ceil(tokens / k) - 1.0, 0.0)
    rest = tokens - full * k
    prefix = _last(sc.cache_hit * sc.input_len) + full * k
    return full, _mixed(p, tp, b, ctx, rest, prefix, table, None if table is None else table.last_chunk), rest


class BatchState(NamedTuple):
    """What the decode batch's fixed point needs at a mean batch of 1 + b running decodes."""

    tpot: jax.Array          # s, mean time per output token (inf where the prompt queue or the decode is unstable)
    sojourn_mean: jax.Array  # s, a prompt's mean sojourn in the prompt queue
    k: jax.Array             # prompt tokens per mixed iteration
    t_mix: jax.Array         # s, a mixed iteration
    t_plain: jax.Array       # s, a decode-only iteration
    rho: jax.Array           # the prompt queue's utilisation


def batch_state(p: c.Point, tp, chunk, lam, b, pool: c.Pool = c.LONE, table: MixedTable | None = None) -> BatchState:
    """The mean TPOT at 1 + b running decodes (docstring of `latency`) and what it is made of."""
    sc = p.sc
    n = c.decode_steps(sc)
    new = (1.0 - sc.cache_hit) * sc.input_len
    new2 = new**2 * (1.0 + sc.input_cv**2)
    k, t_mix, t_plain = _mixed_step(p, tp, chunk, b, c.mean_context(sc), table)
    es, es2 = new / k * t_mix, new2 / k**2 * t_mix**2
    rho = lam * es
    wait = qu.pool_wait_mean(lam, es, es2, pool.servers, pool.dispatch, sc.arrival_ca2)
    sojourn_mean = jnp.where(rho < 1.0, wait, 0.0) + es + 0.5 * t_mix
    # mixed iterations per second of prompt work on this instance while it decodes (in a routed pool only the
    # prompts that find no idle instance: common.others_busy)
    a = lam * c.others_busy(b, pool) * new / k
    delta = t_mix - t_plain
    tpot = jnp.minimum((t_plain + delta * a * sojourn_mean / n) / jnp.maximum(1.0 - delta * a, 1e-12), t_mix)
    ok = (rho < 1.0) & (delta * a < 1.0)
    return BatchState(jnp.where(ok, tpot, jnp.inf), sojourn_mean, k, t_mix, t_plain, rho)


def batch_gap(p: c.Point, tp, chunk, lam, b, pool: c.Pool = c.LONE, table: MixedTable | None = None):
    """lam n TPOT(1 + b) - b: Little's law for the running decodes; the mean batch is its lowest root."""
    return lam * c.decode_steps(p.sc) * batch_state(p, tp, chunk, lam, b, pool, table).tpot - b


def _converged(b, g):
    return jnp.abs(g) <= 1e-6 * (1.0 + b)


def _secant(lo, g_lo, hi, g_hi):
    return lo + g_lo / (g_lo - g_hi) * (hi - lo)


def mean_batch(p: c.Point, tp, chunk, lam, pool: c.Pool = c.LONE, table: MixedTable | None = None):
    """The lowest root b of batch_gap in [0, chunk - 1) (inf where there is none: the instance is unstable), from
    the warm start of a decode with no prompt work (docs/model.md section 4.2, "The batch's fixed point").

    The root is bracketed, [lo, hi] with gap(lo) > 0 and, at hi, gap <= 0 (g_hi), an unstable queue or the wall
    (g_hi NaN). Each step is Newton from below where its step stays inside the bracket, else regula falsi once the
    bracket has two signs (Illinois: an end kept twice has its gap halved), else a fixed-point step from lo (TPOT
    increases with the batch, so lo + gap(lo) stays below the root) or bisection, whichever is lower. TPOT is only
    piecewise smooth in the batch (interpolated kernels, the chunk's tokens at the budget) and S-shaped in a
    routed pool (common.others_busy), so a Newton step may overshoot; the bracket catches it. A root that the
    steps pin in a bracket narrower than 1e-3 (1 + b) without converging is taken where the iterate is; an iterate
    whose secant step (through the previous iterate) is shorter than that and stays in the bracket takes the step.
    The value is the last iterate (or that step); its derivatives come from the implicit function theorem (the
    gap's derivatives in the parameters over its slope in the batch, at the iterate), not through the iterations."""
    table = tabulate(p, tp, chunk) if table is None else table
    gap = lambda b: batch_gap(p, tp, chunk, lam, b, pool, table)  # noqa: E731
    # the iterations see constants: nothing is differentiated through them
    const = jax.lax.stop_gradient((p, tp, chunk, lam, pool, table))
    gap_const = lambda b: batch_gap(*const[:4], b, *const[4:])  # noqa: E731

    def step(carry, _):
        b, lo, g_lo, hi, g_hi, kept, _, _ = carry
        g, dg = jax.jvp(gap_const, (b,), (jnp.ones_like(b),))
        above = jnp.isfinite(g) & (g > 0.0)
        kept = jnp.where(above, jnp.where(kept > 0, kept + 1, 1), jnp.where(kept < 0, kept - 1, -1))
        g_lo = jnp.where(above, g, jnp.where(kept < -1, 0.5 * g_lo, g_lo))
        g_hi = jnp.where(above, jnp.where(kept > 1, 0.5 * g_hi, g_hi), jnp.where(jnp.isfinite(g), g, jnp.nan))
        lo, hi = jnp.where(above, b, lo), jnp.where(above, hi, b)
        x = b - g / jnp.where(dg < 0.0, dg, -1.0)
        newton = above & (dg < 0.0) & (x <= hi)
        two_signs = jnp.isfinite(g_hi) & jnp.isfinite(g_lo)
        fallback = jnp.where(two_signs, _secant(lo, g_lo, hi, jnp.where(two_signs, g_hi, -1.0)),
                             jnp.minimum(lo + g_lo * 2.0 ** jnp.maximum(kept - 1.0, 0.0), 0.5 * (lo + hi)))
        nxt = jnp.where(newton, x, jnp.where(_converged(b, g), b, fallback))
        return (nxt, lo, g_lo, hi, g_hi, kept, b, g), None

    warm = c.decode_affine(p, tp, c.mean_context(p.sc)) if table is None else table.warm
    b0 = jnp.clip(jax.lax.stop_gradient(c.batch_fixed_point(warm, lam * c.decode_steps(p.sc))), 0.0, chunk)
    zero = jnp.zeros_like(b0)
    init = (b0, zero, jnp.full_like(b0, jnp.inf), zero + chunk, jnp.full_like(b0, jnp.nan), zero, b0, zero)
    (b, lo, _, hi, g_hi, _, b_prev, g_prev), _ = scan(step, init, _FIXED_POINT_STEPS)
    g, dg = jax.jvp(gap, (b,), (jnp.ones_like(b),))
    dg = jax.lax.stop_gradient(dg)
    pinned = jnp.isfinite(g_hi) & (hi - lo <= 1e-3 * (1.0 + b))
    converged = _converged(b, g)
    # an iterate one short secant step (through the previous iterate, itself within 1 % of it: a chord across a
    # fold would point at no root) from the root inside the bracket takes that step, its error then of the order
    # of the two iterates' errors' product; the value needs no derivative in the batch, so a call that is not
    # differentiated evaluates the gap only once more
    g_stop = jax.lax.stop_gradient(g)
    chord = (g_stop - g_prev) / jnp.where(b != b_prev, b - b_prev, 1.0)
    falling = jnp.isfinite(chord) & (chord < 0.0)
    chord = jnp.where(falling, chord, -1.0)
    last = b - g_stop / chord
    close = (falling & jnp.isfinite(g_stop) & (jnp.abs(g_stop / chord) <= 1e-3 * (1.0 + b))
             & (last >= lo) & (last <= hi) & (jnp.abs(b - b_prev) <= 1e-2 * (1.0 + b)) & ~converged)
    # g - stop_gradient(g) is zero but carries the parameters' derivatives (the implicit function theorem at the
    # iterate); a converged or pinned iterate keeps its value (a further Newton step would move it far where the
    # gap is nearly tangent, at a fold of the fixed point)
    tangent = (g - g_stop) / jnp.where(dg < 0.0, dg, -1.0)
    b = jnp.where(converged | pinned | close, jnp.where(close, last, b) - tangent, jnp.inf)
    return jnp.where(b < chunk - 1.0, b, jnp.inf)


def latency(p: c.Point, tp, chunk, lam, pool: c.Pool = c.LONE, table: MixedTable | None = None) -> c.Latency:
    """TPOT: a decode advances one token per iteration; an iteration is mixed (t_mix) while prompt work is queued,
    plain (t_plain) otherwise. The mixed iterations in a request's life are those of the prompts queued behind it
    at its first token and of those arriving during its life: M = sum of I_j / k, a compound Poisson count with
    mean lambda (T + L) E[I] / k. TPOT = t_plain + (t_mix - t_plain) min(M, n) / n. `table`: the configuration's
    MixedTable (tabulate(p, tp, chunk); built here when not given)."""
    sc = p.sc
    n = c.decode_steps(sc)
    ctx = c.mean_context(sc)
    new = (1.0 - sc.cache_hit) * sc.input_len
    new2 = new**2 * (1.0 + sc.input_cv**2)
    new3 = new**3 * (1.0 + sc.input_cv**2) ** 3
    table = tabulate(p, tp, chunk) if table is None else table
    b = mean_batch(p, tp, chunk, lam, pool, table)
    mean, sojourn_mean, k, t_mix, t_plain, rho = batch_state(p, tp, chunk, lam, b, pool, table)

    life = n * mean
    window = lam * c.others_busy(b, pool) * (sojourn_mean + life)
    delta = t_mix - t_plain
    share = c.spread(pool)
    slope = _plain(p, tp, 1.0 + b, ctx, table) - t_plain
    batch_var = slope**2 * c.batch_variance_over_lifetime(b) * share
    var = (delta / (n * k)) ** 2 * window * new2 + batch_var
    spread_ok = var > jnp.finfo(var.dtype).tiny
    skew = jnp.where(spread_ok, (delta / (n * k)) ** 3 * window * new3 / jnp.where(spread_ok, var, 1.0) ** 1.5, 0.0)
    cap = t_mix + slope * jnp.where(sc.mean_mode, 0.0, c.normal_z(sc) * qu.safe_sqrt(2.0 / 3.0 * b * share))
    floor = _plain_alone(p, tp, ctx, table)
    tpot = jnp.minimum(qu.cornish_fisher(mean, var, skew, c.normal_z(sc), sc.mean_mode, floor), jnp.maximum(cap, mean))

    # TTFT: FCFS queue of prompt work, each prompt needing I/k mixed iterations of work; its own prompt is done when
    # its last chunk is, which rides in an iteration of its own size (the rest of the budget carries the next prompt).
    lengths, w = ttft_lengths(p)
    nodes = lengths[..., 1:]
    service = nodes / k[..., None] * t_mix[..., None]
    n_len = lengths.shape[-1]
    full, last, rest = (v[..., :n_len] for v in _last_chunk(p, tp, k[..., None], 1.0 + b[..., None], ctx[..., None],
                                                             lengths if table is None else _lanes(lengths), table))
    own_q = full[..., 0] * t_mix + last[..., 0]
    remainder = jnp.maximum(last[..., 1:] - rest[..., 1:] / k[..., None] * t_mix[..., None], 0.0)  # beyond the fluid
    busy = c.all_busy(b, pool)
    ttft = qu.sojourn(lam, service, w, sc.q, sc.mean_mode, own_q,
                      extra_mean=0.5 * busy * t_plain + qu.expect(remainder, w),
                      extra_log_mgf=lambda th: (qu.log_mixture_mgf(busy, qu.log_uniform_mgf(th, t_plain))
                                                + qu.log_mgf(th, remainder, w)),
                      extra_quantile=busy * sc.q * t_plain, arrival_ca2=sc.arrival_ca2, servers=pool.servers,
                      dispatch=pool.dispatch)
    prefill_busy = lam * (new / k) * delta
    running = 1.0 - jnp.exp(-b) * (1.0 - jnp.minimum(rho, 1.0))  # iterations run while decodes or prompts wait
    return c.Latency(ttft, tpot, b, c.batch_quantile(b, c.normal_z(sc), sc.mean_mode, share),
                     c.kv_batch_limit(p, tp, ctx), prefill_busy, jnp.maximum(running - prefill_busy, 0.0))


def rate_upper(p: c.Point, tp, chunk, table: MixedTable | None = None):
    """An upper bound on the chunked instance's rate: 1.5x prompt-token saturation or twice the KV-memory limit
    (from `table` where given)."""
    if table is not None:
        return table.upper
    sc = p.sc
    ctx = c.mean_context(sc)
    new = (1.0 - sc.cache_hit) * sc.input_len
    if lat.uses_kernels(p.eff):
        # the mixed iteration at batch 0 and the decode of one sequence as one evaluation (a decode iteration is a
        # mixed one without prompt tokens; with measured kernels each call site is ~2,000 lookup operations to
        # compile, and a decode at batch 0 costs as one sequence)
        k, prefix = _chunk_tokens(p, chunk, 0.0)
        pair = lambda a, b: jnp.stack(jnp.broadcast_arrays(a, b), axis=-1)  # noqa: E731
        t = lat.mixed_seconds(p.hw, p.model, p.eff, pair(0.0, 1.0), _last(ctx), pair(k, 0.0), pair(prefix, 0.0),
                              _last(tp), _last(sc.fp8), _last(sc.kv_fp8))
        t_mix, t_one = t[..., 0], t[..., 1]
    else:
        k, t_mix, _ = _direct_step(p, tp, chunk, 0.0, ctx)
        t_one = lat.decode_seconds(p.hw, p.model, p.eff, 1.0, ctx, tp, sc.fp8, sc.kv_fp8)
    prefill_limit = 1.5 * k / (new * t_mix)
    mem = 2.0 * (c.kv_batch_limit(p, tp, ctx) + 1.0) / (c.decode_steps(sc) * t_one)
    return jnp.minimum(prefill_limit, mem)

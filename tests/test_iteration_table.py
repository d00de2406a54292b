"""The chunked model's iteration tables (costmodel/iteration_table.py, arch/chunked.MixedTable) against the direct
composition of measured kernels they replace: exact at their knots, within a stated error between them, and the
chunked latencies they give against those of the direct composition."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frontier_jax import api
from frontier_jax.costmodel import iteration_table as it
from frontier_jax.costmodel import latency as lat
from frontier_jax.costmodel.arch import chunked
from frontier_jax.costmodel.arch import common as c
from frontier_jax.costmodel.types import Point, Scenario

GPUS = ("a100-80gb-sxm", "h100-80gb-sxm", "h200-141gb-sxm")


def _point(gpu, model, precision, input_len, output_len):
    hw, md, eff, fp8, _ = api._resolve(gpu, model, "current-kernels", precision)
    sc = Scenario.build(input_len=input_len, output_len=output_len, ttft=2.0, tpot=0.05, q=0.99, mean_mode=0.0,
                        fp8=fp8)
    return Point(hw, md, eff, sc)


def test_knot_index_finds_every_interval():
    """The cell index finds the same knot interval as a full search (np.interp on the knot positions)."""
    k = it.count_knots()
    x = np.concatenate([k, k[:-1] + 1e-3, np.random.default_rng(0).uniform(1.0, k[-1], 5000)])
    positions = jnp.broadcast_to(jnp.arange(k.size, dtype=float), (x.size, k.size))
    got = it._at(jnp.asarray(x), positions)[0]
    np.testing.assert_allclose(np.asarray(got), np.interp(x, k, np.arange(k.size)), rtol=0, atol=1e-9)


def test_knots_hold_every_measured_gemm_m_and_the_powers_of_two():
    k = set(np.round(it.count_knots(), 6))
    measured = np.exp(it.kn.stacked_gemm_m_axes().ravel())
    assert all(round(float(m), 6) in k for m in measured if m < it.MAX_COUNT)
    assert all(float(2**j) in k for j in range(16))
    assert it.count_knots()[0] == 1.0  # chunked._plain_alone reads the decode of one sequence at the first knot


@pytest.mark.parametrize("gpu", GPUS)
def test_decode_table_is_the_composition_at_its_knots(gpu):
    p = _point(gpu, "llama-3.1-70b", "fp8", 3000.0, 400.0)
    ctx = c.mean_context(p.sc)
    for tp in (1.0, 8.0):
        table = it.iteration_table(p, tp, ctx)
        b = jnp.asarray(it.count_knots()[:-1])
        direct = lat.decode_seconds(p.hw, p.model, p.eff, b, ctx, tp, p.sc.fp8)
        np.testing.assert_allclose(np.asarray(it.decode_seconds(table, b)), np.asarray(direct), rtol=1e-10)


def test_tables_against_the_direct_composition_between_knots():
    """Random batches (the Newton iteration's t_mix and t_plain) and random last chunks (batch, tokens, prefix) on 3
    GPUs x 2 models x 2 precisions x TP 1/2/8 x chunk 512/2048/8192: measured median 0.003 %/0.012 %, 99th
    percentile 0.19 %/0.41 %, largest 1.4 %/1.8 % (the form's curvature inside a knot interval where the measured
    GEMMs turn steeply)."""
    rng = np.random.default_rng(1)

    @jax.jit  # one program for every GPU, model, precision and configuration (all are traced inputs)
    def errors(p, tp, ch, b, r, prefix):
        ctx = c.mean_context(p.sc)
        table = chunked.tabulate(p, tp, ch)
        _, t_mix, t_plain = chunked._direct_step(p, tp, ch, 1.0 + b, ctx)
        _, u_mix, u_plain = chunked._mixed_step(p, tp, ch, b, ctx, table)
        direct = chunked._mixed(p, tp, 1.0 + b, ctx, r, prefix)
        return (jnp.concatenate([u_mix / t_mix - 1.0, u_plain / t_plain - 1.0]),
                chunked._mixed(p, tp, 1.0 + b, ctx, r, prefix, table) / direct - 1.0)

    newton, chunks = [], []
    for gpu in GPUS:
        for model in ("llama-3.1-8b", "llama-3.1-70b"):
            for precision in ("bf16", "fp8"):
                for tp in (1.0, 2.0, 8.0):
                    for ch in (512.0, 2048.0, 8192.0):
                        p = _point(gpu, model, precision, rng.uniform(100, 8000), rng.uniform(50, 1000))
                        b = np.expm1(rng.uniform(0.0, np.log1p(ch), 40))
                        r = rng.uniform(1.0, np.maximum(ch - 1.0 - b, 1.0))
                        e_newton, e_chunk = errors(p, jnp.asarray(tp), jnp.asarray(ch), jnp.asarray(b), jnp.asarray(r),
                                                   jnp.asarray(rng.uniform(0.0, 8000.0, 40)))
                        newton.append(np.asarray(e_newton))
                        chunks.append(np.asarray(e_chunk))
    for errors in (np.abs(np.concatenate(newton)), np.abs(np.concatenate(chunks))):
        assert np.median(errors) < 1e-3
        assert np.quantile(errors, 0.99) < 0.01
        assert errors.max() < 0.06


@pytest.mark.parametrize("precision", ["bf16", "fp8"])
def test_chunked_latency_from_tables_matches_the_direct_composition(monkeypatch, precision):
    """TTFT, TPOT and the batch of the chunked model at light to heavy load, tables against the direct composition
    (chunked.tabulate returning None forces it)."""
    p = _point("h100-80gb-sxm", "llama-3.1-70b", precision, 2500.0, 300.0)

    def run():
        upper = chunked.rate_upper(p, 4.0, 2048.0)
        rates = jnp.asarray([0.02, 0.07, 0.13, 0.19]) * upper  # stable below ~0.3 here (upper: a bound)
        out = jax.vmap(lambda r: chunked.latency(p, 4.0, 2048.0, r))(rates)
        return np.asarray(out.ttft), np.asarray(out.tpot), np.asarray(out.batch)

    tabled = run()
    monkeypatch.setattr(chunked, "tabulate", lambda *a, **k: None)
    direct = run()
    for t, d in zip(tabled, direct):
        assert np.all(np.isfinite(d))
        np.testing.assert_allclose(t, d, rtol=0.01)



def test_the_last_chunks_padding_to_simd_lanes_leaves_the_latency_unchanged(monkeypatch):
    """The TTFT's last chunk runs at its lengths padded to chunked.LANES (a speed measure, docs/performance.md "SIMD
    lanes"): the padding is cut off before it is read, so TTFT and TPOT equal those of the unpadded lengths."""
    p = _point("h200-141gb-sxm", "llama-3.1-70b", "bf16", 3000.0, 250.0)
    p = p._replace(sc=p.sc._replace(input_cv=jnp.asarray(0.8), cache_hit=jnp.asarray(0.2)))
    lengths = chunked.ttft_lengths(p)[0]
    padded = chunked._lanes(lengths)
    assert padded.shape[-1] % chunked.LANES == 0 and padded.shape[-1] > lengths.shape[-1]
    np.testing.assert_array_equal(np.asarray(padded[..., lengths.shape[-1]:]), float(lengths[..., 0]))

    def run():
        rates = jnp.asarray([0.05, 0.2]) * chunked.rate_upper(p, 2.0, 1024.0)
        out = jax.vmap(lambda r: chunked.latency(p, 2.0, 1024.0, r))(rates)
        return np.asarray(out.ttft), np.asarray(out.tpot)

    padded_run = run()
    monkeypatch.setattr(chunked, "LANES", 1)
    for a, b in zip(padded_run, run()):
        assert np.all(np.isfinite(b))
        np.testing.assert_allclose(a, b, rtol=1e-14)


def test_arch_functions_take_precomputed_primitives():
    """Each architecture's latency and upper rate given a configuration's Primitives (computed once, outside the
    rate solver) equal the same functions computing them inside."""
    from frontier_jax.costmodel.arch import colocated, disaggregated
    from frontier_jax.costmodel.arch.disaggregated import Link

    p = _point("h200-141gb-sxm", "llama-3.1-70b", "fp8", 3000.0, 400.0)
    p = p._replace(sc=p.sc._replace(input_cv=jnp.asarray(0.5), kv_bandwidth=jnp.asarray(5e10)))
    tp, pool = 4.0, c.Pool(jnp.asarray(3.0), jnp.asarray(1.0))

    def both(prims):  # eager: op by op (compiling this twice costs more than running it)
        lam = 0.3 * colocated.rate_upper(p, tp)
        return (colocated.latency(p, tp, lam, pool, prims), colocated.rate_upper(p, tp, prims),
                disaggregated.decode_latency(p, tp, 3.0 * lam, pool, prims), disaggregated.decode_rate_upper(p, tp,
                                                                                                               prims),
                disaggregated.prefill_latency(p, tp, 1.0, Link.FULL, lam, pool, prims),
                disaggregated.prefill_rate_upper(p, tp, 1.0, Link.FULL, prims))

    given, inside = jax.tree.leaves(both(c.primitives(p, tp))), jax.tree.leaves(both(None))
    assert len(given) == len(inside) > 15
    for g, i in zip(given, inside):
        assert np.isfinite(i)
        np.testing.assert_allclose(g, i, rtol=1e-12, atol=0.0)


def test_prefill_pool_search_with_hoisted_primitives_matches_the_inline_one(monkeypatch):
    """The searches hand each configuration's Primitives to the rate solver (search._primitives) and the linked
    prefill pool gathers the chosen one for its indirect-tax solve: the answers equal those computed with the
    primitives inside (forced by _primitives returning None)."""
    from frontier_jax.costmodel import search
    from frontier_jax.costmodel.types import Demand, SearchSpace

    space = SearchSpace(tp_prefill=(2, 4, 8), overlap=(1,))
    p = _point("h100-80gb-sxm", "llama-3.1-70b", "bf16", 6000.0, 400.0)
    p = p._replace(sc=p.sc._replace(input_cv=jnp.asarray(0.5), kv_bandwidth=jnp.asarray(2e10)))
    d = Demand(jnp.asarray(30.0), jnp.asarray(jnp.inf), jnp.asarray(0.0), jnp.asarray(0.0))  # whole instances

    def run():
        return jax.tree.leaves(jax.jit(lambda p: search.search_prefill_pool(p, d, space))(p))

    hoisted = run()
    monkeypatch.setattr(search, "_primitives", lambda *a, **k: None)
    inline = run()
    assert np.isfinite(hoisted[0]) and np.isfinite(hoisted[1])
    for h, i in zip(hoisted, inline):
        np.testing.assert_allclose(np.asarray(h), np.asarray(i), rtol=1e-12, atol=0.0)


def test_last_chunk_with_its_prepared_residual_is_the_composition_from_the_cut():
    """The TTFT's last chunks read their attention's residual and compute efficiency once per prompt length
    (MixedTable.last_chunk: the total length tokens + prefix does not depend on the chunking): the same seconds as
    the composition from the cut."""
    p = _point("a100-80gb-sxm", "llama-3.1-8b", "bf16", 3100.0, 300.0)
    p = p._replace(sc=p.sc._replace(input_cv=jnp.asarray(0.7), cache_hit=jnp.asarray(0.25)))
    ctx = c.mean_context(p.sc)
    table = chunked.tabulate(p, 2.0, 1024.0)
    lengths = chunked._lanes(chunked.ttft_lengths(p)[0])  # as the MixedTable holds them
    for k, b in ((300.0, 12.0), (1000.0, 1.0), (57.0, 700.0)):
        k, b = jnp.asarray([k]), jnp.asarray([b])
        full, got, rest = chunked._last_chunk(p, 2.0, k, b, ctx, lengths, table)
        prefix = 0.25 * 3100.0 + full * k
        want = chunked._mixed(p, 2.0, b, ctx, rest, prefix, table)
        assert np.all(np.asarray(rest) > 0)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12)


def test_link_blind_searches_share_one_primitives_computation(monkeypatch):
    """search_link_blind hands the colocated search, the decode pool and the free-link prefill pool their
    configurations' Primitives from one computation over the union of their TP degrees (search._shared_primitives):
    the answers equal those of each search computing its own (forced by _shared_primitives returning None), with
    the degrees concrete (deduplicated and reordered here) and traced (every entry, in order). The chunked
    search, which reads no Primitives, is left out of all three (it is most of the programs' compile)."""
    from frontier_jax.costmodel import search
    from frontier_jax.costmodel.types import Demand, SearchSpace

    monkeypatch.setattr(search, "search_chunked", lambda *a: None)

    space = SearchSpace(tp=(2, 4), chunk=(2048,), tp_prefill=(8, 4), tp_decode=(8, 1))
    p = _point("h100-80gb-sxm", "llama-3.1-70b", "fp8", 3000.0, 400.0)
    d = Demand(jnp.asarray(jnp.nan), jnp.asarray(jnp.inf), jnp.asarray(0.0), jnp.asarray(0.0))

    def concrete():
        return jax.tree.leaves(jax.jit(lambda p: search.search_link_blind(p, d, space))(p))

    def traced():
        def run(p, tp, tpp, tpd):
            return search.search_link_blind(p, d, SearchSpace(tp=tuple(tp), chunk=space.chunk, tp_prefill=tuple(tpp),
                                                              tp_decode=tuple(tpd)))
        return jax.tree.leaves(jax.jit(run)(p, *(jnp.asarray(t, float) for t in
                                                 (space.tp, space.tp_prefill, space.tp_decode))))

    shared_concrete, shared_traced = concrete(), traced()
    monkeypatch.setattr(search, "_shared_primitives", lambda *a: (None, None, None))
    separate = concrete()
    assert np.isfinite(separate[0])
    for a, b, c in zip(shared_concrete, shared_traced, separate):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-12, atol=0.0)
        np.testing.assert_allclose(np.asarray(b), np.asarray(c), rtol=1e-12, atol=0.0)


@pytest.mark.parametrize("precision", ["bf16", "fp8"])
def test_merged_iteration_evaluations_equal_each_composed_alone(precision):
    """The kernel engine evaluates several iteration times at one call site (each site is a program of kernel
    lookups to compile): a configuration's Primitives (the prompts' prefills and the decode knots together) and the
    chunked rate bracket (the mixed iteration at batch 0 with the decode of one sequence). Each equals the quantity
    composed on its own by latency.mixed_seconds / decode_seconds, one call per number."""
    p = _point("h200-141gb-sxm", "llama-3.1-70b", precision, 5000.0, 300.0)
    p = p._replace(sc=p.sc._replace(cache_hit=jnp.asarray(0.25)))
    hw, md, eff, sc = p.hw, p.model, p.eff, p.sc
    h, ctx = float(sc.cache_hit), c.mean_context(sc)
    for tp in (1.0, 4.0):
        prims = c.primitives(p, tp)
        nodes, _ = c.qu.length_nodes(sc.input_len, sc.input_cv)
        i_q = c.qu.lognormal_quantile(sc.input_len, sc.input_cv, c.normal_z(sc))
        alone = [float(lat.mixed_seconds(hw, md, eff, 0.0, 0.0, (1.0 - h) * n, h * n, tp, sc.fp8))
                 for n in list(np.asarray(nodes)) + [float(i_q)]]
        s, _, s_q = prims.prefill
        np.testing.assert_allclose(np.append(np.asarray(s), float(s_q)), alone, rtol=1e-13)
        knots = [float(lat.decode_seconds(hw, md, eff, b, ctx, tp, sc.fp8)) for b in c.DECODE_KNOTS]
        branches = c.decode_affine(p, tp, ctx, lambda _: jnp.asarray(knots))
        for (a0, s0), (a1, s1) in zip(prims.branches, branches):
            # secant slopes: differences of ~10 ms knot times, so rounding enters at ~1e-13 of the time
            np.testing.assert_allclose([float(a0), float(s0)], [float(a1), float(s1)], rtol=1e-9)
        for chunk in (512.0, 8192.0):
            k = min(chunk, (1.0 - h) * float(sc.input_len))
            prefix = h * float(sc.input_len) + 0.5 * ((1.0 - h) * float(sc.input_len) - k)
            t_mix = float(lat.mixed_seconds(hw, md, eff, 0.0, ctx, k, prefix, tp, sc.fp8))
            t_one = float(lat.decode_seconds(hw, md, eff, 1.0, ctx, tp, sc.fp8))
            new = (1.0 - h) * float(sc.input_len)
            mem = 2.0 * (float(c.kv_batch_limit(p, tp, ctx)) + 1.0) / (float(c.decode_steps(sc)) * t_one)
            expected = min(1.5 * k / (new * t_mix), mem)
            np.testing.assert_allclose(float(chunked.rate_upper(p, tp, chunk)), expected, rtol=1e-13)


def test_roofline_chunked_bracket_equals_its_iterations_composed_alone():
    """The chunked rate bracket's one evaluation (mixed at batch 0, decode of one sequence) is the roofline's two."""
    hw, md, eff, fp8, _ = api._resolve("h100-80gb-sxm", "llama-3.1-70b", "current", "bf16")
    sc = Scenario.build(input_len=5000.0, output_len=300.0, ttft=2.0, tpot=0.05, q=0.99, mean_mode=0.0, fp8=fp8)
    p = Point(hw, md, eff, sc)
    ctx, new = c.mean_context(sc), float(sc.input_len)
    for tp, chunk in ((1.0, 512.0), (8.0, 8192.0)):
        k = min(chunk, new)
        t_mix = float(lat.mixed_seconds(hw, md, eff, 0.0, ctx, k, 0.5 * (new - k), tp, sc.fp8))
        t_one = float(lat.decode_seconds(hw, md, eff, 1.0, ctx, tp, sc.fp8))
        mem = 2.0 * (float(c.kv_batch_limit(p, tp, ctx)) + 1.0) / (float(c.decode_steps(sc)) * t_one)
        np.testing.assert_allclose(float(chunked.rate_upper(p, tp, chunk)), min(1.5 * k / (new * t_mix), mem),
                                   rtol=1e-13)

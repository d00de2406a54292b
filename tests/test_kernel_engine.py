"""The measured-kernel latency path (issue 18, phase 2): engines whose iterations are composed from the fitted
kernel tables plus their own fitted terms, the stacked per-GPU tables, and the GPUs without tables.

References: the per-GPU fits evaluated on their own (the stacking must not change a number), the engine terms
written out by hand from their definition, the direct composed decode time (the secant branches must meet it at
their knots), and the measured serving runs (frontier_jax/data/measured_serving_current.csv)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frontier_jax.costmodel import catalog
from frontier_jax.costmodel import kernels as kn
from frontier_jax.costmodel import latency as lat
from frontier_jax.costmodel import operations as ops
from frontier_jax.costmodel.arch import common
from frontier_jax.costmodel.types import KernelEngine, Point, Scenario
from frontier_jax.errors import FrontierError

H100, A100 = "h100-80gb-sxm", "a100-80gb-sxm"
ENGINE = KernelEngine(jnp.asarray(1.5e-3), jnp.asarray(1.2e-5), jnp.asarray(9.0))


def test_stacked_tables_reproduce_each_gpus_own_fit():
    """Stacking pads every grid to a common shape; at any size, inside or beyond a GPU's own grid, the stacked
    evaluation equals the GPU's fit on its own (every operation, both precisions)."""
    rng = np.random.default_rng(3)
    m, n, k = (np.exp(rng.uniform(0, np.log(40000), 64)) for _ in range(3))
    for gpu in kn.GPUS:
        hw = catalog.load_hardware(gpu)
        own = kn.gpu_fit(gpu)
        for fp8, fit in ((0.0, own.gemm_bf16), (1.0, own.gemm_fp8)):
            want = kn.evaluate(jax.tree.map(jnp.asarray, fit), kn.gemm_terms(hw, m, n, k, fp8))
            got = kn.gemm_seconds(kn.load_kernel_fit(gpu), hw, m, n, k, fp8)
            np.testing.assert_allclose(got, want, rtol=1e-12)
        b, ctx = np.exp(rng.uniform(0, np.log(512), 16)), np.exp(rng.uniform(0, np.log(200000), 16))
        want = kn.evaluate(jax.tree.map(jnp.asarray, own.generation_bf16),
                           kn.generation_terms(hw, b, ctx, 8.0, 1.0, 128.0, 0.0))
        np.testing.assert_allclose(kn.generation_seconds(kn.load_kernel_fit(gpu), hw, b, ctx, 8.0, 1.0, 128.0), want,
                                   rtol=1e-12)
        want = kn.evaluate(jax.tree.map(jnp.asarray, own.generation_fp8),
                           kn.generation_terms(hw, b, ctx, 16.0, 2.0, 128.0, 1.0))
        np.testing.assert_allclose(kn.generation_seconds(kn.load_kernel_fit(gpu), hw, b, ctx, 16.0, 2.0, 128.0, 1.0),
                                   want, rtol=1e-12)
        q, pre = np.exp(rng.uniform(0, np.log(20000), 16)), rng.uniform(0, 30000, 16)
        for fp8, fit in ((0.0, own.context_bf16), (1.0, own.context_fp8)):
            want = kn.evaluate(jax.tree.map(jnp.asarray, fit), kn.context_terms(hw, 2.0, q, pre, 8.0, 1.0, 128.0, fp8))
            got = kn.context_seconds(kn.load_kernel_fit(gpu), hw, 2.0, q, pre, 8.0, 1.0, 128.0, fp8)
            np.testing.assert_allclose(got, want, rtol=1e-12)
        e = np.exp(rng.uniform(np.log(1e3), np.log(1e9), 16))
        want = kn.evaluate(jax.tree.map(jnp.asarray, own.allreduce[1]), kn.allreduce_terms(hw, e, 4.0))
        np.testing.assert_allclose(kn.allreduce_seconds(kn.load_kernel_fit(gpu), hw, e, 4.0), want, rtol=1e-12)


def test_engine_terms_by_hand():
    """prefill = composed kernels + overhead + L (overhead_layer + passes T hidden 2 / HBM bandwidth)."""
    hw, md = catalog.load_hardware(H100), catalog.load_model("llama-3.1-70b")
    kern = kn.load_kernel_fit(H100)
    for tokens, tp in ((512.0, 2.0), (8192.0, 8.0)):
        extra = 1.5e-3 + 80 * (1.2e-5 + 9.0 * tokens * 8192 * 2 / 3.35e12)
        want = float(ops.prefill_iteration_seconds(hw, md, kern, tokens, 0.0, tp)) + extra
        assert float(lat.prefill_seconds(hw, md, ENGINE, tokens, tp)) == pytest.approx(want, rel=1e-12)
    want = float(ops.decode_iteration_seconds(hw, md, kern, 32.0, 3000.0, 4.0, 1.0)) + 1.5e-3 + 80 * (
        1.2e-5 + 9.0 * 32 * 8192 * 2 / 3.35e12)
    assert float(lat.decode_seconds(hw, md, ENGINE, 32.0, 3000.0, 4.0, 1.0)) == pytest.approx(want, rel=1e-12)


def _point(hw=H100, model="llama-3.1-70b", fp8=0.0):
    sc = Scenario.build(input_len=2000.0, output_len=300.0, ttft=2.0, tpot=0.05, fp8=fp8)
    return Point(catalog.load_hardware(hw), catalog.load_model(model), ENGINE, sc)


@pytest.mark.parametrize("tp", [1.0, 8.0])
def test_decode_branches_follow_the_composed_step(tp):
    """The max of the branches is a convex minorant of the directly composed decode step at the knots: equal where
    the step is convex there, below it where a measured bump is not (the kernels are not convex in the batch
    everywhere). At the knots and halfway between them (log scale) it stays within 8 % of the direct step (measured
    for H100, Llama-3.1-70B at context 2150: 5.1 % at TP 1, 7.3 % at TP 8, below bumps of the measured tables)."""
    p = _point()
    ctx = 2150.0
    br = common.decode_affine(p, jnp.asarray(tp), jnp.asarray(ctx))
    direct = lambda b: float(lat.decode_seconds(p.hw, p.model, ENGINE, b, ctx, tp))  # noqa: E731
    knots = np.asarray(common.DECODE_KNOTS)
    at = np.asarray([float(common.affine_time(br, b)) / direct(b) - 1.0 for b in knots])
    assert np.all(at <= 1e-9), at
    assert np.sum(np.abs(at) < 1e-9) >= len(knots) // 3, at  # a third of the knots at least are on the envelope
    mids = np.sqrt(knots[:-1] * knots[1:])
    between = np.asarray([float(common.affine_time(br, b)) / direct(b) - 1.0 for b in mids])
    assert np.all(np.abs(np.concatenate([at, between])) < 0.08), (at, between)



@pytest.mark.parametrize("tp", [4.0, 8.0])
def test_decode_pool_rate_is_set_by_a_constraint_and_differentiates(tp):
    """The decode pool's largest compliant rate sits where TPOT or KV memory binds, and its implicit-function
    derivative in the prompt length equals central differences of the solver. (With every secant slope of the
    decode envelope kept, a small-batch bump of the measured kernels made the batch fixed point diverge at
    lam n slope = 1, far below both limits: with the calibrated engine, H100, BF16, 3000/400 tokens at TP 4, 3.4
    instead of 10.3 requests/s, and a derivative 77x too large.)"""
    from frontier_jax.costmodel import operating_point as op
    from frontier_jax.costmodel import search
    from frontier_jax.costmodel.arch import disaggregated

    sz = search.Sizing(jnp.asarray(jnp.nan), jnp.asarray(0.0), jnp.asarray(1.0))  # fluid, one instance per queue

    def point(i):
        sc = Scenario.build(input_len=i, output_len=400.0, ttft=2.0, tpot=0.05)
        return Point(catalog.load_hardware(H100), catalog.load_model("llama-3.1-70b"), ENGINE, sc)

    rate = jax.jit(lambda i: op.max_rate(search._decode_fn, search._decode_upper, (point(i), sz, tp, None)))
    i0, h = jnp.asarray(3000.0), 1e-2
    lam, dlam = jax.jit(lambda i: jax.jvp(rate, (i,), (jnp.ones_like(i),)))(i0)
    latency = disaggregated.decode_latency(point(i0), tp, lam, search.pool_at(sz, lam))
    assert max(float(t) for t in op.constraint_terms(latency, point(i0).sc)) == pytest.approx(0.0, abs=1e-9)
    fd = (rate(i0 + h) - rate(i0 - h)) / (2.0 * h)
    assert float(dlam) == pytest.approx(float(fd), rel=1e-5)


def test_gpus_without_tables_take_the_closest_tabled_gpu():
    """A40 and A100 PCIe have no kernel tables: they use the A100 SXM fits with their own peaks, and say so."""
    for gpu in ("a40-48gb", "a100-80gb-pcie"):
        assert int(catalog.load_hardware(gpu).kernel_gpu) == kn.GPUS.index(A100)
        assert A100 in catalog.kernel_path(gpu)
    assert catalog.kernel_path(H100) == "its own measured kernel tables"
    # the A40 streams the weights at 696 GB/s against the A100's 2039: a bandwidth-bound decode step is slower by
    # most of that ratio (2.9x; fixed kernel latencies and the engine terms do not scale)
    md = catalog.load_model("llama-3.1-8b")
    t = {g: float(lat.decode_seconds(catalog.load_hardware(g), md, ENGINE, 1.0, 1000.0, 1.0)) for g in ("a40-48gb", A100)}
    assert 1.8 < t["a40-48gb"] / t[A100] < 2.93


def test_a_hardware_object_without_an_index_picks_by_peaks():
    hw = catalog.load_hardware(H100)._replace(kernel_gpu=jnp.asarray(-1.0))
    assert int(kn.kernel_set(hw).gpu) == kn.GPUS.index(H100)
    md = catalog.load_model("llama-3.1-8b")
    assert float(lat.decode_seconds(hw, md, ENGINE, 4.0, 500.0, 1.0)) == float(
        lat.decode_seconds(catalog.load_hardware(H100), md, ENGINE, 4.0, 500.0, 1.0))


def test_roofline_and_kernel_engines_do_not_mix_in_one_sweep():
    with pytest.raises(FrontierError, match="separate run"):
        catalog.stacked_efficiency(("current", "current-kernels"))
    stacked = catalog.stacked_efficiency(("current-kernels", "vllm-2023-kernels"))
    assert isinstance(stacked, KernelEngine) and stacked.overhead.shape == (2,)


def test_kernel_engine_terms_are_physical():
    """The fitted engine terms stay in a physical range: a per-iteration overhead between 0.1 and 20 ms, at most
    50 us of small kernels per layer, and at most 40 activation passes per layer (RMSNorm, rotary, SiLU-and-mul
    and residual adds make about 10). Not asked of vllm-2023-kernels: its terms also absorb the 2023 engine's slower
    kernels (docs/model.md section 9)."""
    for engine in ("current-kernels",):
        e = catalog.load_efficiency(engine)
        assert 1e-4 <= float(e.overhead) <= 2e-2, (engine, e)
        assert float(e.overhead_layer) <= 5e-5, (engine, e)
        assert float(e.elementwise_passes) <= 40.0, (engine, e)


# ---------------------------------------------------------------------------------------------------------------
# End to end on the measured serving runs (issue 18's targets; docs/model.md section 10). The report in
# calibration.json holds the leave-one-group-out errors (each group predicted by a fit that never saw it); the
# in-fit errors are recomputed here from the stored terms, so the report is what the model gives.

def _serving_errors():
    from frontier_jax.calibration import fit as F
    d = F.serving_data()
    ttft, tpot = jax.jit(lambda e: F.predict_serving(e, F._arrays(d)))(catalog.load_efficiency("current-kernels"))
    return d, np.asarray(ttft) / np.asarray(d["ttft"]) - 1.0, np.asarray(tpot) / np.asarray(d["tpot"]) - 1.0


@pytest.fixture(scope="module")
def serving():
    return _serving_errors()


def _report():
    return catalog.calibration_record("current-kernels")["report"]


def test_the_stored_report_is_what_the_model_gives(serving):
    _, e_ttft, e_tpot = serving
    fit = _report()["fit"]
    assert np.mean(np.abs(e_tpot)) == pytest.approx(fit["tpot"]["mean_abs_rel_error"], rel=1e-6)
    assert np.mean(np.abs(e_ttft)) == pytest.approx(fit["ttft"]["mean_abs_rel_error"], rel=1e-6)
    from frontier_jax.calibration.fit import serving_budget
    assert _report()["token_budget"] == serving_budget(catalog.load_efficiency("current-kernels")) == 8192.0


GROUPS = ("llama-3.1-70b/fp8/TP2", "llama-3.1-70b/fp8/TP4", "llama-3.1-70b/fp8/TP8", "qwen3-32b/bf16/TP2",
          "qwen3-32b/bf16/TP4", "qwen3-32b/bf16/TP8", "qwen3-32b/fp8/TP1", "qwen3-32b/fp8/TP2", "qwen3-32b/fp8/TP8")
# measured misses (calibration.json report): one-row groups whose TPOT the model puts 1.8x and 2.2x above the run
# (qwen3-32b/fp8/TP8 missed at 15.1 % until the bracketed chunked batch solve of 2026-12-07: 10.5 %; 6.3 % since
# the refit at vLLM's H100 token budget, 8192; 5.2 % with each FP8 run read with its own KV cache)
# Both runs' recorded configurations need 96 % and 99 % of peak FP8 FLOP/s and HBM bandwidth in every kernel
# (calibration.peak_bound; no other run needs more than 64 %, tests/test_peak_bound.py), and their `concurrency` is
# AIConfigurator's per-worker batch_size, not a recorded client count (docs/model.md section 10).
TPOT_MISSES = {"qwen3-32b/fp8/TP1": "78.1 % (one run, at 0.96 of its peak bound)",
               "qwen3-32b/fp8/TP2": "119.5 % (one run, at 0.99 of its peak bound)"}


@pytest.mark.parametrize("group", [pytest.param(g, marks=pytest.mark.xfail(
    strict=True, reason=f"TPOT leave-one-group-out error {TPOT_MISSES[g]}")) if g in TPOT_MISSES else g
    for g in GROUPS])
def test_tpot_leave_one_group_out_within_15_percent(group):
    """Issue 18: mean TPOT error at most 15 % for every (model, precision, TP) group left out of the fit."""
    logo = _report()["leave_one_group_out"]
    assert set(logo) == set(GROUPS)
    assert logo[group]["tpot"] <= 0.15, logo[group]


@pytest.mark.xfail(strict=True, reason="TTFT leave-one-group-out mean 51.7 % over all rows (target 30 %); prompts "
                   "of 4000 tokens or more: median 56.0 % (target 25 %), every one predicted short. The closed loop's "
                   "Poisson arrivals miss the benchmark's synchronised waves (docs/model.md section 10)")
def test_ttft_leave_one_group_out_within_30_percent():
    rep = _report()
    assert rep["leave_one_group_out_all_rows"]["ttft"]["mean_abs_rel_error"] <= 0.30
    assert rep["long_prompt_ttft"]["logo_median_abs_rel_error"] <= 0.25


@pytest.mark.parametrize("engine", ["current", "current-kernels"])
def test_the_fit_gradient_is_finite_compiled(engine):
    """The calibration loss's reverse-mode gradient, compiled with the measured runs as arguments (as every fit and
    refit computes it), is finite at the starting point on all runs: a NaN component there is zeroed by the fit,
    which then never leaves its prior (docs/reliability.md)."""
    from frontier_jax.calibration import fit
    d = fit.serving_data()
    form = fit.engine_form(engine)
    u = fit.from_params(fit.KERNEL_PRIOR if form is fit.KernelEngine else fit.PRIOR)
    value, grad = fit._compiled(engine)[1](u, fit._arrays(d), jnp.ones(len(d["group"]), bool))
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(np.asarray(grad))) and np.any(np.asarray(grad) != 0.0), grad

"""Kernel latencies from measured tables and the operation-level iteration time (issue 18, phase 1).

Reads only the copied tables in frontier_jax/data/kernels/ and the fit in frontier_jax/data/kernel_fit.json.
"""
import csv
import gzip

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frontier_jax.calibration import kernels as kn
from frontier_jax.costmodel import operations as ops
from frontier_jax.costmodel.catalog import load_hardware, load_model
from frontier_jax.resources import data_file

H100 = "h100-80gb-sxm"
MEDIAN_TARGET, P90_TARGET = 0.05, 0.15  # issue 18


@pytest.fixture(scope="module")
def h100():
    return load_hardware(H100), kn.load_kernel_fit(H100)


def _llama70b_layer(kv_heads=8.0):
    """Llama-3.1-70B shapes (models/llama-3.1-70b.toml) with one layer; kv_heads changeable."""
    return load_model("llama-3.1-70b")._replace(layers=jnp.asarray(1.0), kv_heads=jnp.asarray(kv_heads))


def test_composed_equals_hand_sum_of_fitted_ops(h100):
    """(a) One layer + LM head of Llama-3.1-70B, TP 8, a 2048-token prefill: the shapes written out by hand."""
    hw, fit = h100
    model = _llama70b_layer()
    got = ops.prefill_iteration_seconds(hw, model, fit, 2048.0, 0.0, 8.0)
    g = lambda m, n, k: kn.gemm_seconds(fit, hw, m, n, k, 0.0)  # noqa: E731
    want = (g(2048, (8 + 2) * 128, 8192)       # QKV: 64/8 query heads + 2 x 8/8 KV heads, head_dim 128
            + kn.context_seconds(fit, hw, 1, 2048, 0, 8, 1, 128)
            + g(2048, 8192, 8 * 128)           # output projection
            + g(2048, 2 * 28672 / 8, 8192)     # gate + up
            + g(2048, 8192, 28672 / 8)         # down
            + 2 * kn.allreduce_seconds(fit, hw, 2048 * 8192, 8)
            + kn.gemm_seconds(fit, hw, 1, 128256 / 8, 8192, 0.0))  # LM head, one sampled token
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # FP8 decode: FP8 GEMMs and KV, LM head in bf16
    got = ops.decode_iteration_seconds(hw, model, fit, 64.0, 4095.0, 8.0, fp8=1.0)
    g8 = lambda m, n, k: kn.gemm_seconds(fit, hw, m, n, k, 1.0)  # noqa: E731
    want = (g8(64, 1280, 8192) + kn.generation_seconds(fit, hw, 64, 4095, 8, 1, 128, 1.0) + g8(64, 8192, 1024)
            + g8(64, 7168, 8192) + g8(64, 8192, 3584) + 2 * kn.allreduce_seconds(fit, hw, 64 * 8192, 8)
            + kn.gemm_seconds(fit, hw, 64, 16032, 8192, 0.0))
    np.testing.assert_allclose(got, want, rtol=1e-12)


def _rows(name, **match):
    with gzip.open(data_file(f"kernels/{name}.csv.gz"), "rt", newline="") as f:
        hits = [r for r in csv.DictReader(f) if all(r[k] == str(v) for k, v in match.items())]
    assert len(hits) == 1, (name, match, len(hits))
    return float(hits[0]["latency_ms"]) * 1e-3


def test_composed_layer_against_measured_rows(h100):
    """(b) One layer summed from the measured rows of exactly these shapes. Llama-3.1-70B-like: 16 KV heads, so that
    every GEMM shape at TP 8 is in the table (8 KV heads gives a QKV n of 1280, not measured)."""
    hw, fit = h100
    model = _llama70b_layer(kv_heads=16.0)
    gemm = lambda m, n, k: _rows("gemm", hardware=H100, gemm_dtype="bfloat16", m=m, n=n, k=k)  # noqa: E731
    ar = lambda e: _rows("allreduce", hardware=H100, impl="vLLM_custom_graph", num_gpus=8, message_size=e)  # noqa
    attn = dict(hardware=H100, kv_cache_dtype="bfloat16", num_heads=8, num_key_value_heads=2, head_dim=128)
    # prefill of 2048 tokens
    measured = (gemm(2048, 1536, 8192) + _rows("context_attention", **attn, batch_size=1, isl=2048)
                + gemm(2048, 8192, 1024) + gemm(2048, 7168, 8192) + gemm(2048, 8192, 3584) + 2 * ar(2048 * 8192))
    parts = ops.iteration_ops(hw, model, fit, 1.0, 2048.0, 0.0, 0.0, 1.0, 1.0, 8.0)
    # in-sample shapes: the fit reproduces each row up to the float16 residual grid; 5 % = the median target
    np.testing.assert_allclose(parts.layer(), measured, rtol=MEDIAN_TARGET)
    # decode of 64 sequences at KV length 4095
    measured = (gemm(64, 1536, 8192) + _rows("generation_attention", **attn, batch_size=64, step=4095)
                + gemm(64, 8192, 1024) + gemm(64, 7168, 8192) + gemm(64, 8192, 3584) + 2 * ar(64 * 8192))
    parts = ops.iteration_ops(hw, model, fit, 0.0, 0.0, 0.0, 64.0, 4095.0, 64.0, 8.0)
    np.testing.assert_allclose(parts.layer(), measured, rtol=MEDIAN_TARGET)


# Measured held-out errors that miss the target (python3 -m frontier_jax.calibration.kernels --report; stored in
# kernel_fit.json): (gpu, op, variant) -> (median, p90).
MISSED = {
    (H100, "context_attention", "bfloat16"): (0.048, 0.159),
    (H100, "context_attention", "fp8"): (0.049, 0.166),
    ("h200-141gb-sxm", "context_attention", "bfloat16"): (0.049, 0.159),
    ("h200-141gb-sxm", "context_attention", "fp8"): (0.043, 0.152),
    ("a100-80gb-sxm", "generation_attention", "bfloat16"): (0.079, 0.308),
    ("a100-80gb-sxm", "allreduce", "2"): (0.015, 0.295),
    ("a100-80gb-sxm", "allreduce", "4"): (0.010, 0.224),
    ("a100-80gb-sxm", "allreduce", "8"): (0.162, 0.509),
    (H100, "allreduce", "2"): (0.059, 0.124),
}
_STORED = {(e["gpu"], e["op"], e["variant"]): e for e in kn.read_fit_file()["heldout_error"]}


def _case(key):
    if key in MISSED:
        med, p90 = MISSED[key]
        return pytest.param(key, marks=pytest.mark.xfail(
            strict=True, reason=f"held-out median {100 * med:.1f} %, p90 {100 * p90:.1f} % (target 5 %, 15 %)"))
    return key


@pytest.mark.parametrize("key", [_case(k) for k in _STORED], ids=lambda k: "/".join(k))
def test_heldout_error_meets_issue_targets(key):
    """(c) Every fifth (n, k) pair / (heads, kv_heads, head_dim) / message size held out of the fit."""
    e = _STORED[key]
    assert e["median"] <= MEDIAN_TARGET and e["p90"] <= P90_TARGET, e


def test_stored_heldout_errors_are_reproduced():
    """The stored held-out errors are what the fitting code gives now (H100 bf16 GEMM and every all-reduce)."""
    cols = {op: kn.table_rows(op) for op in ("gemm", "allreduce")}
    for gpu, op, v in [(H100, "gemm", "bfloat16")] + [(g, "allreduce", t) for g in kn.GPUS for t in (2, 4, 8)]:
        d, sec, held = kn.group_data(cols[op], op, gpu, v)
        terms = kn.terms_of(op, load_hardware(gpu), d, v)
        fit = kn.fit_op(kn._subset(terms, ~held), sec[~held])
        med, p90, _ = kn._errors(fit, kn._subset(terms, held), sec[held])
        stored = _STORED[(gpu, op, str(v))]
        assert abs(med - stored["median"]) < 2e-3 and abs(p90 - stored["p90"]) < 2e-3, (gpu, op, v, med, p90)


def test_sources_hashes_match_copied_tables():
    """kernel_fit.json names the sha256 of the tables it was fitted on."""
    assert kn.read_fit_file()["sources"] == kn.table_hashes()


def test_gradients_finite_and_vmap_equals_loop(h100):
    """(d) jax.grad of every iteration function is finite; vmap over mixed inputs equals a Python loop."""
    hw, fit = h100
    model = load_model("llama-3.1-70b")

    def mixed(x):
        batch, context, chunk, prefix, tp = x
        return ops.mixed_iteration_seconds(hw, model, fit, batch, context, chunk, prefix, tp)

    x0 = jnp.asarray([32.0, 1500.0, 512.0, 700.0, 4.0])
    g = jax.grad(mixed)(x0)
    # finite only: the measured tables are not monotone in every size (docs/model.md), so neither is the fit
    assert np.all(np.isfinite(g[:4])), g
    g = jax.grad(lambda t, p: ops.prefill_iteration_seconds(hw, model, fit, t, p, 2.0, fp8=1.0), (0, 1))(3000., 0.)
    assert np.all(np.isfinite(g))
    g = jax.grad(lambda b, c: ops.decode_iteration_seconds(hw, model, fit, b, c, 1.0), (0, 1))(1.0, 10.0)
    assert np.all(np.isfinite(g))
    g = jax.grad(mixed)(x0.at[2].set(0.0))  # no prefill chunk: the masked branch's gradient stays finite
    assert np.all(np.isfinite(g))
    xs = jnp.asarray([[1.0, 10.0, 0.0, 0.0, 1.0], [64.0, 4000.0, 2048.0, 0.0, 8.0],
                      [300.0, 20000.0, 256.0, 9000.0, 2.0], [0.0, 1.0, 8192.0, 100.0, 4.0]])
    np.testing.assert_allclose(jax.vmap(mixed)(xs), [mixed(x) for x in xs], rtol=1e-12)


def test_one_compile_per_shape(h100):
    """(e) A jitted iteration traces once per input shape, not once per value."""
    hw, fit = h100
    model = load_model("llama-3.1-70b")
    traces = []

    @jax.jit
    def f(batch, context, tp):
        traces.append(1)
        return ops.decode_iteration_seconds(hw, model, fit, batch, context, tp)

    for b, c, t in [(1.0, 100.0, 1.0), (64.0, 4000.0, 8.0), (7.0, 9.0, 2.0)]:
        f(jnp.asarray(b), jnp.asarray(c), jnp.asarray(t))
    assert len(traces) == 1
    f(jnp.ones(3), jnp.ones(3), jnp.ones(3))
    f(2 * jnp.ones(3), jnp.ones(3), 4 * jnp.ones(3))
    assert len(traces) == 2

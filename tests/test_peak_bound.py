"""The serving runs against the bound that peak FLOP/s and HBM bandwidth put on a closed-loop cycle
(frontier_jax.calibration.peak_bound; docs/model.md section 10): one run checked against the bound worked by hand
from the Hugging Face shapes and the H100 datasheet, and the two runs the model misses on TPOT singled out by it."""
from __future__ import annotations

import math

import pytest

from frontier_jax.calibration import peak_bound

# H100 SXM datasheet (hardware/h100-80gb-sxm.toml): 1979 TFLOP/s dense FP8, 3.35 TB/s HBM3.
FP8_FLOPS, HBM = 1979e12, 3.35e12
# Qwen3-32B config.json: 64 layers, hidden 5120, 64 query and 8 KV heads of 128, intermediate 25600, vocab 151936.
QWEN_LINEAR = 64 * (5120 * (64 + 2 * 8) * 128 + 64 * 128 * 5120 + 3 * 5120 * 25600) + 5120 * 151936
QWEN_KV_FP8 = 2 * 64 * 8 * 128 * 1  # bytes per token, K and V, FP8


@pytest.fixture(scope="module")
def runs():
    return peak_bound.serving_bounds(8192.0)


def test_the_linear_weights_are_the_configs():
    from frontier_jax.costmodel.catalog import load_model
    assert peak_bound.linear_params(load_model("qwen3-32b")) == QWEN_LINEAR
    assert QWEN_LINEAR == pytest.approx(32.0e9, rel=0.01)  # 32.8 B parameters less the 0.78 B input embedding


def test_one_run_by_hand(runs):
    """Qwen3-32B FP8 on two H100s, 4000/1000 tokens, 48 clients (measured TTFT 184.6 ms, TPOT 11.63 ms)."""
    r = runs[(runs.model == "qwen3-32b") & (runs.precision == "fp8") & (runs.tp == 2)].iloc[0]
    assert (r.input_len, r.output_len, r.concurrency) == (4000, 1000, 48)
    weights = QWEN_LINEAR * 1 / 2 / HBM                          # one read of half the FP8 weights per iteration
    prompts = 48 * 2 * QWEN_LINEAR * 4000 / 2 / FP8_FLOPS         # 48 prompts' GEMM FLOPs per GPU
    kv = 48 * (999 * 4000 + 999 * 998 / 2) * QWEN_KV_FP8 / 2 / HBM  # each decode reads the cache before it
    prompt_iterations = 48 * (1 + math.ceil(4000 / (8192 - 48)))  # = 96: a prompt spans at most two iterations
    bound = (1000 - prompt_iterations) * weights + prompts + kv
    cycle = (184.59487421875 + 999 * 11.631857811811813) / 1e3
    assert r.bound_s == pytest.approx(bound, rel=1e-12)
    assert r.cycle_s == pytest.approx(cycle, rel=1e-12)
    assert r.ratio == pytest.approx(bound / cycle, rel=1e-12) and bound / cycle > 0.95


def test_the_tpot_misses_are_the_runs_at_their_bound(runs):
    """The model's two TPOT misses (tests/test_kernel_engine.py, 1.8x and 2.2x too slow) are the only runs whose
    recorded configuration needs more than 90 % of peak in every kernel; no other run needs more than 65 %."""
    at_bound = runs[runs.ratio > 0.9]
    assert set(at_bound.group) == {"qwen3-32b/fp8/TP1", "qwen3-32b/fp8/TP2"}
    assert len(at_bound) == 2 and at_bound.ratio.min() > 0.95
    assert runs[runs.ratio <= 0.9].ratio.max() < 0.65
    assert (runs.ratio > 0).all() and runs.bound_s.notna().all()


def test_a_smaller_token_budget_only_loosens_the_bound(runs):
    """Fewer tokens per iteration split prompts over more iterations, so fewer iterations are known to read only the
    weights: the bound can only fall."""
    small = peak_bound.serving_bounds(2048.0)
    assert (small.bound_s <= runs.bound_s + 1e-12).all()
    assert set(small[small.ratio > 0.9].group) == {"qwen3-32b/fp8/TP1", "qwen3-32b/fp8/TP2"}


@pytest.mark.parametrize("budget", ["100", "nan"])
def test_a_budget_no_larger_than_the_runs_concurrency_is_one_line(budget, capsys):
    with pytest.raises(SystemExit) as e:
        peak_bound.main(["--budget", budget])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "--budget" in err and "144" in err

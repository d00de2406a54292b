"""Closed-form p99 TTFT and p99 TPOT against the discrete-event simulator on random scenarios (issue 2, item 4).

The issue's target is a median absolute error <= 10 % and a 90th percentile <= 25 %; docs/model.md reports what
is reached. The assertions below are the regression guard at the level currently reached (a looser bound than
the target where the target is not met), so a change that degrades the agreement fails CI.
"""
import numpy as np
import pytest

from frontier_jax.sim import validation

N_SCENARIOS = 51


@pytest.fixture(scope="module")
def results():
    return validation.run(N_SCENARIOS, seed=0, n_requests=12000)


def test_enough_scenarios_up_to_high_utilisation(results):
    assert len(results) == N_SCENARIOS
    loads = [r["case"].load for r in results]
    assert max(loads) > 0.8 and min(loads) < 0.2
    assert {r["case"].arch for r in results} == {"colocated", "chunked", "disaggregated"}


def test_ttft_agreement(results):
    s = validation.summarise(results)["all/ttft"]
    assert s["median"] <= 0.12
    assert s["p90"] <= 0.30


def test_tpot_agreement(results):
    s = validation.summarise(results)["all/tpot"]
    assert s["median"] <= 0.10
    assert s["p90"] <= 0.40


def test_every_comparison_is_finite(results):
    for r in results:
        assert np.isfinite(r["ttft"]) and np.isfinite(r["sim_ttft"]), r["case"]
        assert np.isfinite(r["tpot"]) and np.isfinite(r["sim_tpot"]), r["case"]


# ---------------------------------------------------------------------------------------------------- pools
# Pools of c instances behind each dispatch policy (issue 19, item 4): the closed form with Pool(c, Dispatch.X) at
# the per-instance rate against the simulator's pool at c times that rate, every architecture. The full table
# (c in 1, 2, 4, 8, 16, 64; `python -m frontier_jax.sim.validation --pools --per-size 3 --markdown`) is for the
# docs; the test runs a representative subset: c in 2, 8, 64, two random configurations per architecture and size,
# each under random, central and JSQ dispatch (54 comparisons, ~30 s).
# Measured on this subset (closed form of commit 6cb7888: no decode stalls while an instance is idle, no compounding
# of stalls in a pool; simulator JSQ = shortest prompt queue, ties to the fewest decodes): p99 TTFT |err| median
# 3.9 %, p90 23.0 %; p99 TPOT median 6.5 %, p90 37.3 %. The target is median <= 10 %, p90 <= 25 %: the
# medians and the TTFT p90 meet it (asserted), the TPOT p90 does not (xfail below). The largest errors: colocated
# TPOT under central and JSQ (closed form up to +103 %: behind a router each instance's prompts arrive with an
# inter-arrival SCV of 0.2-0.4, not Poisson's 1, and the simulated p99 TPOT is 1.1-2.3x its mean against 1.6-5.6x
# under random dispatch, while the closed form's p99 stays close to random dispatch's), chunked TPOT under random
# dispatch (-49 %), and TTFT of chunked pools and of disaggregated random pools (+-30 %).
POOL_SIZES = (2, 8, 64)
POOL_PER_SIZE = 2
TARGET_MEDIAN, TARGET_P90 = 0.10, 0.25


@pytest.fixture(scope="module")
def pool_results():
    return validation.run_pools(POOL_PER_SIZE, seed=0, n_requests=12000, sizes=POOL_SIZES)


def test_pools_cover_sizes_policies_and_architectures(pool_results):
    assert len(pool_results) == len(POOL_SIZES) * POOL_PER_SIZE * 3 * 3
    assert {(r["servers"], r["dispatch"], r["case"].arch) for r in pool_results} == {
        (c, d, a) for c in POOL_SIZES for d in validation.POOL_DISPATCHES for a in validation.ARCHS}
    loads = [r["case"].load for r in pool_results]
    assert max(loads) > 0.7 and min(loads) < 0.3
    for r in pool_results:
        assert np.isfinite(r["ttft"]) and np.isfinite(r["sim_ttft"]), r
        assert np.isfinite(r["tpot"]) and np.isfinite(r["sim_tpot"]), r


def test_pools_median_errors_meet_the_target(pool_results):
    s = validation.summarise_pools(pool_results)
    assert s["all/all/ttft"]["median"] <= TARGET_MEDIAN
    assert s["all/all/tpot"]["median"] <= TARGET_MEDIAN


def test_pools_agreement_level_reached(pool_results):
    """The regression guard at the level reached (measured: TTFT median 3.9 %, p90 23.0 %; TPOT median 6.5 %,
    p90 37.3 %; disaggregated TTFT p90 22.0 %, TPOT p90 14.8 %). Since the prefill pool reserves its link wait a
    second time for the receiving end (commit 47c679d) the disaggregated TTFT p90 is 25.4 %: the simulator has no
    receiving-link queue, so the closed form is conservative there by that reserve."""
    s = validation.summarise_pools(pool_results)
    assert s["all/all/ttft"]["median"] <= 0.05
    assert s["all/all/ttft"]["p90"] <= 0.25
    assert s["all/all/tpot"]["median"] <= 0.08
    assert s["all/all/tpot"]["p90"] <= 0.40
    # the disaggregated pools (prefill-only servers, decode batches without prefill stalls) are the close ones
    assert s["all/disaggregated/ttft"]["p90"] <= 0.26
    assert s["all/disaggregated/tpot"]["p90"] <= 0.17


def test_pools_ttft_target(pool_results):
    """Issue 19's p90 target for p99 TTFT (measured on the subset: 23.0 %)."""
    assert validation.summarise_pools(pool_results)["all/all/ttft"]["p90"] <= TARGET_P90


@pytest.mark.xfail(strict=True, reason="issue 19 target p90 <= 25 % not met: p99 TPOT |err| p90 37.3 % (median 6.5 %) "
                   "on the pools subset; worst: colocated under central/JSQ (closed form up to +103 %: behind a "
                   "router an instance's prompts arrive with inter-arrival SCV 0.2-0.4, not 1, and the simulated p99 "
                   "TPOT is 1.1-2.3x its mean, 1.6-5.6x under random; the closed form's p99 stays near random's)")
def test_pools_tpot_target(pool_results):
    assert validation.summarise_pools(pool_results)["all/all/tpot"]["p90"] <= TARGET_P90


# ---------------------------------------------------------------------------------------------------- heavy tails
# Issue 19: p99 TTFT against the simulator with lognormal prompts (and outputs) of CV 1 and 2, one instance, nine
# random configurations each (draw_cases(9, seed=11) with the CV replaced; 20,000 requests). Measured (commit of
# this test): CV 1 |err| median 10.2 %, p90 22.4 %; CV 2 median 26.2 %, p90 88.9 %, the closed form low in 7 of 9.
# A lognormal service time has no exponential moment: the true M/G/1 wait is subexponential (one long prompt
# ahead rules the tail), which a Cramer-Lundberg tail over 5 quadrature nodes cannot follow. More nodes make it
# worse (9 nodes: CV 1 median 33 %, CV 2 median 177 %: the exponential tail then follows a far node), so the
# quadrature stays at 5. The worst CV 2 case (Llama-2-13B, mean prompt 5,544) simulates a p99 of 807 s: its
# quadrature underestimates the mean prefill time of prompts far beyond the mean (attention is quadratic), so
# a "23 % load" is near saturation in the simulator.
HEAVY_CASES = 9


@pytest.fixture(scope="module")
def heavy_results():
    import dataclasses
    out = {}
    for cv in (1.0, 2.0):
        out[cv] = [validation.compare(dataclasses.replace(c, cv=cv), n_requests=20000, seed=i)
                   for i, c in enumerate(validation.draw_cases(HEAVY_CASES, seed=11))]
    return out


def _heavy_stats(rs):
    e = np.abs([r["err_ttft"] for r in rs])
    return float(np.median(e)), float(np.quantile(e, 0.9))


def test_heavy_tails_cv1_level_reached(heavy_results):
    """The regression guard at the measured level (CV 1: median 10.2 %, p90 22.4 %)."""
    assert all(np.isfinite(r["ttft"]) and np.isfinite(r["sim_ttft"]) for r in heavy_results[1.0])
    med, p90 = _heavy_stats(heavy_results[1.0])
    assert med <= 0.12 and p90 <= TARGET_P90


@pytest.mark.xfail(strict=True, reason="issue 19 target median <= 10 % just missed at input CV 1: p99 TTFT |err| "
                   "median 10.2 % (p90 22.4 %, within its 25 %) on 9 random single-instance scenarios")
def test_heavy_tails_cv1_target(heavy_results):
    assert _heavy_stats(heavy_results[1.0])[0] <= TARGET_MEDIAN


@pytest.mark.xfail(strict=True, reason="issue 19 target not met at input CV 2: p99 TTFT |err| median 26.2 %, p90 "
                   "88.9 % (closed form low in 7 of 9): a lognormal service has no exponential moment, the wait is "
                   "subexponential, which a Cramer-Lundberg tail over 5 quadrature nodes cannot follow")
def test_heavy_tails_cv2_target(heavy_results):
    med, p90 = _heavy_stats(heavy_results[2.0])
    assert med <= TARGET_MEDIAN and p90 <= TARGET_P90


# ---------------------------------------------------------------------------------------------------- integral pools
# The chunked pools that the integral sizing picks, against the simulator (JSQ, as the sizing assumes by default):
# Llama-3.1-8B on A100s (`current`), 256 output tokens (lognormal CV 0.8), arrival SCV 2, a p90 contract, at most 48
# GPUs: the golden file's points where the bracketed batch solve (docs/model.md section 4.2) moved the answer
# (25 -> 13 and 12 -> 11 instances). The model's pool must meet the contract in the simulator and one instance
# fewer must not.
SIZED = dict(hardware="a100-80gb-sxm", model="llama-3.1-8b", output_len=256, percentile=0.9, total_gpus=48,
             arrival_ca2=2.0, output_cv=0.8)


def _sized_pool(input_len, rate, ttft, tpot):
    import frontier_jax as fj
    ds = fj.evaluate(**SIZED, input_len=input_len, rate=rate, ttft=ttft, tpot=tpot).sel(arch="chunked")
    assert int(ds["feasible"]) == 1
    return int(ds["n_prefill"]), int(ds["tp_prefill"]), int(ds["chunk"]), float(ds["ttft_achieved"])


def _simulated_p90(input_len, rate, n, tp, chunk):
    from frontier_jax.costmodel.catalog import load_efficiency, load_hardware, load_model
    from frontier_jax.costmodel.types import Point, Scenario
    from frontier_jax.sim import simulate
    sc = Scenario.build(input_len=float(input_len), output_len=256.0, ttft=1e9, tpot=1e9, q=0.9)
    p = Point(load_hardware(SIZED["hardware"]), load_model(SIZED["model"]), load_efficiency("current"), sc)
    r = simulate("chunked", validation.iteration_costs(p, float(tp)), rate=rate, input_len=input_len,
                 output_len=("lognormal", 256, 0.8), n_requests=20000, arrival_ca2=2.0, chunk=chunk, n_instances=n,
                 dispatch="jsq", seed=0)
    return float(np.nanquantile(r.ttft, 0.9)), float(np.nanquantile(r.tpot, 0.9))


@pytest.mark.parametrize("input_len, rate", [(8192, 8.0), (1024, 60.0)])
def test_sized_chunked_pool_is_the_smallest_that_meets_the_contract(input_len, rate):
    ttft, tpot = 4.0, 0.08
    n, tp, chunk, _ = _sized_pool(input_len, rate, ttft, tpot)
    sim_ttft, sim_tpot = _simulated_p90(input_len, rate, n, tp, chunk)
    assert sim_ttft <= ttft and sim_tpot <= tpot, (n, tp, chunk, sim_ttft, sim_tpot)
    fewer_ttft, fewer_tpot = _simulated_p90(input_len, rate, n - 1, tp, chunk)
    assert not (fewer_ttft <= ttft and fewer_tpot <= tpot), (n - 1, fewer_ttft, fewer_tpot)


@pytest.mark.xfail(strict=True, reason="the closed-form TTFT tail is low where the chunk holds the whole prompt: "
                   "8,192-token prompts, chunk 8,192, 9 TP4 A100 instances at 8/s, p90 TTFT 0.496 s in the model, "
                   "0.84 s in the simulator (at chunk 2,048 the two agree: 10 instances, 0.497 s and 0.496 s); the "
                   "sizing then picks a pool that misses a 0.5 s contract")
def test_sized_chunked_pool_meets_a_tight_ttft():
    n, tp, chunk, model_ttft = _sized_pool(8192, 8.0, 0.5, 0.08)
    sim_ttft, _ = _simulated_p90(8192, 8.0, n, tp, chunk)
    assert sim_ttft == pytest.approx(model_ttft, rel=0.15), (n, tp, chunk, model_ttft, sim_ttft)

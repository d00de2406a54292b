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
# each under random, central and JSQ dispatch (54 comparisons, ~45 s).
# Measured on this subset (closed form of issue 19 item 4's start): p99 TTFT |err| median 5.3 %, p90 29.1 %;
# p99 TPOT median 7.2 %, p90 69.3 %. The target is median <= 10 %, p90 <= 25 %: the medians meet it, the
# 90th percentiles do not (xfail below). The largest errors: colocated/chunked TPOT under central and JSQ (the
# simulator's pooled router puts a new prompt on an idle or lightly loaded instance, so running decodes are seldom
# stalled, while the closed form keeps each instance's own M/G/1 prefill stalls), and colocated/chunked TTFT under
# JSQ (outstanding requests count the running decodes, so JSQ balances decode batches rather than prompt queues).
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
    """The regression guard at the level reached (measured: TTFT p90 29.1 %, TPOT p90 69.3 %)."""
    s = validation.summarise_pools(pool_results)
    assert s["all/all/ttft"]["median"] <= 0.07
    assert s["all/all/ttft"]["p90"] <= 0.33
    assert s["all/all/tpot"]["median"] <= 0.09
    assert s["all/all/tpot"]["p90"] <= 0.80
    # the disaggregated pools (prefill-only servers, decode batches without prefill stalls) are the close ones
    assert s["all/disaggregated/ttft"]["p90"] <= 0.30
    assert s["all/disaggregated/tpot"]["p90"] <= 0.17


@pytest.mark.xfail(strict=True, reason="issue 19 target p90 <= 25 % not met: p99 TTFT |err| p90 29.1 % (median 5.3 %) "
                   "on the pools subset; worst: colocated/chunked under JSQ (counts decodes, balances batches not "
                   "prompt queues: the simulated TTFT exceeds the closed form's by up to 46 %)")
def test_pools_ttft_target(pool_results):
    assert validation.summarise_pools(pool_results)["all/all/ttft"]["p90"] <= TARGET_P90


@pytest.mark.xfail(strict=True, reason="issue 19 target p90 <= 25 % not met: p99 TPOT |err| p90 69.3 % (median 7.2 %) "
                   "on the pools subset; worst: colocated/chunked under central/JSQ (closed form up to +168 %: the "
                   "router places prompts on idle or light instances, running decodes are seldom stalled; the closed "
                   "form keeps per-instance M/G/1 prefill stalls and only divides the batch variance by c)")
def test_pools_tpot_target(pool_results):
    assert validation.summarise_pools(pool_results)["all/all/tpot"]["p90"] <= TARGET_P90

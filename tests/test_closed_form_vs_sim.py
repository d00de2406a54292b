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

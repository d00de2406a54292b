"""The capacity planner's view (issue 20): ranked configurations (rank 1 is evaluate's answer), pins as data (no
recompilation per pinned value), the assumptions in every answer, the Pareto front, the Python API's names."""
import tomllib
from pathlib import Path

import numpy as np
import pytest

import frontier_jax as fj
from frontier_jax import api
from frontier_jax.planning import BUDGET_GRID, configurations, pareto_mask
from frontier_jax.costmodel.types import Arch, SearchSpace

SCEN = dict(hardware="h100-80gb-sxm", model="llama-3.1-8b", input_len=4000.0, output_len=500.0, ttft=1.0, tpot=0.02)


@pytest.fixture(scope="module")
def answers():
    return fj.evaluate(**SCEN), fj.evaluate(**SCEN, top=3)


def test_rank_one_is_evaluates_answer(answers):
    best, top = answers
    first = top.sel(rank=1)
    for name in ("tp_prefill", "tp_decode", "n_prefill", "chunk", "overlap", "gpus", "reason"):
        np.testing.assert_array_equal(first[name].values, best[name].values, err_msg=name)
    for name in ("cost_per_mtok", "prefill_cost", "decode_cost", "kv_tax", "ttft_achieved", "tpot_achieved",
                 "throughput", "n_decode"):
        np.testing.assert_allclose(first[name].values, best[name].values, rtol=1e-9, err_msg=name)


def test_ranks_sorted_and_hand_checked_columns(answers):
    _, top = answers
    cost = top["cost_per_mtok"].values                     # (rank, arch)
    for a in range(3):
        c = cost[:, a][np.isfinite(cost[:, a])]
        assert c.size >= 2 and np.all(np.diff(c) >= 0)
    np.testing.assert_allclose(top["tokens_per_user"].values, 1.0 / top["tpot_achieved"].values)
    colo = top.sel(arch="colocated")                        # fluid colocated: one instance of tp GPUs
    np.testing.assert_array_equal(colo["gpus"].values, colo["tp_prefill"].values)
    # the colocated runners-up are other TP degrees (TP is its only choice): all distinct
    tps = colo["tp_prefill"].values
    assert len(set(tps[np.isfinite(tps)])) == np.isfinite(tps).sum()
    assert top["rank"].values.tolist() == [1, 2, 3]
    assert top["tokens_per_user"].attrs["units"] == "s-1"


def test_assumptions_in_the_attributes(answers):
    best, top = answers
    for ds in (best, top):
        assert ds.attrs["price"] == 2.40 and ds.attrs["price_date"] == "2026-11"     # hardware/h100-80gb-sxm.toml
        assert ds.attrs["kv_bandwidth"] == 50e9                                        # 400 Gb/s NIC per GPU
        assert ds.attrs["engine"] == "current" and ds.attrs["precision"] == "bf16"
        assert ds.attrs["arrivals"] == "Poisson" and ds.attrs["percentile"] == 0.99


def test_pins_are_data_one_compile_for_every_value(answers):
    best, _ = answers
    before = api._TRACES["kernel"]
    a = fj.evaluate(**SCEN, tp_prefill=2, tp_decode=4)
    b = fj.evaluate(**SCEN, tp_prefill=4, tp_decode=2, price=4.8)
    assert api._TRACES["kernel"] == before                 # neither value traced the program again
    dis = int(Arch.DISAGGREGATED)
    assert a["tp_prefill"].values[dis] == 2 and a["tp_decode"].values[dis] == 4
    assert b["tp_prefill"].values[dis] == 4 and b["tp_decode"].values[dis] == 2
    # the price doubles every cost (price enters linearly): 4.8 / 2.4
    c = fj.evaluate(**SCEN, price=4.8)
    np.testing.assert_allclose(c["cost_per_mtok"].values, 2.0 * best["cost_per_mtok"].values, rtol=1e-12)
    assert c.attrs["price"] == 4.8 and "given" in c.attrs["price_source"]


def test_configurations_cover_each_architecture_once():
    cfgs, valid = configurations(SearchSpace())
    assert valid.sum(axis=0).tolist() == [4, 16, 16]       # TP; TP x chunk; prefill TP x decode TP
    colo = {float(cfgs["tp"][j, 0]) for j in np.flatnonzero(valid[:, 0])}
    assert colo == {1.0, 2.0, 4.0, 8.0}
    dis = {(float(cfgs["tp_prefill"][j, 0]), float(cfgs["tp_decode"][j, 0])) for j in np.flatnonzero(valid[:, 2])}
    assert len(dis) == 16


def test_pareto_mask_by_hand():
    x = np.array([1.0, 2.0, 3.0, 2.0, np.nan])
    y = np.array([5.0, 4.0, 1.0, 3.0, 9.0])
    # (2, 3) is dominated by (2, 4); NaN is never on the front
    assert pareto_mask(x, y).tolist() == [True, True, True, False, False]


def test_python_api_names():
    assert callable(fj.breakeven) and callable(fj.sweep) and callable(fj.pareto) and callable(fj.budget)
    import jax
    assert jax.config.jax_enable_x64                         # float64 by default, as the CLI


def test_budget_is_the_largest_load_on_n_gpus():
    """`budget(N)` against evaluate at fixed rates: its rate fits in N GPUs; 2 grid steps more needs more than N
    GPUs (on one GPU type the cheapest deployment at a rate is the one with the fewest GPUs, since every GPU costs
    the same, so the cap checked after the argmin is the fewest-GPU check); its cost charges all N GPUs."""
    n = 8
    ds = fj.budget(n, **SCEN)
    res = float(ds.attrs["rate_resolution"])
    rates = ds["max_rate"].values
    assert 0 < res < 0.05 and np.isfinite(rates).sum() >= 2
    with open(Path(api.__file__).resolve().parents[1] / "hardware" / f"{SCEN['hardware']}.toml", "rb") as f:
        price = tomllib.load(f)["price"]["value"]
    ok = np.isfinite(rates)
    archs = np.flatnonzero(ok)
    # every architecture's rate and 2 grid steps more in one call, padded to the budget's own grid size so that the
    # program `budget` compiled is reused (a new shape would compile again: ~30 s)
    check = np.stack([rates[archs], rates[archs] * (1 + res) ** 2], axis=1).ravel()
    assert check.size <= BUDGET_GRID
    fits = fj.evaluate(**SCEN, rate=np.concatenate([check, np.full(BUDGET_GRID - check.size, check[0])]))
    for i, a in enumerate(archs):
        assert fits["feasible"].values[2 * i, a] == 1 and fits["gpus"].values[2 * i, a] <= n
        assert not (fits["feasible"].values[2 * i + 1, a] == 1 and fits["gpus"].values[2 * i + 1, a] <= n)
    want = n * price / 3600 * 1e6 / (rates * SCEN["output_len"])
    np.testing.assert_allclose(ds["budget_cost_per_mtok"].values[ok], want[ok], rtol=1e-12)
    assert int(ds["best_arch"]) == int(np.nanargmax(np.where(ok, rates, -np.inf)))

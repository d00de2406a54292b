"""The papers package: systems registry, heterogeneous pools, prefix cache, claims and `reproduce` (quick).

One compiled kernel serves every test here (registry.run_jobs pads every batch to one shape), and `reproduce` runs
once per session; the claims tests read its claims.csv.
"""
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from frontier_jax.errors import FrontierError
from frontier_jax.papers import (SYSTEMS, System, evaluate_system, get_system, register_system,
                                 unregister_system)
from frontier_jax.papers.claims import load_claims
from frontier_jax.papers.registry import plan_system, run_plans

SCENARIO = dict(hardware="a100-80gb-sxm", model="llama-3.1-70b", input_len=4096.0, output_len=256.0, ttft=4.0,
                tpot=0.06, engine="vllm-2023")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from frontier_jax.papers import reproduce
    out = tmp_path_factory.mktemp("papers")
    seen = {}

    def extra(d, quick):
        seen["args"] = (d, quick)
        (d / "extra.txt").write_text("from a hook\n")
        return ["extra.txt"]

    seen["said"] = []
    path = reproduce(out, quick=True, extra_steps=[extra], say=seen["said"].append)
    return out, path, seen


def test_every_builtin_system_evaluates():
    names = ["vllm", "sarathi-serve", "distserve", "splitwise", "mooncake"]
    assert set(names) <= set(SYSTEMS)
    plans = [plan_system(n, **SCENARIO, cache_hit=0.4 if n == "mooncake" else 0.0) for n in names]
    for name, res in zip(names, run_plans(plans)):
        assert res["feasible"][0] == 1, name
        assert np.isfinite(res["cost_per_mtok"][0]) and res["cost_per_mtok"][0] > 0, name
        total = res["prefill_cost"][0] + res["decode_cost"][0] + res["kv_tax"][0] + res["idle_cost"][0]
        assert math.isclose(res["cost_per_mtok"][0], total, rel_tol=1e-9), name
    ds = evaluate_system("distserve", **SCENARIO)
    assert isinstance(ds, xr.Dataset) and ds.attrs["system"] == "distserve"
    assert int(ds.overlap) == 0                                  # DistServe: no layer-wise overlap
    assert ds["cost_per_mtok"].attrs["units"] == "1e-6 USD"


def test_arrays_and_pins():
    ds = evaluate_system("sarathi-serve", **dict(SCENARIO, input_len=[1024.0, 8192.0]), tp=8, chunk=512)
    assert ds.sizes["point"] == 2
    assert np.all(ds.tp_prefill.values == 8) and np.all(ds["chunk"].values == 512)
    assert ds.cost_per_mtok.values[1] > ds.cost_per_mtok.values[0]


def test_splitwise_pools_are_priced_separately():
    kw = dict(SCENARIO, input_len=2048.0)
    kw.pop("hardware")
    a = evaluate_system("splitwise", **kw, decode_price=1.0)
    b = evaluate_system("splitwise", **kw, decode_price=3.0)
    assert a.attrs["hardware"] == "h100-80gb-sxm" and a.attrs["decode_hardware"] == "a100-80gb-sxm"
    assert float(a.prefill_cost) == pytest.approx(float(b.prefill_cost), rel=1e-12)
    assert float(a.kv_tax) == pytest.approx(float(b.kv_tax), rel=1e-12)
    assert float(b.decode_cost) == pytest.approx(3.0 * float(a.decode_cost), rel=1e-9)
    assert float(b.cost_per_mtok) - float(a.cost_per_mtok) == pytest.approx(2.0 * float(a.decode_cost), rel=1e-9)
    # the prefill price moves only the prefill side
    c = evaluate_system("splitwise", **kw, decode_price=1.0, price=2.0 * 2.40)
    assert float(c.decode_cost) == pytest.approx(float(a.decode_cost), rel=1e-12)
    assert float(c.prefill_cost) > float(a.prefill_cost)


def test_separately_priced_pools_match_a_single_gpu_evaluation():
    """The same GPU on both sides at its own catalogue price, priced per pool, is the homogeneous evaluation."""
    kw = dict(SCENARIO, input_len=[1024.0, 4096.0])
    hw = kw.pop("hardware")
    pooled = evaluate_system("splitwise", pools=(hw, hw), decode_price=1.39, **kw)  # the per-pool price path
    single = evaluate_system("splitwise", pools=None, hardware=hw, **kw)
    for v in ("cost_per_mtok", "prefill_cost", "decode_cost", "kv_tax", "goodput", "gpus", "ttft_achieved",
              "tpot_achieved"):
        np.testing.assert_allclose(pooled[v].values, single[v].values, rtol=1e-9, err_msg=v)


def test_mooncake_cache_hit_lowers_prefill_cost_monotonically():
    hits = np.asarray([0.0, 0.2, 0.4, 0.6, 0.8])
    ds = evaluate_system("mooncake", **dict(SCENARIO, input_len=8192.0, ttft=6.0), cache_hit=hits)
    pre = ds.prefill_cost.values
    assert np.all(np.isfinite(pre)) and np.all(np.diff(pre) < 0), pre
    # the cache load is in TTFT, which still meets the bound
    assert np.all(ds.ttft_achieved.values <= 6.0 + 1e-9)


def test_cache_load_time_by_hand():
    """Llama-3.1-70B BF16 KV: 2 x 80 layers x 8 KV heads x 128 x 2 bytes = 327,680 bytes per token. Half of a
    deterministic 8192-token prompt from a global cache over 8 links of 50 GB/s: 0.5 x 8192 x 327,680 / 4e11 s."""
    from frontier_jax.costmodel import inputs
    from frontier_jax.costmodel.arch.disaggregated import cache_load_time
    p, _, _ = inputs.build("h100-80gb-sxm", "llama-3.1-70b", input_len=8192.0, output_len=256.0, ttft=2.0,
                           tpot=0.05, cache_hit=0.5, cache_load_bandwidth=50e9)
    assert float(cache_load_time(p, 8.0)) == pytest.approx(0.5 * 8192 * 327_680 / (8 * 50e9), rel=1e-12)
    free, _, _ = inputs.build("h100-80gb-sxm", "llama-3.1-70b", input_len=8192.0, output_len=256.0, ttft=2.0,
                              tpot=0.05, cache_hit=0.5)
    assert float(cache_load_time(free, 8.0)) == 0.0   # no global cache: a local prefix cache loads nothing


def test_nvlink_and_nic_links():
    d = evaluate_system("distserve", **SCENARIO)
    s = evaluate_system("splitwise", pools=None, **SCENARIO)
    assert float(d.kv_tax) <= float(s.kv_tax)       # NVLink (300 GB/s) taxes less than the 25 GB/s NIC


def test_register_system_and_errors():
    mine = System("my-chunked", "example", "chunked", space_overrides={"chunk": (256, 512)},
                  features={"note": "user system"})
    register_system(mine)
    try:
        assert get_system("my-chunked") is mine
        ds = evaluate_system("my-chunked", **SCENARIO)
        assert int(ds["chunk"]) in (256, 512)
        with pytest.raises(FrontierError):
            register_system(mine)
    finally:
        unregister_system("my-chunked")
    with pytest.raises(FrontierError):
        System("bad", "x", "pipelined")
    with pytest.raises(FrontierError):
        System("bad", "x", "chunked", space_overrides={"chunk": (1, 2, 3, 4, 5)})
    with pytest.raises(FrontierError):
        get_system("nope")
    with pytest.raises(FrontierError):
        evaluate_system("vllm", **SCENARIO, bogus=1)
    capped = evaluate_system("splitwise", **dict(SCENARIO, rate=1.0), total_gpus=16)  # heterogeneous pools, capped
    assert int(capped.feasible) == 0 or float(capped.gpus) <= 16


def test_claims_table_keeps_every_column_and_source():
    shared = load_claims()
    assert {"id", "paper", "metric", "value_low", "value_high", "unit", "where"} <= set(shared.columns)
    assert shared["id"].is_unique and (shared["where"].str.len() > 0).all()
    assert len(shared) >= 17


def test_reproduce_quick_writes_every_artefact(report):
    out, path, seen = report
    assert path == out / "REPORT.md"
    for name in ("claims.csv", "claims.md", "frontier.nc", "frontier.png", "seed.nc", "seed.png", "REPORT.md",
                 "extra.txt"):
        assert (out / name).exists() and (out / name).stat().st_size > 0, name
    assert seen["args"] == (out, True)
    assert [line.split(" ", 1)[0] for line in seen["said"]] == ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"]
    assert seen["said"][3].startswith("[4/5] extra (") and seen["said"][4].startswith("[5/5] REPORT.md (")
    text = path.read_text()
    assert "median |log error|" in text and "extra.txt" in text
    for claim in ("partition", "KV-transfer bandwidth", "A100, H100 and H200"):
        assert claim in text
    with xr.open_dataset(out / "frontier.nc") as ds:
        assert {"hardware", "ttft", "tpot", "system"} <= set(ds.dims)
        assert set(ds["hardware"].values) == {"a100-80gb-sxm", "h100-80gb-sxm", "h200-141gb-sxm"}
        for v in ds.data_vars:
            assert "units" in ds[v].attrs and "long_name" in ds[v].attrs, v
        cost = ds["cost_per_mtok"].values
        front = ds["frontier_cost"].values
        np.testing.assert_allclose(front, np.where(np.isfinite(cost).any(-1), np.nanmin(
            np.where(np.isfinite(cost), cost, np.inf), -1), np.nan))


def test_every_claim_row_has_a_finite_prediction(report):
    out, _, _ = report
    df = pd.read_csv(out / "claims.csv")
    assert list(df["id"]) == list(load_claims()["id"])
    for col in ("id", "paper", "metric", "published", "predicted", "log_error"):
        assert col in df.columns
    assert np.all(np.isfinite(df["predicted"])) and np.all(df["predicted"] > 0)
    np.testing.assert_allclose(df["log_error"], np.log(df["predicted"] / df["published"]), rtol=1e-9)
    off = df[df["log_error"].abs() > math.log(2.0)]
    assert off["explanation"].fillna("").str.len().gt(0).all(), list(off["id"])

"""The cost model of issue 2: decomposition, monotonicity, special cases (gradients and jit/vmap consistency are in
test_model_autodiff.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import frontier_jax as fj
from frontier_jax.costmodel import inputs, queueing
from frontier_jax.costmodel.arch import disaggregated
from frontier_jax.costmodel.arch.disaggregated import Link
from frontier_jax.variables import POINT

N = 6  # every batched evaluate below uses 1-D inputs of this length: one compilation for the module


def batch(**kw):
    base = dict(hardware="h100-80gb-sxm", model="llama-3.1-8b", input_len=np.full(N, 2048.0),
                output_len=np.full(N, 256.0), ttft=np.full(N, 1.0), tpot=np.full(N, 0.05))
    base.update(kw)
    return fj.evaluate(**base)


@pytest.fixture(scope="module")
def spread():
    """Six scenarios from decode-heavy short context to prefill-heavy long context."""
    return batch(input_len=np.array([128.0, 512, 2048, 4096, 8192, 16000]),
                 output_len=np.array([1024.0, 512, 256, 256, 128, 64]),
                 ttft=np.array([0.5, 1, 1, 2, 3, 6]), tpot=np.array([0.02, 0.03, 0.05, 0.05, 0.05, 0.08]))


def test_dataset_contract(spread):
    assert list(spread["arch"].values) == ["colocated", "chunked", "disaggregated"]
    for name in ("cost_per_mtok", "prefill_cost", "decode_cost", "kv_tax", "cost_per_mtok_total", "ttft_achieved",
                 "tpot_achieved", "goodput", "throughput", "gpus", "feasible", "tp_prefill", "tp_decode", "n_prefill",
                 "n_decode", "chunk", "best_arch", "advantage", "reason"):
        assert name in spread and spread[name].attrs["units"] and spread[name].attrs["long_name"], name
        assert spread[name].attrs["units"] == POINT[name].units, name
    assert set(spread.data_vars) == set(POINT)
    units = {name: spread[name].attrs["units"] for name in ("cost_per_mtok", "kv_tax", "ttft_achieved", "goodput",
                                                             "gpus", "feasible")}
    assert units == {"cost_per_mtok": "1e-6 USD", "kv_tax": "1e-6 USD", "ttft_achieved": "s", "goodput": "s-1",
                     "gpus": "1", "feasible": "1"}
    assert spread["feasible"].all()


def test_decomposition_sums_and_tax_zero_when_colocated(spread):
    total = spread["prefill_cost"] + spread["decode_cost"] + spread["kv_tax"] + spread["idle_cost"]
    np.testing.assert_allclose(total.values, spread["cost_per_mtok"].values, rtol=1e-12)
    assert (spread["kv_tax"].sel(arch=["colocated", "chunked"]) == 0).all()
    assert (spread["kv_tax"].sel(arch="disaggregated") >= 0).all()
    direct_indirect = spread["kv_tax_direct"] + spread["kv_tax_indirect"]
    np.testing.assert_allclose(direct_indirect.values, spread["kv_tax"].values, rtol=1e-9, atol=1e-15)


def test_total_token_cost_is_output_cost_rescaled(spread):
    ratio = spread["cost_per_mtok_total"] / spread["cost_per_mtok"]
    expected = spread["cost_per_mtok"] * 0 + (256.0 / (2048.0 + 256.0))
    np.testing.assert_allclose(ratio.isel(point=2).values, expected.isel(point=2).values, rtol=1e-12)


def test_cost_never_falls_when_contract_tightens():
    loose = batch(ttft=np.full(N, 2.0), tpot=np.full(N, 0.08))
    tight = batch(ttft=np.linspace(0.4, 2.0, N), tpot=np.linspace(0.03, 0.08, N))
    a, b = loose["cost_per_mtok"].values, tight["cost_per_mtok"].values
    ok = np.isfinite(b)
    assert np.all(b[ok] >= a[ok] * (1 - 1e-9))


def test_tax_falls_to_zero_and_never_rises_with_bandwidth():
    bw = np.geomspace(1e9, 1e14, N)
    ds = batch(input_len=np.full(N, 8192.0), ttft=np.full(N, 3.0), kv_bandwidth=bw)
    tax = ds["kv_tax"].sel(arch="disaggregated").values
    cost = ds["cost_per_mtok"].sel(arch="disaggregated").values
    assert np.all(np.diff(tax) <= 1e-12 * cost[:-1])
    assert np.all(np.diff(cost) <= 1e-12 * cost[:-1])
    assert tax[-1] < 1e-3 * cost[-1] and tax[0] > 10 * tax[-1]


def test_ttft_rises_with_rate():
    ds = batch(rate=np.linspace(0.5, 6.0, N), tp=1, chunk=512, tp_prefill=1, tp_decode=1, n_prefill=1, n_decode=1,
               ttft=np.full(N, 100.0), tpot=np.full(N, 10.0))
    for arch in ("colocated", "chunked", "disaggregated"):
        t = ds["ttft_achieved"].sel(arch=arch).values
        ok = np.isfinite(t)
        assert ok.sum() >= 3, arch
        assert np.all(np.diff(t[ok]) > 0), arch


def _point(**kw):
    p, d, price = inputs.build("h100-80gb-sxm", "llama-3.1-8b", **{**dict(input_len=2048.0, output_len=256.0,
                                                                      ttft=1.0, tpot=0.05), **kw})
    return p, d, price


def test_distserve_md1_mean_ttft_is_the_mean_case():
    """DistServe's M/D/1 prefill instance: mean TTFT = D + R D^2 / (2 (1 - R D)) with no transfer cost."""
    p, _, _ = _point(percentile="mean", kv_bandwidth=1e18)
    tp = jnp.asarray(1.0)
    d = float(disaggregated.prefill_latency(p, tp, 0.0, Link.FREE, jnp.asarray(1e-9)).ttft)
    for rho in (0.1, 0.5, 0.9):
        r = rho / d
        ttft = float(disaggregated.prefill_latency(p, tp, 0.0, Link.FREE, jnp.asarray(r)).ttft)
        assert ttft == pytest.approx(d + r * d**2 / (2 * (1 - r * d)), rel=1e-9)


def test_cramer_lundberg_root_for_deterministic_service():
    lam, d = jnp.asarray(2.0), 0.3
    service = jnp.full((queueing.N_NODES,), d)
    w = jnp.asarray(queueing._GH_W)
    theta = queueing.decay_rate(lam, service, w)
    assert float(lam * (jnp.exp(theta * d) - 1.0) - theta) == pytest.approx(0.0, abs=1e-9)
    assert float(theta) > 0


@pytest.mark.parametrize("cv", [0.0, 0.3, 1.0, 3.0])
def test_decay_rate_converges_in_its_fixed_steps(cv):
    """The Cramer-Lundberg equation lambda (E[exp(theta S)] - 1) = theta holds to 1e-10 relative after the fixed
    number of Newton steps, from light (rho = 1e-6) to heavy traffic (rho = 0.999)."""
    nodes, w = queueing.length_nodes(jnp.asarray(1.0), jnp.asarray(cv))
    rho = np.geomspace(1e-6, 0.999, 40)
    lam = jnp.asarray(rho / float(queueing.expect(nodes, w)))
    theta = jax.vmap(lambda l: queueing.decay_rate(l, nodes, w))(lam)
    resid = lam * (jnp.sum(jnp.exp(theta[:, None] * nodes) * w, axis=-1) - 1.0) - theta
    assert np.all(np.asarray(theta) > 0)
    assert np.max(np.abs(np.asarray(resid) / np.asarray(theta))) < 1e-10


def test_infeasible_contract_is_flagged_not_raised():
    ds = batch(hardware="a100-80gb-sxm", model="llama-3.1-70b", input_len=np.full(N, 32000.0),
               output_len=np.full(N, 100.0), ttft=np.full(N, 0.05), tpot=np.full(N, 0.001))
    assert not ds["feasible"].any()
    assert np.isnan(ds["cost_per_mtok"]).all() and (ds["reason"] > 0).all()
    assert (ds["best_arch"] == -1).all()


def test_pins_reproduce_a_deployment():
    ds = fj.evaluate(hardware="h100-80gb-sxm", model="llama-3.1-70b", input_len=2048, output_len=256, ttft=2.0,
                     tpot=0.1, rate=4.0, tp_prefill=4, tp_decode=8, n_prefill=2, n_decode=1, tp=8, chunk=2048)
    dis = ds.sel(arch="disaggregated")
    assert (int(dis.tp_prefill), int(dis.tp_decode), int(dis.n_prefill), int(dis.n_decode)) == (4, 8, 2, 1)
    assert int(dis.gpus) == 16
    assert int(ds["chunk"].sel(arch="chunked")) == 2048


def test_integral_sizing_cost_is_gpus_times_price_over_tokens():
    rate = 7.0
    ds = fj.evaluate(hardware="h100-80gb-sxm", model="llama-3.1-8b", input_len=1024, output_len=256, ttft=1.0,
                     tpot=0.05, rate=rate)
    price = fj.load_hardware("h100-80gb-sxm").price
    for arch in ("colocated", "chunked", "disaggregated"):
        s = ds.sel(arch=arch)
        expected = float(price) / 3600 * float(s.gpus) / (rate * 256) * 1e6
        assert float(s.cost_per_mtok) == pytest.approx(expected, rel=1e-12)
        assert float(s.gpus) == int(s.gpus)


def test_total_gpus_cap_makes_large_deployments_infeasible():
    ds = fj.evaluate(hardware="h100-80gb-sxm", model="llama-3.1-70b", input_len=4096, output_len=256, ttft=2.0,
                     tpot=0.05, rate=50.0, total_gpus=8)
    assert not ds["feasible"].any()
    assert set(int(r) for r in ds["reason"].values) == {4}


def test_fp8_is_cheaper_than_bf16_on_h100():
    a = fj.evaluate(hardware="h100-80gb-sxm", model="llama-3.1-70b", input_len=2048, output_len=256, ttft=2.0,
                    tpot=0.05)
    b = fj.evaluate(hardware="h100-80gb-sxm", model="llama-3.1-70b", input_len=2048, output_len=256, ttft=2.0,
                    tpot=0.05, precision="fp8")
    assert (b["cost_per_mtok"] < a["cost_per_mtok"]).all()


def test_primitives_broadcast_and_roofline_sense():
    t = fj.prefill_time("h100-80gb-sxm", "llama-3.1-70b", jnp.asarray([512.0, 4096.0]), 8)
    assert t.shape == (2,) and float(t[1]) > float(t[0]) * 4
    d = fj.decode_step_time("h100-80gb-sxm", "llama-3.1-70b", jnp.asarray([1.0, 64.0]), 2048.0, jnp.asarray([4, 8]))
    assert d.shape == (2,) and 0.002 < float(d[0]) < 0.2
    old = fj.prefill_time("h100-80gb-sxm", "llama-2-70b", 2048.0, 2, engine="vllm-2023")
    # SplitwiseSim perf_model.csv, H100 TP2, 2048-token prefill (frontier_jax/data/measured_latency.csv)
    measured = 0.3103
    assert float(old) == pytest.approx(measured, rel=0.35)


def test_unknown_names_raise_one_line_errors():
    with pytest.raises(fj.FrontierError, match="unknown GPU"):
        fj.evaluate(hardware="h100", model="llama-3.1-8b")
    with pytest.raises(fj.FrontierError, match="percentile"):
        fj.evaluate(hardware="h100-80gb-sxm", model="llama-3.1-8b", percentile=1.5)
    with pytest.raises(fj.FrontierError, match="input_len"):
        fj.evaluate(hardware="h100-80gb-sxm", model="llama-3.1-8b", input_len=-5)

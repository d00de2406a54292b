"""The KV cache's precision as its own input (docs/reliability.md D12): FP8 weights over a BF16 cache, vLLM's
default, checked against hand calculations from the catalogue's raw numbers (frontier_jax/data/*.csv, the
sources of hardware/ and models/); and the FP8 serving runs' cache read off the measurements with bytes alone,
without the model."""
from __future__ import annotations

import csv

import jax.numpy as jnp
import numpy as np
import pytest

import frontier_jax as fj
from frontier_jax.calibration import fit
from frontier_jax.costmodel import kernels as kn
from frontier_jax.costmodel import latency as lat
from frontier_jax.costmodel import operations as ops
from frontier_jax.costmodel.arch import disaggregated as dis
from frontier_jax.costmodel.catalog import load_efficiency, load_hardware, load_model
from frontier_jax.costmodel.inputs import build
from frontier_jax.resources import data_file

H100, LLAMA, QWEN = "h100-80gb-sxm", "llama-3.1-70b", "qwen3-32b"


def _csv(name, key):
    with open(data_file(name), newline="") as f:
        return {r[key]: r for r in csv.DictReader(f)}


HW = _csv("hardware.csv", "gpu")
MODELS = _csv("models.csv", "model")
KV_BF16 = {m: float(MODELS[m]["kv_bytes_per_token_bf16"]) for m in (LLAMA, QWEN)}  # HF configs: 2 L h_kv d 2
PARAMS = {m: float(MODELS[m]["params_b"]) * 1e9 for m in (LLAMA, QWEN)}
HBM_BYTES = float(HW[H100]["hbm_gb"]) * 1e9
HBM_BW = float(HW[H100]["hbm_gb_per_s"]) * 1e9


def _capacity(model, tp, kv_bytes):
    """KV tokens on a TP group of H100s with FP8 weights, vLLM's gpu_memory_utilization 0.9."""
    return (tp * HBM_BYTES * 0.9 - PARAMS[model]) / kv_bytes


def test_the_cache_takes_its_own_bytes_and_capacity():
    md, hw = load_model(LLAMA), load_hardware(H100)
    assert float(lat.kv_bytes_per_token(md, 0.0)) == KV_BF16[LLAMA] == 327_680
    assert float(lat.kv_bytes_per_token(md, 1.0)) == KV_BF16[LLAMA] / 2
    for kv, per_token in ((0.0, KV_BF16[LLAMA]), (1.0, KV_BF16[LLAMA] / 2), (None, KV_BF16[LLAMA] / 2)):
        got = float(lat.kv_capacity_tokens(hw, md, 2.0, 1.0, kv_fp8=kv))
        np.testing.assert_allclose(got, _capacity(LLAMA, 2, per_token), rtol=1e-12)


def test_the_transfer_moves_the_caches_bytes():
    """Disaggregation's KV transfer of an 8192-token prompt over 10 GB/s per GPU at TP 2: I x bytes / (tp B)."""
    for kv, per_token in (("bf16", KV_BF16[LLAMA]), ("fp8", KV_BF16[LLAMA] / 2), (None, KV_BF16[LLAMA] / 2)):
        p, _, _ = build(H100, LLAMA, input_len=8192.0, output_len=256.0, ttft=2.0, tpot=0.05, kv_bandwidth=1e10,
                        precision="fp8", kv_precision=kv)
        np.testing.assert_allclose(float(dis.transfer_nodes(p, 2.0, 8192.0)), 8192 * per_token / (2 * 1e10),
                                   rtol=1e-12)


def test_roofline_decode_reads_the_cache_at_its_precision():
    """Memory-bound roofline decode step: the BF16 cache costs its extra bytes, b c K / 2, at the calibrated
    bandwidth g B eta_B g^-d, over the FP8 one; the weights (FP8) are the same."""
    eff = load_efficiency("current")
    b, c, tp = 64.0, 4000.0, 4.0
    t = {kv: float(fj.decode_step_time(H100, LLAMA, b, c, tp, precision="fp8", kv_precision=kv))
         for kv in ("bf16", "fp8", None)}
    eta_b = float(eff.eta_hbm) * tp ** (-float(eff.eta_hbm_decay))
    np.testing.assert_allclose(t["bf16"] - t["fp8"], b * c * KV_BF16[LLAMA] / 2 / (tp * HBM_BW * eta_b), rtol=1e-9)
    assert t[None] == t["fp8"]


def test_measured_kernels_take_gemms_from_the_weights_and_attention_from_the_cache():
    hw, md = load_hardware(H100), load_model(LLAMA)
    ks = kn.kernel_set(hw)
    args = (1.0, 2048.0, 1024.0, 32.0, 3000.0, 33.0, 4.0)  # a prompt chunk after a prefix, 32 decodes

    def at(fp8, kv):
        return ops.iteration_ops(hw, md, ks, *args, jnp.asarray(fp8), None if kv is None else jnp.asarray(kv))
    mixed, w8kv8, w16kv16 = at(1.0, 0.0), at(1.0, 1.0), at(0.0, 0.0)
    for name in ("qkv", "out_proj", "gate_up", "down", "lm_head", "allreduce"):
        assert float(getattr(mixed, name)) == float(getattr(w8kv8, name))
    assert float(mixed.attention) == float(w16kv16.attention)
    assert float(mixed.attention) != float(w8kv8.attention)
    assert float(at(1.0, None).attention) == float(w8kv8.attention)


def test_with_a_bf16_cache_the_kv_bound_runs_carry_their_measured_throughput():
    """The Llama-3.1-70B FP8 TP2 runs whose KV outgrows the BF16 cache (1024/8192 tokens at 64 clients, 8192/1024
    at 32 and 64). Their measured throughput, N / (TTFT + (O - 1) TPOT) by Little's law, is what the closed loop
    (measured kernels, the calibration's budget) carries with a BF16 cache, within 10 %; with an FP8 cache it
    carries 20-50 % more. The 8192/1024 run at 32 clients queues (measured TTFT 6.5 s) with the BF16 cache only."""
    runs = [r for r in _runs(LLAMA) if r["tp"] == "2" and (r["input_len"], r["output_len"], r["concurrency"])
            in {("1024", "8192", "64"), ("8192", "1024", "32"), ("8192", "1024", "64")}]
    assert len(runs) == 3
    i, o, n = (np.array([float(r[k]) for r in runs]) for k in ("input_len", "output_len", "concurrency"))
    measured = n / (np.array([float(r["ttft_ms"]) for r in runs]) / 1e3
                    + (o - 1) * np.array([float(r["tpot_ms"]) for r in runs]) / 1e3)
    kw = dict(engine="current-kernels", precision="fp8", chunk=fit.SERVING_BUDGET)
    (ttft16, _, x16), (ttft8, _, x8) = (fj.closed_loop(H100, LLAMA, i, o, n, 2.0, kv_precision=kv, **kw)
                                        for kv in ("bf16", "fp8"))
    np.testing.assert_allclose(np.asarray(x16), measured, rtol=0.10)
    assert np.all(np.asarray(x8) > 1.2 * measured)
    queued = (i == 8192) & (n == 32)
    assert float(np.asarray(ttft16)[queued][0]) > 3.0 > 1.5 > float(np.asarray(ttft8)[queued][0])


# --------------------------------------------------------------- the serving runs' cache, from the CSV alone
def _runs(model):
    with open(data_file("measured_serving_current.csv"), newline="") as f:
        return [r for r in csv.DictReader(f) if r["model"] == model and r["precision"] == "fp8"]


def test_llama_fp8_runs_had_a_bf16_cache():
    """The TP2 8192/1024 runs: at 32 clients the tokens in flight (N I to N (I + O)) lie between the two caches'
    capacities and the TTFT jumps to a queue's; at 16 clients they fit either cache."""
    runs = {int(r["concurrency"]): r for r in _runs(LLAMA)
            if r["tp"] == "2" and r["input_len"] == "8192" and r["output_len"] == "1024"}
    cap_bf16, cap_fp8 = _capacity(LLAMA, 2, KV_BF16[LLAMA]), _capacity(LLAMA, 2, KV_BF16[LLAMA] / 2)
    assert cap_bf16 < 32 * 8192 and 32 * (8192 + 1024) < cap_fp8
    assert 16 * (8192 + 1024) < cap_bf16
    assert float(runs[32]["ttft_ms"]) > 4 * float(runs[16]["ttft_ms"])
    assert fit.run_kv_precision(LLAMA, "fp8") == "bf16"


@pytest.mark.parametrize("tp", ["1", "2"])
def test_qwen_fp8_runs_had_an_fp8_cache(tp):
    """At TP 1 and 2 the measured TPOT is below the time to read the FP8 weights and a BF16 cache of every running
    request (mean KV length I + O / 2) at the H100's peak HBM bandwidth, and above that time with an FP8 cache."""
    (r,) = [r for r in _runs(QWEN) if r["tp"] == tp]
    g, n = float(tp), float(r["concurrency"])
    kv_tokens = n * (float(r["input_len"]) + float(r["output_len"]) / 2)
    assert kv_tokens < _capacity(QWEN, g, KV_BF16[QWEN])  # every client runs
    floor = {f: (PARAMS[QWEN] + kv_tokens * KV_BF16[QWEN] * f) / (g * HBM_BW) for f in (1.0, 0.5)}
    tpot = float(r["tpot_ms"]) / 1e3
    assert floor[0.5] < tpot < floor[1.0]
    assert fit.run_kv_precision(QWEN, "fp8") == "fp8"


def test_the_calibration_reads_each_run_with_its_cache():
    d = fit.serving_data()
    with open(data_file("measured_serving_current.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    want = [1.0 if (r["model"], r["precision"]) == (QWEN, "fp8") else 0.0 for r in rows]
    assert np.asarray(d["kv_fp8"]).tolist() == want

"""Numerical policy (issue 7, part 4); the policy itself is written down in docs/reliability.md.

1. Infeasible or unstable points are NaN with a reason flag (1..5), never inf and never a finite wrong value.
2. Everything marked feasible is finite and positive, meets its contract, and is self-consistent (the cost is the GPU
   price over the throughput, the decomposition sums, colocated modes pay no KV tax, the cheapest architecture is
   the one reported).
3. float32 (the GPU default; `frontier sweep --float32` switches jax_enable_x64 off, as the subprocess here does)
   agrees with float64 on points feasible in both: 99% of costs within F32_RTOL_P99, feasibility differing at under
   F32_MAX_FLIP of the pairs.

The broad random set: every GPU x every model, in fluid (goodput) and integral (rate, total_gpus) modes, 16 random
points per call over every numeric input of `evaluate` (lengths, contract, percentile or mean, length CVs, cache
hits, KV bandwidth, price, HBM/FLOP scales; the arrival SCV is one random scalar per call, see
test_array_arrival_ca2_is_accepted), engine and precision alternating: 2,080 points x 3 architectures; plus 12
batches of hand-picked extremes (h100, two models, both modes, arrival SCV 0, 1 and 1e4). Each clause of the policy
is its own test (test_policy[check-precision]); the clauses the current model breaks are strict xfails naming the
defect (KNOWN), so they turn into failures once it is fixed. All calls pass 1-D arrays of length N = 16 so one
compiled kernel serves every call (and the property tests, which use the same length).
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr

from frontier_jax import evaluate, list_hardware, list_models, load_hardware
from frontier_jax.costmodel.types import ARCHS, INFEASIBLE_NAMES as REASONS

N = 16                   # points per evaluate call (shared with test_properties.py: one compilation)
F32_RTOL_P99 = 2e-4      # float32 vs float64: 99% of feasible cost values within this (measured: docs/reliability.md)
F32_RTOL = 1e-3          # ... and all of them within this (fails today: test_float32_agrees_with_float64_everywhere)
F32_MAX_FLIP = 0.005     # largest fraction of (point, arch) pairs whose feasibility may differ in float32
LAT_RTOL = 1e-6          # achieved latency may exceed its bound by this much (the rate solver's tolerance)
CONSISTENCY_RTOL = 1e-9  # identities that hold exactly up to float64 rounding

MONEY = ("cost_per_mtok", "prefill_cost", "decode_cost", "kv_tax", "kv_tax_direct", "kv_tax_indirect",
         "cost_per_mtok_total")
POSITIVE = ("cost_per_mtok", "prefill_cost", "decode_cost", "cost_per_mtok_total", "ttft_achieved", "tpot_achieved",
            "goodput", "throughput", "gpus", "tp_prefill", "tp_decode", "n_prefill", "n_decode")
NAN_IF_INFEASIBLE = MONEY + ("ttft_achieved", "tpot_achieved", "goodput", "throughput")


def _loguniform(rng, lo, hi, n=N):
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


def random_calls(seed: int = 20240607) -> list[dict]:
    """The broad random set: one dict of evaluate() keyword arguments per call."""
    rng = np.random.default_rng(seed)
    calls = []
    for i, hw in enumerate(list_hardware()):
        for j, model in enumerate(list_models()):
            for integral in (False, True):
                k = len(calls)
                kw = dict(hardware=hw, model=model, engine=("current", "vllm-2023")[k % 2],
                          precision=("bf16", "fp8")[(k // 2) % 2],
                          input_len=_loguniform(rng, 8, 131072), output_len=_loguniform(rng, 1, 8192),
                          ttft=_loguniform(rng, 0.02, 600), tpot=_loguniform(rng, 0.002, 10),
                          percentile="mean" if k % 7 == 3 else rng.choice([0.5, 0.9, 0.99, 0.999, 0.99999], N),
                          kv_bandwidth=_loguniform(rng, 1e7, 1e13), input_cv=rng.uniform(0, 3, N),
                          output_cv=rng.uniform(0, 3, N), arrival_ca2=float(rng.choice([1.0, rng.uniform(0, 5)])),
                          cache_hit=np.where(rng.random(N) < 0.5, 0.0, rng.uniform(0, 0.95, N)),
                          slo_scale=_loguniform(rng, 0.5, 2.0), price=_loguniform(rng, 0.1, 100),
                          hbm_bandwidth_scale=_loguniform(rng, 0.25, 4), flops_scale=_loguniform(rng, 0.25, 4))
                if integral:
                    kw.update(rate=_loguniform(rng, 0.01, 1000), total_gpus=np.ceil(_loguniform(rng, 1, 4096)))
                calls.append(kw)
    return calls


EXTREMES = [  # (name, evaluate overrides for one point, expected reason for every architecture or None)
    ("ttft_1e-4_s", dict(ttft=1e-4), 1),
    ("tpot_1e-5_s", dict(tpot=1e-5), 2),
    ("prompt_10M_tokens", dict(input_len=1e7, ttft=600.0), None),
    ("output_1_token", dict(output_len=1.0), None),
    ("output_1e6_tokens", dict(output_len=1e6, tpot=10.0), None),
    ("input_1_token", dict(input_len=1.0), None),
    ("fractional_lengths", dict(input_len=0.01, output_len=0.5), None),
    ("percentile_0.99999", dict(percentile=0.99999), None),
    ("percentile_1e-6", dict(percentile=1e-6), None),
    ("kv_link_1_B_per_s", dict(kv_bandwidth=1.0), None),
    ("kv_link_1e15_B_per_s", dict(kv_bandwidth=1e15), None),
    ("cache_hit_0.999999", dict(cache_hit=0.999999), None),
    ("huge_cv", dict(input_cv=50.0, output_cv=50.0), None),
    ("loosest_contract", dict(ttft=600.0, tpot=10.0), None),
    ("tight_ttft_and_tpot", dict(ttft=0.05, tpot=0.005), None),
    ("slow_gpu", dict(hbm_bandwidth_scale=1e-4, flops_scale=1e-4), None),
]
EXTREMES_INTEGRAL = [
    ("rate_1e-9", dict(rate=1e-9), None),
    ("rate_1e9_cap_8", dict(rate=1e9, total_gpus=8.0), 4),
    ("rate_1e6_no_cap", dict(rate=1e6), None),
    ("one_gpu_cap", dict(rate=1.0, total_gpus=1.0), None),
]
assert len(EXTREMES) == N and len(EXTREMES_INTEGRAL) <= N


def extreme_calls() -> list[tuple[dict, list]]:
    """evaluate() keyword arguments of the extreme batches (h100, two models, both modes, three arrival SCVs)."""
    out = []
    for model in ("llama-3.1-8b", "llama-3.1-70b"):
        for integral in (False, True):
            for ca2 in (0.0, 1.0, 1e4):
                cases = EXTREMES_INTEGRAL if integral else EXTREMES
                base = dict(input_len=2048.0, output_len=256.0, ttft=2.0, tpot=0.05, percentile=0.99,
                            kv_bandwidth=5e10, cache_hit=0.0, input_cv=0.0, output_cv=0.0, hbm_bandwidth_scale=1.0,
                            flops_scale=1.0, price=float(load_hardware("h100-80gb-sxm").price))
                if integral:
                    base.update(rate=10.0, total_gpus=1e6)
                padded = list(cases) + [cases[-1]] * (N - len(cases))  # pad to the shared length
                kw = {k: np.array([c[1].get(k, v) for c in padded], float) for k, v in base.items()}
                kw.update(hardware="h100-80gb-sxm", model=model, arrival_ca2=ca2)
                out.append((kw, padded))
    return out


# float32 run of the same calls in another process (jax_enable_x64 off), started before the float64 compilation so
# the two compile on the two cores at once.
F32_SCRIPT = textwrap.dedent("""
    import pickle, sys
    from frontier_jax import evaluate  # float32: FRONTIER_JAX_X64=0 in the environment (import turns float64 on otherwise)
    calls = pickle.load(open(sys.argv[1], "rb"))
    out = []
    for kw in calls:
        ds = evaluate(**kw)
        assert ds["cost_per_mtok"].dtype == "float32", ds["cost_per_mtok"].dtype
        out.append({k: ds[k].values for k in ds.data_vars})
    pickle.dump(out, open(sys.argv[2], "wb"))
""")


def _outputs(ds) -> dict:
    return {k: np.asarray(ds[k].values if isinstance(ds, xr.Dataset) else ds[k]) for k in
            (ds.data_vars if isinstance(ds, xr.Dataset) else ds)}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """{'float64': [(kw, outputs)], 'float32': [...]} over the random set plus the extreme batches."""
    d = tmp_path_factory.mktemp("numerical_policy")
    calls = random_calls() + [kw for kw, _ in extreme_calls()]
    with open(d / "calls.pkl", "wb") as f:
        pickle.dump(calls, f)
    (d / "f32.py").write_text(F32_SCRIPT)
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
               FRONTIER_JAX_X64="0")
    proc = subprocess.Popen([sys.executable, str(d / "f32.py"), str(d / "calls.pkl"), str(d / "f32.pkl")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        f64 = [_outputs(evaluate(**kw)) for kw in calls]
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with open(d / "f32.pkl", "rb") as f:
        f32 = pickle.load(f)
    return {"float64": list(zip(calls, f64)), "float32": list(zip(calls, f32))}


# ---------------------------------------------------------------- the policy, one check per clause
# Each check maps (evaluate kwargs, outputs) to a (points, arch) boolean array of violations.

def _col(kw, name, default=np.nan):
    v = kw.get(name, default)
    return np.broadcast_to(np.asarray(np.nan if isinstance(v, str) else v, float), (N,))[:, None]


def _rows(mask):
    return np.broadcast_to(np.asarray(mask)[:, None], (N, len(ARCHS)))


def check_no_inf(kw, g, tol):
    bad = np.zeros((N, len(ARCHS)), bool)
    for v in g.values():
        if v.dtype.kind == "f":
            bad |= np.isinf(v) if v.ndim == 2 else _rows(np.isinf(v))
    return bad


def check_flags(kw, g, tol):
    feas, reason = g["feasible"].astype(bool), g["reason"]
    bad = feas != np.isfinite(g["cost_per_mtok"])
    bad |= feas & (reason != 0)
    bad |= ~feas & ~np.isin(reason, [1, 2, 3, 4, 5])
    if "rate" not in kw:
        bad |= np.isin(reason, [4, 5])  # GPU caps and pins cannot bind in fluid mode
    return bad


def check_nan_if_infeasible(kw, g, tol):
    feas = g["feasible"].astype(bool)
    return ~feas & np.any([~np.isnan(g[k]) for k in NAN_IF_INFEASIBLE], axis=0)


def check_finite_positive(kw, g, tol):
    feas = g["feasible"].astype(bool)
    bad = np.any([~(np.isfinite(g[k]) & (g[k] > 0)) for k in POSITIVE], axis=0)
    bad |= ~((g["kv_tax"] >= 0) & (g["kv_tax_direct"] >= 0) & (g["kv_tax_indirect"] >= 0))
    return feas & bad


def check_no_kv_tax_without_link(kw, g, tol):
    feas = g["feasible"].astype(bool)
    bad = np.zeros_like(feas)
    bad[:, :2] = feas[:, :2] & ((g["kv_tax"][:, :2] != 0) | (g["kv_tax_direct"][:, :2] != 0) |
                                (g["kv_tax_indirect"][:, :2] != 0))
    return bad


def check_meets_contract(kw, g, tol):
    feas = g["feasible"].astype(bool)
    scale = _col(kw, "slo_scale", 1.0)
    ok = (g["ttft_achieved"] <= _col(kw, "ttft") * scale * (1 + tol["lat"])) & \
        (g["tpot_achieved"] <= _col(kw, "tpot") * scale * (1 + tol["lat"]))
    if "rate" in kw:
        ok &= (g["gpus"] <= _col(kw, "total_gpus")) & (g["n_prefill"] == np.round(g["n_prefill"])) & \
            (g["n_prefill"] >= 1)
    return feas & ~ok


def check_price_over_throughput(kw, g, tol):
    """cost per 1e6 output tokens = GPU-hour price / (3600 s x output tokens per GPU-second) x 1e6."""
    feas = g["feasible"].astype(bool)
    want = _col(kw, "price") / 3600 * 1e6 / g["throughput"]
    return feas & ~(np.abs(g["cost_per_mtok"] - want) <= tol["rel"] * g["cost_per_mtok"])


def check_decomposition(kw, g, tol):
    feas = g["feasible"].astype(bool)
    cost = g["cost_per_mtok"]
    lim = tol["rel"] * cost
    ok = np.abs(g["prefill_cost"] + g["decode_cost"] + g["kv_tax"] + g["idle_cost"] - cost) <= lim
    ok &= np.abs(g["kv_tax_direct"] + g["kv_tax_indirect"] - g["kv_tax"]) <= lim
    i, o = _col(kw, "input_len"), _col(kw, "output_len")
    ok &= np.abs(g["cost_per_mtok_total"] - cost * o / (i + o)) <= lim
    return feas & ~ok


def check_best_arch_and_advantage(kw, g, tol):
    feas = g["feasible"].astype(bool)
    cost = g["cost_per_mtok"]
    masked = np.where(feas, cost, np.inf)
    want = np.where(feas.any(axis=1), np.argmin(masked, axis=1), -1)
    bad = g["best_arch"] != want
    adv_ok = feas[:, 2] & (feas[:, 0] | feas[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        adv = np.log(np.min(masked[:, :2], axis=1)) - np.log(cost[:, 2])
    bad |= np.isfinite(g["advantage"]) != adv_ok
    bad |= adv_ok & ~(np.abs(g["advantage"] - adv) <= tol["adv"])
    return _rows(bad)


CHECKS = {f.__name__[len("check_"):]: f for f in (check_no_inf, check_flags, check_nan_if_infeasible,
                                                   check_finite_positive, check_no_kv_tax_without_link,
                                                   check_meets_contract, check_price_over_throughput,
                                                   check_decomposition, check_best_arch_and_advantage)}
# identities to rounding: relative (rel), latency over its bound (lat), advantage (a log ratio) absolute (adv)
TOL = {"float64": {"rel": CONSISTENCY_RTOL, "lat": LAT_RTOL, "adv": 1e-9},
       "float32": {"rel": 1e-5, "lat": 1e-4, "adv": 1e-5}}

KNOWN = {  # (check, precision) -> the model defect behind the failure (see docs/reliability.md)
    ("finite_positive", "float32"): ("float32 at the extreme input_len = 0.01 tokens (chunked, h100-80gb-sxm, llama-3.1-8b, "
                                     "arrival_ca2 = 1e4): the prefill share of the cost rounds to 0, so prefill_cost "
                                     "= 0 (float64 keeps it positive)"),
}


def _describe(kw, i):
    return {k: (float(v[i]) if isinstance(v, np.ndarray) and v.ndim else v) for k, v in kw.items()}


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("check", list(CHECKS))
def test_policy(results, check, precision, request):
    if (check, precision) in KNOWN:
        request.applymarker(pytest.mark.xfail(strict=True, reason=KNOWN[check, precision]))
    total, first = 0, []
    for kw, g in results[precision]:
        bad = CHECKS[check](kw, g, TOL[precision])
        total += int(bad.sum())
        for i, a in np.argwhere(bad)[: max(0, 3 - len(first))]:
            first.append((ARCHS[a], _describe(kw, i), {k: g[k][i, a] if g[k].ndim == 2 else g[k][i] for k in
                          ("feasible", "reason", "cost_per_mtok", "prefill_cost", "kv_tax", "ttft_achieved",
                           "tpot_achieved")}))
    n = sum(g["feasible"].size for _, g in results[precision])
    assert total == 0, f"{check} ({precision}): {total} of {n} (point, arch) pairs violate it; first: {first}"


def test_random_set_exercises_every_reason(results):
    counts = {}
    for _, g in results["float64"]:
        for r in range(len(REASONS)):
            counts[REASONS[r]] = counts.get(REASONS[r], 0) + int((g["reason"] == r).sum())
    n = sum(counts.values())
    assert counts["feasible"] > 0.2 * n, counts
    for r in ("ttft_unreachable", "tpot_unreachable", "kv_memory", "exceeds_total_gpus"):
        assert counts[r] > 0, (r, counts)


@pytest.mark.parametrize("ca2", [0.0, 1.0, 1e4], ids=["deterministic", "poisson", "bursty"])
def test_extreme_reasons(results, ca2, request):
    """ttft 1e-4 s -> ttft_unreachable, tpot 1e-5 s -> tpot_unreachable, rate 1e9 on 8 GPUs -> exceeds_total_gpus,
    for every architecture."""
    ext = extreme_calls()
    wrong = []
    for (kw, cases), (_, g) in zip(ext, results["float64"][-len(ext):]):
        if kw["arrival_ca2"] != ca2:
            continue
        for i, (name, _, want) in enumerate(cases):
            if want is not None and not (g["reason"][i] == want).all():
                wrong.append((kw["model"], name, g["reason"][i].tolist(), want))
    assert not wrong, wrong


# ---------------------------------------------------------------- float32 against float64

def _f32_stats(results):
    """Over the random set only (the extreme batches are for the NaN policy, not for precision)."""
    rel, flips, both, total = [], 0, 0, 0
    worst = []
    n_random = len(results["float64"]) - len(extreme_calls())
    for (kw, a), (_, b) in zip(results["float64"][:n_random], results["float32"][:n_random]):
        fa, fb = a["feasible"].astype(bool), b["feasible"].astype(bool)
        flips += int((fa != fb).sum())
        total += fa.size
        m = fa & fb
        both += int(m.sum())
        r = np.abs(b["cost_per_mtok"].astype(float) - a["cost_per_mtok"]) / a["cost_per_mtok"]
        rel.append(r[m])
        for i, j in np.argwhere(m & (r > F32_RTOL)):
            worst.append((float(r[i, j]), ARCHS[j], _describe(kw, i)))
    return np.concatenate(rel), flips, both, total, sorted(worst, key=lambda w: -w[0])


def test_float32_agrees_with_float64_on_nearly_all_points(results):
    """The documented float32 tolerance, over the random set: the median of the cost_per_mtok differences of (point,
    arch) pairs feasible in both precisions within 1e-6, and feasibility differing at under F32_MAX_FLIP of the
    pairs (the 99th percentile: test_float32_agrees_with_float64_at_the_99th_percentile)."""
    rel, flips, both, total, _ = _f32_stats(results)
    q50, q99, q999 = np.quantile(rel, [0.5, 0.99, 0.999])
    print(f"float32 vs float64 cost_per_mtok: median {q50:.2e}, 99% {q99:.2e}, 99.9% {q999:.2e}, max {rel.max():.2e} "
          f"over {both} pairs feasible in both; feasibility differs at {flips} of {total}")
    assert both > 0.2 * total
    assert q50 <= 1e-6, q50
    assert flips <= F32_MAX_FLIP * total, (flips, total)


@pytest.mark.xfail(strict=True, reason=(
    "since the pooled queueing (issue 19) about 3 % of the (point, architecture) pairs feasible in both precisions "
    "differ by more than 2e-4 in float32 (99th percentile 5.5e-2, measured 2026-12-04): they are discrete choices "
    "that rounding tips, a whole instance more or less at ceil(rate / lambda*), a TP degree or chunk of nearly the "
    "same cost, the receiving links' utilisation cap found by bisection; the median is 1.2e-7 and feasibility "
    "differs at 6 of 6240 pairs (test above); float64, the default, is not affected; docs/reliability.md"))
def test_float32_agrees_with_float64_at_the_99th_percentile(results):
    rel, _, _, _, _ = _f32_stats(results)
    assert np.quantile(rel, 0.99) <= F32_RTOL_P99


@pytest.mark.xfail(strict=True, reason=(
    "float32 is not everywhere within 1e-3 of float64: the worst cost difference is 2.2e-3 (colocated, "
    "h100-80gb-sxm, llama-3.1-8b, fp8, p99.999, a 21k-token prompt with 82% cache hits); the goodput collapse at "
    "near-deterministic arrivals (D6) was a float32 overflow, fixed 2026-12-02; see docs/reliability.md"))
def test_float32_agrees_with_float64_everywhere(results):
    rel, _, _, _, worst = _f32_stats(results)
    assert rel.max() <= F32_RTOL, f"max relative difference {rel.max():.3g}; worst: {worst[:3]}"


def test_array_arrival_ca2_is_accepted():
    ds = evaluate(input_len=np.full(N, 2048.0), arrival_ca2=np.linspace(0.5, 2.0, N))
    assert ds["cost_per_mtok"].shape == (N, 3)

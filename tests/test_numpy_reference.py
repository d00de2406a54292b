"""The numpy re-implementation used by the benchmarks (benchmarks/numpy_reference.py) agrees with the JAX model.

Float64, ~200 random points spread over every input the sweep kernel takes (GPU, model, engine, precision,
lengths and their CVs, contract, percentile, arrival SCV, prefix-cache hits, KV bandwidth, fluid and integral
deployments with and without a GPU cap). Every output variable: same NaN pattern, 1e-6 relative agreement where
finite, identical flags and chosen configuration. No timing here: speed is measured in benchmarks/run.py.
"""
import ast
import inspect
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from frontier_jax import latency, operating, queueing, search
from frontier_jax.arch import chunked, colocated, common, disaggregated
from frontier_jax.sweep import load_spec
from frontier_jax.sweep.kernel import make_kernel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import numpy_reference as ref  # noqa: E402

N_POINTS = 200
RTOL = 1e-6
HW = ["a100-80gb-sxm", "h100-80gb-sxm", "h200-141gb-sxm", "a100-80gb-pcie", "a40-48gb"]
MODELS = ["llama-3.1-70b", "llama-3.1-8b", "llama-2-13b", "qwen3-32b", "mistral-7b"]
# Every input present (fixed in the spec only so that the kernel reads it; the points below override them).
SPEC = """
[sweep]
name = "agreement"
[fixed]
hardware = "h100-80gb-sxm"
model = "llama-3.1-70b"
engine = "current"
precision = "bf16"
input_len = 1024
output_len = 256
ttft = 2.0
tpot = 0.05
percentile = 0.99
input_cv = 0.5
output_cv = 0.5
arrival_ca2 = 1.0
cache_hit = 0.1
slo_scale = 1.0
kv_bandwidth = 5e10
rate = 10.0
total_gpus = 64
price_scale = 1.0
hbm_bandwidth_scale = 1.0
flops_scale = 1.0
"""
CONFIG_VARS = ("tp_prefill", "tp_decode", "chunk", "overlap")
FLAG_VARS = ("feasible", "reason", "best_arch")


def random_points(spec, n=N_POINTS, seed=0):
    rng = np.random.default_rng(seed)
    ch = spec.choices
    logu = lambda lo, hi: np.exp(rng.uniform(np.log(lo), np.log(hi), n))  # noqa: E731
    fluid = rng.random(n) < 0.5
    capped = rng.random(n) < 0.5
    rate = np.where(fluid, np.nan, logu(0.05, 200.0))
    # Deterministic prompts (input_cv = 0) only where they exceed every chunk budget: below it chunked TTFT has
    # ceil(exp(log(I)) / I), which is 1 or 2 depending on the last bit of exp/log (see test_single_chunk_...).
    det = rng.random(n) < 0.3
    return dict(
        hardware=np.array([ch["hardware"].index(h) for h in rng.choice(HW, n)], np.int32),
        model=np.array([ch["model"].index(m) for m in rng.choice(MODELS, n)], np.int32),
        engine=rng.integers(0, len(ch["engine"]), n).astype(np.int32),
        precision=rng.integers(0, len(ch["precision"]), n).astype(np.int32),
        input_len=np.where(det, logu(9000, 32768), logu(32, 32768)), output_len=logu(1, 4096),
        ttft=logu(0.05, 20.0), tpot=logu(0.005, 0.5),
        percentile=np.where(rng.random(n) < 0.2, 0.5, rng.uniform(0.5, 0.999, n)),
        input_cv=np.where(det, 0.0, rng.uniform(0.05, 2.0, n)),
        output_cv=np.where(rng.random(n) < 0.3, 0.0, rng.uniform(0.0, 2.0, n)),
        arrival_ca2=np.where(rng.random(n) < 0.5, 1.0, rng.uniform(0.0, 4.0, n)),
        cache_hit=np.where(rng.random(n) < 0.5, 0.0, rng.uniform(0.0, 0.9, n)),
        slo_scale=logu(0.5, 2.0), kv_bandwidth=logu(1e8, 1e12),
        rate=rate, total_gpus=np.where(fluid | ~capped, np.inf, rng.integers(1, 256, n).astype(float)),
        price_scale=logu(0.5, 2.0), hbm_bandwidth_scale=logu(0.5, 2.0), flops_scale=logu(0.5, 2.0),
    )


@pytest.fixture(scope="module")
def both():
    assert jax.config.jax_enable_x64, "the agreement test runs in float64 (tests/conftest.py)"
    spec = load_spec(SPEC)
    pts = random_points(spec)
    jax_out = jax.jit(make_kernel(spec))({k: jax.numpy.asarray(v) for k, v in pts.items()})
    jax_out = {k: np.asarray(v) for k, v in jax_out.items()}
    np_out = ref.Kernel(spec.choices)(pts)
    return pts, jax_out, np_out


def test_same_outputs(both):
    _, j, n = both
    assert set(j) == set(n)
    for k in j:
        assert j[k].shape == n[k].shape, k
        assert j[k].dtype.kind == n[k].dtype.kind, k


def test_points_exercise_every_regime(both):
    _, j, _ = both
    assert 0.2 < j["feasible"].mean() < 0.95
    assert len(np.unique(j["best_arch"])) == 4  # every architecture wins somewhere, and some points are infeasible
    assert len(np.unique(j["reason"])) >= 4
    assert np.isfinite(j["kv_tax"]).any() and (np.nan_to_num(j["kv_tax"]) > 0).any()


def _rel_err(a, b):
    both_finite = np.isfinite(a) & np.isfinite(b)
    scale = np.maximum(np.abs(a), np.abs(b))
    err = np.zeros(a.shape)
    err[both_finite] = np.abs(a[both_finite] - b[both_finite]) / np.maximum(scale[both_finite], 1e-300)
    return err


@pytest.mark.parametrize("name", ["cost_per_mtok", "prefill_cost", "decode_cost", "kv_tax", "kv_tax_direct",
                                  "kv_tax_indirect", "cost_per_mtok_total", "ttft_achieved", "tpot_achieved",
                                  "goodput", "throughput", "gpus", "n_prefill", "n_decode", "advantage"])
def test_float_outputs_agree(both, name):
    _, j, n = both
    a, b = j[name], n[name]
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{name}: NaN patterns differ")
    np.testing.assert_array_equal(np.isinf(a), np.isinf(b), err_msg=f"{name}: inf patterns differ")
    err = _rel_err(a, b)
    if name in ("kv_tax", "kv_tax_direct", "kv_tax_indirect", "advantage"):
        # differences of nearly equal costs: compare on the scale of the costs they come from
        scale = np.nan_to_num(np.abs(j["cost_per_mtok"]), nan=1.0) if name != "advantage" else 1.0
        err = np.where(np.isfinite(a), np.abs(np.nan_to_num(a) - np.nan_to_num(b)) / scale, 0.0)
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() <= RTOL, f"{name}: max relative difference {err.max():.3g} at {worst}: {a[worst]} vs {b[worst]}"


@pytest.mark.parametrize("name", FLAG_VARS + CONFIG_VARS)
def test_choices_and_flags_agree(both, name):
    _, j, n = both
    a, b = j[name], n[name]
    same = (a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind == "f" else a == b
    if name in CONFIG_VARS:
        # A tie: two configurations with the same cost (e.g. chunk budgets that all fit the prompt), where the
        # last bit decides the argmin. Accepted only where every reported number agrees, and only rarely.
        close = lambda k: np.isclose(j[k], n[k], rtol=1e-12, atol=0.0) | (np.isnan(j[k]) & np.isnan(n[k]))  # noqa: E731
        tie = ~same & close("cost_per_mtok") & close("ttft_achieved") & close("tpot_achieved") & close("goodput")
        assert tie.mean() <= 0.02, f"{name}: {tie.sum()} tied choices"
        same = same | tie
    bad = np.argwhere(~same)
    assert bad.size == 0, f"{name}: {len(bad)} differences, first at {tuple(bad[0])}: {a[tuple(bad[0])]} vs " \
                          f"{b[tuple(bad[0])]}"


# ---- the reference keeps mirroring the JAX modules: same functions, so an equation change shows up as a diff
MIRRORS = [(latency, ref.lat), (queueing, ref.qu), (common, ref.c), (colocated, ref.colocated),
           (chunked, ref.chunked), (disaggregated, ref.disaggregated), (operating, ref.op)]


@pytest.mark.parametrize("mod,ns", MIRRORS, ids=[m.__name__ for m, _ in MIRRORS])
def test_reference_mirrors_every_function(mod, ns):
    jax_fns = {name for name, f in vars(mod).items()
               if inspect.isfunction(f) and f.__module__ == mod.__name__ and name != "erlang_c"}
    jax_fns -= {"_max_rate_jvp"}  # the implicit-function JVP is not part of the forward model
    np_fns = {name for name, f in vars(ns).items() if inspect.isfunction(f)}
    assert jax_fns <= np_fns, f"{mod.__name__}: not mirrored in the numpy reference: {sorted(jax_fns - np_fns)}"


def test_reference_constants_match():
    assert ref.op.BISECTION_STEPS == operating.BISECTION_STEPS and ref.op.RANGE == operating.RANGE
    assert ref.op.CONTINUOUS_STEPS == operating.CONTINUOUS_STEPS and ref.op.UTIL_MAX == operating.UTIL_MAX
    assert ref.op.POLISH_STEPS == operating.POLISH_STEPS and ref.op.POLISH_TOL == operating.POLISH_TOL
    assert ref.qu._NEWTON_STEPS == queueing._NEWTON_STEPS and ref.qu.N_NODES == queueing.N_NODES
    assert ref.qu._MAX_EXPONENT == queueing._MAX_EXPONENT
    assert ref.chunked._FIXED_POINT_STEPS == chunked._FIXED_POINT_STEPS
    assert ref.SearchSpace() == ref.SearchSpace(**vars(search.SearchSpace()))
    assert ref.ARCHS == search.ARCHS


def test_reference_imports_no_jax():
    code = "import sys; sys.path.insert(0, 'benchmarks'); import numpy_reference; " \
           "assert not [m for m in sys.modules if m == 'jax' or m.startswith('jax.')], 'jax imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    tree = ast.parse((ROOT / "benchmarks" / "numpy_reference.py").read_text())
    names = {a.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names}
    mods = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(str(x).startswith(("jax", "frontier_jax")) for x in names | mods)


def test_dual_matches_jax_jvp():
    """The forward-mode numbers follow JAX's derivative rules, ties of max/min included."""
    x = np.array([0.5, 1.0, 2.0, 3.0])
    f_np = lambda b: np.minimum(np.clip(3.0 - b, 1.0, None), 2.0) * b ** 2 / (1.0 + b) + np.where(b > 1.5, b, 0.0)  # noqa: E731
    jnp = jax.numpy
    f_j = lambda b: jnp.minimum(jnp.clip(3.0 - b, 1.0, None), 2.0) * b ** 2 / (1.0 + b) + jnp.where(b > 1.5, b, 0.0)  # noqa: E731
    v, d = ref.jvp(f_np, x)
    vj, dj = jax.jvp(f_j, (jnp.asarray(x),), (jnp.ones(4),))
    np.testing.assert_allclose(v, vj, rtol=1e-14)
    np.testing.assert_allclose(d, dj, rtol=1e-14)
    # nested, as the rate solver's Newton polish through the chunked fixed point's own jvp
    g_np = lambda u: ref.jvp(lambda b: np.maximum(b * b * u, 2.0 * u) / (1.0 + b), u * 0.5)[1] * np.exp(u)  # noqa: E731
    g_j = lambda u: jax.jvp(lambda b: jnp.maximum(b * b * u, 2.0 * u) / (1.0 + b), (u * 0.5,), (jnp.ones_like(u),))[1] * jnp.exp(u)  # noqa: E731
    v, d = ref.jvp(g_np, x)
    vj, dj = jax.jvp(g_j, (jnp.asarray(x),), (jnp.ones(4),))
    np.testing.assert_allclose(v, vj, rtol=1e-14)
    np.testing.assert_allclose(d, dj, rtol=1e-14)


def test_selfcheck_script_runs():
    out = subprocess.run([sys.executable, "benchmarks/numpy_reference.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    assert "cost_per_mtok" in out


def test_single_chunk_deterministic_prompt_takes_one_iteration():
    from frontier_jax.inputs import build
    lens = np.geomspace(100.0, 400.0, 16)
    p, _, _ = build("h100-80gb-sxm", "llama-3.1-8b", input_len=lens, output_len=64.0, ttft=2.0, tpot=0.05)
    p = jax.tree.map(lambda x: jax.numpy.broadcast_to(x, lens.shape), p)
    lam = np.full(lens.shape, 0.01)  # light load: TTFT ~ the own prefill
    fn = jax.jit(jax.vmap(lambda q, rate: chunked.latency(q, 1.0, 2048.0, rate).ttft))
    ttft = np.asarray(fn(p, lam))
    ratio = ttft[1:] / ttft[:-1]
    assert np.all(ratio < 1.2), f"TTFT jumps with prompt length: {np.round(ratio, 3)}"

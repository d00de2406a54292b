"""The model's pieces against independent closed forms and hand calculations (docs/model.md sections 2-4).

These replace the numpy transliteration of the whole model (benchmarks/numpy_reference.py, retired): an oracle that
repeated the model's code line by line could only show that two copies agree. Here every expected value comes from
a textbook queueing result (Pollaczek-Khinchine, Kingman, M/D/1, Little's law) or from the roofline of docs/model.md
section 2 evaluated by hand on the catalogue's primary numbers (the TOML files and the calibration record), never
from the functions under test. Each case is a handful of scalar evaluations: no sweep, one small compilation.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import frontier_jax as fj
from frontier_jax.costmodel import catalog, inputs, queueing
from frontier_jax.costmodel.arch import chunked, disaggregated
from frontier_jax.costmodel.arch.disaggregated import Link

GPU, MODEL = "h100-80gb-sxm", "llama-3.1-8b"


def _primary(gpu=GPU, model=MODEL, engine="current"):
    """The catalogue's own numbers: GPU fields (SI), model fields and the calibrated efficiency."""
    hw = {k: float(v["value"]) for k, v in catalog.hardware_info(gpu).items() if isinstance(v, dict) and "value" in v}
    md = catalog.model_info(model)
    eff = {k: float(v) for k, v in catalog.calibration_record(engine)["params"].items()}
    return hw, md, eff


def _kv_bytes(md, fp8=False):
    """K and V of every layer and KV head: 2 * L * kv_heads * head_dim elements of 2 bytes (1 in FP8)."""
    return 2 * md["layers"] * md["kv_heads"] * md["head_dim"] * (1 if fp8 else 2)


# ---------------------------------------------------------------- the roofline (docs/model.md section 2)

def test_decode_step_is_the_memory_roofline_by_hand():
    """Batch 1 at a 4096-token context is memory-bound: the step reads every weight and the sequence's KV once at
    eta_B of the HBM bandwidth, plus the per-layer overhead (and on TP 2 the all-reduces and the TP overhead)."""
    hw, md, eff = _primary()
    L, P, ctx = md["layers"], md["params"], 4096.0
    attn = md["q_heads"] * md["head_dim"]
    linear = 2 * (P - md["vocab"] * md["hidden"])  # the input embedding is a lookup, not a matmul
    for g, fp8 in ((1, False), (2, False), (1, True)):
        weight_bytes = P * (1 if fp8 else 2)
        memory = (weight_bytes + ctx * _kv_bytes(md, fp8)) / (g * hw["hbm_bandwidth"] * eff["eta_hbm"] *
                                                                g ** -eff["eta_hbm_decay"])
        peak = hw["fp8_flops" if fp8 else "bf16_flops"]
        compute = (linear + 4 * L * attn * ctx) / (g * peak * eff["eta_flops"] * g ** -eff["eta_flops_decay"])
        assert compute < 0.1 * memory  # the regime the hand calculation assumes
        allreduce = 0.0 if g == 1 else 2 * L * (eff["allreduce_latency"] + 2 * (g - 1) / g * 1 * md["hidden"] * 2 /
                                                hw["nvlink_bandwidth"])
        want = memory + allreduce + L * eff["overhead"] + eff["overhead_tp"] * math.log2(g)
        got = float(fj.decode_step_time(GPU, MODEL, 1.0, ctx, g, precision="fp8" if fp8 else "bf16"))
        assert got == pytest.approx(want, rel=1e-12), (g, fp8)


def test_prefill_is_the_compute_roofline_by_hand():
    """An 8192-token prompt on TP 1 is compute-bound: 2 P' n + 2 L a n^2 FLOPs (causal attention) at eta_F."""
    hw, md, eff = _primary()
    L, P, n = md["layers"], md["params"], 8192.0
    flops = 2 * (P - md["vocab"] * md["hidden"]) * n + 2 * L * md["q_heads"] * md["head_dim"] * n**2
    compute = flops / (hw["bf16_flops"] * eff["eta_flops"])
    memory = (2 * P + n * _kv_bytes(md)) / (hw["hbm_bandwidth"] * eff["eta_hbm"])
    assert memory < 0.1 * compute
    got = float(fj.prefill_time(GPU, MODEL, n, 1))
    assert got == pytest.approx(compute + L * eff["overhead"], rel=1e-12)


# ---------------------------------------------------------------- queueing (docs/model.md section 3)

def _two_point(a, b, p):
    """A service time that is a with probability p, else b (any discrete distribution is a set of nodes)."""
    return jnp.asarray([a, b]), jnp.asarray([p, 1.0 - p])


@pytest.mark.parametrize("a,b,p", [(0.2, 0.2, 1.0), (0.1, 0.9, 0.7), (0.01, 2.0, 0.95)])
@pytest.mark.parametrize("rho", [0.1, 0.5, 0.9])
def test_mean_sojourn_is_pollaczek_khinchine(a, b, p, rho):
    """M/G/1: E[W + S] = E[S] + lambda E[S^2] / (2 (1 - rho))."""
    s, w = _two_point(a, b, p)
    es, es2 = p * a + (1 - p) * b, p * a**2 + (1 - p) * b**2
    lam = rho / es
    got = float(queueing.sojourn(jnp.asarray(lam), s, w, 0.99, 1.0, 0.0))
    assert got == pytest.approx(es + lam * es2 / (2 * (1 - rho)), rel=1e-12)
    assert float(queueing.sojourn(jnp.asarray(1.01 / es), s, w, 0.99, 1.0, 0.0)) == np.inf  # unstable


@pytest.mark.parametrize("ca2", [0.0, 0.5, 4.0])
def test_bursty_mean_wait_is_kingman(ca2):
    """G/G/1 (Kingman): E[W] = rho / (1 - rho) * (c_a^2 + c_s^2) / 2 * E[S]."""
    a, b, p, rho = 0.1, 0.9, 0.7, 0.6
    s, w = _two_point(a, b, p)
    es, es2 = p * a + (1 - p) * b, p * a**2 + (1 - p) * b**2
    cs2 = es2 / es**2 - 1
    got = float(queueing.sojourn(jnp.asarray(rho / es), s, w, 0.99, 1.0, 0.0, arrival_ca2=ca2))
    assert got - es == pytest.approx(rho / (1 - rho) * (ca2 + cs2) / 2 * es, rel=1e-12)


def test_decay_rate_of_a_two_point_service():
    """The Cramer-Lundberg root of lambda (E[exp(theta S)] - 1) = theta, checked by bisection in plain Python."""
    a, b, p, rho = 0.1, 0.9, 0.7, 0.6
    es = p * a + (1 - p) * b
    lam = rho / es
    h = lambda t: lam * (p * math.exp(t * a) + (1 - p) * math.exp(t * b) - 1) - t  # noqa: E731
    lo, hi = 1e-9, 50.0  # h < 0 just above 0 (rho < 1), h > 0 far out (convex)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if h(mid) < 0 else (lo, mid)
    s, w = _two_point(a, b, p)
    assert float(queueing.decay_rate(jnp.asarray(lam), s, w)) == pytest.approx(0.5 * (lo + hi), rel=1e-10)


# ---------------------------------------------------------------- the disaggregated prefill instance (section 4.3)

def _prefill_point(**kw):
    p, _, _ = inputs.build(GPU, MODEL, **{**dict(input_len=4096.0, output_len=256.0, ttft=2.0, tpot=0.05,
                                                 percentile="mean", kv_bandwidth=1e10), **kw})
    return p


@pytest.mark.parametrize("rho", [0.2, 0.6])
def test_prefill_and_kv_link_are_two_md1_queues(rho):
    """Deterministic prompts, mean mode, no overlap: the prefill queue is M/D/1 with service D; the transfer X =
    I x KV bytes/token / (tp x B_kv) is exposed whole; the link is an M/D/1 queue with service X. So
    E[TTFT] = D + lam D^2 / (2 (1 - lam D)) + X (+ the link's wait with Link.FULL, below).
    With layer-wise overlap only max(X / L, X - D (L - 1) / L) of the transfer is exposed."""
    hw, md, _ = _primary()
    tp, n_in, bw = 2.0, 4096.0, 1e10
    p = _prefill_point()
    d = float(fj.prefill_time(GPU, MODEL, n_in, tp))  # the service time (its roofline is checked above)
    x = n_in * _kv_bytes(md) / (tp * bw)
    assert x < d  # lam below both capacities
    lam = rho / d
    md1 = lambda s: s + lam * s**2 / (2 * (1 - lam * s))  # noqa: E731
    ttft = lambda ov, link: float(disaggregated.prefill_latency(p, jnp.asarray(tp), ov, link,  # noqa: E731
                                                                 jnp.asarray(lam)).ttft)
    assert ttft(0.0, Link.FREE) == pytest.approx(md1(d), rel=1e-12)
    assert ttft(0.0, Link.EXPOSED) == pytest.approx(md1(d) + x, rel=1e-12)
    # the link's arrivals are the prefill's completions, SCV 1 - (lam D)^2 (Whitt's departure approximation for
    # deterministic service), so its wait is Kingman's lam X^2 / (2 (1 - lam X)) x that SCV; counted twice, for the
    # sending and for the receiving links (docs/model.md section 4.3)
    link = lam * x**2 / (2 * (1 - lam * x)) * (1 - (lam * d) ** 2)
    assert ttft(0.0, Link.FULL) == pytest.approx(md1(d) + x + 2 * link, rel=1e-12)
    exposed = max(x / md["layers"], x - d * (md["layers"] - 1) / md["layers"])
    assert ttft(1.0, Link.EXPOSED) == pytest.approx(md1(d) + exposed, rel=1e-12)
    upper = float(disaggregated.prefill_rate_upper(p, jnp.asarray(tp), 0.0, Link.FULL))
    assert upper == pytest.approx(min(1 / d, 1 / x), rel=1e-12)
    slow = _prefill_point(kv_bandwidth=bw / 20)  # now the link is the bottleneck
    assert float(disaggregated.prefill_rate_upper(slow, jnp.asarray(tp), 0.0, Link.FULL)) == \
        pytest.approx(1 / (20 * x), rel=1e-12)


def test_global_prefix_cache_adds_its_load_time():
    """Mooncake's global cache: the hit KV, h x I x KV bytes/token, loads over tp links of B_cache each before the
    prefill finishes (a deterministic delay), on top of the prefill of the (1 - h) I new tokens."""
    _, md, _ = _primary()
    tp, n_in, h, bw = 2.0, 4096.0, 0.5, 5e9
    local = _prefill_point(cache_hit=h)
    remote = _prefill_point(cache_hit=h, cache_load_bandwidth=bw)
    lam = jnp.asarray(1e-9)
    t_local = float(disaggregated.prefill_latency(local, jnp.asarray(tp), 0.0, Link.FREE, lam).ttft)
    t_remote = float(disaggregated.prefill_latency(remote, jnp.asarray(tp), 0.0, Link.FREE, lam).ttft)
    assert t_remote - t_local == pytest.approx(h * n_in * _kv_bytes(md) / (tp * bw), rel=1e-9)


# ---------------------------------------------------------------- the decode pool (sections 4.1 and 4.3)

@pytest.mark.parametrize("lam", [0.5, 5.0, 20.0])
def test_decode_pool_obeys_littles_law_on_its_roofline(lam):
    """Mean mode, deterministic lengths, memory-bound steps t(B) = A + S B with A = weights / (B_hbm eta_B) +
    L t_layer and S = c x KV bytes/token / (B_hbm eta_B): Little's law b = lam n t(1 + b) gives
    b = lam n (A + S) / (1 - lam n S), and the mean TPOT is t(1 + b)."""
    hw, md, eff = _primary()
    p = _prefill_point(input_len=2048.0, output_len=512.0)
    n = 512.0 - 1.0                # decode steps after the first token
    ctx = 2048.0 + 0.5 * 512.0     # time-averaged context: the prompt and half the output
    bw = hw["hbm_bandwidth"] * eff["eta_hbm"]
    a = 2 * md["params"] / bw + md["layers"] * eff["overhead"]
    s = ctx * _kv_bytes(md) / bw
    b = lam * n * (a + s) / (1 - lam * n * s)
    lat = disaggregated.decode_latency(p, jnp.asarray(1.0), jnp.asarray(lam))
    assert float(lat.batch) == pytest.approx(b, rel=1e-12)
    assert float(lat.tpot) == pytest.approx(a + s * (1 + b), rel=1e-12)
    assert float(lat.batch) == pytest.approx(lam * n * float(lat.tpot), rel=1e-12)  # Little's law itself
    # the batch stays memory-bound: its compute time at 1 + b is below the memory time
    flops = (1 + b) * (2 * (md["params"] - md["vocab"] * md["hidden"]) + 4 * md["layers"] * md["q_heads"] *
                       md["head_dim"] * ctx)
    assert flops / (hw["bf16_flops"] * eff["eta_flops"]) < a + s * (1 + b) - md["layers"] * eff["overhead"]


# ---------------------------------------------------------------- chunked prefill (section 4.2)

def test_single_chunk_deterministic_prompt_takes_one_iteration():
    """A deterministic prompt shorter than the chunk budget takes one mixed iteration, at every length: the nodes
    are the mean to the last bit (docs/model.md section 3), so ceil(I / k) never rounds up to 2."""
    lens = np.geomspace(100.0, 400.0, 16)
    p, _, _ = inputs.build(GPU, MODEL, input_len=lens, output_len=64.0, ttft=2.0, tpot=0.05)
    p = jax.tree.map(lambda x: jnp.broadcast_to(x, lens.shape), p)
    lam = np.full(lens.shape, 0.01)  # light load: TTFT ~ the own prefill
    fn = jax.jit(jax.vmap(lambda q, rate: chunked.latency(q, 1.0, 2048.0, rate).ttft))
    ttft = np.asarray(fn(p, lam))
    ratio = ttft[1:] / ttft[:-1]
    assert np.all(ratio < 1.2), f"TTFT jumps with prompt length: {np.round(ratio, 3)}"

"""The queueing tails against independent references (issue 19, item 3; docs/model.md section 3).

- M/D/1: Erlang's exact waiting-time distribution (Erlang 1909; Crommelin 1932), computed here in a few lines.
- M/G/1 with lognormal service: a Lindley simulation, 4 x 10^6 customers.
- M/M/c: Erlang C from the textbook recursion over integer servers; the model extends it to real c.
None of these calls the functions under test.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frontier_jax.costmodel import queueing as qu
from frontier_jax.costmodel.queueing import Dispatch

Q = 0.99


def _md1_wait_cdf(t, rho):
    """P(W <= t) of M/D/1 with unit service (Erlang): (1 - rho) sum_{k <= t} (rho (k - t))^k / k! e^{-rho (k - t)}."""
    k = np.arange(int(math.floor(t)) + 1)
    x = rho * (k - t)
    logs = np.array([math.lgamma(kk + 1) for kk in k])
    terms = np.sign(x) ** k * np.exp(k * np.log(np.abs(np.where(x == 0, 1.0, x))) - logs - x)
    terms[(x == 0) & (k > 0)] = 0.0
    return (1.0 - rho) * terms.sum()


def _md1_sojourn_quantile(rho, q=Q):
    """Bisection on the exact CDF; the bracket grows from 1 (the alternating sum loses precision far out)."""
    lo, hi = 0.0, 1.0
    while _md1_wait_cdf(hi, rho) < q:
        lo, hi = hi, 2.0 * hi
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _md1_wait_cdf(mid, rho) < q else (lo, mid)
    return 1.0 + lo


def _lindley_sojourn_quantile(rho, cv, n=4_000_000, q=Q, seed=0):
    rng = np.random.default_rng(seed)
    s2 = math.log1p(cv**2)
    s = rng.lognormal(-s2 / 2, math.sqrt(s2), n)
    a = rng.exponential(1.0 / rho, n)
    c = np.concatenate([[0.0], np.cumsum(s[:-1] - a[1:])])
    w = c - np.minimum.accumulate(c)
    return float(np.quantile((w + s)[n // 20:], q))


def _model_sojourn(rho, cv, servers=1.0, dispatch=Dispatch.RANDOM, q=Q):
    nodes, w = qu.length_nodes(jnp.asarray(1.0), jnp.asarray(cv))
    own = qu.lognormal_quantile(1.0, cv, qu.ndtri(jnp.asarray(q)))
    return float(qu.sojourn(jnp.asarray(rho), nodes, w, q, 0.0, own, servers=jnp.asarray(servers),
                            dispatch=dispatch))


@pytest.mark.parametrize("rho", [0.1, 0.25, 0.5, 0.75, 0.9])
def test_md1_p99_sojourn_matches_erlangs_exact_distribution(rho):
    """The exact Cramer-Lundberg constant (1 - rho) / (lambda E[S e^{theta S}] - 1) instead of rho: at rho = 0.25
    the old constant said 2.38 s for a unit service where the exact p99 is 2.67 s."""
    exact = _md1_sojourn_quantile(rho)
    assert _model_sojourn(rho, 0.0) == pytest.approx(exact, rel=0.02)


@pytest.mark.parametrize("rho", [0.1, 0.25, 0.5, 0.75, 0.9])
def test_mg1_lognormal_p99_sojourn_matches_a_lindley_simulation(rho):
    sim = _lindley_sojourn_quantile(rho, 0.5)
    assert _model_sojourn(rho, 0.5) == pytest.approx(sim, rel=0.02)


def _erlang_c_recursion(c: int, a: float) -> float:
    """Erlang B by B_0 = 1, B_k = a B_{k-1} / (k + a B_{k-1}); C = c B / (c - a (1 - B))."""
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return c * b / (c - a * (1.0 - b))


@pytest.mark.parametrize("c", [1, 2, 3, 8, 64, 1000])
@pytest.mark.parametrize("rho", [0.05, 0.5, 0.9, 0.995])
def test_erlang_c_at_integer_servers(c, rho):
    got = float(qu.erlang_c(jnp.asarray(float(c)), jnp.asarray(c * rho)))
    assert got == pytest.approx(_erlang_c_recursion(c, c * rho), rel=2e-4, abs=1e-300)


def test_erlang_c_is_smooth_and_monotone_in_real_servers():
    c = jnp.linspace(1.0, 12.0, 221)
    a = jnp.full_like(c, 0.8)
    v = np.asarray(jax.vmap(qu.erlang_c)(c, a))
    assert np.all(np.diff(v) < 0)  # more servers for the same offered load: less waiting
    g = np.asarray(jax.vmap(jax.grad(qu.erlang_c))(c, a))
    assert np.all(np.isfinite(g)) and np.all(g < 0)
    fd = (v[2:] - v[:-2]) / (2 * (c[1] - c[0]))
    np.testing.assert_allclose(g[1:-1], fd, rtol=2e-2)


@pytest.mark.parametrize("c", [2, 8, 64])
@pytest.mark.parametrize("rho", [0.3, 0.9])
def test_md_c_central_queue_decays_at_the_exact_rate(c, rho):
    """M/D/c: the n-th job starts after the (n - c)-th ends, W_n = max(0, W_{n-c} + D - (A_n - A_{n-c})), a
    Lindley recursion with Erlang(c, lambda) gaps, whose tail decays at theta with e^{theta D} (lambda / (lambda +
    theta))^c = 1. The model's fast-single-server decay solves the same equation."""
    lam = c * rho
    lo, hi = 1e-9, 1e3
    for _ in range(200):  # bisection on theta D - c log(1 + theta / lambda), negative below the root
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mid - c * math.log1p(mid / lam) < 0 else (lo, mid)
    nodes, w = qu.length_nodes(jnp.asarray(1.0), jnp.asarray(0.0))
    t = qu.pool_tail(jnp.asarray(rho), nodes, w, jnp.asarray(float(c)), Dispatch.CENTRAL)
    assert float(t.theta) == pytest.approx(lo, rel=1e-6)
    assert float(t.p_wait) == pytest.approx(_erlang_c_recursion(c, c * rho), rel=2e-4)


def test_random_dispatch_is_one_server_whatever_the_pool():
    for servers in (1.0, 4.0, 64.0, float("inf")):
        assert _model_sojourn(0.6, 0.5, servers, Dispatch.RANDOM) == _model_sojourn(0.6, 0.5)


def test_pooling_shortens_the_tail_and_the_large_deployment_limit_has_no_wait():
    one = _model_sojourn(0.8, 0.5)
    pooled = [_model_sojourn(0.8, 0.5, c, Dispatch.CENTRAL) for c in (1.0, 2.0, 8.0, 64.0)]
    assert pooled[0] == pytest.approx(one, rel=1e-12)
    assert all(b < a for a, b in zip(pooled, pooled[1:]))
    own = float(qu.lognormal_quantile(1.0, 0.5, qu.ndtri(jnp.asarray(Q))))
    assert _model_sojourn(0.999, 0.5, float("inf"), Dispatch.CENTRAL) == pytest.approx(own, rel=1e-12)
    assert _model_sojourn(0.8, 0.5, 8.0, Dispatch.JSQ) >= _model_sojourn(0.8, 0.5, 8.0, Dispatch.CENTRAL)


def test_wait_quantile_vanishes_with_the_load():
    """The KV link's term is the wait before a transfer (its p_q), not the whole sojourn: it is 0 while the link
    is busy less than 1 - q of the time, and it grows from 0 with the load."""
    nodes, w = qu.length_nodes(jnp.asarray(0.09), jnp.asarray(0.0))  # a 90 ms transfer
    lams = jnp.asarray([1e-6, 1e-3, 0.1, 1.0, 5.0, 10.0])
    waits = np.asarray(jax.vmap(lambda lam: qu.wait_quantile(lam, nodes, w, Q, 0.0))(lams))
    assert waits[0] == 0.0 and waits[1] == 0.0
    assert np.all(np.diff(waits) >= 0) and waits[-1] > 0.09

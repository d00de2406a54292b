"""The operating-point solvers of frontier_jax/costmodel/operating_point.py: Chandrupatla in the utilisation logit
(continuous constraints: the prefill pools) against a closed-form root and against the Illinois solver, and its IFT
derivative against finite differences."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frontier_jax.costmodel import catalog
from frontier_jax.costmodel import operating_point as op
from frontier_jax.costmodel import search
from frontier_jax.costmodel.types import Point, Scenario

RNG = np.random.default_rng(7)


def _queue_like(lam, args):
    """log((a + b rho / (1 - rho)) / T), rho = lam / hi: a flat light-traffic floor a and a 1 / (1 - rho) pole,
    the shape of a queueing delay against its bound. Root rho* = r / (1 + r), r = (T - a) / b (if a < T)."""
    a, b, t, hi = args
    rho = lam / hi
    return jnp.where(rho < 1.0, jnp.log((a + b * rho / (1.0 - rho)) / t), jnp.inf)


def _upper(args):
    return args[3]


def _closed_form(a, b, t, hi):
    r = (t - a) / b
    return np.where(a <= t, hi * r / (1.0 + r), np.nan)


def _random_queue_args(n):
    a = 10 ** RNG.uniform(-3, 0.5, n)      # floor, s
    b = 10 ** RNG.uniform(-4, 0, n)        # delay scale, s
    t = 10 ** RNG.uniform(-1, 0.7, n)      # bound, s
    hi = 10 ** RNG.uniform(-2, 3, n)       # stability limit, requests/s
    return tuple(jnp.asarray(x) for x in (a, b, t, hi))


def test_continuous_solver_matches_the_closed_form_root():
    args = _random_queue_args(2000)
    got = jax.jit(jax.vmap(lambda *a: op.max_rate(_queue_like, _upper, a, continuous=True)))(*args)
    want = _closed_form(*map(np.asarray, args))
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(want).any() and np.isfinite(want).sum() > 1000
    ok = np.isfinite(want)
    # roots above utilisation 1 - UTIL_MAX are reported at the bracket's end
    rho = want[ok] / np.asarray(args[3])[ok]
    inside = rho < 1.0 - 10 * op.UTIL_MAX
    np.testing.assert_allclose(np.asarray(got)[ok][inside], want[ok][inside], rtol=1e-11)
    # every reported rate meets the bound (to the solver's tolerance)
    f = jax.vmap(_queue_like)(got[ok], tuple(x[ok] for x in args))
    assert np.all(np.asarray(f) <= op.POLISH_TOL)


def test_continuous_solver_is_the_illinois_root():
    """Both solvers find the same rate where the violation is continuous (the Illinois result is the reference:
    30 steps and a Newton polish)."""
    args = _random_queue_args(500)
    fast = jax.vmap(lambda *a: op.max_rate(_queue_like, _upper, a, continuous=True))(*args)
    slow = jax.vmap(lambda *a: op.max_rate(_queue_like, _upper, a))(*args)
    assert np.array_equal(np.isnan(fast), np.isnan(slow))
    np.testing.assert_allclose(np.asarray(fast), np.asarray(slow), rtol=1e-9)


def _prefill_points(n):
    hw = catalog.stacked_hardware(["a100-80gb-sxm", "h100-80gb-sxm", "h200-141gb-sxm"])
    md = catalog.stacked_models(["llama-3.1-8b", "llama-3.1-70b"])
    eff = catalog.stacked_efficiency(("current",))
    ih, im = RNG.integers(0, 3, n), RNG.integers(0, 2, n)
    take = lambda table, i: jax.tree.map(lambda x: x[i], table)  # noqa: E731
    f = lambda lo, hi: jnp.asarray(10 ** RNG.uniform(lo, hi, n))  # noqa: E731
    z = jnp.zeros(n)
    sc = Scenario.build(input_len=f(1.5, 4.5), output_len=f(1, 3), input_cv=jnp.asarray(RNG.choice([0.0, 0.5, 1.5], n)),
                  output_cv=z + 1.0, ttft=f(-1, 1), tpot=z + 0.05, q=jnp.asarray(RNG.choice([0.5, 0.9, 0.99], n)),
                  mean_mode=jnp.asarray(RNG.choice([0.0, 1.0], n, p=[0.8, 0.2])),
                  arrival_ca2=jnp.asarray(RNG.choice([0.0, 1.0, 4.0], n)), kv_bandwidth=f(8.5, 11.7),
                  cache_hit=jnp.asarray(RNG.choice([0.0, 0.5], n)), fp8=jnp.asarray(RNG.choice([0.0, 1.0], n)))
    sc = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,)), sc)  # defaulted fields are scalars: batch every leaf
    p = Point(take(hw, ih), take(md, im), jax.tree.map(lambda x: jnp.broadcast_to(x[0], (n,)), eff), sc)
    tp = jnp.asarray(RNG.choice([1.0, 2.0, 4.0, 8.0], n))
    overlap = jnp.asarray(RNG.choice([0.0, 1.0], n))
    link = jnp.asarray(RNG.choice([0.0, 1.0, 2.0], n))  # Link.FREE, EXPOSED, FULL as data: one traced program
    return p, tp, overlap, link


def _lone(tp):
    """One instance with its own queue (a pool of one pinned instance)."""
    return search.Sizing(jnp.ones_like(tp), jnp.ones_like(tp), jnp.zeros_like(tp))


def _prefill_link_fn(lam, args):
    """The prefill pool's constraint with the link mode as an array (any mode in one program)."""
    p, tp, overlap, link = args
    return search._prefill_violation(link, lam, (p, _lone(tp), tp, overlap, None))


def _prefill_link_upper(args):
    p, tp, overlap, link = args
    return search._prefill_rate_upper(link, (p, _lone(tp), tp, overlap, None))


def test_prefill_pools_agree_with_the_illinois_solver():
    """Where the root is below utilisation 1 - 1e-4 both solvers agree to 1e-9. Closer to the pole (deterministic
    arrivals) the Illinois iteration in log-rate stops short (its final bracket, 2e-8 wide in log-rate, is not small
    against 1 - rho); there the continuous solver's rate is at least as high and still meets the bound."""
    p, tp, overlap, link = args = _prefill_points(1500)
    solve = lambda cont: jax.jit(jax.vmap(lambda *a: op.max_rate(  # noqa: E731
        _prefill_link_fn, _prefill_link_upper, a, cont)))(*args)
    fast, slow = np.asarray(solve(True)), np.asarray(solve(False))
    assert np.array_equal(np.isnan(fast), np.isnan(slow))
    ok = np.isfinite(fast)
    assert ok.sum() > 500
    upper = np.asarray(jax.vmap(lambda *a: _prefill_link_upper(a))(*args))
    far = ok & (fast / upper < 1.0 - 1e-4)
    assert far.sum() > 0.8 * ok.sum()
    np.testing.assert_allclose(fast[far], slow[far], rtol=1e-9)
    violation = np.asarray(jax.vmap(lambda lam, *a: _prefill_link_fn(lam, a))(jnp.asarray(fast), *args))
    assert np.all(violation[far] <= op.POLISH_TOL)
    # nearer the pole 1 - rho, recomputed from the rate, carries a relative rounding error of eps / (1 - rho)
    assert np.all(violation[ok] <= 1e-6)
    assert np.all(fast[ok] >= slow[ok] * (1.0 - 1e-9))


def test_continuous_solver_in_float32():
    args = tuple(x.astype(jnp.float32) for x in _random_queue_args(500))
    got = np.asarray(jax.vmap(lambda *a: op.max_rate(_queue_like, _upper, a, continuous=True))(*args))
    assert got.dtype == np.float32
    want = _closed_form(*(np.asarray(x, np.float64) for x in args))
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = np.isfinite(want) & (want / np.asarray(args[3], np.float64) < 0.999)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-4)


def _closed_form_derivative(a, b, t, hi, k):
    """d(root)/d(a, b, T) of _closed_form: rate = hi r / (1 + r), r = (T - a) / b."""
    r = (t - a) / b
    dr = (-1.0 / b, -(t - a) / b**2, 1.0 / b)[k]
    return hi / (1.0 + r) ** 2 * dr


@pytest.mark.parametrize("k", [0, 1, 2])
def test_continuous_solver_derivative_is_the_implicit_function(k):
    """The custom JVP (implicit function theorem at the root) against the closed form's derivative, and against
    central differences of the solver itself where the root is far from the pole (there the differences are
    well conditioned)."""
    args = _random_queue_args(200)
    keep = np.asarray(args[0]) < 0.5 * np.asarray(args[2])
    args = tuple(x[keep] for x in args)

    def root(x, *a):
        a = list(a)
        a[k] = x
        return op.max_rate(_queue_like, _upper, tuple(a), continuous=True)

    grad = np.asarray(jax.vmap(jax.grad(root))(args[k], *args))
    exact = _closed_form_derivative(*map(np.asarray, args), k)
    np.testing.assert_allclose(grad, exact, rtol=1e-8)
    h = 1e-5 * np.asarray(args[k])
    solve = jax.vmap(root)
    fd = (np.asarray(solve(args[k] + h, *args)) - np.asarray(solve(args[k] - h, *args))) / (2 * h)
    far = np.asarray(solve(args[k], *args)) / np.asarray(args[3]) < 0.99
    assert far.sum() > 20
    np.testing.assert_allclose(fd[far], exact[far], rtol=1e-6)

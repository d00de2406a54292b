"""What makes the model cheaper to trace must not change what it computes: the scan-free normal quantile, the
per-point z = ndtri(q) of Scenario, the inlined jnp tracing and its scans (frontier_jax/tracing.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import ndtri as jax_ndtri

from frontier_jax import inputs, operating, queueing, tracing
from frontier_jax.search import SearchSpace, evaluate_point

RNG = np.random.default_rng(3)


@pytest.mark.parametrize("dtype,tiny", [(np.float64, -300), (np.float32, -37)])
def test_ndtri_is_jax_ndtri_bit_for_bit(dtype, tiny):
    """The same Cephes arithmetic as jax.scipy.special.ndtri, compiled: identical bits on every branch (central,
    both tails, z above 8, the exact ends 0 and 1)."""
    p = np.concatenate([RNG.uniform(0, 1, 20000), 10 ** RNG.uniform(tiny, 0, 20000),
                        1 - 10 ** RNG.uniform(-16, 0, 20000), [0.0, 1.0, 0.5, np.exp(-2), 1 - np.exp(-2)]])
    p = jnp.asarray(p[(p >= 0) & (p <= 1)].astype(dtype))
    ours, theirs = np.asarray(jax.jit(queueing.ndtri)(p)), np.asarray(jax.jit(jax_ndtri)(p))
    assert ours.dtype == dtype
    assert np.array_equal(ours, theirs, equal_nan=True)
    assert np.isneginf(ours[p == 0]).all() and np.isposinf(ours[p == 1]).all()


def test_ndtri_derivative_is_the_normal_density():
    p = jnp.asarray(RNG.uniform(1e-6, 1 - 1e-6, 500))
    g = np.asarray(jax.vmap(jax.grad(queueing.ndtri))(p))
    z = np.asarray(queueing.ndtri(p))
    np.testing.assert_allclose(g, np.sqrt(2 * np.pi) * np.exp(0.5 * z**2), rtol=1e-12)


SMALL = SearchSpace(tp=(1.0, 4.0), chunk=(1024.0,), tp_prefill=(2.0,), tp_decode=(2.0,), overlap=(1.0,))


def test_per_point_z_is_the_same_model():
    """A Scenario built without z (computed where used) and one from inputs.build (z set once) agree exactly."""
    p, d, price = inputs.build("h100-80gb-sxm", "llama-3.1-70b", input_len=4096.0, output_len=512.0, ttft=2.0,
                               tpot=0.05, percentile=[0.5, 0.9, 0.99, 0.999], input_cv=1.0, rate=30.0)
    n = p.sc.q.shape
    p, d = jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x, float), n), (p, d))
    assert p.sc.z is not None
    np.testing.assert_array_equal(np.asarray(p.sc.z), np.asarray(jax_ndtri(p.sc.q)))
    bare = p._replace(sc=p.sc._replace(z=None))
    f = jax.jit(jax.vmap(lambda p, d, c: evaluate_point(p, d, c, SMALL)))
    price = jnp.broadcast_to(jnp.asarray(price, float), n)
    a, b = f(p, d, price), f(bare, d, price)
    assert np.isfinite(np.asarray(a["cost"])).any()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_inlined_tracing_keeps_loops_and_values():
    """Under inline_jnp the jnp calls bind primitives directly (no nested jit) while tracing.scan stays a scan."""
    def f(x):
        return tracing.scan(lambda c, _: (c * 0.5 + jnp.sin(c), None), x, 7)[0]

    def inlined(x):
        with tracing.inline_jnp():
            return f(x)

    x = jnp.linspace(0.1, 2.0, 5)
    jaxpr = jax.make_jaxpr(jax.vmap(inlined))(x)
    names = [e.primitive.name for e in jaxpr.jaxpr.eqns]
    assert "scan" in names and "jit" not in names and "pjit" not in names
    np.testing.assert_array_equal(np.asarray(jax.jit(jax.vmap(inlined))(x)), np.asarray(jax.jit(jax.vmap(f))(x)))


def test_batched_zeros_are_zeros():
    x = jnp.asarray([1.0, np.nan, np.inf, -2.0])
    z = operating.batched_zeros(x)
    assert z.dtype == x.dtype and np.array_equal(np.asarray(z), np.zeros(4))
    assert operating.batched_zeros(x, jnp.int32).dtype == jnp.int32

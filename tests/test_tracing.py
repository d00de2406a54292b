"""What makes the model cheaper to trace must not change what it computes: the scan-free normal quantile, the
per-point z = ndtri(q) of Scenario, the inlined jnp tracing and its scans (frontier_jax/tracing.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import ndtri as jax_ndtri

from frontier_jax import tracing
from frontier_jax.costmodel import inputs, queueing
from frontier_jax.costmodel import operating_point as operating
from frontier_jax.costmodel.arch import chunked, colocated, disaggregated
from frontier_jax.costmodel.arch.disaggregated import Link
from frontier_jax.costmodel.types import Scenario

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


def test_per_point_z_is_the_same_model():
    """Every latency function (all the places that use z) gives the same bits with Scenario.z set once by
    Scenario.build (through inputs.build) and with z recomputed from q inside the traced function by
    jax.scipy.special.ndtri, at several rates and percentiles."""
    p, _, _ = inputs.build("h100-80gb-sxm", "llama-3.1-70b", input_len=4096.0, output_len=512.0, ttft=2.0,
                           tpot=0.05, percentile=[[0.5], [0.9], [0.99], [0.999]], input_cv=1.0,
                           rate=[0.05, 0.5, 2.0])
    n = p.sc.q.shape
    p = jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x, float), n).ravel(), p)
    np.testing.assert_array_equal(np.asarray(p.sc.z), np.asarray(jax_ndtri(p.sc.q)))
    built = Scenario.build(input_len=1.0, output_len=1.0, ttft=1.0, tpot=1.0, q=p.sc.q)
    np.testing.assert_array_equal(np.asarray(built.z), np.asarray(jax_ndtri(p.sc.q)))
    lam = jnp.tile(jnp.asarray([0.05, 0.5, 2.0]), 4)
    two = jnp.full_like(lam, 2.0)
    parts = {"colocated": lambda p, l: colocated.latency(p, two[0], l),
             "chunked": lambda p, l: chunked.latency(p, two[0], 1024.0, l),
             "prefill": lambda p, l: disaggregated.prefill_latency(p, two[0], 1.0, Link.FULL, l),
             "decode": lambda p, l: disaggregated.decode_latency(p, two[0], l)}

    def z_where_used(f):
        return lambda p, l: f(p._replace(sc=p.sc._replace(z=jax_ndtri(p.sc.q))), l)

    for name, f in parts.items():
        a, b = jax.jit(jax.vmap(f))(p, lam), jax.jit(jax.vmap(z_where_used(f)))(p, lam)
        assert np.isfinite(np.asarray(a.ttft) + np.asarray(a.tpot)).any(), name
        for field, x, y in zip(a._fields, a, b):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"{name}.{field}")


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

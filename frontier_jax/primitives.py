"""Public latency primitives: catalogue names or loaded objects in, seconds out; every number may be an array."""
from __future__ import annotations

import jax.numpy as jnp

from . import latency as lat
from .catalog import load_hardware, load_model
from .inputs import engine_efficiency, precision_flag


def _resolve(hardware, model, engine, precision):
    return load_hardware(hardware), load_model(model), engine_efficiency(engine), precision_flag(precision)


def prefill_time(hardware, model, tokens, tp, batch=1, *, engine="current", precision="bf16"):
    """Seconds of one prefill iteration over `batch` prompts of `tokens` tokens on a TP group of `tp` GPUs."""
    hw, md, eff, fp8 = _resolve(hardware, model, engine, precision)
    f = jnp.asarray(fp8)
    return lat.prefill_seconds(hw, md, eff, jnp.asarray(tokens, float), jnp.asarray(tp, float),
                               jnp.asarray(batch, float), f)


def decode_step_time(hardware, model, batch, context, tp, *, engine="current", precision="bf16"):
    """Seconds of one decode iteration of `batch` sequences at mean context `context` on `tp` GPUs."""
    hw, md, eff, fp8 = _resolve(hardware, model, engine, precision)
    return lat.decode_seconds(hw, md, eff, jnp.asarray(batch, float), jnp.asarray(context, float),
                              jnp.asarray(tp, float), jnp.asarray(fp8))


def closed_loop(hardware, model, input_len, output_len, concurrency, tp, *, engine="current", precision="bf16",
                chunk=2048.0):
    """Mean TTFT (s), mean TPOT (s) and throughput (requests/s) of one aggregated (chunked-prefill) instance with
    `concurrency` requests always in flight, as serving benchmarks measure. Every number may be an array."""
    import jax

    from .arch.closed_loop import closed_loop as _closed_loop
    from .arch.common import Point, Scenario
    from .inputs import check_number

    for name, v in (("input_len", input_len), ("output_len", output_len), ("concurrency", concurrency), ("tp", tp)):
        check_number(name, v)
    hw, md, eff, fp8 = _resolve(hardware, model, engine, precision)
    args = [jnp.asarray(x, float) for x in (input_len, output_len, concurrency, tp, chunk)]
    shape = jnp.broadcast_shapes(*(a.shape for a in args))
    i, o, n, g, c = (jnp.broadcast_to(a, shape).ravel() for a in args)

    def one(i, o, n, g, c):
        z = jnp.zeros_like(i)
        sc = Scenario(i, o, z, z, z + 1.0, z + 1.0, z + 0.5, z + 1.0, z + 1.0, z + 1e30, z, z + fp8)
        return _closed_loop(Point(hw, md, eff, sc), g, c, n)

    ttft, tpot, x = jax.jit(jax.vmap(one))(i, o, n, g, c)
    return ttft.reshape(shape), tpot.reshape(shape), x.reshape(shape)

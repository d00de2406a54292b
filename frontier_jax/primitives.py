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

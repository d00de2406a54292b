"""Immutable pytrees that every kernel takes. All leaves are (broadcastable) arrays, so any field can be swept
or differentiated; names and sources live in the catalogue, never in the pytree."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Hardware(NamedTuple):
    """One GPU. SI units: FLOP/s, bytes, bytes/s, USD per GPU-hour, W."""

    bf16_flops: jax.Array
    fp8_flops: jax.Array        # equals bf16_flops where the GPU has no FP8 tensor cores
    hbm_bytes: jax.Array
    hbm_bandwidth: jax.Array
    nvlink_bandwidth: jax.Array  # per GPU, per direction
    nic_bandwidth: jax.Array     # scale-out NIC per GPU, per direction
    gpus_per_node: jax.Array
    price: jax.Array             # USD per GPU-hour
    power: jax.Array             # W (TDP)


class Model(NamedTuple):
    """One transformer. Counts are dimensionless; params is the total parameter count (not billions)."""

    layers: jax.Array
    hidden: jax.Array
    q_heads: jax.Array
    kv_heads: jax.Array
    head_dim: jax.Array
    ffn: jax.Array
    vocab: jax.Array
    params: jax.Array


HARDWARE_FIELDS = Hardware._fields
MODEL_FIELDS = Model._fields


def as_array_tree(tree, dtype=None):
    """Convert every leaf of a NamedTuple to a jnp array (default float dtype of the current x64 mode)."""
    dtype = dtype or jnp.result_type(float)
    return type(tree)(*(jnp.asarray(x, dtype=dtype) for x in tree))

"""Latency primitives: the seconds of a prefill, decode or mixed iteration (MODEL.md section 3).

Every function is elementwise in its array arguments, so it jit-compiles once and vmaps/broadcasts freely. Two
forms, chosen by the engine's type (static: a trace sees one):

* `KernelEngine` (issue 18): the iteration as its operations, each from the measured kernel fits of the GPU
  (costmodel/operations.py, kernels.py), plus the engine's fitted terms:
  overhead + L (overhead_layer + elementwise_passes T hidden 2 / HBM bandwidth) for T tokens, L layers.

* `Efficiency` (the roofline): one calibrated compute and memory efficiency for every operation. Iteration time on
  a TP group of g GPUs:

    t = max(FLOPs / (g F eta_F(g)), bytes / (g B eta_B(g))) + all-reduce time + L t_layer + t_tp log2(g)

The fixed overhead is per layer (kernel launches and synchronisation scale with depth), so one fit serves
models of different depth.

`fp8` is a 0/1 array: 1 stores the weights in 8 bits and uses FP8 tensor-core FLOP/s where the GPU has them.
`kv_fp8` (0/1, None: the same as `fp8`) stores the KV cache in 8 bits: its bytes, the cache's capacity and the
attention kernels. vLLM keeps a BF16 cache for FP8 weights unless told otherwise (`--kv-cache-dtype fp8`).
"""
from __future__ import annotations

import jax.numpy as jnp

from . import kernels as kn
from . import operations as ops
from .types import Efficiency, Hardware, KernelEngine, Model, kv_flag

ACTIVATION_BYTES = 2.0  # bf16 activations in the TP all-reduce


def weight_bytes(model: Model, fp8=0.0):
    """Bytes of the weights: 2 per parameter in BF16, 1 in FP8."""
    return model.params * (2.0 - fp8)


def kv_bytes_per_token(model: Model, kv_fp8=0.0):
    """K and V for every layer: 2 * layers * kv_heads * head_dim * bytes per element (1 in an FP8 cache)."""
    return 2.0 * model.layers * model.kv_heads * model.head_dim * (2.0 - kv_fp8)


def linear_flops_per_token(model: Model):
    """2 FLOPs per weight of every matmul; the input embedding is a lookup, not a matmul."""
    return 2.0 * (model.params - model.vocab * model.hidden)


def _attn_dim(model: Model):
    return model.q_heads * model.head_dim


def peak_flops(hw: Hardware, fp8=0.0, xp=jnp):
    """Dense tensor-core FLOP/s of the GPU at the precision (FP8 where fp8 = 1)."""
    return xp.where(fp8 > 0.5, hw.fp8_flops, hw.bf16_flops)


def iteration_time(hw: Hardware, model: Model, eff: Efficiency, flops, hbm_bytes, tokens, tp, fp8=0.0, xp=jnp):
    """Roofline time of one forward pass over `tokens` tokens that does `flops` and moves `hbm_bytes` in total.
    `xp=numpy` evaluates it on the host with numpy leaves (the simulator's iteration costs)."""
    log2tp = xp.log2(tp)
    eta_f = eff.eta_flops * tp ** (-eff.eta_flops_decay)
    eta_b = eff.eta_hbm * tp ** (-eff.eta_hbm_decay)
    compute = flops / (tp * peak_flops(hw, fp8, xp) * eta_f)
    memory = hbm_bytes / (tp * hw.hbm_bandwidth * eta_b)
    ring = 2.0 * (tp - 1.0) / tp * tokens * model.hidden * ACTIVATION_BYTES / hw.nvlink_bandwidth
    allreduce = xp.where(tp > 1.0, 2.0 * model.layers * (eff.allreduce_latency + ring), 0.0)
    return xp.maximum(compute, memory) + allreduce + eff.overhead * model.layers + eff.overhead_tp * log2tp


def prefill_cost(model: Model, tokens, batch=1.0, fp8=0.0, kv_fp8=None):
    """(FLOPs, bytes, tokens) of prefilling `batch` prompts of `tokens` tokens each (causal attention)."""
    flops = batch * (linear_flops_per_token(model) * tokens + 2.0 * model.layers * _attn_dim(model) * tokens**2)
    hbm = weight_bytes(model, fp8) + batch * tokens * kv_bytes_per_token(model, kv_flag(fp8, kv_fp8))
    return flops, hbm, batch * tokens


def decode_cost(model: Model, batch, context, fp8=0.0, kv_fp8=None):
    """(FLOPs, bytes, tokens) of one decode step of `batch` sequences at mean context `context`."""
    flops = linear_flops_per_token(model) * batch + 4.0 * model.layers * _attn_dim(model) * batch * context
    hbm = weight_bytes(model, fp8) + batch * context * kv_bytes_per_token(model, kv_flag(fp8, kv_fp8))
    return flops, hbm, batch


def mixed_cost(model: Model, batch, context, chunk_tokens, chunk_prefix, fp8=0.0, kv_fp8=None):
    """One chunked-prefill iteration: `batch` decodes at mean context plus `chunk_tokens` prompt tokens whose
    prompt already has `chunk_prefix` tokens in the KV cache (re-read by this chunk's attention)."""
    lin = linear_flops_per_token(model)
    a = _attn_dim(model)
    flops = (lin * (batch + chunk_tokens) + 4.0 * model.layers * a * batch * context
             + 4.0 * model.layers * a * chunk_tokens * (chunk_prefix + 0.5 * chunk_tokens))
    kvb = kv_bytes_per_token(model, kv_flag(fp8, kv_fp8))
    hbm = weight_bytes(model, fp8) + (batch * context + chunk_prefix + chunk_tokens) * kvb
    return flops, hbm, batch + chunk_tokens


def uses_kernels(eff) -> bool:
    """Whether an engine's iterations are composed from measured kernels (a KernelEngine) or the roofline."""
    return isinstance(eff, KernelEngine)


def engine_seconds(hw: Hardware, model: Model, eng: KernelEngine, tokens):
    """The engine's own seconds in an iteration of `tokens` tokens, beyond its measured kernels."""
    passes = eng.elementwise_passes * tokens * model.hidden * ACTIVATION_BYTES / hw.hbm_bandwidth
    return eng.overhead + model.layers * (eng.overhead_layer + passes)


def prefill_seconds(hw, model, eff, tokens, tp, batch=1.0, fp8=0.0, kv_fp8=None):
    """Seconds of one prefill iteration of `batch` prompts of `tokens` tokens on a TP group of `tp` GPUs."""
    if uses_kernels(eff):
        t = ops.prefill_iteration_seconds(hw, model, kn.kernel_set(hw), tokens, 0.0, tp, fp8, batch, kv_fp8=kv_fp8)
        return t + engine_seconds(hw, model, eff, batch * tokens)
    f, b, n = prefill_cost(model, tokens, batch, fp8, kv_fp8)
    return iteration_time(hw, model, eff, f, b, n, tp, fp8)


def decode_seconds(hw, model, eff, batch, context, tp, fp8=0.0, kv_fp8=None):
    """Seconds of one decode iteration of `batch` sequences at mean context `context` (tokens). With measured
    kernels an iteration carries at least one sequence (batch below 1 costs as 1)."""
    if uses_kernels(eff):
        b = jnp.maximum(batch, 1.0)
        return (ops.decode_iteration_seconds(hw, model, kn.kernel_set(hw), b, context, tp, fp8, kv_fp8=kv_fp8)
                + engine_seconds(hw, model, eff, b))
    f, b, n = decode_cost(model, batch, context, fp8, kv_fp8)
    return iteration_time(hw, model, eff, f, b, n, tp, fp8)


def mixed_seconds(hw, model, eff, batch, context, chunk_tokens, chunk_prefix, tp, fp8=0.0, kv_fp8=None):
    """Seconds of one chunked-prefill iteration (`batch` decodes plus `chunk_tokens` prompt tokens)."""
    if uses_kernels(eff):
        t = ops.mixed_iteration_seconds(hw, model, kn.kernel_set(hw), batch, context, chunk_tokens, chunk_prefix, tp,
                                        fp8, kv_fp8=kv_fp8)
        return t + engine_seconds(hw, model, eff, batch + chunk_tokens)
    f, b, n = mixed_cost(model, batch, context, chunk_tokens, chunk_prefix, fp8, kv_fp8)
    return iteration_time(hw, model, eff, f, b, n, tp, fp8)


def kv_capacity_tokens(hw: Hardware, model: Model, tp, fp8=0.0, memory_fraction=0.9, kv_fp8=None):
    """KV-cache tokens that fit on a TP group: g * HBM * fraction - weights (vLLM's gpu_memory_utilization)."""
    free = tp * hw.hbm_bytes * memory_fraction - weight_bytes(model, fp8)
    return jnp.maximum(free, 0.0) / kv_bytes_per_token(model, kv_flag(fp8, kv_fp8))

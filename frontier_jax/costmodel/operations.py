"""Operation-level iteration time of a dense transformer from fitted kernel latencies (issue 18, phase 1).

One iteration on a TP group of g GPUs (Megatron-style sharding, as vLLM runs it), per layer:

    QKV GEMM     m = T, n = (q_heads/g + 2 max(kv_heads/g, 1)) head_dim, k = hidden
    attention    context (prefill tokens, with their cached prefix) + generation (decode tokens' KV reads)
    out proj     m = T, n = hidden, k = q_heads head_dim / g
    gate+up      m = T, n = 2 ffn / g, k = hidden
    down         m = T, n = hidden, k = ffn / g
    all-reduce   2 per layer when g > 1, T hidden bf16 elements each

plus the LM head (m = sampled tokens, n = vocab / g, k = hidden, bf16: vLLM does not quantise it) and a
per-iteration framework overhead (an explicit parameter, 0 by default; phase 2 fits it end to end). T is the
iteration's token count. The embedding lookup, norms, rotary embedding, activation and sampling kernels are not
counted. KV heads fewer than g are replicated (one per GPU), as vLLM does. Every function is elementwise in its array
arguments (jit/vmap-able and differentiable; the kernels come from frontier_jax.calibration.kernels).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..calibration import kernels as kn
from .types import Hardware, Model


class OpTimes(NamedTuple):
    """Seconds of one iteration's operations: the per-layer ones are for one layer."""

    qkv: jax.Array
    attention: jax.Array
    out_proj: jax.Array
    gate_up: jax.Array
    down: jax.Array
    allreduce: jax.Array   # both all-reduces of the layer
    lm_head: jax.Array

    def layer(self):
        """Seconds of one layer."""
        return self.qkv + self.attention + self.out_proj + self.gate_up + self.down + self.allreduce


def _when(active, f, *args):
    """f(*args) where active, else 0, with arguments made safe (1) where inactive so the gradient stays finite."""
    safe = [jnp.where(active, a, 1.0) for a in args]
    return jnp.where(active, f(*safe), 0.0)


def heads_per_gpu(model: Model, tp):
    """(query heads, KV heads) per GPU of a TP group of `tp` (KV heads replicated when fewer than tp)."""
    return model.q_heads / tp, jnp.maximum(model.kv_heads / tp, 1.0)


def iteration_ops(hw: Hardware, model: Model, fit: kn.GpuKernels, prefill_seqs, prefill_tokens, prefix, decode_seqs,
                  context, sampled, tp, fp8=0.0) -> OpTimes:
    """Per-operation seconds of an iteration with `prefill_seqs` prompts of `prefill_tokens` new tokens after
    `prefix` cached ones, `decode_seqs` decodes at KV length `context`, and `sampled` LM-head tokens."""
    hq, hkv = heads_per_gpu(model, tp)
    d = model.head_dim
    t = prefill_seqs * prefill_tokens + decode_seqs
    gemm = lambda n, k: kn.gemm_seconds(fit, hw, t, n, k, fp8)  # noqa: E731
    ctx = _when(prefill_seqs * prefill_tokens > 0,
                lambda b, q: kn.context_seconds(fit, hw, b, q, prefix, hq, hkv, d, fp8), prefill_seqs, prefill_tokens)
    gen = _when(decode_seqs > 0, lambda b: kn.generation_seconds(fit, hw, b, context, hq, hkv, d, fp8), decode_seqs)
    ar = 2.0 * kn.allreduce_seconds(fit, hw, t * model.hidden, tp)
    lm = _when(sampled > 0, lambda s: kn.gemm_seconds(fit, hw, s, model.vocab / tp, model.hidden, 0.0), sampled)
    return OpTimes(gemm((hq + 2.0 * hkv) * d, model.hidden), ctx + gen, gemm(model.hidden, hq * d),
                   gemm(2.0 * model.ffn / tp, model.hidden), gemm(model.hidden, model.ffn / tp), ar, lm)


def total_seconds(model: Model, ops: OpTimes, overhead=0.0):
    """Iteration seconds: layers x one layer + LM head + framework overhead (s)."""
    return model.layers * ops.layer() + ops.lm_head + overhead


def prefill_iteration_seconds(hw, model, fit, tokens, prefix, tp, fp8=0.0, batch=1.0, overhead=0.0):
    """Seconds of a prefill iteration: `batch` prompts of `tokens` new tokens each after `prefix` cached tokens
    (prefix-cache hits), one sampled token per prompt, on a TP group of `tp` GPUs."""
    ops = iteration_ops(hw, model, fit, batch, tokens, prefix, 0.0, 1.0, batch, tp, fp8)
    return total_seconds(model, ops, overhead)


def decode_iteration_seconds(hw, model, fit, batch, context, tp, fp8=0.0, overhead=0.0):
    """Seconds of a decode iteration of `batch` sequences reading `context` cached tokens each (KV length)."""
    ops = iteration_ops(hw, model, fit, 0.0, 0.0, 0.0, batch, context, batch, tp, fp8)
    return total_seconds(model, ops, overhead)


def mixed_iteration_seconds(hw, model, fit, batch, context, chunk_tokens, chunk_prefix, tp, fp8=0.0, overhead=0.0):
    """Seconds of a chunked-prefill iteration: `batch` decodes at KV length `context` plus one prompt chunk of
    `chunk_tokens` tokens after `chunk_prefix` tokens of its prompt already in the KV cache (the chunk samples one
    token, as its last chunk does)."""
    sampled = batch + jnp.where(chunk_tokens > 0, 1.0, 0.0)
    ops = iteration_ops(hw, model, fit, 1.0, chunk_tokens, chunk_prefix, batch, context, sampled, tp, fp8)
    return total_seconds(model, ops, overhead)

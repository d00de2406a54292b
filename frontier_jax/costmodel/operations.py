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
arguments (jit/vmap-able and differentiable; the kernels come from frontier_jax.costmodel.kernels, a `KernelSet`).
The serving engine's own terms (framework overhead, the uncounted elementwise kernels) are added on top by
frontier_jax.costmodel.latency.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import kernels as kn
from .types import Hardware, Model, kv_flag


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


def token_gemms(model: Model, tp, fp8):
    """(n, k, fp8) of an iteration's GEMMs on a trailing axis: QKV, out proj, gate+up, down (m = the iteration's
    tokens) and the LM head (m = the sampled tokens; bf16, vLLM does not quantise it)."""
    hq, hkv = heads_per_gpu(model, tp)
    d = model.head_dim
    stack = lambda *xs: jnp.stack(jnp.broadcast_arrays(*xs), axis=-1)  # noqa: E731
    return (stack((hq + 2.0 * hkv) * d, model.hidden, 2.0 * model.ffn / tp, model.hidden, model.vocab / tp),
            stack(model.hidden, hq * d, model.hidden, model.ffn / tp, model.hidden),
            stack(fp8, fp8, fp8, fp8, 0.0 * fp8))


def _token_ops(hw: Hardware, model: Model, fit: kn.KernelSet, tokens, sampled, tp, fp8):
    """(QKV, out proj, gate+up, down, LM head) seconds of an iteration of `tokens` tokens of which `sampled` reach the
    LM head: the GEMMs, which see only the token count."""
    # the four token GEMMs and the LM head as one batched evaluation (last axis), the LM head in bf16 (vLLM does not
    # quantise it) over the sampled tokens only
    lm_on = sampled > 0
    stack = lambda *xs: jnp.stack(jnp.broadcast_arrays(*xs), axis=-1)  # noqa: E731
    m = stack(tokens, tokens, tokens, tokens, jnp.where(lm_on, sampled, 1.0))
    g = kn.gemm_seconds(fit, hw, m, *token_gemms(model, tp, fp8))
    return g[..., 0], g[..., 1], g[..., 2], g[..., 3], jnp.where(lm_on, g[..., 4], 0.0)


def _allreduces(hw: Hardware, model: Model, fit: kn.KernelSet, tokens, tp):
    """Seconds of the layer's two all-reduces of `tokens` activations."""
    return 2.0 * kn.allreduce_seconds(fit, hw, tokens * model.hidden, tp)


def _generation(hw, model, fit, heads, decode_seqs, context, fp8):
    hq, hkv = heads
    return _when(decode_seqs > 0, lambda b, cx: kn.generation_seconds(fit, hw, b, cx, hq, hkv, model.head_dim, fp8),
                 decode_seqs, context)


def _context(hw, model, fit, heads, seqs, tokens, prefix, fp8):
    hq, hkv = heads
    return _when(seqs * tokens > 0, lambda b, q: kn.context_seconds(fit, hw, b, q, prefix, hq, hkv, model.head_dim,
                                                                    fp8), seqs, tokens)


def iteration_ops(hw: Hardware, model: Model, fit: kn.KernelSet, prefill_seqs, prefill_tokens, prefix, decode_seqs,
                  context, sampled, tp, fp8=0.0, kv_fp8=None) -> OpTimes:
    """Per-operation seconds of an iteration with `prefill_seqs` prompts of `prefill_tokens` new tokens after
    `prefix` cached ones, `decode_seqs` decodes at KV length `context`, and `sampled` LM-head tokens. `fp8`: FP8
    GEMMs; `kv_fp8` (None: as `fp8`): the attention kernels read an FP8 KV cache."""
    t = prefill_seqs * prefill_tokens + decode_seqs
    heads = heads_per_gpu(model, tp)
    kv = kv_flag(fp8, kv_fp8)
    qkv, out, gate_up, down, lm = _token_ops(hw, model, fit, t, sampled, tp, fp8)
    ctx = _context(hw, model, fit, heads, prefill_seqs, prefill_tokens, prefix, kv)
    gen = _generation(hw, model, fit, heads, decode_seqs, context, kv)
    ar = _allreduces(hw, model, fit, t, tp)
    return OpTimes(qkv, ctx + gen, out, gate_up, down, ar, lm)


def pieces_iteration_ops(hw: Hardware, model: Model, fit: kn.KernelSet, seqs, tokens, prefix, decode_seqs, context,
                         sampled, tp, fp8=0.0, kv_fp8=None) -> OpTimes:
    """iteration_ops of an iteration whose prompt tokens come in pieces on the trailing axis: `seqs[..., j]` prompts
    of `tokens[..., j]` new tokens after `prefix[..., j]` cached ones each (several prompts in one chunk: each
    piece's attention is its own, the GEMMs see the iteration's total)."""
    t = jnp.sum(seqs * tokens, axis=-1) + decode_seqs
    kv = kv_flag(fp8, kv_fp8)
    qkv, out, gate_up, down, lm = _token_ops(hw, model, fit, t, sampled, tp, fp8)
    hq, hkv = heads_per_gpu(model, tp)
    ctx = jnp.sum(_context(hw, model, fit, (jnp.asarray(hq)[..., None], jnp.asarray(hkv)[..., None]), seqs, tokens,
                           prefix, kv), axis=-1)
    gen = _generation(hw, model, fit, (hq, hkv), decode_seqs, context, kv)
    ar = _allreduces(hw, model, fit, t, tp)
    return OpTimes(qkv, ctx + gen, out, gate_up, down, ar, lm)


def total_seconds(model: Model, ops: OpTimes, overhead=0.0):
    """Iteration seconds: layers x one layer + LM head + framework overhead (s)."""
    return model.layers * ops.layer() + ops.lm_head + overhead


def prefill_iteration_seconds(hw, model, fit, tokens, prefix, tp, fp8=0.0, batch=1.0, overhead=0.0, kv_fp8=None):
    """Seconds of a prefill iteration: `batch` prompts of `tokens` new tokens each after `prefix` cached tokens
    (prefix-cache hits), one sampled token per prompt, on a TP group of `tp` GPUs."""
    ops = iteration_ops(hw, model, fit, batch, tokens, prefix, 0.0, 1.0, batch, tp, fp8, kv_fp8)
    return total_seconds(model, ops, overhead)


def decode_iteration_seconds(hw, model, fit, batch, context, tp, fp8=0.0, overhead=0.0, kv_fp8=None):
    """Seconds of a decode iteration of `batch` sequences reading `context` cached tokens each (KV length)."""
    ops = iteration_ops(hw, model, fit, 0.0, 0.0, 0.0, batch, context, batch, tp, fp8, kv_fp8)
    return total_seconds(model, ops, overhead)


def mixed_iteration_seconds(hw, model, fit, batch, context, chunk_tokens, chunk_prefix, tp, fp8=0.0, overhead=0.0,
                            kv_fp8=None):
    """Seconds of a chunked-prefill iteration: `batch` decodes at KV length `context` plus one prompt chunk of
    `chunk_tokens` tokens after `chunk_prefix` tokens of its prompt already in the KV cache (the chunk samples one
    token, as its last chunk does)."""
    sampled = batch + jnp.where(chunk_tokens > 0, 1.0, 0.0)
    ops = iteration_ops(hw, model, fit, 1.0, chunk_tokens, chunk_prefix, batch, context, sampled, tp, fp8, kv_fp8)
    return total_seconds(model, ops, overhead)

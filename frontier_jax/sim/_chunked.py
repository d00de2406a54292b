"""Chunked-prefill, stall-free colocation (Sarathi-Serve) on one instance.

Every iteration carries all b running decodes plus up to (chunk - b) prompt tokens taken FCFS from the oldest
waiting prompts (a prompt may span several iterations, several short prompts may share one). Its time is
mixed(b, decode_context, chunk_tokens, chunk_prefix) where chunk_prefix is the number of tokens of the head prompt
already processed in earlier iterations (0 when the chunk starts with a fresh prompt). A prompt whose last token is
in iteration k emits its first token at the end of k and decodes from k + 1 on. With ``max_batch`` a prompt enters
prefill only while running decodes + prompts in this iteration's chunk < max_batch.
"""

from __future__ import annotations

import math

import numpy as np

from frontier_jax.errors import FrontierError

from ._result import DecodeTrace


def run_chunked(arr, inp, out, mixed, chunk, max_batch, max_time):
    """Simulate one instance. Requests are in arrival order. Returns (first, join, trace, t_end)."""
    n = arr.shape[0]
    a_l = arr.tolist()
    i_l = inp.tolist()
    o_l = out.tolist()
    first = [math.nan] * n
    join = [-1] * n
    it_end, it_dt, it_b, it_tok = [], [], [], []
    maxb = max_batch if max_batch is not None else n + 1
    tmax = math.inf if max_time is None else float(max_time)
    leaves = {}
    t = 0.0
    nxt = 0  # head of the prefill queue (possibly partly processed)
    done = 0  # tokens of the head prompt already processed
    b = 0
    ctx = 0.0
    k = 0
    while t < tmax:
        if b == 0 and (nxt >= n or a_l[nxt] > t):
            if nxt >= n:
                break
            t = a_l[nxt]
            continue
        budget = chunk - b
        slots = maxb - b
        tokens = 0
        prefix = 0
        j = nxt
        head_done = done
        new_done = done
        while budget > 0 and slots > 0 and j < n and a_l[j] <= t:
            rem = i_l[j] - head_done
            if j == nxt:
                prefix = head_done
            if rem <= budget:
                tokens += rem
                budget -= rem
                slots -= 1
                j += 1
                head_done = 0
                new_done = 0
            else:
                tokens += budget
                new_done = head_done + budget
                budget = 0
        dt = float(mixed(b, ctx, tokens, prefix))
        if not dt >= 0.0:
            raise FrontierError(f"mixed cost returned {dt!r} for batch {b}, {tokens} chunk tokens; need a time >= 0")
        t += dt
        it_end.append(t)
        it_dt.append(dt)
        it_b.append(b)
        it_tok.append(tokens)
        ctx += b
        ent = leaves.pop(k, None)
        if ent is not None:
            b -= ent[0]
            ctx -= ent[1]
        k += 1
        for r in range(nxt, j):  # prompts completed in this iteration
            first[r] = t
            o = o_l[r]
            if o > 1:
                join[r] = k
                b += 1
                i = i_l[r]
                ctx += i + 1
                key = k + o - 2
                ent = leaves.get(key)
                if ent is None:
                    leaves[key] = [1, i + o]
                else:
                    ent[0] += 1
                    ent[1] += i + o
        nxt = j
        done = new_done
    trace = DecodeTrace(np.asarray(it_end, float), np.asarray(it_dt, float), np.asarray(it_b, np.int64),
                        np.asarray(it_tok, np.int64))
    return np.asarray(first, float), np.asarray(join, np.int64), trace, t

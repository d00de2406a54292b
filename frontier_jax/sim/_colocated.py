"""Colocated, prefill-prioritised continuous batching (vLLM 2023) on one instance.

At every iteration boundary: if a request waits for prefill and the running batch has a free slot, run ONE prefill
iteration for the oldest waiting request (its first token comes at the end of it; every running decode stalls);
otherwise run one decode iteration of all running requests (each emits one token). A request of output length O
runs O - 1 decode iterations after its prefill, always in consecutive decode iterations, so the loop only keeps the
batch size, the summed context and a table "decode iteration index -> (requests leaving, context they free)".
"""

from __future__ import annotations

import math

import numpy as np

from frontier_jax.errors import FrontierError

from ._result import DecodeTrace


def run_colocated(arr, inp, out, pre_time, decode, max_batch, max_time):
    """Simulate one instance. Requests are in arrival order. Returns (first, join, pre_b, n_prefilled, trace)."""
    n = arr.shape[0]
    a_l = arr.tolist()
    i_l = inp.tolist()
    o_l = out.tolist()
    p_l = pre_time.tolist()
    first = [math.nan] * n
    join = [-1] * n
    pre_b = []
    dec_end, dec_dt, dec_b = [], [], []
    maxb = max_batch if max_batch is not None else n + 1
    tmax = math.inf if max_time is None else float(max_time)
    leaves = {}
    t = 0.0
    nxt = 0
    b = 0
    ctx = 0.0
    k = 0
    while t < tmax:
        if nxt < n and a_l[nxt] <= t and b < maxb:
            pre_b.append(b)
            t += p_l[nxt]
            first[nxt] = t
            o = o_l[nxt]
            if o > 1:
                join[nxt] = k
                b += 1
                i = i_l[nxt]
                ctx += i + 1
                key = k + o - 2
                ent = leaves.get(key)
                if ent is None:
                    leaves[key] = [1, i + o]
                else:
                    ent[0] += 1
                    ent[1] += i + o
            nxt += 1
        elif b > 0:
            dt = float(decode(b, ctx))
            if not dt >= 0.0:
                raise FrontierError(f"decode cost returned {dt!r} for batch {b}; it must be a time >= 0")
            t += dt
            dec_end.append(t)
            dec_dt.append(dt)
            dec_b.append(b)
            ctx += b
            ent = leaves.pop(k, None)
            if ent is not None:
                b -= ent[0]
                ctx -= ent[1]
            k += 1
        elif nxt < n:
            t = a_l[nxt]
        else:
            break
    trace = DecodeTrace(np.asarray(dec_end, float), np.asarray(dec_dt, float), np.asarray(dec_b, np.int64))
    return (np.asarray(first, float), np.asarray(join, np.int64), np.asarray(pre_b, np.int64), nxt, trace, t)

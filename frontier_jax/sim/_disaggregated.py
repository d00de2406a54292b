"""Disaggregated prefill/decode (DistServe / Splitwise) pieces.

Prefill: n_prefill instances, each FCFS with one prompt per iteration. Dispatch (``simulate(dispatch=...)``):
random, each arrival to a uniformly random instance (each an independent G/G/1 queue); central, one FCFS queue
feeding the first free instance (G/G/c; ties to the lowest index); jsq, each arrival to the instance with the fewest
outstanding prompts (queued + in prefill; a prompt leaves its instance's count when its prefill ends, its KV
transfer is the link's; ties to the lowest index), then that instance's FCFS queue (lor is the same: a prefill
instance holds no decodes).
KV transfer: each prefill instance owns one link, an FCFS queue served in prefill-completion order with service
transfer_time(I). Without overlap a transfer starts when both the prefill has ended and the link is free. With
layer-wise overlap (L layers) layer l can be sent once the prefill has computed it (start + l P / L) and the link
sends the layers in order, each taking T / L, so the KV has arrived at
    max(link_free + T, prefill_start + P/L + T, prefill_end + T/L),
i.e. max(T/L, T - P (L-1)/L) after the prefill ends when the link is idle; the link is busy for the full T.
Decode: n_decode instances, continuous batching of decode iterations with no prefill interference; a request joins
at the first iteration boundary at or after its KV arrives (at once if the instance is idle) while the batch has a
free slot. Decode dispatch at KV arrival: random, a uniformly random instance; central, jsq and lor, the instance
with the fewest requests waiting or decoding (the KV lands on one instance: _pool.run_decode_pool).
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from frontier_jax.errors import FrontierError

from ._result import DecodeTrace


def fcfs_chain(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """c_n = max(c_{n-1} + s_n, x_n), c_{-1} = -inf, vectorised (Lindley recursion via a running maximum)."""
    cs = np.cumsum(s)
    return np.maximum.accumulate(x - cs) + cs


def prefill_random(arr, pre_time, inst, n_prefill):
    """Per-instance FCFS queues. Returns start, end (per request, arrival order)."""
    end = np.empty_like(pre_time)
    for p in range(n_prefill):
        idx = np.flatnonzero(inst == p)
        if idx.size:
            end[idx] = fcfs_chain(arr[idx] + pre_time[idx], pre_time[idx])
    return end - pre_time, end


def prefill_central(arr, pre_time, n_prefill):
    """One FCFS queue feeding the first free of n_prefill instances. Returns start, end, instance."""
    n = arr.shape[0]
    a_l = arr.tolist()
    p_l = pre_time.tolist()
    start = [0.0] * n
    inst = [0] * n
    free = [(0.0, p) for p in range(n_prefill)]
    heapq.heapify(free)
    for i in range(n):
        f, p = heapq.heappop(free)
        s = a_l[i] if a_l[i] > f else f
        start[i] = s
        inst[i] = p
        heapq.heappush(free, (s + p_l[i], p))
    start = np.asarray(start, float)
    return start, start + pre_time, np.asarray(inst, np.int64)


def prefill_jsq(arr, pre_time, n_prefill):
    """Join the shortest queue: each arrival to the instance with the fewest prompts queued or in prefill at its
    arrival (a prompt whose prefill ends exactly then has left; ties to the lowest index), FCFS on each instance.
    Returns start, end, instance."""
    n = arr.shape[0]
    a_l = arr.tolist()
    p_l = pre_time.tolist()
    start = [0.0] * n
    inst = [0] * n
    count = [0] * n_prefill
    last = [0.0] * n_prefill  # when each instance's queue empties
    busy = []  # (prefill end, instance) of the prompts not yet done
    for i in range(n):
        a = a_l[i]
        while busy and busy[0][0] <= a:
            count[heapq.heappop(busy)[1]] -= 1
        p = count.index(min(count))
        s = a if a > last[p] else last[p]
        e = s + p_l[i]
        start[i] = s
        inst[i] = p
        last[p] = e
        count[p] += 1
        heapq.heappush(busy, (e, p))
    start = np.asarray(start, float)
    return start, start + pre_time, np.asarray(inst, np.int64)


def kv_transfer(start, end, pre_time, xfer, inst, n_prefill, overlap, layers):
    """KV arrival time at the decode side, per request (per-prefill-instance FCFS link)."""
    kv = np.empty_like(end)
    if overlap:
        x = np.maximum(start + pre_time / layers + xfer, end + xfer / layers)
    else:
        x = end + xfer
    for p in range(n_prefill):
        idx = np.flatnonzero(inst == p)
        if idx.size:
            idx = idx[np.argsort(end[idx], kind="stable")]
            kv[idx] = fcfs_chain(x[idx], xfer[idx])
    return kv


def run_decode(ready, inp, out, decode, max_batch, max_time):
    """One decode instance; requests sorted by KV arrival ``ready``, all with O > 1. Returns (join, trace, t_end)."""
    n = ready.shape[0]
    r_l = ready.tolist()
    i_l = inp.tolist()
    o_l = out.tolist()
    join = [-1] * n
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
        while nxt < n and r_l[nxt] <= t and b < maxb:
            join[nxt] = k
            b += 1
            i = i_l[nxt]
            o = o_l[nxt]
            ctx += i + 1
            key = k + o - 2
            ent = leaves.get(key)
            if ent is None:
                leaves[key] = [1, i + o]
            else:
                ent[0] += 1
                ent[1] += i + o
            nxt += 1
        if b == 0:
            if nxt >= n:
                break
            t = r_l[nxt]
            continue
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
    trace = DecodeTrace(np.asarray(dec_end, float), np.asarray(dec_dt, float), np.asarray(dec_b, np.int64))
    return np.asarray(join, np.int64), trace, t

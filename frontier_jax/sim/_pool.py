"""Pools of instances that share their arrivals through a router: one event loop over all instances of a pool.

Dispatch policies (``simulate(dispatch=...)``; random dispatch never comes here, its instances are independent and
are simulated one at a time by _colocated / _chunked / _disaggregated):

central
    One FCFS queue of prompts for the whole pool (a global scheduler). An instance takes the head prompt whenever
    it would start prefill work: colocated, at an iteration boundary (prefill priority: before a decode
    iteration) while its batch has a free slot; chunked, whenever its token budget (chunk - running decodes) has
    room for prompt tokens after the prompt it has partly prefilled itself (a prompt stays on it: its KV is there).
    An instance with nothing to do idles; an arrival wakes the idle instance of lowest index.
jsq
    Join the shortest prompt queue: at its arrival a request goes to the instance with the fewest prompts (queued
    on that instance + the one it is prefilling; chunked, every prompt assigned to it whose prefill has not ended),
    ties to the fewest running decodes, then to the lowest index, and stays in that instance's own FCFS queue,
    served exactly as a lone instance serves its queue. This is the router the closed form models (a prompt lands
    on an instance with running decodes only when no instance is idle).
lor
    Least outstanding requests (the simulator only; the closed form has no such policy): as jsq, but the instance
    with the fewest outstanding requests (queued + in prefill + decoding; ties to the lowest index). A finding, kept
    to show it: counting decodes herds new prompts onto the instance whose batch has just drained, so they queue
    behind one another there while other instances decode (colocated, c = 16 at load 0.88: p99 TTFT 14.2 s under
    lor against 0.67 s under central).
decode pools (disaggregated; central, jsq and lor alike)
    A request whose KV has arrived joins the decode instance with the fewest requests (waiting for its next
    iteration boundary or decoding; ties to the lowest index). The KV lands on one instance, so there is no
    queue to share; with unbounded batches a central decode queue would admit every request at once too.

Events are processed in time order: iteration boundaries from a heap of (time, instance), arrivals from the
arrival-ordered arrays; an arrival at the same instant as a boundary is processed first (a lone instance takes a
prompt that arrives exactly at its boundary), and all arrivals of one instant before the instances they wake. A
request's completions (its prefill, one-token requests and leaving decodes at their last token) count at the end of
the iteration that completes them, so the router sees the counts of the instant of the arrival (an iteration ending
at that very instant still counts). With one instance, jsq, lor and central are exactly the lone instance of
_colocated / _chunked / _disaggregated.run_decode.

Each instance keeps the same decode bookkeeping as the lone-instance loops (batch size, summed context, a table
"decode iteration -> (requests leaving, context they free)"), and its own DecodeTrace; ``join`` is the index of a
request's first decode iteration in its instance's trace.
"""

from __future__ import annotations

import heapq
import math
from collections import deque

import numpy as np

from frontier_jax.errors import FrontierError

from ._result import DecodeTrace

__all__ = ["run_colocated_pool", "run_chunked_pool", "run_decode_pool"]


def _join_batch(leaves, k, o, i):
    key = k + o - 2
    ent = leaves.get(key)
    if ent is None:
        leaves[key] = [1, i + o]
    else:
        ent[0] += 1
        ent[1] += i + o


class _Loop:
    """The event-loop skeleton shared by the pool kinds: arrivals, boundaries, idle instances, routing counts.

    mode: "central" (the instances take prompts from one queue; nothing is routed), "jsq" (route to the fewest
    prompts, then the fewest running decodes, then the lowest index) or "lor" (route to the fewest outstanding
    requests, then the lowest index). The decide callbacks report completions at the end of the iteration they
    start: ``pending[s]`` requests leaving the instance, ``pre_pending[s]`` prompts whose prefill ends."""

    def __init__(self, times, n_inst, mode, max_time):
        if mode not in ("central", "jsq", "lor"):
            raise ValueError(f"pool dispatch {mode!r}")
        self.n = len(times)
        self.c = n_inst
        self.central = mode == "central"
        # routing key: prompts x (n + 1) + outstanding requests (the outstanding count minus the prompts is the
        # running decodes, so equal prompt counts order by decodes) under jsq; outstanding requests under lor
        self.weight = self.n + 1 if mode == "jsq" else 0
        self.times = times
        self.tmax = math.inf if max_time is None else float(max_time)
        self.heap = []  # (boundary time, instance)
        self.idle = list(range(n_inst))  # a heap of idle instances (lowest index first)
        self.is_idle = [True] * n_inst
        self.outstanding = [0] * n_inst  # requests assigned and not finished
        self.pending = [0] * n_inst  # requests finishing at the end of the instance's current iteration
        self.prompts = [0] * n_inst  # requests assigned whose prefill has not ended
        self.pre_pending = [0] * n_inst  # prefills ending at the end of the instance's current iteration
        self.key = [0] * n_inst  # routing key (smallest wins, ties to the lowest index)
        self.local = [deque() for _ in range(n_inst)]  # per-instance FCFS queues (routed dispatch)
        self.inst = [-1] * self.n
        self.t_end = 0.0

    def run(self, decide):
        """decide(s, t) -> end of the iteration instance s starts at t, or None if it has nothing to do."""
        times, n, heap, tmax = self.times, self.n, self.heap, self.tmax
        out, pending, local, inst = self.outstanding, self.pending, self.local, self.inst
        prompts, pre_pending, key, w = self.prompts, self.pre_pending, self.key, self.weight
        is_idle, idle = self.is_idle, self.idle
        central = self.central
        nxt = 0

        def start(s, t):
            out[s] -= pending[s]
            pending[s] = 0
            prompts[s] -= pre_pending[s]
            pre_pending[s] = 0
            key[s] = w * prompts[s] + out[s]
            if t > self.t_end:
                self.t_end = t
            if t >= tmax:
                return
            t2 = decide(s, t)
            if t2 is None:
                is_idle[s] = True
                if central:
                    heapq.heappush(idle, s)
            else:
                heapq.heappush(heap, (t2, s))

        while True:
            t_b = heap[0][0] if heap else math.inf
            if nxt < n and times[nxt] <= t_b and times[nxt] < tmax:
                a = times[nxt]
                woken = []
                while nxt < n and times[nxt] == a:
                    if central:
                        if idle:
                            s = heapq.heappop(idle)
                            is_idle[s] = False
                            woken.append(s)
                    else:
                        s = key.index(min(key))
                        out[s] += 1
                        prompts[s] += 1
                        key[s] += w + 1
                        local[s].append(nxt)
                        inst[nxt] = s
                        if is_idle[s]:
                            is_idle[s] = False
                            woken.append(s)
                    nxt += 1
                for s in woken:
                    start(s, a)
            elif heap:
                t, s = heapq.heappop(heap)
                start(s, t)
            else:
                break

    def traces(self, ends, dts, bs, toks=None):
        return [DecodeTrace(np.asarray(ends[s], float), np.asarray(dts[s], float), np.asarray(bs[s], np.int64),
                            None if toks is None else np.asarray(toks[s], np.int64)) for s in range(self.c)]


def run_colocated_pool(arr, inp, out, pre_time, decode, max_batch, max_time, n_inst, mode):
    """Colocated instances (prefill priority, one prompt per prefill iteration) under ``mode`` dispatch ("central",
    "jsq" or "lor").

    Returns first (first-token time), join (first decode iteration in the instance's trace), inst (instance; -1:
    never started), pre_b (running decodes during its prefill iteration; -1: not prefilled), traces, t_end."""
    n = arr.shape[0]
    a_l, i_l, o_l, p_l = arr.tolist(), inp.tolist(), out.tolist(), pre_time.tolist()
    first = [math.nan] * n
    join = [-1] * n
    pre_b = [-1] * n
    loop = _Loop(a_l, n_inst, mode, max_time)
    inst, local, pending, pre_pending = loop.inst, loop.local, loop.pending, loop.pre_pending
    central = loop.central
    c = n_inst
    maxb = max_batch if max_batch is not None else n + 1
    B, CTX, K = [0] * c, [0.0] * c, [0] * c
    leaves = [{} for _ in range(c)]
    ends, dts, bs = [[] for _ in range(c)], [[] for _ in range(c)], [[] for _ in range(c)]
    head = [0]  # central queue: the oldest prompt not yet taken

    def decide(s, t):
        b = B[s]
        r = -1
        if b < maxb:
            if central:
                h = head[0]
                if h < n and a_l[h] <= t:
                    r = h
                    head[0] = h + 1
                    inst[r] = s
            elif local[s]:
                r = local[s].popleft()
                pre_pending[s] += 1  # its prefill ends with this iteration
        if r >= 0:
            pre_b[r] = b
            t2 = t + p_l[r]
            first[r] = t2
            o = o_l[r]
            if o > 1:
                join[r] = K[s]
                B[s] = b + 1
                i = i_l[r]
                CTX[s] += i + 1
                _join_batch(leaves[s], K[s], o, i)
            else:
                pending[s] += 1
            return t2
        if b > 0:
            ctx = CTX[s]
            dt = float(decode(b, ctx))
            if not dt >= 0.0:
                raise FrontierError(f"decode cost returned {dt!r} for batch {b}; it must be a time >= 0")
            t2 = t + dt
            ends[s].append(t2)
            dts[s].append(dt)
            bs[s].append(b)
            ctx += b
            k = K[s]
            ent = leaves[s].pop(k, None)
            if ent is not None:
                B[s] = b - ent[0]
                ctx -= ent[1]
                pending[s] += ent[0]
            CTX[s] = ctx
            K[s] = k + 1
            return t2
        return None

    loop.run(decide)
    return (np.asarray(first, float), np.asarray(join, np.int64), np.asarray(inst, np.int64),
            np.asarray(pre_b, np.int64), loop.traces(ends, dts, bs), loop.t_end)


def run_chunked_pool(arr, inp, out, mixed, chunk, max_batch, max_time, n_inst, mode):
    """Chunked-prefill instances (Sarathi-Serve) under ``mode`` dispatch ("central", "jsq" or "lor"). Every
    iteration carries the b running decodes plus up to chunk - b prompt tokens: first the prompt the instance has
    partly prefilled, then (jsq, lor) its own queue or (central) prompts taken from the head of the pool's queue,
    FCFS, as a lone instance does. A routed prompt counts as the instance's until the iteration that completes it
    ends.

    Returns first, join, inst, traces (with prompt tokens per iteration), t_end."""
    n = arr.shape[0]
    a_l, i_l, o_l = arr.tolist(), inp.tolist(), out.tolist()
    first = [math.nan] * n
    join = [-1] * n
    loop = _Loop(a_l, n_inst, mode, max_time)
    inst, local, pending, pre_pending = loop.inst, loop.local, loop.pending, loop.pre_pending
    central = loop.central
    c = n_inst
    maxb = max_batch if max_batch is not None else n + 1
    B, CTX, K, DONE = [0] * c, [0.0] * c, [0] * c, [0] * c
    leaves = [{} for _ in range(c)]
    ends, dts, bs, toks = [[] for _ in range(c)], [[] for _ in range(c)], [[] for _ in range(c)], [[] for _ in range(c)]
    head = [0]

    def decide(s, t):
        b = B[s]
        lq = local[s]
        if b == 0 and not lq:
            h = head[0]
            if not (central and h < n and a_l[h] <= t):
                return None
        budget = chunk - b
        slots = maxb - b
        tokens = 0
        prefix = 0
        head_done = DONE[s]
        new_done = head_done
        j = 0
        completed = 0
        while budget > 0 and slots > 0:
            if j < len(lq):
                r = lq[j]
            elif central and head[0] < n and a_l[head[0]] <= t:
                r = head[0]
                head[0] = r + 1
                inst[r] = s
                lq.append(r)
            else:
                break
            if j == 0:
                prefix = head_done
            rem = i_l[r] - head_done
            if rem <= budget:
                tokens += rem
                budget -= rem
                slots -= 1
                j += 1
                completed += 1
                head_done = 0
                new_done = 0
            else:
                tokens += budget
                new_done = head_done + budget
                budget = 0
        ctx = CTX[s]
        dt = float(mixed(b, ctx, tokens, prefix))
        if not dt >= 0.0:
            raise FrontierError(f"mixed cost returned {dt!r} for batch {b}, {tokens} chunk tokens; need a time >= 0")
        t2 = t + dt
        ends[s].append(t2)
        dts[s].append(dt)
        bs[s].append(b)
        toks[s].append(tokens)
        ctx += b
        k = K[s]
        ent = leaves[s].pop(k, None)
        if ent is not None:
            b -= ent[0]
            ctx -= ent[1]
            pending[s] += ent[0]
        k += 1
        if not central:
            pre_pending[s] += completed
        for _ in range(completed):  # prompts completed in this iteration
            r = lq.popleft()
            first[r] = t2
            o = o_l[r]
            if o > 1:
                join[r] = k
                b += 1
                i = i_l[r]
                ctx += i + 1
                _join_batch(leaves[s], k, o, i)
            else:
                pending[s] += 1
        B[s], CTX[s], K[s], DONE[s] = b, ctx, k, new_done
        return t2

    loop.run(decide)
    return (np.asarray(first, float), np.asarray(join, np.int64), np.asarray(inst, np.int64),
            loop.traces(ends, dts, bs, toks), loop.t_end)


def run_decode_pool(ready, inp, out, decode, max_batch, max_time, n_inst):
    """Decode instances fed at KV arrival ``ready`` (sorted, all with O > 1), each request to the instance with
    the fewest requests (waiting or decoding; the loop's "lor" routing: nothing is prefilled here). Returns join,
    inst, traces, t_end."""
    n = ready.shape[0]
    r_l, i_l, o_l = ready.tolist(), inp.tolist(), out.tolist()
    join = [-1] * n
    loop = _Loop(r_l, n_inst, "lor", max_time)
    local, pending = loop.local, loop.pending
    c = n_inst
    maxb = max_batch if max_batch is not None else n + 1
    B, CTX, K = [0] * c, [0.0] * c, [0] * c
    leaves = [{} for _ in range(c)]
    ends, dts, bs = [[] for _ in range(c)], [[] for _ in range(c)], [[] for _ in range(c)]

    def decide(s, t):
        b = B[s]
        lq = local[s]
        ctx = CTX[s]
        k = K[s]
        while lq and b < maxb:
            r = lq.popleft()
            join[r] = k
            b += 1
            i = i_l[r]
            ctx += i + 1
            _join_batch(leaves[s], k, o_l[r], i)
        if b == 0:
            return None
        dt = float(decode(b, ctx))
        if not dt >= 0.0:
            raise FrontierError(f"decode cost returned {dt!r} for batch {b}; it must be a time >= 0")
        t2 = t + dt
        ends[s].append(t2)
        dts[s].append(dt)
        bs[s].append(b)
        ctx += b
        ent = leaves[s].pop(k, None)
        if ent is not None:
            b -= ent[0]
            ctx -= ent[1]
            pending[s] += ent[0]
        B[s], CTX[s], K[s] = b, ctx, k + 1
        return t2

    loop.run(decide)
    return np.asarray(join, np.int64), np.asarray(loop.inst, np.int64), loop.traces(ends, dts, bs), loop.t_end

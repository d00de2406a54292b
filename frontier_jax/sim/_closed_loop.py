"""A closed-loop serving benchmark against one chunked-prefill instance: the harness the serving runs come from.

N clients each send `rounds` requests back to back (the next as soon as the previous response has its last token)
after `warmup` requests each whose numbers are not kept. ``burst=True`` starts every client at t = 0 on an empty
server (a benchmark started cold, or one whose warmup phase drains before the measured phase: AIConfigurator's
generated benchmark, `aiperf --concurrency N --num-requests 20 N --warmup-request-count 2 N`); with ``warmup`` > 0
and no burst of its own the measured requests start from wherever the warmup left the server.

The server is the chunked policy of ``_chunked.run_chunked`` (Sarathi-Serve, vLLM V1's scheduler): every iteration
carries all b running decodes plus up to (chunk - b) prompt tokens taken first come, first served, the oldest
prompt possibly part-way through; a prompt whose last token is in iteration k emits its first token at the end of
k and decodes from k + 1 on. ``max_batch`` caps running decodes plus prompts in the chunk.

``kv_tokens`` gives the server a KV cache of that many tokens in blocks of ``block`` tokens, managed as vLLM V1's
scheduler does (`vllm/v1/core/sched/scheduler.py`): each iteration first gives every running decode the block its
next token needs, in the order they were admitted, and when none is free preempts the most recently admitted
running request (its blocks freed, itself put at the head of the waiting queue, its prompt and the tokens it has
generated recomputed when it is scheduled again; its TTFT is already taken, so the stall lands in its TPOT); then
unless it preempted, it admits waiting prompt tokens first come, first served while their blocks fit, stopping at
the first that does not. Prefix caching is left out (a preempted request's blocks are taken as lost).

The iteration's prompt tokens are given to the cost as *pieces*, (sequences, tokens, prefix) triples, because the
attention of several prompts in one chunk is not that of one long prompt: cost(b, total_context, pieces, sampled)
-> seconds, with ``sampled`` the tokens the LM head reads (decodes plus prompts finishing in this iteration).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from frontier_jax.errors import FrontierError

@dataclass(frozen=True)
class ClosedLoopResult:
    """Per measured request (client-major, in each client's order) and the run's totals."""

    ttft: np.ndarray      # s, arrival to the end of the iteration holding the prompt's last token
    tpot: np.ndarray      # s, (finish - first token) / (O - 1); NaN where O = 1
    iterations: int
    duration: float       # s, first arrival to the last finish
    preemptions: int = 0  # running requests preempted for want of KV blocks (kv_tokens only)

    @property
    def mean_ttft(self) -> float:
        return float(np.mean(self.ttft))

    @property
    def mean_tpot(self) -> float:
        return float(np.nanmean(self.tpot)) if np.any(np.isfinite(self.tpot)) else math.nan

    @property
    def throughput(self) -> float:
        """Measured requests per second over the run."""
        return self.ttft.size / self.duration


def _merge(pieces):
    out = []
    for n, tok, pre in pieces:
        if out and out[-1][1] == tok and out[-1][2] == pre:
            out[-1] = (out[-1][0] + n, tok, pre)
        else:
            out.append((n, tok, pre))
    return tuple(out)


def _check(v, name, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise FrontierError(f"{name}={v!r} must be an integer >= {lo}")
    return int(v)


def run_closed_loop(cost: Callable, concurrency: int, input_len: int, output_len: int, chunk: int, *,
                    rounds: int = 20, warmup: int = 0, burst: bool = True, max_batch=None, kv_tokens=None,
                    block: int = 16) -> ClosedLoopResult:
    """Simulate the benchmark; every client sends prompts of `input_len` tokens asking for `output_len` tokens."""
    n = _check(concurrency, "concurrency", 1)
    i_len, o_len = _check(input_len, "input_len", 1), _check(output_len, "output_len", 1)
    chunk, rounds, warmup = _check(chunk, "chunk", 1), _check(rounds, "rounds", 1), _check(warmup, "warmup", 0)
    maxb = n if max_batch is None else max(1, min(n, int(max_batch)))
    block = _check(block, "block", 1)
    if kv_tokens is None:
        free = math.inf
    else:
        free = _check(kv_tokens, "kv_tokens", 1) // block
        if free < -(-(i_len + o_len) // block):
            raise FrontierError(f"kv_tokens={kv_tokens} hold no request of {i_len} + {o_len} tokens")
    total = rounds + warmup
    # a burst starts every client at 0; otherwise clients start 1 ns apart (FCFS by client) and only the
    # warmup requests absorb the start
    arrival = [0.0 if burst else 1e-9 * c for c in range(n)]
    sent = [0] * n
    queue = list(range(n))     # clients whose prompt waits or is part-way, FCFS (arrival, then client)
    need = [i_len] * n         # prompt tokens of each client's current prompt (more when recomputed)
    done = [0] * n             # of which already processed
    left = [0] * n             # decode iterations left for each running client
    kv = [0] * n               # KV length of each running client
    blocks = [0] * n           # KV blocks each client holds
    resumed = [False] * n      # the current prompt recomputes a preempted request
    first = [0.0] * n
    running: list[int] = []    # in the order they were admitted
    ctx = 0                    # KV length summed over the running decodes
    ttft = np.full((n, rounds), np.nan)
    tpot = np.full((n, rounds), np.nan)
    t, k, active, preempted = 0.0, 0, n, 0
    while active:
        j, preempting = 0, False
        while j < len(running) and free < math.inf:  # each running decode's block for its next token
            c = running[j]
            more = -(-kv[c] // block) - blocks[c]
            while more > free:
                v = running.pop()
                free, blocks[v], ctx = free + blocks[v], 0, ctx - kv[v]
                need[v], done[v], resumed[v] = kv[v], 0, True
                queue.insert(sum(1 for q in queue if done[q] > 0), v)  # ahead of the waiting, behind part-done
                preempted += 1
                preempting = True
                if v == c:
                    break
            else:
                free -= more
                blocks[c] += more
                j += 1
        b = len(running)
        budget, slots = chunk - b, maxb - b
        pieces, finished = [], []
        for c in queue:
            if budget <= 0 or slots <= 0 or arrival[c] > t or (preempting and done[c] == 0):
                break  # a step that preempts admits nothing new
            take = min(need[c] - done[c], budget)
            more = -(-(done[c] + take) // block) - blocks[c]
            if more > free:
                break
            free -= more
            blocks[c] += more
            pieces.append((1, take, done[c]))
            budget -= take
            done[c] += take
            if done[c] == need[c]:
                finished.append(c)
                slots -= 1
        if not pieces and not running:
            nxt = min(arrival[c] for c in queue)
            if nxt <= t and not preempting:
                raise FrontierError(f"no waiting prompt fits the {free} free KV blocks of an idle server")
            t = max(t, nxt)
            continue
        dt = float(cost(b, float(ctx), _merge(pieces), b + len(finished)))
        if not dt >= 0.0:
            raise FrontierError(f"the iteration cost returned {dt!r} for batch {b} and pieces {pieces}")
        t += dt
        k += 1
        ctx += b
        for c in running:
            left[c] -= 1
            kv[c] += 1
        leaving = [c for c in running if left[c] == 0]
        running = [c for c in running if left[c] > 0]
        ctx -= sum(kv[c] for c in leaving)  # each left at KV length I + O
        for c in finished:
            queue.remove(c)
            if resumed[c]:  # the recomputation samples the next token
                resumed[c] = False
                left[c] -= 1
            else:
                first[c] = t
                left[c] = o_len - 1
            if left[c] > 0:
                kv[c] = need[c] + 1
                running.append(c)
                ctx += kv[c]
            else:
                leaving.append(c)
        for c in leaving:
            free, blocks[c] = free + blocks[c], 0
            r = sent[c] - warmup
            if r >= 0:
                ttft[c, r] = first[c] - arrival[c]
                if o_len > 1:
                    tpot[c, r] = (t - first[c]) / (o_len - 1)
            sent[c] += 1
            if sent[c] < total:
                arrival[c], need[c], done[c] = t, i_len, 0
                queue.append(c)
            else:
                active -= 1
    return ClosedLoopResult(ttft.ravel(), tpot.ravel(), k, t, preempted)

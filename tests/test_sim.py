"""Tests of the discrete-event simulator (frontier_jax.sim): queueing identities, low-load limits, Little's law,
and exact agreement with naive per-request reference simulators written independently below."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from frontier_jax.errors import FrontierError
from frontier_jax.sim import IterationCosts, SimResult, sample_arrivals, sample_lengths, simulate


def prefill(n):
    return 0.01 + 2e-5 * n


def decode(b, ctx):
    return 0.02 + 1e-4 * b + 1e-7 * ctx


def mixed(b, ctx, n, p):
    return 0.02 + 1e-4 * b + 1e-7 * ctx + 2e-5 * n + 1e-8 * n * p


COSTS = IterationCosts(prefill=prefill, decode=decode, mixed=mixed)
LOGN_IN = ("lognormal", 500, 1.0)
LOGN_OUT = ("lognormal", 100, 1.0)
KW = {"colocated": {}, "chunked": {"chunk": 512}, "disaggregated": {"transfer_time": lambda n: 1e-5 * n}}


# ----------------------------------------------------------------------------------------------------------------
# naive references: one Python object per request, token times kept explicitly
# ----------------------------------------------------------------------------------------------------------------

def _decode_step(running, t_end, last, gaps, finish, out_len):
    keep = []
    for r in running:
        i = r[0]
        gaps[i] = max(gaps[i], t_end - last[i])
        last[i] = t_end
        r[1] += 1  # context
        r[2] += 1  # tokens emitted
        if r[2] == out_len[i]:
            finish[i] = t_end
        else:
            keep.append(r)
    return keep


def ref_colocated(a, inp, out, max_batch=None):
    n = len(a)
    maxb = max_batch or n + 1
    first, finish, last, gaps = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n), np.zeros(n)
    t, nxt, running = 0.0, 0, []
    while nxt < n or running:
        if nxt < n and a[nxt] <= t and len(running) < maxb:
            t += prefill(inp[nxt])
            first[nxt] = last[nxt] = t
            if out[nxt] == 1:
                finish[nxt] = t
            else:
                running.append([nxt, int(inp[nxt]) + 1, 1])
            nxt += 1
        elif running:
            t += decode(len(running), float(sum(r[1] for r in running)))
            running = _decode_step(running, t, last, gaps, finish, out)
        else:
            t = a[nxt]
    return first, finish, gaps


def ref_chunked(a, inp, out, chunk, max_batch=None):
    n = len(a)
    maxb = max_batch or n + 1
    first, finish, last, gaps = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n), np.zeros(n)
    prog = np.zeros(n, dtype=np.int64)
    t, nxt, running = 0.0, 0, []
    while nxt < n or running:
        if not running and (nxt >= n or a[nxt] > t):
            t = a[nxt]
            continue
        b = len(running)
        budget, slots, pieces, j = chunk - b, maxb - b, [], nxt
        while budget > 0 and slots > 0 and j < n and a[j] <= t:
            rem = inp[j] - prog[j]
            take = min(rem, budget)
            pieces.append((j, take, int(prog[j])))
            budget -= take
            slots -= 1
            if take < rem:
                break
            j += 1
        tokens = sum(p[1] for p in pieces)
        prefix = pieces[0][2] if pieces else 0
        t += mixed(b, float(sum(r[1] for r in running)), tokens, prefix)
        running = _decode_step(running, t, last, gaps, finish, out)
        for i, take, _ in pieces:
            prog[i] += take
            if prog[i] == inp[i]:
                first[i] = last[i] = t
                nxt = i + 1
                if out[i] == 1:
                    finish[i] = t
                else:
                    running.append([i, int(inp[i]) + 1, 1])
    return first, finish, gaps


def ref_disaggregated(a, inp, out, pinst, dinst, xfer, n_prefill, n_decode, layers, overlap, central, max_batch):
    n = len(a)
    ps, pe = np.zeros(n), np.zeros(n)
    P = prefill(inp.astype(float))
    if central:  # first free instance, lowest index among ties
        free = [0.0] * n_prefill
        for i in range(n):
            p = min(range(n_prefill), key=lambda q: (free[q], q))
            ps[i] = max(a[i], free[p])
            pe[i] = free[p] = ps[i] + P[i]
            pinst[i] = p
    else:
        free = [0.0] * n_prefill
        for i in range(n):
            p = pinst[i]
            ps[i] = max(a[i], free[p])
            pe[i] = free[p] = ps[i] + P[i]
    kv = np.zeros(n)
    link = [0.0] * n_prefill
    for i in np.argsort(pe, kind="stable"):
        p = pinst[i]
        if overlap:  # explicit layer-by-layer pipeline
            for layer in range(1, layers + 1):
                link[p] = max(ps[i] + layer * P[i] / layers, link[p]) + xfer[i] / layers
        else:
            link[p] = max(pe[i], link[p]) + xfer[i]
        kv[i] = link[p]
    first, finish, gaps = kv.copy(), np.full(n, np.nan), np.zeros(n)
    last = kv.copy()
    finish[out == 1] = kv[out == 1]
    maxb = max_batch or n + 1
    for d in range(n_decode):
        queue = [i for i in np.argsort(kv, kind="stable") if dinst[i] == d and out[i] > 1]
        t, q, running = 0.0, 0, []
        while q < len(queue) or running:
            while q < len(queue) and kv[queue[q]] <= t and len(running) < maxb:
                running.append([queue[q], int(inp[queue[q]]) + 1, 1])
                q += 1
            if not running:
                t = kv[queue[q]]
                continue
            t += decode(len(running), float(sum(r[1] for r in running)))
            running = _decode_step(running, t, last, gaps, finish, out)
    return first, finish, gaps


def ref_pool(a, inp, out, c, mode, kind, chunk=None, max_batch=None, pre=prefill):
    """c colocated ("colocated") or chunked ("chunked") instances under "central", "jsq" or "lor" dispatch, naively:
    one list per instance of running requests [index, context, tokens emitted], iteration effects applied at their
    end, events in time order (arrivals before boundaries at the same instant; among instances the lowest index
    first). jsq routes an arrival to the instance with the fewest requests assigned to it without a first token,
    then the fewest with a first token but unfinished (running decodes), then the lowest index; lor to the fewest
    unfinished requests, then the lowest index. A decode pool is "colocated" under "lor" with pre = 0 (a prompt
    joins the batch at once). Returns first, finish, gaps, inst."""
    n = len(a)
    maxb = max_batch or n + 1
    first, finish, last, gaps = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n), np.zeros(n)
    prog = np.zeros(n, dtype=np.int64)
    inst = np.full(n, -1)
    mine = [[] for _ in range(c)]  # prompts assigned to the instance, not yet prefilled
    running = [[] for _ in range(c)]
    until = [None] * c  # end of the instance's iteration; None: idle
    work = [None] * c
    nxt, head = 0, 0

    def outstanding(s):
        return sum(1 for r in range(n) if inst[r] == s and np.isnan(finish[r]))

    def prompts(s):
        return sum(1 for r in range(n) if inst[r] == s and np.isnan(first[r]))

    def route(q):
        if mode == "lor":
            return outstanding(q), q
        p = prompts(q)
        return p, outstanding(q) - p, q

    def start(s, t):
        nonlocal head
        b = len(running[s])
        ctx = float(sum(r[1] for r in running[s]))
        if kind == "colocated":
            if b < maxb and not mine[s] and mode == "central" and head < n and a[head] <= t:
                mine[s].append(head)
                inst[head] = s
                head += 1
            if b < maxb and mine[s]:
                r = mine[s].pop(0)
                work[s], until[s] = ("prefill", r), t + float(pre(inp[r]))
            elif b:
                work[s], until[s] = ("decode",), t + decode(b, ctx)
            else:
                work[s], until[s] = None, None
            return
        budget, slots, pieces, j = chunk - b, maxb - b, [], 0
        while budget > 0 and slots > 0:
            if j == len(mine[s]):
                if mode == "central" and head < n and a[head] <= t:
                    mine[s].append(head)
                    inst[head] = s
                    head += 1
                else:
                    break
            r = mine[s][j]
            rem = inp[r] - prog[r]
            take = min(rem, budget)
            pieces.append((r, take, int(prog[r])))
            budget -= take
            slots -= 1
            if take < rem:
                break
            j += 1
        if not b and not pieces:
            work[s], until[s] = None, None
            return
        tokens = sum(p[1] for p in pieces)
        prefix = pieces[0][2] if pieces else 0
        work[s], until[s] = ("mixed", pieces), t + mixed(b, ctx, tokens, prefix)

    def finish_iteration(s, t):
        w = work[s]
        if w[0] != "prefill":
            running[s] = _decode_step(running[s], t, last, gaps, finish, out)
        done = [w[1]] if w[0] == "prefill" else []
        if w[0] == "mixed":
            for r, take, _ in w[1]:
                prog[r] += take
                if prog[r] == inp[r]:
                    done.append(r)
                    mine[s].remove(r)
        for r in done:
            first[r] = last[r] = t
            if out[r] == 1:
                finish[r] = t
            else:
                running[s].append([r, int(inp[r]) + 1, 1])

    while True:
        busy = [(until[s], s) for s in range(c) if until[s] is not None]
        t_b = min(busy)[0] if busy else math.inf
        if nxt < n and a[nxt] <= t_b:
            t = a[nxt]
            while nxt < n and a[nxt] == t:
                if mode in ("jsq", "lor"):
                    s = min(range(c), key=route)
                    inst[nxt] = s
                    mine[s].append(nxt)
                nxt += 1
            for s in range(c):
                if until[s] is None:
                    start(s, t)
        elif busy:
            t, s = min(busy)
            finish_iteration(s, t)
            start(s, t)
        else:
            return first, finish, gaps, inst


def ref_prefill_jsq(a, P, c):
    """Each arrival to the prefill instance with the fewest prompts whose prefill has not ended; FCFS on each."""
    n = len(a)
    ps, pe, pinst = np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64)
    for i in range(n):
        count = [int(np.sum((pinst[:i] == q) & (pe[:i] > a[i]))) for q in range(c)]
        p = count.index(min(count))
        prev = pe[:i][pinst[:i] == p]
        ps[i] = max(a[i], prev.max() if prev.size else 0.0)
        pe[i] = ps[i] + P[i]
        pinst[i] = p
    return ps, pe, pinst


def _check_against(res: SimResult, first, finish, gaps):
    o = res.output_len
    np.testing.assert_allclose(res.first_token, first, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(res.finish, finish, rtol=1e-12, atol=1e-9)
    m = o > 1
    np.testing.assert_allclose(res.max_gap[m], gaps[m], rtol=1e-9, atol=1e-9)
    assert np.all(np.isnan(res.max_gap[~m])) and np.all(np.isnan(res.tpot[~m]))
    np.testing.assert_allclose(res.tpot[m], (finish[m] - first[m]) / (o[m] - 1), rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# exact agreement with the references
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("max_batch", [None, 6])
@pytest.mark.parametrize("rate", [3.0, 12.0])
def test_colocated_matches_reference(rate, max_batch):
    res = simulate("colocated", COSTS, rate=rate, input_len=("gamma", 300, 1.0), output_len=("gamma", 40, 1.2),
                   n_requests=400, warmup=0.0, seed=3, max_batch=max_batch)
    assert res.n_measured == 400 and np.any(res.output_len == 1)
    _check_against(res, *ref_colocated(res.arrival, res.input_len, res.output_len, max_batch))


@pytest.mark.parametrize("chunk,max_batch", [(256, None), (512, 5), (64, None)])
def test_chunked_matches_reference(chunk, max_batch):
    res = simulate("chunked", COSTS, rate=10.0, input_len=("gamma", 300, 1.0), output_len=("gamma", 40, 1.2),
                   n_requests=400, warmup=0.0, seed=4, chunk=chunk, max_batch=max_batch)
    _check_against(res, *ref_chunked(res.arrival, res.input_len, res.output_len, chunk, max_batch))


@pytest.mark.parametrize("central,overlap,max_batch", [(False, False, None), (True, True, 4), (True, False, None),
                                                       (False, True, 8)])
def test_disaggregated_matches_reference(central, overlap, max_batch):
    xf = lambda n: 4e-5 * n  # noqa: E731  slow link: transfers queue
    res = simulate("disaggregated", COSTS, rate=14.0, input_len=("gamma", 300, 1.0), output_len=("gamma", 40, 1.2),
                   n_requests=400, warmup=0.0, seed=5, n_prefill=2, n_decode=2, transfer_time=xf, overlap=overlap,
                   layers=8, prefill_queue="central" if central else "random", max_batch=max_batch)
    ex = res.extra
    pinst = ex["prefill_instance"].copy()
    ref = ref_disaggregated(res.arrival, res.input_len, res.output_len, pinst, ex["decode_instance"],
                            xf(res.input_len.astype(float)), 2, 2, 8, overlap, central, max_batch)
    np.testing.assert_array_equal(pinst, ex["prefill_instance"])
    _check_against(res, *ref)
    assert np.all(res.ttft >= prefill(res.input_len) - 1e-12)


@pytest.mark.parametrize("policy,mode,max_batch", [("colocated", "central", None), ("colocated", "jsq", 5),
                                                    ("colocated", "jsq", None), ("colocated", "lor", 5),
                                                    ("chunked", "central", 6), ("chunked", "jsq", None),
                                                    ("chunked", "jsq", 6), ("chunked", "lor", None)])
def test_pool_matches_reference(policy, mode, max_batch):
    kw = {"chunk": 256} if policy == "chunked" else {}
    res = simulate(policy, COSTS, rate=30.0, input_len=("gamma", 300, 1.0), output_len=("gamma", 40, 1.2),
                   n_requests=300, warmup=0.0, seed=6, n_instances=3, dispatch=mode, max_batch=max_batch, **kw)
    assert res.n_measured == 300
    first, finish, gaps, _ = ref_pool(res.arrival, res.input_len, res.output_len, 3, mode, policy,
                                      max_batch=max_batch, **kw)
    _check_against(res, first, finish, gaps)


@pytest.mark.parametrize("max_batch", [None, 5])
def test_disaggregated_jsq_matches_reference(max_batch):
    xf = lambda n: 4e-5 * n  # noqa: E731
    res = simulate("disaggregated", COSTS, rate=40.0, input_len=("gamma", 300, 1.0), output_len=("gamma", 40, 1.2),
                   n_requests=300, warmup=0.0, seed=7, n_prefill=3, n_decode=3, transfer_time=xf,
                   dispatch="jsq", max_batch=max_batch)
    ex = res.extra
    P = prefill(res.input_len.astype(float))
    ps, pe, pinst = ref_prefill_jsq(res.arrival, P, 3)
    np.testing.assert_array_equal(ex["prefill_instance"], pinst)
    np.testing.assert_allclose(ex["prefill_start"], ps, rtol=1e-12, atol=1e-12)
    ref = ref_disaggregated(res.arrival, res.input_len, res.output_len, pinst.copy(), ex["decode_instance"],
                            xf(res.input_len.astype(float)), 3, 3, 1, False, False, max_batch)
    np.testing.assert_allclose(res.first_token, ref[0], rtol=1e-12)
    # the decode pool: a request joins the instance with the fewest requests when its KV arrives
    kv = res.first_token
    dec = np.flatnonzero(res.output_len > 1)
    dec = dec[np.argsort(kv[dec], kind="stable")]
    _, finish, _, dinst = ref_pool(kv[dec], res.input_len[dec], res.output_len[dec], 3, "lor", "colocated",
                                   max_batch=max_batch, pre=lambda n: 0.0)
    np.testing.assert_array_equal(ex["decode_instance"][dec], dinst)
    np.testing.assert_allclose(res.finish[dec], finish, rtol=1e-12, atol=1e-9)
    _check_against(res, *ref)  # the decode side with the simulator's decode instances


@pytest.mark.parametrize("policy", ["colocated", "chunked", "decode"])
@pytest.mark.parametrize("max_batch", [None, 6])
def test_pool_of_one_is_the_lone_instance(policy, max_batch):
    """central, jsq and lor over one instance are the lone instance's FCFS loop, bit for bit."""
    from frontier_jax.sim._chunked import run_chunked
    from frontier_jax.sim._colocated import run_colocated
    from frontier_jax.sim._disaggregated import run_decode
    from frontier_jax.sim._pool import run_chunked_pool, run_colocated_pool, run_decode_pool

    rng = np.random.default_rng(2)
    n = 1500
    a = sample_arrivals(9.0, n, 1.0, rng)
    i = sample_lengths(("gamma", 300, 1.0), n, rng, "i")
    o = sample_lengths(("gamma", 40, 1.2), n, rng, "o")
    for mode in ("central", "jsq", "lor"):
        if policy == "colocated":
            f, jn, pb, npf, tr, _ = run_colocated(a, i, o, prefill(i.astype(float)), decode, max_batch, None)
            F, JN, inst, PB, trs, _ = run_colocated_pool(a, i, o, prefill(i.astype(float)), decode, max_batch, None, 1,
                                                         mode)
            np.testing.assert_array_equal(pb, PB[:npf])
        elif policy == "chunked":
            f, jn, tr, _ = run_chunked(a, i, o, mixed, 256, max_batch, None)
            F, JN, inst, trs, _ = run_chunked_pool(a, i, o, mixed, 256, max_batch, None, 1, mode)
            np.testing.assert_array_equal(tr.ptok, trs[0].ptok)
        else:
            m = o > 1
            f = F = np.sort(a + 0.05)[m]
            jn, tr, _ = run_decode(f, i[m], o[m], decode, max_batch, None)
            JN, inst, trs, _ = run_decode_pool(f, i[m], o[m], decode, max_batch, None, 1)
        np.testing.assert_array_equal(f, F)
        np.testing.assert_array_equal(jn, JN)
        np.testing.assert_array_equal(tr.end, trs[0].end)
        np.testing.assert_array_equal(tr.b, trs[0].b)
        assert np.all(inst == 0)


# ----------------------------------------------------------------------------------------------------------------
# determinism and workload
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["colocated", "chunked", "disaggregated"])
def test_deterministic_for_seed(policy):
    kw = dict(rate=8.0, input_len=LOGN_IN, output_len=LOGN_OUT, n_requests=1500, **KW[policy])
    r1, r2 = simulate(policy, COSTS, seed=7, **kw), simulate(policy, COSTS, seed=7, **kw)
    r3 = simulate(policy, COSTS, seed=8, **kw)
    for m in ("arrival", "ttft", "tpot", "max_gap", "gap_values"):
        np.testing.assert_array_equal(getattr(r1, m), getattr(r2, m))
    assert r1.summary() == r2.summary()
    assert not np.array_equal(r1.arrival, r3.arrival)


def test_same_workload_across_policies():
    res = {p: simulate(p, COSTS, rate=5.0, input_len=LOGN_IN, output_len=LOGN_OUT, n_requests=500, seed=1, **KW[p])
           for p in KW}
    for p in ("chunked", "disaggregated"):
        np.testing.assert_array_equal(res[p].arrival, res["colocated"].arrival)
        np.testing.assert_array_equal(res[p].input_len, res["colocated"].input_len)


def test_length_distributions():
    rng = np.random.default_rng(0)
    for kind in ("lognormal", "gamma"):
        x = sample_lengths((kind, 400, 0.8), 200000, rng, "x")
        assert x.dtype == np.int64 and x.min() >= 1
        assert abs(x.mean() / 400 - 1) < 0.01 and abs(x.std() / x.mean() / 0.8 - 1) < 0.03
    assert np.all(sample_lengths(17, 5, rng, "x") == 17)
    emp = np.array([3, 50, 700])
    x = sample_lengths(emp, 3000, rng, "x")
    assert set(np.unique(x)) == {3, 50, 700}
    assert sample_lengths(("gamma", 1, 3.0), 10000, rng, "x").min() >= 1
    with pytest.raises(FrontierError):
        sample_lengths(0, 5, rng, "x")
    with pytest.raises(FrontierError):
        sample_lengths(("weibull", 10, 1), 5, rng, "x")


@pytest.mark.parametrize("ca2", [0.0, 1.0, 4.0])
def test_arrival_process(ca2):
    gaps = np.diff(sample_arrivals(5.0, 200000, ca2, np.random.default_rng(1)))
    assert abs(gaps.mean() * 5.0 - 1) < 0.02
    assert abs(gaps.var() / gaps.mean() ** 2 - ca2) < 0.05 * max(ca2, 1.0)


def test_bursty_arrivals_raise_tail_ttft():
    kw = dict(rate=30.0, input_len=LOGN_IN, output_len=1, n_requests=20000, transfer_time=None)
    p = simulate("disaggregated", COSTS, arrival_ca2=1.0, **kw).quantile("ttft", 0.99)
    b = simulate("disaggregated", COSTS, arrival_ca2=4.0, **kw).quantile("ttft", 0.99)
    assert b > 1.5 * p


# ----------------------------------------------------------------------------------------------------------------
# queueing identities
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_md1_mean_ttft(rho):
    D = 0.1
    costs = IterationCosts(prefill=lambda n: D + 0.0 * n, decode=decode)
    R = rho / D
    res = simulate("disaggregated", costs, rate=R, input_len=200, output_len=1, n_requests=200000, seed=11,
                   transfer_time=lambda n: 0.0 * n)
    theory = D + R * D * D / (2 * (1 - R * D))
    assert abs(res.mean("ttft") / theory - 1) < 0.05
    assert abs(res.prefill_busy / rho - 1) < 0.03


def test_mg1_pollaczek_khinchine():
    costs = IterationCosts(prefill=lambda n: 1e-4 * n, decode=decode)
    rng = np.random.default_rng(0)
    s = 1e-4 * sample_lengths(("lognormal", 1000, 1.5), 10**6, rng, "x")
    R = 0.7 / s.mean()
    res = simulate("disaggregated", costs, rate=R, input_len=("lognormal", 1000, 1.5), output_len=1,
                   n_requests=200000, seed=2)
    theory = s.mean() + R * np.mean(s * s) / (2 * (1 - R * s.mean()))
    assert abs(res.mean("ttft") / theory - 1) < 0.07


def test_mmc_central_queue_erlang_c():
    c, mu_inv = 3, 0.1
    costs = IterationCosts(prefill=lambda n: mu_inv / 1000 * n, decode=decode)
    rho = 0.75
    R = rho * c / mu_inv
    kw = dict(rate=R, input_len=("exponential", 1000), output_len=1, n_requests=200000, seed=3, n_prefill=c)
    central = simulate("disaggregated", costs, prefill_queue="central", **kw)
    a = R * mu_inv
    tail = a ** c / math.factorial(c) / (1 - rho)
    pw = tail / (sum(a ** k / math.factorial(k) for k in range(c)) + tail)
    theory = mu_inv + pw * mu_inv / (c * (1 - rho))
    assert abs(central.mean("ttft") / theory - 1) < 0.05
    rand = simulate("disaggregated", costs, prefill_queue="random", **kw)  # 3 independent M/M/1 at rho
    assert abs(rand.mean("ttft") / (mu_inv / (1 - rho)) - 1) < 0.05
    assert central.mean("ttft") < rand.mean("ttft")


def _erlang_c_mean_wait(c, rate, mean_service):
    a = rate * mean_service
    rho = a / c
    tail = a ** c / math.factorial(c) / (1 - rho)
    pw = tail / (sum(a ** k / math.factorial(k) for k in range(c)) + tail)
    return pw * mean_service / (c * (1 - rho))


@pytest.mark.parametrize("policy", ["colocated", "disaggregated"])
def test_central_pool_is_mmc(policy):
    """A central queue over c prefill servers with exponential service is M/M/c: Erlang C's mean wait. Colocated
    instances with one-token requests never decode, so the pool is the same queue."""
    c, mu_inv, rho = 4, 0.1, 0.8
    costs = IterationCosts(prefill=lambda n: mu_inv / 1000 * n, decode=decode)
    R = rho * c / mu_inv
    pool = dict(n_instances=c) if policy == "colocated" else dict(n_prefill=c)
    res = simulate(policy, costs, rate=R, input_len=("exponential", 1000), output_len=1, n_requests=200000, seed=8,
                   dispatch="central", **pool)
    s = mu_inv / 1000 * res.input_len
    wait = res.ttft - s
    assert np.all(wait >= -1e-12)
    assert abs(wait.mean() / _erlang_c_mean_wait(c, R, s.mean()) - 1) < 0.06
    assert abs(res.prefill_busy / rho - 1) < 0.02


def test_central_prefill_pool_never_idles_while_a_prompt_waits():
    """Deterministic service, central queue: a prompt waits only while all c servers are busy, and prefills start
    in arrival order (FCFS), each at its arrival or at the end of an earlier prefill."""
    c, D = 3, 0.1
    costs = IterationCosts(prefill=lambda n: D + 0.0 * n, decode=decode)
    for policy, pool in (("disaggregated", dict(n_prefill=c)), ("colocated", dict(n_instances=c))):
        res = simulate(policy, costs, rate=0.9 * c / D, input_len=100, output_len=1, n_requests=4000, warmup=0.0,
                       seed=9, dispatch="central", **pool)
        a = res.arrival
        ps = res.first_token - D
        pe = res.first_token
        assert np.all(np.diff(ps) >= 0) and np.all(ps >= a - 1e-12)
        waited = np.flatnonzero(ps > a + 1e-9)
        assert waited.size > 400
        ends = np.sort(pe)
        for i in waited:
            # the start is the end of an earlier prefill, and throughout [a_i, ps_i) every server is busy
            assert np.min(np.abs(ends - ps[i])) < 1e-9
            for t in np.concatenate([[a[i]], ends[(ends >= a[i]) & (ends < ps[i] - 1e-9)]]):
                assert np.sum((ps <= t + 1e-12) & (pe > t + 1e-12)) == c


def test_jsq_prefill_picks_the_fewest_outstanding():
    res = simulate("disaggregated", COSTS, rate=150.0, input_len=LOGN_IN, output_len=1, n_requests=3000,
                   warmup=0.0, seed=10, n_prefill=5, dispatch="jsq")
    ex = res.extra
    pinst, pe, a = ex["prefill_instance"], ex["prefill_end"], res.arrival
    for i in range(1, a.size):
        count = np.bincount(pinst[:i][pe[:i] > a[i]], minlength=5)
        assert pinst[i] == np.argmin(count)  # argmin: the lowest index among ties
    used = np.bincount(pinst, minlength=5)
    assert np.all(used > 50) and used[0] > used[4]  # ties go to the lowest index


def test_pooled_dispatch_orders_the_waits():
    """M/M/c prefill pool: central (M/M/c) waits least, JSQ close to it, random (c M/M/1) the most."""
    c, mu_inv = 4, 0.1
    costs = IterationCosts(prefill=lambda n: mu_inv / 1000 * n, decode=decode)
    kw = dict(rate=0.85 * c / mu_inv, input_len=("exponential", 1000), output_len=1, n_requests=100000, seed=12,
              n_prefill=c)
    w = {d: simulate("disaggregated", costs, dispatch=d, **kw).mean("ttft") for d in ("central", "jsq", "random")}
    assert w["central"] < w["jsq"] < 0.6 * w["random"]


@pytest.mark.parametrize("policy,rate,input_len", [("colocated", 14.0, ("lognormal", 2000, 1.0)),
                                                    ("chunked", 18.0, LOGN_IN)])
def test_lor_herds_prompts(policy, rate, input_len):
    """Least outstanding requests (lor) counts the running decodes: new prompts pile onto the instance whose batch
    has just drained and queue there behind one another while the other instances decode. At high load its p99 TTFT
    is far above jsq's (the shortest prompt queue, ties to the fewest decodes) and central's (measured over seeds
    1-4: colocated 2.0-2.3x jsq, 3.1-3.3x central; chunked 1.7-2.1x jsq, 2.4-3.1x central); the decode batches,
    hence TPOT, are about the same."""
    c = 8
    kw = dict(rate=rate * c, input_len=input_len, output_len=("lognormal", 100, 2.0), n_requests=20000, seed=3,
              n_instances=c, **KW[policy])
    res = {d: simulate(policy, COSTS, dispatch=d, **kw) for d in ("central", "jsq", "lor")}
    assert res["lor"].prefill_busy > 0.65
    p99 = {d: r.quantile("ttft", 0.99) for d, r in res.items()}
    assert p99["central"] < p99["jsq"] and 1.5 * p99["jsq"] < p99["lor"] and 2.0 * p99["central"] < p99["lor"], p99
    assert abs(res["lor"].quantile("tpot", 0.99) / res["jsq"].quantile("tpot", 0.99) - 1) < 0.1


def test_lor_is_jsq_for_disaggregated_pools():
    """A prefill-only instance holds no decodes and the decode pool routes by requests either way: lor is jsq."""
    kw = dict(rate=60.0, input_len=LOGN_IN, output_len=LOGN_OUT, n_requests=3000, seed=11, n_prefill=4,
              n_decode=3, **KW["disaggregated"])
    a = simulate("disaggregated", COSTS, dispatch="jsq", **kw)
    b = simulate("disaggregated", COSTS, dispatch="lor", **kw)
    np.testing.assert_array_equal(a.extra["prefill_instance"], b.extra["prefill_instance"])
    np.testing.assert_array_equal(a.extra["decode_instance"], b.extra["decode_instance"])
    np.testing.assert_array_equal(a.finish, b.finish)


@pytest.mark.parametrize("policy", ["chunked", "disaggregated"])
def test_random_pool_is_independent_instances(policy):
    """Random dispatch over c instances at c times the rate: each instance a lone one at the rate (Poisson
    splitting), so the per-request distributions agree."""
    c = 4
    pool = dict(n_prefill=c, n_decode=c) if policy == "disaggregated" else dict(n_instances=c)
    kw = dict(input_len=LOGN_IN, output_len=LOGN_OUT, n_requests=40000, **KW[policy])
    one = simulate(policy, COSTS, rate=7.0, seed=13, **kw)
    many = simulate(policy, COSTS, rate=7.0 * c, seed=14, dispatch="random", **pool, **kw)
    for m in ("ttft", "tpot"):
        x, y = np.sort(one._values(m)), np.sort(many._values(m))
        grid = np.concatenate([x, y])
        ks = np.max(np.abs(np.searchsorted(x, grid, "right") / x.size - np.searchsorted(y, grid, "right") / y.size))
        assert ks < 0.03, m  # Kolmogorov-Smirnov distance (requests are correlated: not the iid threshold)
        for q, tol in ((0.5, 0.03), (0.9, 0.05), (0.99, 0.15)):  # a p99 varies ~15 % between seeds (busy periods)
            assert abs(many.quantile(m, q) / one.quantile(m, q) - 1) < tol, (m, q)
    assert abs(many.mean_in_decode / one.mean_in_decode - 1) < 0.03


@pytest.mark.parametrize("policy", ["colocated", "chunked", "disaggregated"])
def test_balanced_pools_narrow_the_decode_batch(policy):
    """JSQ and a central queue spread the pool's requests evenly over its instances: the decode batch an
    iteration sees fluctuates less than under random dispatch, so p99 TPOT falls; the mean load is the same."""
    c = 8
    pool = dict(n_prefill=c, n_decode=c) if policy == "disaggregated" else dict(n_instances=c)
    kw = dict(rate=8.0 * c, input_len=LOGN_IN, output_len=LOGN_OUT, n_requests=30000, seed=15, **pool, **KW[policy])
    res = {d: simulate(policy, COSTS, dispatch=d, **kw) for d in ("random", "central", "jsq")}
    for d in ("central", "jsq"):
        assert res[d].quantile("tpot", 0.99) < res["random"].quantile("tpot", 0.99)
        assert abs(res[d].mean_in_decode / res["random"].mean_in_decode - 1) < 0.05


@pytest.mark.parametrize("policy", ["colocated", "chunked", "disaggregated"])
def test_littles_law_decode_batch(policy):
    n_inst = 2 if policy == "colocated" else 1
    res = simulate(policy, COSTS, rate=8.0 * n_inst, input_len=LOGN_IN, output_len=LOGN_OUT, n_requests=20000,
                   seed=4, n_instances=n_inst, **KW[policy])
    little = res.rate / n_inst * np.mean(res.decode_residence)
    assert res.mean_in_decode > 10
    assert abs(res.mean_in_decode / little - 1) < 0.05
    # the batch a decode iteration sees is at least the time-average holding a slot (no idle decode iterations)
    assert res.mean_decode_batch >= res.mean_in_decode * 0.99


# ----------------------------------------------------------------------------------------------------------------
# low-load limits and monotonicity
# ----------------------------------------------------------------------------------------------------------------

def test_colocated_low_load_limits():
    I, O = 800, 50
    res = simulate("colocated", COSTS, rate=0.005, input_len=I, output_len=O, n_requests=1000, seed=0)
    np.testing.assert_allclose(np.median(res.ttft), prefill(I), rtol=1e-9)
    assert abs(res.mean("ttft") / prefill(I) - 1) < 0.01
    tpot1 = 0.02 + 1e-4 + 1e-7 * (I + O / 2)  # mean decode step at batch 1 over contexts I+1 .. I+O-1
    np.testing.assert_allclose(np.median(res.tpot), tpot1, rtol=1e-9)
    assert abs(res.mean("tpot") / tpot1 - 1) < 0.01
    assert res.mean_decode_batch < 1.05


def test_chunked_long_prompt_iterations():
    I, chunk = 5000, 512
    res = simulate("chunked", COSTS, rate=0.002, input_len=I, output_len=20, n_requests=400, seed=0, chunk=chunk)
    pieces = [min(chunk, I - p) for p in range(0, I, chunk)]
    assert len(pieces) == math.ceil(I / chunk)
    expected = sum(mixed(0, 0.0, n, p) for n, p in zip(pieces, range(0, I, chunk)))
    np.testing.assert_allclose(np.median(res.ttft), expected, rtol=1e-9)
    assert res.quantile("ttft", 0.5) == pytest.approx(expected, rel=1e-9)


def test_disaggregated_overlap_exposes_only_residual():
    L, T = 10, lambda n: 1e-4 * n
    I = 2000
    P, X = prefill(I), T(I)
    for overlap, exposed in ((False, X), (True, max(X / L, X - P * (L - 1) / L))):
        res = simulate("disaggregated", COSTS, rate=0.01, input_len=I, output_len=5, n_requests=300, seed=0,
                       transfer_time=T, overlap=overlap, layers=L)
        np.testing.assert_allclose(np.median(res.ttft), P + exposed, rtol=1e-9)


def test_colocated_tpot_rises_with_rate():
    tp = [simulate("colocated", COSTS, rate=r, input_len=LOGN_IN, output_len=LOGN_OUT, n_requests=5000,
                   seed=1).mean("tpot") for r in (1.0, 4.0, 8.0, 11.0)]
    assert all(b > a for a, b in zip(tp, tp[1:]))


def test_chunked_tames_token_gaps():
    kw = dict(rate=8.0, input_len=LOGN_IN, output_len=LOGN_OUT, n_requests=5000, seed=2)
    col = simulate("colocated", COSTS, **kw)
    chk = simulate("chunked", COSTS, chunk=512, **kw)
    assert chk.quantile("max_gap", 0.99) < col.quantile("max_gap", 0.99)
    assert col.prefill_busy > 0.05 and chk.prefill_busy > col.prefill_busy  # chunked iterations carry prompt tokens


def test_n_instances_random_routing_splits_load():
    kw = dict(input_len=LOGN_IN, output_len=LOGN_OUT, n_requests=12000, seed=5)
    one = simulate("colocated", COSTS, rate=6.0, **kw)
    four = simulate("colocated", COSTS, rate=24.0, n_instances=4, **kw)
    assert abs(four.mean("tpot") / one.mean("tpot") - 1) < 0.03
    assert abs(four.mean_in_decode / one.mean_in_decode - 1) < 0.05


def test_metric_api_and_token_gap():
    res = simulate("colocated", COSTS, rate=8.0, input_len=LOGN_IN, output_len=LOGN_OUT, n_requests=3000, seed=0)
    t = res.tpot[np.isfinite(res.tpot)]
    assert res.quantile("tpot", 0.99) == pytest.approx(np.quantile(t, 0.99))
    assert res.mean("tpot") == pytest.approx(t.mean())
    assert res.n_measured == 3000 - 300 and res.n_warmup == 300 and np.all(np.diff(res.arrival) > 0)
    # every token gap counted once: weights sum to the number of decode tokens of measured requests
    assert res.gap_weights.sum() == pytest.approx(np.sum(res.output_len - 1))
    # mean token gap == token-weighted mean TPOT
    o = res.output_len
    m = o > 1
    assert res.mean("token_gap") == pytest.approx(np.sum(res.tpot[m] * (o[m] - 1)) / np.sum(o[m] - 1), rel=1e-9)
    assert res.quantile("token_gap", 0.5) <= res.quantile("token_gap", 0.99) <= res.quantile("max_gap", 1.0)
    assert np.all(res.max_gap[m] >= res.tpot[m] - 1e-12)
    with pytest.raises(FrontierError):
        res.quantile("latency", 0.5)


def test_max_time_bounds_an_overloaded_run():
    res = simulate("colocated", COSTS, rate=40.0, input_len=LOGN_IN, output_len=LOGN_OUT, n_requests=20000,
                   max_time=100.0)
    assert res.n_unfinished > 0 and res.sim_time < 101.0 and np.all(res.finish <= res.sim_time)


def test_bad_arguments():
    kw = dict(rate=1.0, input_len=10, output_len=10, n_requests=10)
    with pytest.raises(FrontierError):
        simulate("pipelined", COSTS, **kw)
    with pytest.raises(FrontierError):
        simulate("chunked", IterationCosts(prefill, decode), chunk=256, **kw)
    with pytest.raises(FrontierError):
        simulate("chunked", COSTS, **kw)  # no chunk
    with pytest.raises(FrontierError):
        simulate("colocated", COSTS, rate=0.0, input_len=10, output_len=10)
    with pytest.raises(FrontierError):
        simulate("disaggregated", COSTS, prefill_queue="shortest", **kw)
    with pytest.raises(FrontierError):
        simulate("colocated", COSTS, dispatch="shortest", **kw)
    with pytest.raises(FrontierError):
        simulate("disaggregated", COSTS, decode_dispatch="least", **kw)
    with pytest.raises(FrontierError):
        simulate("colocated", IterationCosts(lambda n: -1.0 + 0 * n, decode), **kw)


def test_runtime_budget():
    t0 = time.perf_counter()
    res = simulate("colocated", COSTS, rate=10.0, input_len=LOGN_IN, output_len=LOGN_OUT, n_requests=20000)
    elapsed = time.perf_counter() - t0
    assert 20 < res.mean_decode_batch < 45
    assert elapsed < 3.0


@pytest.mark.parametrize("policy", ["colocated", "chunked", "disaggregated"])
def test_pooled_runtime_budget(policy):
    """A 64-instance pool under central, JSQ or LOR dispatch (one event loop) with 20k requests: well under 3 s."""
    c = 64
    pool = dict(n_prefill=c, n_decode=c) if policy == "disaggregated" else dict(n_instances=c)
    for d in ("central", "jsq", "lor"):
        t0 = time.perf_counter()
        res = simulate(policy, COSTS, rate=10.0 * c, input_len=LOGN_IN, output_len=LOGN_OUT, n_requests=20000,
                       dispatch=d, **pool, **KW[policy])
        elapsed = time.perf_counter() - t0
        assert 15 < res.mean_decode_batch < 45
        assert elapsed < 3.0

"""simulate(): the seeded discrete-event simulator of the three serving policies."""

from __future__ import annotations

import numbers

import numpy as np

from frontier_jax.errors import FrontierError

from ._chunked import run_chunked
from ._colocated import run_colocated
from ._disaggregated import kv_transfer, prefill_central, prefill_jsq, prefill_random, run_decode
from ._pool import run_chunked_pool, run_colocated_pool, run_decode_pool
from ._result import SimResult, decode_metrics, window_overlap
from ._workload import IterationCosts, eval_vectorised, sample_arrivals, sample_lengths

POLICIES = ("colocated", "chunked", "disaggregated")
DISPATCHES = ("random", "central", "jsq", "lor")


def _dispatch(v, name):
    if v not in DISPATCHES:
        raise FrontierError(f"{name}={v!r} must be one of {', '.join(repr(d) for d in DISPATCHES)}")
    return v


def _pos_int(v, name, allow_none=False):
    if v is None and allow_none:
        return None
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or v < 1:
        raise FrontierError(f"{name}={v!r} must be an integer >= 1")
    return int(v)


def simulate(policy: str, costs: IterationCosts, *, rate: float, input_len, output_len, n_requests: int = 20000,
             warmup: float = 0.1, seed: int = 0, arrival_ca2: float = 1.0, max_batch=None, chunk=None,
             n_prefill: int = 1, n_decode: int = 1, transfer_time=None, overlap: bool = False, layers: int = 1,
             n_instances: int = 1, dispatch: str = "random", decode_dispatch=None, prefill_queue=None,
             max_time=None) -> SimResult:
    """Simulate ``n_requests`` requests under ``policy`` and return per-request TTFT/TPOT/max token gap.

    policy: "colocated" (vLLM, prefill-prioritised continuous batching), "chunked" (Sarathi-Serve; needs
        ``chunk`` and ``costs.mixed``) or "disaggregated" (DistServe; ``n_prefill``/``n_decode`` instances,
        ``transfer_time(I)`` seconds per request on its prefill instance's link, ``overlap``/``layers`` for
        layer-wise transfer).
    rate: total arrival rate (req/s) of the pool; arrivals are a renewal process with squared CV ``arrival_ca2``
        (Poisson at 1).
    n_instances (colocated/chunked): instances in the pool. Must be 1 for "disaggregated", which uses
        n_prefill/n_decode.
    dispatch: how a pool shares its arrivals, for the colocated/chunked instances and both disaggregated pools:
        "random": each arrival to a uniformly random instance; the instances are independent and simulated one at
            a time (each sees rate / n; Poisson stays Poisson).
        "central": one FCFS queue of prompts for the pool (a global scheduler). A prefill-only instance takes the
            head when it is free (G/G/c); a colocated instance takes it at an iteration boundary, before a decode
            iteration, while its batch has a free slot; a chunked instance takes prompts from the head whenever its
            token budget has room after the prompt it has partly prefilled (that one stays on it). An arrival wakes
            the idle instance of lowest index.
        "jsq": join the shortest prompt queue. At its arrival a request goes to the instance with the fewest
            prompts (queued on it + in prefill on it), ties to the fewest running decodes on it, then to the lowest
            index, and is served in that instance's own FCFS queue. A prompt thus lands on an instance with running
            decodes only when every instance has a prompt or a decode (the closed form's JSQ). For a prefill-only
            instance (disaggregated) the fewest queued + in prefill, ties to the lowest index.
        "lor" (simulator only; not a closed-form policy): least outstanding requests, as "jsq" but the instance
            with the fewest requests queued + in prefill + decoding on it, ties to the lowest index. A finding:
            counting decodes herds new prompts onto the instance whose batch has just drained, where they queue
            behind one another while the other instances decode (colocated, c = 16 at load 0.88: p99 TTFT 14.2 s
            under "lor" against 0.67 s under "central"). A prefill-only instance holds no decodes, so for
            disaggregated pools "lor" is "jsq".
        A prompt counts on its instance until the iteration that completes it ends, a request until the iteration
        that emits its last token ends.
        Decode pool (disaggregated): "random" as above at KV arrival; "central", "jsq" and "lor" alike, the
        instance with the fewest requests waiting or decoding when the KV arrives (the KV lands on one instance;
        with unbounded batches a central decode queue would admit every request at once too).
        The pooled policies simulate all instances of the pool in one event loop (frontier_jax.sim._pool).
    decode_dispatch (disaggregated): the decode pool's dispatch when it differs from ``dispatch``.
    prefill_queue (disaggregated; older name): the prefill pool's dispatch, "random" or "central"; overrides
        ``dispatch`` for the prefill pool only.
    input_len/output_len: int, ("lognormal"|"gamma", mean, cv), ("exponential", mean) or an array to resample.
    warmup: the first floor(warmup * n_requests) arrivals are simulated but not measured; requests unfinished at
        the end (only possible with ``max_time``) are dropped too.
    max_batch: cap on running decodes per instance (None: unbounded).
    max_time: optional bound on simulated time (s); the run stops at the first iteration boundary past it.

    TTFT definitions: colocated/chunked, end of the iteration that completes the prompt; disaggregated, the time the
    KV cache (and first token) has arrived at the decode instance = prefill end + exposed transfer (incl. waiting for
    the link). Waiting for a decode slot / iteration boundary after that is charged to the first token gap (TPOT).
    Costs used: colocated, prefill and decode; chunked, mixed only (a decode-only iteration is mixed(b, ctx, 0, 0));
    disaggregated, prefill, decode and transfer_time (None: instantaneous transfer).
    Diagnostics (SimResult.prefill_busy, mean_decode_batch, mean_in_decode) are measured over the window from the
    first measured arrival to the last arrival.
    The same ``seed`` gives the same workload (arrivals, lengths) for every policy (common random numbers).
    """
    if policy not in POLICIES:
        raise FrontierError(f"policy {policy!r} is unknown; use one of {', '.join(POLICIES)}")
    if not isinstance(costs, IterationCosts):
        raise FrontierError("costs must be a frontier_jax.sim.IterationCosts")
    rate = float(rate)
    if not (np.isfinite(rate) and rate > 0):
        raise FrontierError(f"rate={rate!r} must be a finite number > 0 (requests per second)")
    n = _pos_int(n_requests, "n_requests")
    warmup = float(warmup)
    if not 0.0 <= warmup < 1.0:
        raise FrontierError(f"warmup={warmup!r} must be a fraction in [0, 1)")
    n_warm = int(np.floor(warmup * n))
    if n_warm >= n:
        raise FrontierError("warmup leaves no measured requests; lower warmup or raise n_requests")
    arrival_ca2 = float(arrival_ca2)
    if not (np.isfinite(arrival_ca2) and arrival_ca2 >= 0):
        raise FrontierError(f"arrival_ca2={arrival_ca2!r} must be a finite number >= 0")
    max_batch = _pos_int(max_batch, "max_batch", allow_none=True)
    n_instances = _pos_int(n_instances, "n_instances")
    n_prefill = _pos_int(n_prefill, "n_prefill")
    n_decode = _pos_int(n_decode, "n_decode")
    layers = _pos_int(layers, "layers")
    if max_time is not None and not (float(max_time) > 0):
        raise FrontierError(f"max_time={max_time!r} must be > 0 seconds")
    if policy == "chunked":
        chunk = _pos_int(chunk, "chunk")
        if costs.mixed is None:
            raise FrontierError("policy 'chunked' needs costs.mixed(decode_batch, decode_context, chunk, prefix)")
    dispatch = _dispatch(dispatch, "dispatch")
    decode_dispatch = dispatch if decode_dispatch is None else _dispatch(decode_dispatch, "decode_dispatch")
    prefill_dispatch = dispatch
    if prefill_queue is not None:
        if prefill_queue not in ("random", "central"):
            raise FrontierError(f"prefill_queue={prefill_queue!r} must be 'random' or 'central'")
        prefill_dispatch = prefill_queue
    if policy == "disaggregated":
        if n_instances != 1:
            raise FrontierError("n_instances is for colocated/chunked; give n_prefill and n_decode instead")

    ss = np.random.SeedSequence(seed)
    r_arr, r_in, r_out, r_route, r_route2 = (np.random.default_rng(s) for s in ss.spawn(5))
    arr = sample_arrivals(rate, n, arrival_ca2, r_arr)
    inp = sample_lengths(input_len, n, r_in, "input_len")
    out = sample_lengths(output_len, n, r_out, "output_len")
    measured = np.arange(n) >= n_warm
    w0, w1 = float(arr[n_warm]), float(arr[-1])
    if w1 <= w0:
        w1 = w0 + 1e-12

    first = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    dstart = np.full(n, np.nan)
    max_gap = np.full(n, np.nan)
    gap_v, gap_w = [], []
    busy_pre = 0.0  # server-seconds in iterations with prompt tokens, inside the window
    bw, bt = 0.0, 0.0  # sum(b * overlap), sum(overlap) over decode-carrying iterations with b > 0
    slot_int = 0.0  # integral of requests holding a decode slot, inside the window
    t_end = 0.0
    extra = {}

    if policy in ("colocated", "chunked"):
        n_srv_pre = n_srv_dec = n_instances
        pre_time = eval_vectorised(costs.prefill, inp, "prefill") if policy == "colocated" else None
        if dispatch == "random" or n_instances == 1:
            per_instance = _independent_instances(policy, costs, arr, inp, out, pre_time, chunk, max_batch,
                                                  max_time, n_instances, r_route)
        else:
            per_instance = _pooled_instances(policy, costs, arr, inp, out, pre_time, chunk, max_batch, max_time,
                                             n_instances, dispatch)
        for idx, f, jn, pre_b, tr, te in per_instance:
            if policy == "colocated":
                ok = pre_b >= 0  # prefilled
                ov = window_overlap(f[ok] - pre_time[idx][ok], f[ok], w0, w1)
                busy_pre += float(ov.sum())
                slot_int += float(np.sum(pre_b[ok] * ov))
                pre_mask = None
            else:
                pre_mask = tr.ptok > 0
            t_end = max(t_end, te)
            fin, ds, mg, gv, gw = decode_metrics(f, jn, out[idx], tr, measured[idx])
            first[idx], finish[idx], max_gap[idx] = f, fin, mg
            dstart[idx] = np.where(jn >= 0, f, np.nan)  # holds its slot from its first token on
            gap_v.append(gv)
            gap_w.append(gw)
            ov = window_overlap(tr.end - tr.dt, tr.end, w0, w1)
            if pre_mask is not None:
                busy_pre += float(ov[pre_mask].sum())
            pos = tr.b > 0
            bw += float(np.sum(tr.b[pos] * ov[pos]))
            bt += float(np.sum(ov[pos]))
            slot_int += float(np.sum(tr.b * ov))
    else:
        n_srv_pre, n_srv_dec = n_prefill, n_decode
        pre_time = eval_vectorised(costs.prefill, inp, "prefill")
        xfer = (np.zeros(n) if transfer_time is None else eval_vectorised(transfer_time, inp, "transfer_time"))
        if prefill_dispatch == "central":
            ps, pe, pinst = prefill_central(arr, pre_time, n_prefill)
        elif prefill_dispatch in ("jsq", "lor") and n_prefill > 1:
            ps, pe, pinst = prefill_jsq(arr, pre_time, n_prefill)
        else:
            pinst = r_route.integers(n_prefill, size=n) if n_prefill > 1 else np.zeros(n, np.int64)
            ps, pe = prefill_random(arr, pre_time, pinst, n_prefill)
        kv = kv_transfer(ps, pe, pre_time, xfer, pinst, n_prefill, bool(overlap), layers)
        if max_time is not None:
            kv = np.where(pe <= max_time, kv, np.nan)  # prompts not prefilled by max_time never reach decode
        first[:] = kv
        busy_pre = float(window_overlap(ps, pe, w0, w1).sum())
        one = out == 1
        finish[one] = kv[one]
        t_end = float(np.nanmax(kv)) if np.any(np.isfinite(kv)) else 0.0
        if decode_dispatch == "random" or n_decode == 1:
            dinst = r_route2.integers(n_decode, size=n) if n_decode > 1 else np.zeros(n, np.int64)
            per_instance = []
            for d in range(n_decode):
                idx = np.flatnonzero((dinst == d) & ~one & np.isfinite(kv))
                if idx.size == 0:
                    continue
                idx = idx[np.argsort(kv[idx], kind="stable")]
                jn, tr, te = run_decode(kv[idx], inp[idx], out[idx], costs.decode, max_batch, max_time)
                per_instance.append((idx, jn, tr, te))
        else:
            idx = np.flatnonzero(~one & np.isfinite(kv))
            idx = idx[np.argsort(kv[idx], kind="stable")]
            jn, di, trs, te = run_decode_pool(kv[idx], inp[idx], out[idx], costs.decode, max_batch, max_time,
                                              n_decode)
            dinst = np.full(n, -1, np.int64)
            dinst[idx] = di
            t_end = max(t_end, te)
            per_instance = [(idx[di == d], jn[di == d], trs[d], te) for d in range(n_decode) if np.any(di == d)]
        for idx, jn, tr, te in per_instance:
            t_end = max(t_end, te)
            fin, ds, mg, gv, gw = decode_metrics(kv[idx], jn, out[idx], tr, measured[idx])
            finish[idx], dstart[idx], max_gap[idx] = fin, ds, mg
            gap_v.append(gv)
            gap_w.append(gw)
            ov = window_overlap(tr.end - tr.dt, tr.end, w0, w1)
            bw += float(np.sum(tr.b * ov))
            bt += float(np.sum(ov))
            slot_int += float(np.sum(tr.b * ov))
        extra = {"prefill_start": ps, "prefill_end": pe, "kv_arrival": kv, "transfer_time": xfer,
                 "prefill_instance": pinst, "decode_instance": dinst}

    W = w1 - w0
    done = np.isfinite(finish)
    keep = measured & done
    o = out[keep]
    ft, fi = first[keep], finish[keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(o > 1, (fi - ft) / (o - 1), np.nan)
    res_extra = {k: v[keep] for k, v in extra.items()}
    if policy == "disaggregated":
        link_busy = float(window_overlap(extra["kv_arrival"] - extra["transfer_time"], extra["kv_arrival"],
                                         w0, w1)[np.isfinite(extra["kv_arrival"])].sum()) / (n_prefill * W)
        res_extra["link_busy"] = link_busy
    return SimResult(
        policy=policy, rate=rate, n_requests=n, n_warmup=n_warm, n_unfinished=int(np.sum(measured & ~done)),
        arrival=arr[keep], input_len=inp[keep], output_len=o, first_token=ft, finish=fi,
        decode_start=dstart[keep], ttft=ft - arr[keep], tpot=tpot, max_gap=max_gap[keep],
        gap_values=np.concatenate(gap_v) if gap_v else np.zeros(0),
        gap_weights=np.concatenate(gap_w) if gap_w else np.zeros(0),
        window=(w0, w1), sim_time=float(t_end),
        prefill_busy=busy_pre / (n_srv_pre * W),
        mean_decode_batch=bw / bt if bt > 0 else float("nan"),
        mean_in_decode=slot_int / (n_srv_dec * W),
        n_servers_prefill=n_srv_pre, n_servers_decode=n_srv_dec, extra=res_extra,
    )


def _independent_instances(policy, costs, arr, inp, out, pre_time, chunk, max_batch, max_time, n_instances,
                           r_route):
    """Random dispatch: each instance simulated on its own. Yields (requests, first, join, pre_b, trace, t_end)."""
    n = arr.shape[0]
    route = r_route.integers(n_instances, size=n) if n_instances > 1 else np.zeros(n, np.int64)
    for s in range(n_instances):
        idx = np.flatnonzero(route == s) if n_instances > 1 else np.arange(n)
        if idx.size == 0:
            continue
        if policy == "colocated":
            f, jn, pre_b, npf, tr, te = run_colocated(arr[idx], inp[idx], out[idx], pre_time[idx], costs.decode,
                                                      max_batch, max_time)
            pb = np.full(idx.size, -1, np.int64)
            pb[:npf] = pre_b
        else:
            f, jn, tr, te = run_chunked(arr[idx], inp[idx], out[idx], costs.mixed, chunk, max_batch, max_time)
            pb = None
        yield idx, f, jn, pb, tr, te


def _pooled_instances(policy, costs, arr, inp, out, pre_time, chunk, max_batch, max_time, n_instances, mode):
    """Central, JSQ or LOR dispatch: the pool's instances in one event loop. Yields what _independent_instances
    does."""
    if policy == "colocated":
        f, jn, inst, pre_b, trs, te = run_colocated_pool(arr, inp, out, pre_time, costs.decode, max_batch, max_time,
                                                         n_instances, mode)
    else:
        f, jn, inst, trs, te = run_chunked_pool(arr, inp, out, costs.mixed, chunk, max_batch, max_time, n_instances,
                                                mode)
        pre_b = None
    for s in range(n_instances):
        idx = np.flatnonzero(inst == s)
        if idx.size == 0:
            continue
        yield idx, f[idx], jn[idx], None if pre_b is None else pre_b[idx], trs[s], te

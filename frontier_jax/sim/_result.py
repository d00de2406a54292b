"""SimResult and the vectorised post-processing shared by the policies (per-request finish, TPOT, max token gap,
token-gap distribution, window diagnostics)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from frontier_jax.errors import FrontierError

__all__ = ["SimResult", "DecodeTrace", "decode_metrics", "window_overlap"]

_METRICS = ("ttft", "tpot", "max_gap", "tbt", "e2e", "token_gap")


@dataclass
class DecodeTrace:
    """Record of the decode-carrying iterations of one server (colocated/chunked instance or decode instance).

    Every request that joins the running batch takes part in *every* subsequent iteration until it leaves, so a
    request is fully described by the index ``join`` of its first iteration; its last one is ``join + O - 2``.
    """

    end: np.ndarray  # iteration end times
    dt: np.ndarray  # iteration durations
    b: np.ndarray  # running decode batch during the iteration
    ptok: np.ndarray | None = None  # prompt tokens carried (chunked only)


def _range_max(d: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """max(d[lo..hi]) (inclusive) for each pair, lo <= hi, via a sparse table."""
    out = np.empty(lo.shape, dtype=np.float64)
    if lo.size == 0:
        return out
    length = hi - lo + 1
    lev = np.frexp(length.astype(np.float64))[1] - 1  # floor(log2(length)), exact for ints
    table = d
    for k in range(int(lev.max()) + 1):
        if k > 0:
            h = 1 << (k - 1)
            table = np.maximum(table[:-h], table[h:])
        m = lev == k
        if np.any(m):
            w = 1 << k
            out[m] = np.maximum(table[lo[m]], table[hi[m] - w + 1])
    return out


def decode_metrics(first, join, out_len, trace: DecodeTrace, measured):
    """Finish time, start of first decode iteration, max token gap and the token gaps of ``measured`` requests.

    first: first-token times; join: index of first decode iteration (-1: never joined); out_len: output lengths.
    Returns finish, decode_start (NaN where not joined), max_gap (NaN for O == 1), gap_values, gap_weights.
    """
    n = first.shape[0]
    E, DT = trace.end, trace.dt
    K = E.shape[0]
    finish = np.full(n, np.nan)
    one = (out_len == 1) & np.isfinite(first)
    finish[one] = first[one]
    last = join + out_len - 2
    ok = (join >= 0) & (last < K)
    j, L = join[ok], last[ok]
    finish[ok] = E[L]
    decode_start = np.full(n, np.nan)
    decode_start[ok] = E[j] - DT[j]
    first_gap = E[j] - first[ok]
    D = np.empty(K)
    if K:
        D[0] = np.nan
        D[1:] = np.diff(E)
    inner = L > j
    mg = first_gap.copy()
    if np.any(inner):
        mg[inner] = np.maximum(mg[inner], _range_max(D, j[inner] + 1, L[inner]))
    max_gap = np.full(n, np.nan)
    max_gap[ok] = mg
    # token-gap distribution of measured requests: their first gaps plus D[k] weighted by how many measured
    # requests take part in iteration k beyond their first
    mk = measured[ok]
    w = np.zeros(K + 1)
    np.add.at(w, j[mk & inner] + 1, 1.0)
    np.add.at(w, L[mk & inner] + 1, -1.0)
    w = np.cumsum(w)[:K]
    sel = w > 0.5
    values = np.concatenate([first_gap[mk], D[sel]])
    weights = np.concatenate([np.ones(int(mk.sum())), w[sel]])
    return finish, decode_start, max_gap, values, weights


def window_overlap(start, end, w0, w1):
    """Length of [start, end] inside the window [w0, w1], element-wise."""
    return np.clip(np.minimum(end, w1) - np.maximum(start, w0), 0.0, None)


@dataclass(eq=False)
class SimResult:
    """Per-request metrics of the measured requests (arrival index >= warmup * n_requests, finished), in arrival
    order, plus diagnostics.

    ttft: first token - arrival (disaggregated: KV arrival at the decode instance, see ``simulate``).
    tpot: (finish - first token) / (O - 1), NaN for O == 1.
    max_gap: the largest gap between consecutive tokens of the request (first gap measured from the first token),
        NaN for O == 1 (``tbt`` is an alias).
    e2e: finish - arrival.
    token_gap (quantile/mean only): the distribution over all inter-token gaps of measured requests (Sarathi's TBT).
    Diagnostics over the window [arrival of the first measured request, arrival of the last request]:
    prefill_busy: fraction of server time spent in iterations carrying prompt tokens (per prefill-capable server);
    mean_decode_batch: duration-weighted mean batch of iterations that carry decodes (what the decode kernel sees);
    mean_in_decode: time-average number of requests holding a decode slot per decode-capable server, including
        time they sit stalled behind prefills (Little: = rate per server x mean(finish - decode_start)).
    """

    policy: str
    rate: float
    n_requests: int
    n_warmup: int
    n_unfinished: int
    arrival: np.ndarray
    input_len: np.ndarray
    output_len: np.ndarray
    first_token: np.ndarray
    finish: np.ndarray
    decode_start: np.ndarray
    ttft: np.ndarray
    tpot: np.ndarray
    max_gap: np.ndarray
    gap_values: np.ndarray
    gap_weights: np.ndarray
    window: tuple
    sim_time: float
    prefill_busy: float
    mean_decode_batch: float
    mean_in_decode: float
    n_servers_prefill: int
    n_servers_decode: int
    extra: dict = field(default_factory=dict)

    @property
    def n_measured(self) -> int:
        return int(self.arrival.shape[0])

    @property
    def e2e(self) -> np.ndarray:
        return self.finish - self.arrival

    @property
    def tbt(self) -> np.ndarray:
        return self.max_gap

    @property
    def decode_wait(self) -> np.ndarray:
        """decode_start - first_token: disaggregated, the wait for a decode iteration boundary / free slot after
        the KV arrived (part of the first token gap, not of TTFT); 0 for colocated/chunked."""
        return self.decode_start - self.first_token

    @property
    def decode_residence(self) -> np.ndarray:
        """finish - decode_start: time holding a decode slot (Little's-law residence)."""
        return self.finish - self.decode_start

    def _values(self, metric: str) -> np.ndarray:
        if metric not in _METRICS:
            raise FrontierError(f"unknown metric {metric!r}; use one of {', '.join(_METRICS)}")
        v = getattr(self, metric)
        return v[np.isfinite(v)]

    def quantile(self, metric: str, q: float) -> float:
        """q-quantile (0 <= q <= 1) of a per-request metric; NaNs (TPOT of one-token requests) are dropped.
        ``token_gap`` gives the quantile over all inter-token gaps (inverse of the weighted empirical CDF)."""
        if metric == "token_gap":
            if self.gap_values.size == 0:
                return float("nan")
            o = np.argsort(self.gap_values, kind="stable")
            cw = np.cumsum(self.gap_weights[o])
            i = int(np.searchsorted(cw, q * cw[-1], side="left"))
            return float(self.gap_values[o][min(i, o.size - 1)])
        v = self._values(metric)
        return float(np.quantile(v, q)) if v.size else float("nan")

    def mean(self, metric: str) -> float:
        """The mean of a metric over the measured requests (token_gap: over every measured gap), s."""
        if metric == "token_gap":
            if self.gap_values.size == 0:
                return float("nan")
            return float(np.sum(self.gap_values * self.gap_weights) / np.sum(self.gap_weights))
        v = self._values(metric)
        return float(np.mean(v)) if v.size else float("nan")

    def summary(self) -> dict:
        """Scalar digest: means and p99s of the main metrics plus the diagnostics."""
        out = {"policy": self.policy, "rate": self.rate, "n_measured": self.n_measured,
               "n_unfinished": self.n_unfinished, "sim_time": self.sim_time}
        for m in ("ttft", "tpot", "max_gap", "token_gap"):
            out[f"mean_{m}"] = self.mean(m)
            out[f"p99_{m}"] = self.quantile(m, 0.99)
        out.update(prefill_busy=self.prefill_busy, mean_decode_batch=self.mean_decode_batch,
                   mean_in_decode=self.mean_in_decode)
        return out

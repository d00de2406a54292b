"""Workload sampling (arrivals, prompt/output lengths) and the iteration-cost callables for the simulator.

Everything here is plain numpy; the simulator is deliberately independent of the closed-form (JAX) model so that
it can validate it.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from frontier_jax.errors import FrontierError

__all__ = ["IterationCosts", "sample_lengths", "sample_arrivals", "eval_vectorised"]


@dataclass(frozen=True)
class IterationCosts:
    """Iteration-time callables (seconds) the simulator charges; plain numpy functions.

    prefill(n_tokens) -> s
        Time of one prefill iteration processing ONE prompt of ``n_tokens`` tokens. Called once, vectorised,
        with a float64 array of all prompt lengths (a scalar result is broadcast).
    decode(batch, total_context) -> s
        Time of one decode iteration of ``batch`` requests whose contexts (input + tokens generated so far)
        sum to ``total_context``. Called with a Python int and a Python float, once per iteration.
    mixed(decode_batch, decode_total_context, chunk_tokens, chunk_prefix_tokens) -> s
        Time of one chunked-prefill (Sarathi) iteration: ``decode_batch`` decode tokens whose contexts sum to
        ``decode_total_context`` plus ``chunk_tokens`` prompt tokens; ``chunk_prefix_tokens`` is the number of
        tokens of the head prompt processed in earlier iterations (KV re-read by this chunk), 0 when the chunk
        starts a fresh prompt or carries no prompt tokens. Required by policy "chunked" only.
    """

    prefill: Callable[[np.ndarray], np.ndarray]
    decode: Callable[[int, float], float]
    mixed: Optional[Callable[[int, float, int, int], float]] = None


def _to_int_lengths(x: np.ndarray) -> np.ndarray:
    return np.maximum(1, np.rint(np.asarray(x, dtype=np.float64))).astype(np.int64)


def sample_lengths(spec, n: int, rng: np.random.Generator, name: str) -> np.ndarray:
    """Integer lengths >= 1 for ``n`` requests.

    spec: an int (deterministic); ("lognormal", mean, cv) or ("gamma", mean, cv) (continuous draw rounded to the
    nearest integer, floored at 1, so the realised mean differs slightly from ``mean`` for small means);
    ("exponential", mean) (= gamma with cv 1); ("constant", value); or an explicit array of observed lengths that is
    resampled with replacement (empirical distribution).
    """
    if isinstance(spec, (bool, np.bool_)):
        raise FrontierError(f"{name} must be an int, a (kind, mean, cv) tuple or an array of lengths, not a bool")
    if isinstance(spec, numbers.Real) and not isinstance(spec, (bool, np.bool_)):
        v = float(spec)
        if not np.isfinite(v) or v < 1 or v != round(v):
            raise FrontierError(f"{name}={spec!r} must be an integer >= 1")
        return np.full(n, int(round(v)), dtype=np.int64)
    if isinstance(spec, tuple) and spec and isinstance(spec[0], str):
        kind = spec[0].lower()
        if kind in ("constant", "deterministic"):
            if len(spec) != 2:
                raise FrontierError(f"{name}=({kind!r}, value) takes one number")
            return sample_lengths(spec[1], n, rng, name)
        if kind == "exponential":
            if len(spec) != 2:
                raise FrontierError(f"{name}=('exponential', mean) takes one number")
            spec = ("gamma", spec[1], 1.0)
            kind = "gamma"
        if kind not in ("lognormal", "gamma"):
            raise FrontierError(
                f"{name} distribution {spec[0]!r} is unknown; use 'lognormal', 'gamma', 'exponential' or 'constant'"
            )
        if len(spec) != 3:
            raise FrontierError(f"{name}=({kind!r}, mean, cv) needs a mean and a coefficient of variation")
        mean, cv = float(spec[1]), float(spec[2])
        if not (np.isfinite(mean) and mean >= 1):
            raise FrontierError(f"{name} mean {spec[1]!r} must be a finite number >= 1")
        if not (np.isfinite(cv) and cv >= 0):
            raise FrontierError(f"{name} cv {spec[2]!r} must be a finite number >= 0")
        if cv == 0:
            return _to_int_lengths(np.full(n, mean))
        if kind == "lognormal":
            s2 = np.log1p(cv * cv)
            x = rng.lognormal(np.log(mean) - 0.5 * s2, np.sqrt(s2), size=n)
        else:
            x = rng.gamma(1.0 / (cv * cv), mean * cv * cv, size=n)
        return _to_int_lengths(x)
    arr = np.asarray(spec)
    if arr.ndim == 1 and arr.size > 0 and np.issubdtype(arr.dtype, np.number):
        if not np.all(np.isfinite(arr)) or np.any(arr < 1):
            raise FrontierError(f"{name} empirical lengths must be finite and >= 1")
        return _to_int_lengths(rng.choice(arr, size=n, replace=True))
    raise FrontierError(
        f"{name}={spec!r} is not understood; give an int, ('lognormal'|'gamma', mean, cv) or a 1-D array of lengths"
    )


def sample_arrivals(rate: float, n: int, ca2: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival times (s) of ``n`` requests: a renewal process with mean gap 1/rate and squared CV ``ca2``
    (exponential gaps, i.e. Poisson, when ca2 == 1; gamma gaps otherwise; deterministic when ca2 == 0)."""
    if ca2 == 1.0:
        gaps = rng.exponential(1.0 / rate, size=n)
    elif ca2 == 0.0:
        gaps = np.full(n, 1.0 / rate)
    else:
        gaps = rng.gamma(1.0 / ca2, ca2 / rate, size=n)
    return np.cumsum(gaps)


def eval_vectorised(fn: Callable, x: np.ndarray, name: str) -> np.ndarray:
    """fn(x) as a float64 array shaped like x; falls back to an element-wise loop if fn does not broadcast."""
    xf = np.asarray(x, dtype=np.float64)
    try:
        y = np.asarray(fn(xf), dtype=np.float64)
        y = np.broadcast_to(y, xf.shape).copy()
    except Exception:  # a scalar-only callable
        y = np.array([float(fn(v)) for v in xf.tolist()], dtype=np.float64)
    if not np.all(np.isfinite(y)) or np.any(y < 0):
        raise FrontierError(f"cost callable {name} returned a negative or non-finite time")
    return y

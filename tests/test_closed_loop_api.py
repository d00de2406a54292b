"""fj.closed_loop compiles once per input shape (issue 18, item 5): the catalogue objects and every number are
traced arrays, so new values, GPUs and models reuse the compiled program."""
from __future__ import annotations

import numpy as np

import frontier_jax as fj
from frontier_jax import api


def test_closed_loop_compiles_once_per_shape():
    api._closed_loop_batch.clear_cache()  # what other tests in this process compiled does not count
    before = api._closed_loop_batch._cache_size()
    calls = [("h100-80gb-sxm", "llama-3.1-70b", 1024, 128, 8, 2), ("h100-80gb-sxm", "llama-3.1-70b", 4000, 512, 32, 4),
             ("a100-80gb-sxm", "qwen3-32b", 2048, 256, 16, 8), ("h200-141gb-sxm", "llama-3.1-8b", 500, 1000, 64, 1)]
    out = [fj.closed_loop(*c) for c in calls]
    assert api._closed_loop_batch._cache_size() == before + 1
    for ttft, tpot, x in out:
        assert np.isfinite([ttft, tpot, x]).all() and float(ttft) > 0 and float(tpot) > 0 and float(x) > 0
    # a longer request at the same concurrency has the longer TTFT and the lower throughput
    (t_short, _, x_short), (t_long, _, x_long) = (fj.closed_loop("h100-80gb-sxm", "llama-3.1-70b", i, 128, 8, 2)
                                                  for i in (1024, 8192))
    assert float(t_long) > float(t_short) and float(x_long) < float(x_short)
    assert api._closed_loop_batch._cache_size() == before + 1
    fj.closed_loop("h100-80gb-sxm", "llama-3.1-70b", [1024, 2048], 128, 8, 2)  # a new shape: one more program
    assert api._closed_loop_batch._cache_size() == before + 2

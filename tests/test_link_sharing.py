"""Link-blind sharing in the sweep engine (sweep/engine.py `link_block`, search.py `evaluate_unlinked`).

Points that differ only in the KV bandwidth or the price share the colocated searches, the decode pool and the
infinite-bandwidth prefill pool. These tests check which grids share, that the shared part really ignores those
inputs, and that the engine takes the blocked path. The values of a shared sweep are compared with a full
evaluation in tests/test_determinism.py (`test_agrees_to_rounding`). Last, where the CLI keeps compiled programs between runs.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from frontier_jax.search import LINK_ONLY_INPUTS, SearchSpace, evaluate_point, evaluate_unlinked
from frontier_jax.sweep import load_spec, run_sweep
from frontier_jax.sweep.engine import link_block
from frontier_jax.sweep.grid import layout, make_point_fn
from frontier_jax.sweep.kernel import EXTRA_COORDS, SweepKernel, make_kernel, outputs_meta, point_inputs


# One configuration per choice (with overlap, so the link matters): a small program, compiled quickly.
SMALL = SearchSpace(tp=(2.0,), chunk=(1024.0,), tp_prefill=(2.0,), tp_decode=(2.0,), overlap=(1.0,))


def _spec(axes: dict):
    fixed = {k: v for k, v in {"ttft": 2.0, "tpot": 0.05, "model": "llama-3.1-8b"}.items() if k not in axes}
    return load_spec({"sweep": {"name": "share"}, "fixed": fixed,
                      "axes": {"hardware": {"values": ["a100-80gb-sxm", "h100-80gb-sxm"]},
                               "input_len": {"values": [512, 8192]}, "output_len": {"values": [64, 1024]},
                               **{k: {"values": v} for k, v in axes.items()}}})


def test_link_block_is_the_trailing_link_only_axes():
    assert LINK_ONLY_INPUTS == {"kv_bandwidth", "price_scale"}
    both = _spec({"kv_bandwidth": [1e9, 1e10, 1e11], "price_scale": [1.0, 2.0]})
    assert link_block(make_kernel(both), layout(both)) == 6
    only_kv = _spec({"kv_bandwidth": [1e9, 1e10, 1e11]})
    assert link_block(make_kernel(only_kv), layout(only_kv)) == 3
    kv_not_last = _spec({"kv_bandwidth": [1e9, 1e10, 1e11], "ttft": [1.0, 2.0]})
    assert link_block(make_kernel(kv_not_last), layout(kv_not_last)) == 1
    assert link_block(lambda pts: pts, layout(both)) == 1  # a plain kernel has no blocked form


def test_unlinked_part_ignores_the_link_and_the_price():
    """evaluate_point with the link-blind part of a point at another bandwidth and price is the same point."""
    spec = _spec({"kv_bandwidth": [2e9, 4e11], "price_scale": [0.5, 3.0]})
    k = make_kernel(spec, SMALL)
    pts = make_point_fn(spec)(jnp.arange(spec.size))
    point, demand, price = point_inputs(spec, pts, k.tables)
    own = jax.jit(jax.vmap(lambda p, d: evaluate_unlinked(p, d, SMALL)))(point, demand)
    first = jax.tree.map(lambda x: x[(np.arange(spec.size) // 4) * 4], own)  # the block's first point: 2e9, 0.5
    ev = jax.jit(jax.vmap(lambda p, d, c, u: evaluate_point(p, d, c, SMALL, unlinked=u)))
    a, b = ev(point, demand, price, own), ev(point, demand, price, first)
    for name in a:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)
    assert np.ptp(np.asarray(a["kv_tax"])[:, 2][np.isfinite(np.asarray(a["kv_tax"])[:, 2])]) > 0  # the link matters


def test_engine_takes_the_blocked_path(tmp_path):
    spec = _spec({"kv_bandwidth": [1e9, 1e10, 1e11]})
    calls = []

    class Spy(SweepKernel):
        def blocked(self, pts, block_pts, block_of):
            calls.append((pts["input_len"].shape, block_pts["input_len"].shape))
            return super().blocked(pts, block_pts, block_of)

    k = Spy(spec, SMALL)
    run_sweep(spec, k, outputs_meta(), tmp_path / "o.nc", extra_coords=EXTRA_COORDS, chunk=14, progress=False,
              devices=jax.devices()[:2])
    assert calls == [((7,), (4,))]  # 7 consecutive points touch at most 7 // 3 + 2 blocks of 3


def test_compile_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    from frontier_jax.cli import CACHE_ENV, compile_cache_dir

    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert compile_cache_dir() == str(tmp_path / "c")
    for off in ("off", "0", ""):
        monkeypatch.setenv(CACHE_ENV, off)
        assert compile_cache_dir() is None
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache_dir() == str(tmp_path / "frontier-jax" / "xla")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))  # JAX's own setting wins
    assert compile_cache_dir() is None

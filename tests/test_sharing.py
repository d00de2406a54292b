"""Shared parts in the sweep runner (runner/sharing.py; costmodel/search.py `search_link_blind`,
`search_prefill_pool`).

Points that differ only in the KV bandwidth or the price share the colocated searches, the decode pool and the
infinite-bandwidth prefill pool; points that differ only in the decode side (output length and CV, TPOT bound,
price, GPU cap) share the linked prefill search. These tests check the static bound on representatives per chunk
against brute force, which grids share what, that each shared part really ignores its inputs, and that the engine
takes the shared path with the same values as a full evaluation (also tests/test_determinism.py,
`test_agrees_to_rounding`). Last, where the CLI keeps compiled programs between runs.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from frontier_jax.costmodel.cost import evaluate_point
from frontier_jax.costmodel.kernel import (EXTRA_COORDS, SweepKernel, load_sweep_spec, make_kernel, outputs_meta,
                                           point_inputs)
from frontier_jax.costmodel.search import (DECODE_ONLY_INPUTS, LINK_ONLY_INPUTS, search_link_blind,
                                           search_prefill_pool)
from frontier_jax.costmodel.types import SearchSpace
from frontier_jax.runner import run_sweep
from frontier_jax.runner.grid import layout, make_point_fn
from frontier_jax.runner.sharing import SharedPart, distinct_bound, plan, representatives

# One configuration per choice (with overlap, so the link matters): a small program, compiled quickly.
SMALL = SearchSpace(tp=(2.0,), chunk=(1024.0,), tp_prefill=(2.0,), tp_decode=(2.0,), overlap=(1.0,))


def _spec(axes: dict, fixed: dict | None = None):
    base = {"ttft": 2.0, "tpot": 0.05, "model": "llama-3.1-8b", **(fixed or {})}
    return load_sweep_spec({"sweep": {"name": "share"}, "fixed": {k: v for k, v in base.items() if k not in axes},
                      "axes": {"hardware": {"values": ["a100-80gb-sxm", "h100-80gb-sxm"]},
                               "input_len": {"values": [512, 8192]}, "output_len": {"values": [64, 1024]},
                               **{k: {"values": v} for k, v in axes.items()}}})


def _brute_reps(shape, ignored):
    idx = np.arange(math.prod(shape))
    subs = np.unravel_index(idx, shape)
    return idx - sum(s * math.prod(shape[i + 1:]) for i, (s, ign) in enumerate(zip(subs, ignored)) if ign)


def test_distinct_bound_holds_for_every_window():
    """On random small grids, the bound is at least the most distinct representatives in any window (the shared
    evaluation would silently drop points otherwise), and equal to it in most cases."""
    rng = np.random.default_rng(7)
    exact = total = 0
    for _ in range(150):
        shape = tuple(int(x) for x in rng.integers(1, 6, rng.integers(1, 5)))
        ignored = tuple(bool(x) for x in rng.integers(0, 2, len(shape)))
        rep = _brute_reps(shape, ignored)
        for n in range(1, rep.size + 1):
            most = max(len(set(rep[a:a + n])) for a in range(rep.size - n + 1))
            bound = distinct_bound(shape, ignored, n)
            assert bound >= most, (shape, ignored, n)
            exact += bound == most
            total += 1
    assert exact > 0.9 * total


def test_representatives_map_every_point_to_its_own():
    spec = _spec({"kv_bandwidth": [1e9, 1e10, 1e11]})
    lay = layout(spec)
    ignored = tuple(name in DECODE_ONLY_INPUTS for name, _ in lay.axes)
    want = _brute_reps(lay.shape, ignored)
    for start, n in ((0, 7), (5, 7), (17, 7), (0, 24)):
        part = SharedPart("prefill", ignored, distinct_bound(lay.shape, ignored, n))
        idx = jnp.minimum(start + jnp.arange(n), lay.size - 1)
        heads, which = representatives(lay, part, idx)
        assert heads.shape == (part.size,)
        np.testing.assert_array_equal(np.asarray(heads)[np.asarray(which)], want[np.asarray(idx)])


def test_plan_shares_each_part_where_it_saves_work():
    assert LINK_ONLY_INPUTS == {"kv_bandwidth", "price_scale"}
    assert DECODE_ONLY_INPUTS == {"output_len", "output_cv", "tpot", "price_scale", "total_gpus"}
    names = lambda spec, n: {p.name: p.size for p in plan(make_kernel(spec), layout(spec), n)}  # noqa: E731
    kv = _spec({"kv_bandwidth": [1e9, 1e10, 1e11]})  # (hardware, input_len, output_len, kv): 2 x 2 x 2 x 3
    assert names(kv, 7) == {"link_blind": 3, "prefill": 6}
    assert names(kv, 4) == {"link_blind": 2}  # 4 points can all differ in (input_len, kv_bandwidth): no saving
    kv_first = load_sweep_spec({"sweep": {"name": "s"}, "fixed": {"ttft": 2.0, "tpot": 0.05, "model": "llama-3.1-8b"},
                                "axes": {"kv_bandwidth": {"values": [1e9, 1e10]},
                                         "hardware": {"values": ["h100-80gb-sxm"]},
                                         "output_len": {"values": [64, 128, 256, 512]},
                                         "input_len": {"values": [1, 2]}}})
    # ignored axes anywhere: 8 consecutive points can all differ in (output_len, input_len), never in more than 4
    # (kv_bandwidth, input_len)
    assert names(kv_first, 8) == {"prefill": 4}
    assert names(kv_first, 16) == {"link_blind": 8, "prefill": 4}
    assert names(_spec({}), 8) == {"prefill": 4}  # no link-only axis
    assert plan(make_kernel(kv), layout(kv), 7, share=False) == ()
    assert plan(lambda pts: pts, layout(kv), 7) == ()  # a plain kernel has no shared form


def test_each_shared_part_ignores_its_inputs():
    """On a grid over every input a part ignores, each part is the same at the point's representative (its ignored
    axes at their first value), and evaluate_point given the representatives' parts is the same point. One program
    for both parts (a compile is most of this test's time)."""
    spec = _spec({"tpot": [0.02, 0.2], "output_cv": [0.0, 1.5], "total_gpus": [8, 64], "kv_bandwidth": [2e9, 4e11],
                  "price_scale": [0.5, 3.0]}, fixed={"rate": 5.0})
    lay = layout(spec)
    k = make_kernel(spec, SMALL)
    pts = make_point_fn(spec)(jnp.arange(spec.size))
    point, demand, price = point_inputs(pts, k.tables)
    reps = {name: jnp.asarray(_brute_reps(lay.shape, tuple(a in ignores for a, _ in lay.axes)))
            for name, ignores in k.shared_parts.items()}

    @jax.jit
    def run(point, demand, price, rep_u, rep_p):
        u = jax.vmap(lambda p, d: search_link_blind(p, d, SMALL))(point, demand)
        q = jax.vmap(lambda p, d: search_prefill_pool(p, d, SMALL))(point, demand)
        u_rep, q_rep = (jax.tree.map(lambda x, r=r: x[r], part) for part, r in ((u, rep_u), (q, rep_p)))
        ev = jax.vmap(lambda p, d, c, a, b: evaluate_point(p, d, c, SMALL, a, b))
        return (u, q, ev(point, demand, price, u, q)), (u_rep, q_rep, ev(point, demand, price, u_rep, q_rep))

    own, shared = run(point, demand, price, reps["link_blind"], reps["prefill"])
    for where, a, b in zip(("link_blind", "prefill", "evaluate_point"), own, shared):
        assert jax.tree.structure(a) == jax.tree.structure(b)
        for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"{where} {jax.tree_util.keystr(path)}")
    out = own[2]
    tax = np.asarray(out.kv_tax)[:, 2]
    assert np.ptp(tax[np.isfinite(tax)]) > 0  # the link matters
    feasible = np.asarray(out.feasible)[:, 2]
    assert feasible.any() and not feasible.all()  # the decode side (and the GPU cap) still decides feasibility


def test_engine_takes_the_shared_path(tmp_path):
    """(Its values against a full evaluation: tests/test_determinism.py, test_agrees_to_rounding.)"""
    spec = _spec({"kv_bandwidth": [1e9, 1e10, 1e11]})
    calls = []

    class Spy(SweepKernel):
        def shared(self, pts, heads, which):
            calls.append((pts["input_len"].shape, {k: v["input_len"].shape for k, v in heads.items()}))
            return super().shared(pts, heads, which)

    run_sweep(spec, Spy(spec, SMALL), outputs_meta(), tmp_path / "o.nc", extra_coords=EXTRA_COORDS, chunk=14,
              progress=False, devices=jax.devices()[:2])
    assert calls == [((7,), {"link_blind": (3,), "prefill": (6,)})]
    with xr.open_dataset(tmp_path / "o.nc") as ds:
        assert ds["feasible"].values.any()


def test_compile_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    from frontier_jax.cli.common import CACHE_ENV, compile_cache_dir

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


def test_kernel_engines_share_the_prefill_primitives(tmp_path):
    """With measured kernels the linked prefill search's primitives (its prompts' prefill times, many kernel
    lookups) are a shared part of their own, which ignores the link as well as the decode side; the sweep's values
    are a full evaluation's (to rounding: the two are different programs)."""
    spec = _spec({"kv_bandwidth": [1e9, 1e10, 1e11]}, fixed={"engine": "current-kernels"})
    kernel = make_kernel(spec, SMALL)
    sizes = {p.name: p.size for p in plan(kernel, layout(spec), 12)}
    assert set(sizes) == {"link_blind", "prefill", "prefill_primitives"}
    assert sizes["prefill_primitives"] < sizes["prefill"]  # 3 of 9 here (distinct_bound: at most)
    assert "prefill_primitives" not in make_kernel(_spec({"kv_bandwidth": [1e9]}), SMALL).shared_parts  # roofline
    out = {}
    for share in (True, False):
        run_sweep(spec, make_kernel(spec, SMALL), outputs_meta(), tmp_path / f"{share}.nc", extra_coords=EXTRA_COORDS,
                  chunk=12, progress=False, devices=jax.devices()[:1], share=share)
        with xr.open_dataset(tmp_path / f"{share}.nc") as ds:
            out[share] = {v: ds[v].values for v in ds.data_vars}
    assert out[True]["feasible"].any()
    for v, x in out[True].items():
        np.testing.assert_allclose(x, out[False][v], rtol=1e-12, atol=1e-12, equal_nan=True, err_msg=v)

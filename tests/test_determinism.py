"""Determinism (issue 7, part 3).

Sweeps: the same spec gives bit-identical outputs (every variable, NaNs in the same places) run twice in one
process, with other chunk sizes (including chunks that do not divide the grid, so the last one is padded), and in
another process through the CLI, on 4 devices. On 1 device the values agree only to rounding (a strict xfail for
bit-identity; see docs/reliability.md). The simulator gives identical results, every field, for the same seed,
whatever the global numpy random state or the order of calls, and across processes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import xarray as xr

from frontier_jax.costmodel.kernel import EXTRA_COORDS, load_sweep_spec, make_kernel, outputs_meta
from frontier_jax.runner import run_sweep
from frontier_jax.sim import IterationCosts, simulate

SPEC = """
[sweep]
name = "determinism"

[fixed]
tpot = 0.05
percentile = 0.99

[axes]
hardware = { values = ["a100-80gb-sxm", "h100-80gb-sxm"] }
model = { values = ["llama-3.1-8b", "llama-3.1-70b"] }
input_len = { logspace = [128, 32768, 5] }
output_len = { logspace = [16, 2048, 4] }
ttft = { values = [0.3, 2.0] }
kv_bandwidth = { values = [5e9, 5e10] }
"""
SIZE = 2 * 2 * 5 * 4 * 2 * 2  # 320 points, some infeasible (ttft 0.3 s with long prompts)
# The runs below share the link-blind work between the two bandwidths and, with chunks of 12 points per device, the
# linked prefill search between output lengths (runner/sharing.py); "4dev_chunk48_dense" evaluates every point in
# full.


def _load(path) -> xr.Dataset:
    with xr.open_dataset(path) as ds:
        return ds.load()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("determinism")
    (d / "spec.toml").write_text(SPEC)

    def cli(name, chunk, n_devices):  # another process; started first, so it compiles while this one does
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}", JAX_PLATFORMS="cpu",
                   FRONTIER_JAX_CACHE=str(d / f"xla_cache_{name}"))
        return subprocess.Popen([sys.executable, "-m", "frontier_jax.cli", "sweep", str(d / "spec.toml"), "-o",
                                 str(d / name), "--chunk", str(chunk), "--quiet"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    procs = {"cli_4dev_chunk20": cli("cli4.nc", 20, 4),    # chunks of 20 -> 5 points per device
             "1dev_chunk37": cli("cli1.nc", 37, 1)}        # 5 chunks of 37 on one device, the last one padded
    try:
        spec = load_sweep_spec(d / "spec.toml")
        assert spec.size == SIZE
        kernel = make_kernel(spec)
        devs = jax.devices()
        assert len(devs) == 4
        out = {}
        for name in ("a.nc", "b.nc"):  # the second run reuses the cached executable
            run_sweep(spec, kernel, outputs_meta(), d / name, extra_coords=EXTRA_COORDS, chunk=48, devices=devs,
                      progress=False)  # 4 chunks, the last one padded
        out["4dev_chunk48"], out["4dev_chunk48_again"] = _load(d / "a.nc"), _load(d / "b.nc")
        run_sweep(spec, kernel, outputs_meta(), d / "dense.nc", extra_coords=EXTRA_COORDS, chunk=48, devices=devs,
                  progress=False, share=False)
        out["4dev_chunk48_dense"] = _load(d / "dense.nc")
        for key, proc in procs.items():
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err
        out["cli_4dev_chunk20"], out["1dev_chunk37"] = _load(d / "cli4.nc"), _load(d / "cli1.nc")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return out


ONE_DEVICE = pytest.param("1dev_chunk37", marks=pytest.mark.xfail(strict=True, reason=(
    "the 1-device chunk program is compiled without SPMD partitioning and XLA fuses it differently: values differ "
    "from the 2- and 4-device runs (which agree bit for bit at any chunk size) by up to ~3e-15 relative (5e-14 on "
    "kv_tax, 3e-13 on advantage), and at near-ties the chosen chunked-prefill chunk flips (e.g. 512 vs 1024); "
    "feasible, reason and best_arch agree (test_agrees_to_rounding)")))


@pytest.mark.parametrize("name", ["4dev_chunk48_again", "cli_4dev_chunk20", ONE_DEVICE])
def test_sweep_identical(runs, name):
    """Bit for bit (NaNs in the same places) against the first 4-device run."""
    ref, got = runs["4dev_chunk48"], runs[name]
    assert set(got.data_vars) == set(ref.data_vars)
    differ = [v for v in ref.data_vars
              if ref[v].dtype != got[v].dtype or not np.array_equal(ref[v].values, got[v].values,
                                                                     equal_nan=ref[v].dtype.kind == "f")]
    detail = {v: (np.nanmax(np.abs(ref[v].values - got[v].values) / np.abs(ref[v].values)),
                  np.argwhere(ref[v].values != got[v].values)[:3].tolist()) for v in differ}
    assert differ == [], f"values differ in {differ}: {detail}"
    xr.testing.assert_equal(got, ref)


@pytest.mark.parametrize("name", ["1dev_chunk37", "4dev_chunk48_dense"])
def test_agrees_to_rounding(runs, name):
    """What does hold on one device, and between the shared and the full evaluation of the link-blind work (two
    programs that XLA fuses differently): the same flags and choice of architecture, every value within 1e-12."""
    ref, got = runs["4dev_chunk48"], runs[name]
    for v in ("feasible", "reason", "best_arch"):
        np.testing.assert_array_equal(got[v].values, ref[v].values, err_msg=v)
    for v in ref.data_vars:
        if ref[v].dtype.kind == "f" and v not in ("chunk", "tp_prefill", "tp_decode", "overlap", "idle_cost"):
            np.testing.assert_allclose(got[v].values, ref[v].values, rtol=1e-12, atol=1e-12, equal_nan=True,
                                       err_msg=v)
    # idle is a difference of nearly equal costs where an instance is never idle: on the scale of the cost
    scale = np.nan_to_num(np.abs(ref["cost_per_mtok"].values))
    np.testing.assert_array_less(np.abs(np.nan_to_num(got["idle_cost"].values - ref["idle_cost"].values)),
                                 1e-12 * scale + 1e-15)


def test_sweep_really_varied_devices_and_has_both_kinds_of_point(runs):
    assert runs["4dev_chunk48"].attrs["device_count"] == 4
    assert runs["1dev_chunk37"].attrs["device_count"] == 1
    assert not runs["4dev_chunk48"]["kv_tax"].isnull().all()


def test_cli_keeps_compiled_programs_in_its_cache(runs, tmp_path_factory):
    """The CLI runs above were given their own compile caches (FRONTIER_JAX_CACHE): each wrote its program."""
    base = tmp_path_factory.getbasetemp()
    for name in ("cli4.nc", "cli1.nc"):
        found = list(base.glob(f"determinism*/xla_cache_{name}/*"))
        assert found, f"no compiled program cached for {name}"
    feas = runs["4dev_chunk48"]["feasible"].values
    assert feas.any() and not feas.all()


# ---------------------------------------------------------------- the simulator

def _prefill(n):
    return 0.01 + 2e-5 * n


def _decode(b, ctx):
    return 0.02 + 1e-4 * b + 1e-7 * ctx


def _mixed(b, ctx, n, p):
    return 0.02 + 1e-4 * b + 1e-7 * ctx + 2e-5 * n + 1e-8 * n * p


COSTS = IterationCosts(prefill=_prefill, decode=_decode, mixed=_mixed)
SIM_CASES = {
    "colocated_renewal_capped": dict(policy="colocated", rate=9.0, arrival_ca2=4.0, max_batch=16, n_instances=2,
                                     input_len=("gamma", 500, 1.5), output_len=("lognormal", 80, 1.0)),
    "chunked": dict(policy="chunked", rate=8.0, chunk=256, input_len=("lognormal", 800, 1.0),
                    output_len=("exponential", 60)),
    "disaggregated_central_overlap": dict(policy="disaggregated", rate=12.0, n_prefill=2, n_decode=1,
                                          transfer_time=lambda n: 2e-5 * n, overlap=True, layers=8,
                                          prefill_queue="central", arrival_ca2=0.5,
                                          input_len=np.arange(100, 1100, 7), output_len=("gamma", 50, 0.8)),
}


def _sim(name, seed):
    kw = dict(SIM_CASES[name])
    return simulate(kw.pop("policy"), COSTS, n_requests=1500, seed=seed, **kw)


def _digest(v, h) -> None:
    """Feed a value into a hash: arrays by dtype and bytes, containers recursively, scalars by repr."""
    if isinstance(v, np.ndarray):
        h.update(str(v.dtype).encode() + str(v.shape).encode() + np.ascontiguousarray(v).tobytes())
    elif isinstance(v, dict):
        for k in sorted(v):
            h.update(repr(k).encode())
            _digest(v[k], h)
    elif isinstance(v, (tuple, list)):
        h.update(b"[")
        for x in v:
            _digest(x, h)
        h.update(b"]")
    else:
        h.update(repr(v).encode())  # repr(nan) == "nan", so NaN scalars compare equal


def _fingerprint(res) -> str:
    """sha256 over every field of a SimResult."""
    h = hashlib.sha256()
    for f in dataclasses.fields(res):
        h.update(f.name.encode())
        _digest(getattr(res, f.name), h)
    return h.hexdigest()


def _field_digests(res) -> dict:
    out = {}
    for f in dataclasses.fields(res):
        h = hashlib.sha256()
        _digest(getattr(res, f.name), h)
        out[f.name] = h.hexdigest()
    return out


@pytest.mark.parametrize("name", list(SIM_CASES))
def test_simulator_same_seed_identical(name):
    np.random.seed(1)
    a = _sim(name, 11)
    _sim(name, 12)            # an unrelated run in between
    np.random.seed(999)       # and a different global random state
    np.random.random(1000)
    b = _sim(name, 11)
    c = _sim(name, 12)
    assert a.ttft.size > 1000 and np.isfinite(a.ttft).all()
    da, db = _field_digests(a), _field_digests(b)
    assert [k for k in da if da[k] != db[k]] == []  # every field identical
    assert _fingerprint(a) != _fingerprint(c) and not np.array_equal(a.arrival, c.arrival)  # the seed matters


def test_simulator_identical_across_processes():
    here = {name: _fingerprint(_sim(name, 11)) for name in SIM_CASES}
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]); import test_determinism as t; "
            "print(json.dumps({n: t._fingerprint(t._sim(n, 11)) for n in t.SIM_CASES}))")
    res = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__)], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, PYTHONHASHSEED="123"))
    assert res.returncode == 0, res.stderr
    import json

    assert json.loads(res.stdout.strip().splitlines()[-1]) == here

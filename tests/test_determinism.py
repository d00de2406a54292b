"""Determinism (issue 7, part 3).

Sweeps: the same spec gives bit-identical outputs (every variable, NaNs in the same places) run twice in one
process, with other chunk sizes (including chunks that do not divide the grid, so the last one is padded), on 4
devices or 1 device, and in another process through the CLI. The simulator gives identical results, every field,
for the same seed, whatever the global numpy random state or the order of calls, and across processes.
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

from frontier_jax.sim import IterationCosts, simulate
from frontier_jax.sweep import load_spec, run_sweep
from frontier_jax.sweep.kernel import EXTRA_COORDS, make_kernel, outputs_meta

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
"""
SIZE = 2 * 2 * 5 * 4 * 2  # 160 points, some infeasible (ttft 0.3 s with long prompts)


def _load(path) -> xr.Dataset:
    with xr.open_dataset(path) as ds:
        return ds.load()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("determinism")
    (d / "spec.toml").write_text(SPEC)
    # Another process (CLI, 4 devices, chunks of 20 -> 5 points per device), started first to use the other core.
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-m", "frontier_jax.cli", "sweep", str(d / "spec.toml"), "-o",
                             str(d / "cli.nc"), "--chunk", "20", "--quiet"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        spec = load_spec(d / "spec.toml")
        assert spec.size == SIZE
        kernel = make_kernel(spec)
        devs = jax.devices()
        assert len(devs) == 4

        def run(name, chunk, devices):
            run_sweep(spec, kernel, outputs_meta(), d / name, extra_coords=EXTRA_COORDS, chunk=chunk,
                      devices=devices, progress=False)
            return _load(d / name)

        out = {"4dev_chunk48": run("a.nc", 48, devs),        # 4 chunks, the last one padded
               "4dev_chunk48_again": run("b.nc", 48, devs),  # cached executable, second run
               "1dev_chunk37": run("c.nc", 37, devs[:1])}    # 5 chunks of 37 on one device, padded
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        out["cli_4dev_chunk20"] = _load(d / "cli.nc")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out


@pytest.mark.parametrize("name", ["4dev_chunk48_again", "1dev_chunk37", "cli_4dev_chunk20"])
def test_sweep_identical(runs, name):
    ref, got = runs["4dev_chunk48"], runs[name]
    assert set(got.data_vars) == set(ref.data_vars)
    for v in ref.data_vars:
        a, b = ref[v].values, got[v].values
        assert a.dtype == b.dtype
        # bitwise, NaN payloads aside: same NaN pattern and identical bits elsewhere
        np.testing.assert_array_equal(np.isnan(a) if a.dtype.kind == "f" else a == a, np.isnan(b) if
                                      b.dtype.kind == "f" else b == b, err_msg=v)
        assert a.tobytes() == b.tobytes() or np.array_equal(a, b, equal_nan=True), v
    xr.testing.assert_equal(got, ref)


def test_sweep_really_varied_devices_and_has_both_kinds_of_point(runs):
    assert runs["4dev_chunk48"].attrs["device_count"] == 4
    assert runs["1dev_chunk37"].attrs["device_count"] == 1
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

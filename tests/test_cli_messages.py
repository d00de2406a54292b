"""`frontier` user mistakes end in one line and exit 2, with the nearest names and unit hints (issue 20 item 7);
the main command is re-runnable as written (item 8). Every case here fails before the model compiles."""
import os
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from frontier_jax import cli
from frontier_jax.costmodel.types import ARCHS
from frontier_jax.variables import POINT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "FRONTIER_JAX_CACHE": "off"}
EVAL = ["eval", "--model", "llama-3.1-8b", "--isl", "4000", "--osl", "500", "--ttft", "1", "--tpot", "0.02"]


def frontier(*args, cwd=None):
    r = subprocess.run([sys.executable, "-m", "frontier_jax.cli", *args], capture_output=True, text=True, env=ENV,
                       cwd=cwd, timeout=120)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.parametrize("args, words", [
    (EVAL + ["--hardware", "h100-sxm"], "did you mean 'h100-80gb-sxm'"),
    (["eval", "--hardware", "h100-80gb-sxm", "--model", "llama3-8b"] + EVAL[3:], "did you mean 'llama-3.1-8b'"),
    (EVAL + ["--hardware", "h100-80gb-sxm", "--precision", "fp16"], "use 'bf16'"),
    (EVAL + ["--hardware", "h100-80gb-sxm", "--percentile", "99"], "write 0.99"),
    (EVAL + ["--hardware", "h100-80gb-sxm", "--engine", "vllm2023"], "did you mean 'vllm-2023'"),
])
def test_eval_mistakes_one_line_with_a_suggestion(args, words):
    rc, out, err = frontier(*args)
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("frontier: error:") and words in err
    assert "Traceback" not in err


def _sweep_file(path):
    kv = np.array([1e9, 1e10])
    best = np.zeros((2, 2), np.int8)
    cost = np.ones((2, 2, len(ARCHS)))
    xr.Dataset({"best_arch": (("input_len", "kv_bandwidth"), best, POINT["best_arch"].attrs()),
                "cost_per_mtok": (("input_len", "kv_bandwidth", "arch"), cost, POINT["cost_per_mtok"].attrs())},
               coords={"input_len": [128.0, 1024.0], "kv_bandwidth": kv, "arch": list(ARCHS),
                       "hardware": "h100-80gb-sxm"}).to_netcdf(path)


def test_plot_mistakes_one_line_exit_2_nothing_left(tmp_path):
    nc = tmp_path / "s.nc"
    _sweep_file(nc)
    (tmp_path / "x.toml").write_text("[sweep]\nname = 'x'\n")
    (tmp_path / "bad.nc").write_text("not netCDF")
    cases = [(["x.toml"], "spec, not a result"), (["bad.nc"], "not a netCDF file"),
             (["s.nc", "-o", "nodir/a.png"], "does not exist"), (["s.nc", "-o", "/proc/a.png"], "not writable"),
             (["s.nc", "-o", "a.xyz"], "unknown figure format"), (["s.nc", "--sel", "kv_bandwidth=abc"], "number"),
             (["s.nc", "--sel", "kv_bandwidth=nan"], "finite"), (["s.nc", "--sel", "kv_bandwidth=50GB"], "number"),
             (["s.nc", "--x", "input_len", "--facet", "input_len"], "also")]
    before = sorted(p.name for p in tmp_path.iterdir())
    for args, words in cases:
        rc, out, err = frontier("plot", *args, cwd=tmp_path)
        assert rc == 2, (args, err)
        assert err.count("\n") == 1 and words in err, (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_plot_x_hardware_is_one_line(tmp_path):
    nc = tmp_path / "h.nc"
    xr.Dataset({"best_arch": (("hardware", "input_len"), np.zeros((2, 2), np.int8))},
               coords={"hardware": ["a", "b"], "input_len": [1.0, 2.0]}).to_netcdf(nc)
    rc, _, err = frontier("plot", "h.nc", "--x", "hardware", cwd=tmp_path)
    assert rc == 2 and "categorical" in err and err.count("\n") == 1


def test_bare_frontier_replaces_its_default_output(monkeypatch):
    """`frontier` twice: the second run must not stop at 'already exists' (the README's main command)."""
    seen = []
    monkeypatch.setattr(cli.sweep, "run", lambda a: seen.append((a.spec, a.overwrite, a.resume)))
    assert cli.main([]) == 0 and cli.main([]) == 0
    assert seen == [(None, True, False), (None, True, False)]

"""Hardening, second round (issue 21): one writer per output, resume provenance, per-chunk checksums, I/O failures,
limits, catalogue gaps, guarded commands, the numerical policy at the extremes.

Cheap by design: sweeps use a toy kernel (compiles in well under a second) on the 210-point grid of
test_sweep_engine; CLI checks are in-process (`cli.main`) or subprocesses that stop before any compilation."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import netCDF4
import numpy as np
import pytest
import xarray as xr

from frontier_jax import cli, evaluate
from frontier_jax.costmodel import catalog
from frontier_jax.costmodel.kernel import INPUTS, load_sweep_spec
from frontier_jax.errors import FrontierError
from frontier_jax.runner import VarMeta, load_spec, merge_parts, netcdf, run_sweep
from frontier_jax.runner import run as engine
from frontier_jax.runner.lock import OutputLock

SPEC = """
[sweep]
name = "hard"
percentile = 0.99
[fixed]
ttft = 2.0
[axes]
hardware = { values = ["h200-141gb-sxm", "a100-80gb-sxm", "h100-80gb-sxm"] }
input_len = { logspace = [128, 32768, 7] }
output_len = { linspace = [16, 4096, 5] }
kv_bandwidth = { values = [1e9, 1e10] }
"""
SIZE = 3 * 7 * 5 * 2
ARCH = ["colocated", "chunked", "disaggregated"]
EXTRA = {"arch": (ARCH, {"long_name": "serving architecture", "units": "1"})}
META = {"cost": VarMeta((), "1", "cost"), "cost_arch": VarMeta(("arch",), "1", "cost by architecture")}
ROOT = Path(__file__).resolve().parents[1]


def kernel(p):
    base = p["input_len"] / p["output_len"] * jnp.log(p["kv_bandwidth"]) * p["ttft"] + p["hardware"]
    return {"cost": base, "cost_arch": jnp.stack([base, base * 0.5 + 3.0, jnp.sqrt(base) * 4.0], axis=1)}


def sweep(out, **kw):
    kw = {"chunk": 16, "progress": False, "extra_coords": EXTRA, **kw}
    return run_sweep(load_spec(SPEC, INPUTS), kernel, META, str(out), **kw)


class Stop(Exception):
    pass


def interrupted(tmp_path, monkeypatch, after_writes=3) -> Path:
    """A partial with `after_writes` chunks done (written one by one), the rest pending."""
    monkeypatch.setattr(engine, "WRITE_POINTS", 1)
    monkeypatch.setattr(engine, "WRITE_SECONDS", 1e9)
    real, n = engine._write_chunk, []

    def flaky(*a):
        if len(n) == after_writes:
            raise Stop
        n.append(1)
        real(*a)

    monkeypatch.setattr(engine, "_write_chunk", flaky)
    out = tmp_path / "out.nc"
    with pytest.raises(Stop):
        sweep(out)
    monkeypatch.setattr(engine, "_write_chunk", real)
    assert not out.exists() and Path(str(out) + ".partial").exists()
    return out


def load(path):
    with xr.open_dataset(path) as ds:
        return ds.load()


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "straight.nc"
    sweep(out)
    return load(out)


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def run_cli(argv, cwd, env=None, timeout=300):
    env = dict(os.environ if env is None else env, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "frontier_jax.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


# ---------------------------------------------------------------- 1. one writer per output

class Holder:
    """Another process holding the output lock of `partial` (as a live sweep does) until the block ends."""

    def __init__(self, partial):
        code = ("import sys, time; from frontier_jax.runner.lock import OutputLock; "
                f"OutputLock({str(partial)!r}).acquire(); print('ready', flush=True); sys.stdin.read()")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env, text=True)

    def __enter__(self):
        assert self.proc.stdout.readline().strip() == "ready"
        return self.proc.pid

    def __exit__(self, *exc):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)

def test_second_writer_is_refused_and_first_file_untouched(tmp_path):
    out = tmp_path / "c.nc"
    partial = Path(str(out) + ".partial")
    partial.write_bytes(b"the live run's file")
    with Holder(partial) as pid:
        for kw in ({"overwrite": True}, {"resume": True}):
            with pytest.raises(FrontierError, match=rf"another sweep \(pid {pid} on .*\) is writing"):
                sweep(out, **kw)
        assert partial.read_bytes() == b"the live run's file"
    with OutputLock(str(partial)):  # the holder is gone: the lock is free again
        pass
    assert not Path(str(partial) + ".lock").exists()  # released and removed


def test_second_writer_cli_subprocess(tmp_path):
    """The CLI, as a real second process: one line naming the live process, exit 2, before any compile."""
    (tmp_path / "spec.toml").write_text('[fixed]\nmodel = "llama-3.1-70b"\nhardware = "h100-80gb-sxm"\nttft = 2.0\n'
                                        'tpot = 0.05\n[axes]\ninput_len = [512.0]\noutput_len = [64.0]\n')
    partial = tmp_path / "c.nc.partial"
    partial.write_bytes(b"live")
    with Holder(partial) as pid:
        res = run_cli(["sweep", "spec.toml", "-o", "c.nc", "--overwrite", "--quiet"], tmp_path)
    assert res.returncode == 2, res.stderr
    line = one_line(res.stderr)
    assert f"pid {pid}" in line and "is writing" in line and "=True" not in line
    assert partial.read_bytes() == b"live" and not (tmp_path / "c.nc").exists()


# ---------------------------------------------------------------- 2, 3, 14. provenance and checksums

def test_resume_after_catalogue_change_is_refused(tmp_path, monkeypatch, straight):
    out = interrupted(tmp_path, monkeypatch)
    user = tmp_path / "user"
    (user / "hardware").mkdir(parents=True)
    text = (ROOT / "hardware" / "h100-80gb-sxm.toml").read_text()
    (user / "hardware" / "h100-80gb-sxm.toml").write_text(text.replace("[price]", "[price]\n# overridden", 1))
    monkeypatch.setenv("FRONTIER_JAX_PATH", str(user))
    with pytest.raises(FrontierError, match="the GPU/model catalogue files changed since it was started"):
        sweep(out, resume=True)
    monkeypatch.delenv("FRONTIER_JAX_PATH")
    sweep(out, resume=True)  # the same catalogue again: resumes
    xr.testing.assert_equal(load(out), straight)


def test_resume_with_other_precision_is_refused(tmp_path, monkeypatch):
    """A partial computed in float32 (recorded in its provenance) is not continued by a float64 run."""
    out = interrupted(tmp_path, monkeypatch)
    with netCDF4.Dataset(str(out) + ".partial", "a") as ds:
        prov = netcdf.read_provenance(ds)
        assert prov["dtype"] == "float64/int64"
        prov["dtype"] = "float32/int32"
        ds.setncattr("resume_provenance", __import__("json").dumps(prov))
    with pytest.raises(FrontierError, match=r"the precision changed .*\(float32/int32 then, float64/int64 now\)"):
        sweep(out, resume=True)


def test_corrupted_chunk_is_recomputed_on_resume(tmp_path, monkeypatch, straight, capsys):
    out = interrupted(tmp_path, monkeypatch, after_writes=5)
    with netCDF4.Dataset(str(out) + ".partial", "a") as ds:  # zero the values of done chunk 1 (points 16..31)
        assert netcdf.done_mask(ds)[:5].all()
        ds["cost"][0, 2, 1:4, :] = 0.0   # flat indices 22..27
    s = sweep(out, resume=True)
    assert "1 done chunk(s)" in capsys.readouterr().err
    assert s.points == SIZE - 4 * 16  # chunk 1 computed again
    xr.testing.assert_equal(load(out), straight)


# ---------------------------------------------------------------- 7, 8, 15. I/O failures and misleading messages

def test_disk_full_is_one_line_and_resumable(tmp_path, monkeypatch, straight):
    monkeypatch.setattr(engine, "WRITE_POINTS", 1)
    monkeypatch.setattr(engine, "WRITE_SECONDS", 1e9)
    real, n = engine._write_chunk, []

    def full(*a):
        if len(n) == 4:
            raise RuntimeError("NetCDF: HDF error")
        n.append(1)
        real(*a)

    monkeypatch.setattr(engine, "_write_chunk", full)
    out = tmp_path / "out.nc"
    with pytest.raises(FrontierError, match=r"writing '.*out.nc.partial' failed \(NetCDF: HDF error.*rerun with "
                                            r"resume=True"):
        sweep(out)
    monkeypatch.setattr(engine, "_write_chunk", real)
    assert sweep(out, resume=True).points == SIZE - 4 * 16
    xr.testing.assert_equal(load(out), straight)


def test_partial_is_a_directory(tmp_path):
    (tmp_path / "out.nc.partial").mkdir()
    for kw in ({}, {"resume": True}, {"overwrite": True}):
        with pytest.raises(FrontierError, match="is a directory, not an interrupted sweep; move it away") as e:
            sweep(tmp_path / "out.nc", **kw)
        assert "overwrite" not in str(e.value)


def test_read_only_partial(tmp_path, monkeypatch):
    out = interrupted(tmp_path, monkeypatch)
    os.chmod(str(out) + ".partial", 0o444)
    if os.geteuid() == 0:  # root may write a 0o444 file: make os.access answer as it would for any other user
        import frontier_jax.runner.run as run_module
        real_access = os.access
        monkeypatch.setattr(run_module.os, "access", lambda p, mode, **k: False if str(p).endswith(".partial")
                            and mode & os.W_OK else real_access(p, mode, **k))
    with pytest.raises(FrontierError, match="the file is read-only; make it writable"):
        sweep(out, resume=True)


def test_too_long_output_name(tmp_path):
    with pytest.raises(FrontierError, match="is too long .* choose a shorter name"):
        sweep(tmp_path / ("x" * 250 + ".nc"))


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden"])
def test_spec_name_must_be_a_file_name(name):
    with pytest.raises(FrontierError, match="cannot be a file name"):
        load_spec(SPEC.replace('name = "hard"', f'name = "{name}"'), INPUTS)


# ---------------------------------------------------------------- 5, 6, 14. limits and unrepresentable inputs

def test_grid_limit_before_compiling(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "_executable", lambda *a, **k: pytest.fail("compiled"))
    big = SPEC.replace("logspace = [128, 32768, 7]", "logspace = [128, 32768, 1000]").replace(
        "linspace = [16, 4096, 5]", "linspace = [16, 4096, 1000]")
    s = load_spec(big, INPUTS)
    with pytest.raises(FrontierError, match=r"the grid has 6,000,000 points \(3 x 1000 x 1000 x 2\), about 192 MB of "
                                            r"output; the limit is 1,000,000 points"):
        run_sweep(s, kernel, META, str(tmp_path / "o.nc"), extra_coords=EXTRA, max_points=10**6, progress=False)
    monkeypatch.setenv("FRONTIER_JAX_MAX_POINTS", "1e5")
    with pytest.raises(FrontierError, match=r"the limit is 100,000 points"):
        run_sweep(s, kernel, META, str(tmp_path / "o.nc"), extra_coords=EXTRA, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_huge_axis_refused_without_allocating():
    with pytest.raises(FrontierError, match=r"linspace num is 1,000,000,000,000; one axis holds at most 1,000,000"):
        load_sweep_spec({"fixed": {"ttft": 2.0}, "axes": {"input_len": {"linspace": [1, 2, 10**12]}}})


def test_grid_limit_cli(tmp_path):
    axes = "".join(f"{k} = {{ logspace = [1, 1000, 1000000] }}\n" for k in ("input_len", "output_len", "rate"))
    (tmp_path / "spec.toml").write_text('[fixed]\nmodel = "llama-3.1-70b"\nhardware = "h100-80gb-sxm"\nttft = 2.0\n'
                                        f'tpot = 0.05\n[axes]\n{axes}')
    res = run_cli(["sweep", "spec.toml", "-o", "o.nc", "--quiet"], tmp_path)
    assert res.returncode == 2
    line = one_line(res.stderr)
    assert "1,000,000,000,000,000,000 points" in line and "--max-points N" in line and "max_points" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.toml"]


@pytest.mark.parametrize("fixed, expect", [
    ("total_gpus = 9223372036854775807\nrate = 1.0", r"total_gpus = 9.22337e\+18 is too large for an integer input"),
    ("rate = 1e-300", r"rate = 1e-300 is outside the representable range"),
    ("kv_bandwidth = 1e300", r"kv_bandwidth = 1e\+300 is outside the representable range"),
    ("price_scale = 5e-324", r"price_scale = 4.94066e-324 is outside the representable range"),
])
def test_unrepresentable_spec_inputs(fixed, expect):
    with pytest.raises(FrontierError, match=expect):
        load_sweep_spec(f'[fixed]\nmodel = "llama-3.1-70b"\nhardware = "h100-80gb-sxm"\nttft = 2.0\ntpot = 0.05\n'
                        f'input_len = 512.0\noutput_len = 64.0\n{fixed}\n')


def test_masked_array_in_dict_spec_is_refused():
    values = np.ma.masked_array([512.0, 1024.0], mask=[False, True])
    with pytest.raises(FrontierError, match=r"masked array .*\(arr.compressed\(\)"):
        load_sweep_spec({"fixed": {"ttft": 2.0}, "axes": {"input_len": {"values": values}}})


@pytest.mark.parametrize("kw, expect", [
    (dict(overlap="no"), r"overlap must be True or False \(got 'no'\)"),
    (dict(rate=np.ma.masked_array([1.0, 2.0], mask=[False, True])), r"rate is a masked array; .*arr.compressed\(\)"),
    (dict(price=5e-324), r"price = 4.94066e-324 is outside the representable range"),
    (dict(rate=1e-300), r"rate = 1e-300 is outside the representable range"),
    (dict(kv_bandwidth=1e300), r"kv_bandwidth = 1e\+300 is outside the representable range"),
    (dict(rate=4.0, total_gpus=2.0**60), r"total_gpus = 1.15292e\+18 is outside the representable range"),
])
def test_unrepresentable_evaluate_inputs(kw, expect):
    """Item 14 through the Python API: the same bounds as a sweep spec, and overlap as a boolean only."""
    with pytest.raises(FrontierError, match=expect):
        evaluate(**kw)


def test_overlap_accepts_booleans_and_0_1():
    on, off = evaluate(overlap=True), evaluate(overlap=0)
    assert float(on["overlap"].sel(arch="disaggregated")) == 1.0
    assert float(off["overlap"].sel(arch="disaggregated")) == 0.0


def test_policy_marks_nonfinite_feasible_points_infeasible():
    from frontier_jax.costmodel.policy import enforce
    from frontier_jax.costmodel.types import Infeasible

    one = np.ones((2, 3))
    names = ("cost_per_mtok", "prefill_cost", "decode_cost", "cost_per_mtok_total", "ttft_achieved", "tpot_achieved",
             "goodput", "throughput", "kv_tax", "kv_tax_direct", "kv_tax_indirect")
    res = {k: one.copy() for k in names}
    res["cost_per_mtok"] = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    res["tpot_achieved"] = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, np.inf]])  # point 1: disaggregated TPOT inf
    res["prefill_cost"] = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])       # point 0: chunked cost term 0
    res.update(feasible=np.ones((2, 3), np.int8), reason=np.zeros((2, 3), np.int32),
               best_arch=np.array([2, 2], np.int32), advantage=np.log([2.0, 2.0]))
    out = enforce(res)
    np.testing.assert_array_equal(out["feasible"], [[1, 0, 1], [1, 1, 0]])
    np.testing.assert_array_equal(out["reason"], [[0, Infeasible.INVALID_INPUT, 0], [0, 0, Infeasible.INVALID_INPUT]])
    np.testing.assert_array_equal(out["best_arch"], [2, 1])  # point 1: chunked (2.0) is now the cheapest feasible
    assert np.isnan(out["advantage"][1]) and out["advantage"][0] == pytest.approx(np.log(3.0))
    assert np.isnan(out["tpot_achieved"][1, 2]) and np.isnan(out["cost_per_mtok"][0, 1])


# ---------------------------------------------------------------- 9. catalogue gaps

@pytest.fixture
def bad_catalogue(tmp_path, monkeypatch):
    hw = tmp_path / "cat" / "hardware"
    hw.mkdir(parents=True)
    (hw / "latin1-gpu.toml").write_bytes(b'name = "latin1-gpu"\nlong_name = "caf\xe9"\n')
    text = (ROOT / "hardware" / "h100-80gb-sxm.toml").read_text().replace('name = "h100-80gb-sxm"',
                                                                          'name = "novalue-gpu"')
    (hw / "novalue-gpu.toml").write_text(text.replace("value = 989e12", "typical = 989e12", 1))
    monkeypatch.setenv("FRONTIER_JAX_PATH", str(tmp_path / "cat"))
    return hw


def test_bad_catalogue_files_name_themselves_and_break_nothing(bad_catalogue, capsys):
    assert "h100-80gb-sxm" in catalog.list_hardware()
    assert not {"latin1-gpu", "novalue-gpu"} & set(catalog.list_hardware())
    with pytest.raises(FrontierError, match=r"latin1-gpu.toml: not UTF-8 text"):
        catalog.hardware_info("latin1-gpu")
    with pytest.raises(FrontierError, match=r"novalue-gpu.toml: field 'bf16_flops' has no 'value'"):
        catalog.hardware_info("novalue-gpu")
    base = '[fixed]\nmodel = "llama-3.1-70b"\nttft = 2.0\ntpot = 0.05\ninput_len = 512.0\noutput_len = 64.0\n'
    load_sweep_spec(base + 'hardware = "h100-80gb-sxm"\n')  # unaffected by the bad files
    with pytest.raises(FrontierError, match=r"hardware 'novalue-gpu' cannot be used: .*novalue-gpu.toml: field"):
        load_sweep_spec(base + 'hardware = "novalue-gpu"\n')
    assert cli.main(["hardware", "list"]) == 0
    out = capsys.readouterr().out
    assert "h100-80gb-sxm" in out and "novalue-gpu        (unusable:" in out and "latin1-gpu" in out
    assert cli.main(["hardware", "show", "novalue-gpu"]) == 2
    assert "None" not in capsys.readouterr().out


# ---------------------------------------------------------------- 11, 12, 13. other commands

def test_reproduce_out_is_a_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("x")
    assert cli.main(["reproduce", "--out", "taken", "--quick"]) == 2
    assert "--out 'taken' is an existing file, not a directory" in one_line(capsys.readouterr().err)
    assert cli.main(["reproduce", "--out", "taken/sub", "--quick"]) == 2
    assert "cannot be used as the report directory" in one_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_merge_of_a_damaged_part(tmp_path):
    for i in range(2):
        sweep(tmp_path / "m.nc", process_index=i, process_count=2)
    with netCDF4.Dataset(tmp_path / "m.part0of2.nc", "a") as ds:  # chunk 0 belongs to process 0
        ds["cost_arch"][0, 0, 0, 0, :] = 0.0
    with pytest.raises(FrontierError, match=r"chunk 0 of '.*m.part0of2.nc' fails its checksum"):
        merge_parts([tmp_path / "m.part0of2.nc", tmp_path / "m.part1of2.nc"], tmp_path / "m.nc")
    assert not (tmp_path / "m.nc").exists() and not (tmp_path / "m.nc.partial").exists()
    assert not (tmp_path / "m.nc.partial.lock").exists()


def test_breakeven_samples_bounded(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["breakeven", "nospec.toml", "--samples", "1000000000"]) == 2
    assert "--samples 1000000000; it must be between 1 and 4,096" in one_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_cli_resume_float32_on_float64_partial_is_refused(tmp_path):
    """A float64 partial (made here, as `frontier sweep` makes it) and `--resume --float32`: one line naming the
    precision and --float32, exit 2, before compiling; the partial is untouched."""
    import hashlib

    from frontier_jax.costmodel.kernel import EXTRA_COORDS, outputs_meta
    from frontier_jax.runner import provenance

    text = ('[fixed]\nmodel = "llama-3.1-70b"\nhardware = "h100-80gb-sxm"\nttft = 2.0\ntpot = 0.05\n'
            '[axes]\ninput_len = [512.0, 2048.0]\noutput_len = [64.0]\n')
    (tmp_path / "spec.toml").write_text(text)
    spec = load_sweep_spec(tmp_path / "spec.toml")
    partial = tmp_path / "out.nc.partial"
    prov = provenance.collect(spec, outputs_meta(), EXTRA_COORDS)
    netcdf.create(str(partial), spec, outputs_meta(), EXTRA_COORDS, attrs={provenance.ATTR: provenance.dumps(prov)},
                  chunk_points=4, n_chunks=1, process_index=0, process_count=1).close()
    before = hashlib.sha256(partial.read_bytes()).hexdigest()
    res = run_cli(["sweep", "spec.toml", "-o", "out.nc", "--resume", "--float32", "--quiet"], tmp_path)
    assert res.returncode == 2, res.stderr
    line = one_line(res.stderr)
    assert "the precision changed since it was started (float64/int64 then, float32/int32 now)" in line, line
    assert "--float32" in line and "--overwrite" in line and "=True" not in line
    assert hashlib.sha256(partial.read_bytes()).hexdigest() == before


def test_breakeven_settings_are_in_the_resume_provenance(monkeypatch):
    """A break-even partial records its solver settings: resuming with other samples, tolerances or solved input
    is refused by the runner's provenance check (compared there like the spec and the catalogue)."""
    import frontier_jax.crossover.solve as solve
    from frontier_jax.runner import provenance

    seen = []

    def capture(spec, kernel, meta, out, **kw):
        seen.append(kw["provenance_extra"])
        raise Stop

    monkeypatch.setattr(solve, "run_sweep", capture)
    spec = ('[fixed]\nmodel = "llama-3.1-70b"\nhardware = "h100-80gb-sxm"\nttft = 4.0\ntpot = 0.05\n'
            'output_len = 256.0\n[axes]\ninput_len = [512.0, 2048.0]\nkv_bandwidth = { logspace = [1e8, 1e11, 5] }\n')
    for kw in ({}, {}, {"samples": 17}, {"xtol": 1e-6}):
        with pytest.raises(Stop):
            solve.breakeven(spec, "kv_bandwidth", **kw)
    assert seen[0] == seen[1] and len({s["breakeven_options"] for s in seen[1:]}) == 3
    with pytest.raises(FrontierError, match=r"the break-even settings \(.*\) changed since it was started"):
        provenance.compare("x.nc.partial", {"spec": "a", **seen[0]}, {"spec": "a", **seen[2]})

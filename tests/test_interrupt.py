"""Interrupted sweeps (issue 7, part 2): SIGINT and SIGKILL in the middle of `frontier sweep` leave no file at the
final path, only `OUT.partial`; `--resume` finishes it, and the result is identical (every value, NaNs in the same
places) to an uninterrupted run of the same spec in another process.

The spec has 36,864 points, run in chunks of 256 (144 chunks, ~10 s of compute on 2 CPU cores). The processes share a
persistent JAX compilation cache in a temporary directory, so only the first one pays the full compilation. Each
signal is sent once the progress bar shows that a quarter of the points are done (so at least one chunk is on disk
and most are not).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

SPEC = """
[sweep]
name = "interrupt"
title = "interrupt-and-resume test sweep"

[fixed]
model = "llama-3.1-70b"
ttft = 2.0
tpot = 0.05

[axes]
hardware = { values = ["a100-80gb-sxm", "h100-80gb-sxm", "h200-141gb-sxm"] }
input_len = { logspace = [128, 16384, 32] }
output_len = { logspace = [16, 2048, 32] }
kv_bandwidth = { logspace = [1e9, 4e11, 12] }
"""
SIZE = 3 * 32 * 32 * 12  # ~10 s of sweep on 2 cores: the signal lands well before the end
CHUNK = 256
N_CHUNKS = -(-SIZE // CHUNK)
SIGNAL_AT = SIZE // 4          # points done (per the progress bar) before the signal is sent
START_TIMEOUT = 240            # s to reach SIGNAL_AT (compilation included) on a busy 2-core machine


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax_cache")
    return dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
                JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                PYTHONDONTWRITEBYTECODE="1")


def _cmd(spec: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "frontier_jax.cli", "sweep", str(spec), "-o", str(out), "--chunk", str(CHUNK),
            *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env):
    """The uninterrupted run, in its own process."""
    d = tmp_path_factory.mktemp("reference")
    spec = d / "spec.toml"
    spec.write_text(SPEC)
    res = subprocess.run(_cmd(spec, d / "ref.nc", "--quiet"), env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    with xr.open_dataset(d / "ref.nc") as ds:
        ref = ds.load()
    assert ref.sizes["hardware"] * ref.sizes["input_len"] * ref.sizes["output_len"] * ref.sizes["kv_bandwidth"] == SIZE
    assert np.isfinite(ref["cost_per_mtok"]).any() and np.isnan(ref["cost_per_mtok"]).any()  # both kinds of point
    return ref


class Progress:
    """Reads the child's stderr (tqdm writes `\\r`-separated updates) and keeps the last point count shown."""

    _re = re.compile(r"\|\s*([\d.]+)(k?)/")

    def __init__(self, proc: subprocess.Popen):
        self.text = ""
        self.points = 0
        self._t = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._t.start()

    def _read(self, stream):
        for block in iter(lambda: stream.read1(4096), b""):
            self.text += block.decode(errors="replace")
            found = self._re.findall(self.text[-400:])
            if found:
                num, k = found[-1]
                self.points = int(float(num) * (1000 if k else 1))

    def join(self):
        self._t.join(timeout=30)


def _interrupt(tmp_path: Path, env: dict, sig: int) -> tuple[int, str, Path, Path]:
    spec, out = tmp_path / "spec.toml", tmp_path / "out.nc"
    spec.write_text(SPEC)
    proc = subprocess.Popen(_cmd(spec, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    progress = Progress(proc)
    t0 = time.monotonic()
    try:
        while progress.points < SIGNAL_AT:
            if proc.poll() is not None:
                pytest.fail(f"the sweep ended before it could be interrupted (rc {proc.returncode}):\n"
                            f"{progress.text[-2000:]}")
            if time.monotonic() - t0 > START_TIMEOUT:
                pytest.fail(f"no progress to {SIGNAL_AT} points within {START_TIMEOUT} s:\n{progress.text[-2000:]}")
            time.sleep(0.05)
        proc.send_signal(sig)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    progress.join()
    return rc, progress.text, out, Path(str(out) + ".partial")


def _done_chunks(partial: Path) -> np.ndarray:
    with netCDF4.Dataset(partial) as ds:
        g = ds.groups["progress"]
        assert int(g.getncattr("chunk_points")) == CHUNK and int(g.getncattr("n_chunks")) == N_CHUNKS
        return np.asarray(g["chunk_done"][:], dtype=bool)


def _resume_and_compare(out: Path, partial: Path, env: dict, reference: xr.Dataset) -> None:
    done = _done_chunks(partial)
    assert 0 < done.sum() < N_CHUNKS, f"{done.sum()} of {N_CHUNKS} chunks done: not interrupted mid-sweep"
    remaining = sum(min(CHUNK, SIZE - i * CHUNK) for i in np.flatnonzero(~done))
    res = subprocess.run(_cmd(out.parent / "spec.toml", out, "--resume", "--quiet"), env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"{remaining:,} points in"), res.stdout  # only the missing chunks were computed
    assert out.exists() and not partial.exists()
    with xr.open_dataset(out) as ds:
        got = ds.load()
    assert set(got.data_vars) == set(reference.data_vars)
    xr.testing.assert_equal(got, reference)  # exact: same values, NaN in the same places, same coordinates
    assert got.attrs["spec"] == reference.attrs["spec"]


def test_sigint_leaves_partial_and_resume_matches(tmp_path, env, reference):
    rc, err, out, partial = _interrupt(tmp_path, env, signal.SIGINT)
    assert rc == 130, err[-2000:]
    assert "Traceback" not in err
    assert err.rstrip().splitlines()[-1] == "frontier: interrupted; rerun with --resume to continue a sweep"
    assert not out.exists(), "an interrupted sweep must not leave a file at the final path"
    assert partial.exists()
    _resume_and_compare(out, partial, env, reference)


def test_sigkill_leaves_partial_and_resume_matches(tmp_path, env, reference):
    rc, err, out, partial = _interrupt(tmp_path, env, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    assert not out.exists(), "a killed sweep must not leave a file at the final path"
    assert partial.exists()
    _resume_and_compare(out, partial, env, reference)


def test_ctrl_c_waits_for_the_chunk_boundary():
    """Inside the chunk loop the first SIGINT only sets the flag the loop reads between chunks (the sweep then stops
    with the partial file consistent); a second one interrupts at once; the previous handler comes back after."""
    from frontier_jax.runner.run import deferred_sigint

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with deferred_sigint() as flag:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):  # let the handler run (it runs between bytecodes of the main thread)
                time.sleep(0.01)
                if flag:
                    break
            assert flag == [signal.SIGINT]
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)
            pytest.fail("the second SIGINT did not interrupt")
    assert signal.getsignal(signal.SIGINT) is before


def test_sigterm_mid_sweep_exits_143_and_resume_matches(tmp_path, env, reference):
    """SIGTERM is handled like Ctrl-C: the chunk in flight is written, one line, exit 143, the partial resumes."""
    rc, err, out, partial = _interrupt(tmp_path, env, signal.SIGTERM)
    assert rc == 143, err[-2000:]
    assert "Traceback" not in err
    assert err.rstrip().splitlines()[-1] == "frontier: terminated; rerun with --resume to continue a sweep"
    assert not out.exists() and partial.exists()
    _resume_and_compare(out, partial, env, reference)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to see the child's CPU time")
@pytest.mark.parametrize("sig", [signal.SIGINT])
def test_signal_during_compile_exits_at_once(tmp_path, sig):
    """Cold cache: the signal lands while the chunk program is traced or compiled (after 10 s of the child's CPU
    time, before any chunk). Exit 130 within seconds (not at the end of the compile, no segfault), one line, no
    partial file and no lock file left."""
    cold = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    cold.update(XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu", FRONTIER_JAX_CACHE="off",
                PYTHONDONTWRITEBYTECODE="1")
    spec, out = tmp_path / "spec.toml", tmp_path / "out.nc"
    spec.write_text(SPEC)
    proc = subprocess.Popen(_cmd(spec, out, "--quiet"), env=cold, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        t0 = time.monotonic()
        while _cpu_seconds(proc.pid) < 10.0:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() - t0 < START_TIMEOUT
            time.sleep(0.1)
        assert not Path(str(out) + ".partial").exists(), "the sweep got past compiling before the signal"
        proc.send_signal(sig)
        t_sig = time.monotonic()
        _, err = proc.communicate(timeout=120)
        waited = time.monotonic() - t_sig
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = err.decode()
    assert proc.returncode == 128 + sig, (proc.returncode, err[-2000:])
    assert err.strip().splitlines() == ["frontier: interrupted; rerun with --resume to continue a sweep"], err
    assert waited < 10.0, f"exit took {waited:.1f} s after the signal"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.toml"]


def test_double_ctrl_c_exits_at_once_without_traceback(tmp_path, env, reference):
    """A second Ctrl-C while the first waits for the chunk boundary: exit 130 at once, one line, no traceback."""
    spec, out = tmp_path / "spec.toml", tmp_path / "out.nc"
    spec.write_text(SPEC)
    proc = subprocess.Popen(_cmd(spec, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    progress = Progress(proc)
    t0 = time.monotonic()
    try:
        while progress.points < SIGNAL_AT:
            assert proc.poll() is None, progress.text[-2000:]
            assert time.monotonic() - t0 < START_TIMEOUT, progress.text[-2000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    progress.join()
    assert rc == 130, progress.text[-2000:]
    assert "Traceback" not in progress.text and "KeyboardInterrupt" not in progress.text
    assert progress.text.rstrip().splitlines()[-1] == "frontier: interrupted; rerun with --resume to continue a sweep"
    assert not out.exists()

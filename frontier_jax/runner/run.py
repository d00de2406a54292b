"""The sweep driver: fixed-shape chunks of the flat grid, generated and evaluated on device under one compiled
program, sharded over a 1-D device mesh, streamed to netCDF chunk by chunk, resumable."""
from __future__ import annotations

import ctypes
import functools
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from frontier_jax.errors import FrontierError
from frontier_jax.runner import netcdf, sharing
from frontier_jax.runner.netcdf import ExtraCoords, VarMeta
from frontier_jax.runner.grid import Layout, decode_points, index_dtype, layout, point_arrays
from frontier_jax.runner.sharing import SharedPart, representatives
from frontier_jax.runner.spec import SweepSpec
from frontier_jax.tracing import COMPILER_OPTIONS, inline_jnp

Kernel = Callable[[dict[str, jax.Array]], dict[str, jax.Array]]
AXIS = "points"


@dataclass(frozen=True)
class SweepSummary:
    """What one `run_sweep` call did: points, wall and compile seconds, evaluation rate, the output path."""

    points: int                 # grid points evaluated by this call (resumed chunks not counted)
    seconds: float              # wall time of the whole call
    compile_seconds: float      # tracing + compilation (0 when the executable was cached)
    points_per_second: float    # points / (seconds - compile_seconds)
    out_path: str


def _eval_chunk(start: jax.Array, arrays: dict[str, jax.Array], *, kernel: Kernel, lay: Layout, mesh: Mesh,
                per_dev: int, parts: tuple[SharedPart, ...] = ()) -> dict[str, jax.Array]:
    """Evaluate `kernel` on flat indices [start, start + per_dev * n_devices); each device takes a contiguous
    slice. Indices past the end are clamped to the last point (padding, discarded by the caller). Each shared part
    (sweep/sharing.py) is evaluated once per distinct representative of the slice, a fixed number of points, and
    handed to `kernel.shared` with each point's position among them."""
    def local(start: jax.Array, arrays: dict[str, jax.Array]) -> dict[str, jax.Array]:
        first = start + jax.lax.axis_index(AXIS).astype(start.dtype) * per_dev
        idx = jnp.minimum(first + jnp.arange(per_dev, dtype=start.dtype), lay.size - 1)
        pts = decode_points(lay, arrays, idx)
        with inline_jnp():  # the same program, traced and lowered ~8 % faster (frontier_jax/tracing.py)
            if not parts:
                return kernel(pts)
            heads, which = {}, {}
            for part in parts:
                h, which[part.name] = representatives(lay, part, idx)
                heads[part.name] = decode_points(lay, arrays, h)
            return kernel.shared(pts, heads, which)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P()), out_specs=P(AXIS), check_vma=False)(start, arrays)


def release_free_heap() -> bool:
    """Hand the C heap's free pages back to the OS (glibc `malloc_trim`; a no-op elsewhere). XLA's compiler frees
    about 1 GB when it finishes but glibc keeps the pages, so without this the resident set of a sweep stays at
    the compiler's peak plus the chunks' working set. Returns False where there is no glibc to ask."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


TRIM_EVERY_WRITES = 16
WRITE_POINTS = 65536  # points of consecutive chunks written to the file in one go ...
WRITE_SECONDS = 1.0   # ... or whatever was computed in this long, whichever comes first
CPU_CHUNK_PER_DEVICE = 1024
GPU_CHUNK_PER_DEVICE = 65536


def compiler_options(platform: str) -> dict[str, Any]:
    """tracing.COMPILER_OPTIONS on the CPU; a GPU's defaults, where the run time, not the compile, dominates."""
    return dict(COMPILER_OPTIONS) if platform == "cpu" else {}


_CACHE: dict[Any, Any] = {}  # (kernel, layout, mesh, per-device points, argument specs) -> executable
_CACHE_SIZE = 8


def _executable(kernel: Kernel, lay: Layout, mesh: Mesh, per_dev: int, host_arrays: Mapping[str, np.ndarray],
                outputs: Mapping[str, VarMeta], extra: ExtraCoords,
                parts: tuple[SharedPart, ...] = ()) -> tuple[Any, float]:
    """Trace, check and compile the chunk program once; reuse it for later sweeps of the same kernel and layout
    (axis values are arguments, so only their lengths matter). Returns (executable, compile seconds)."""
    start = jax.ShapeDtypeStruct((), index_dtype())
    specs = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in host_arrays.items()}
    key: Any = (kernel, lay, mesh, per_dev, parts, tuple(sorted((k, s.shape, str(s.dtype)) for k, s in specs.items())))
    try:
        compiled = _CACHE.get(key)
    except TypeError:  # unhashable kernel: compile without caching
        key, compiled = None, None
    if compiled is not None:
        _check_output_shapes(compiled.out_info, per_dev * mesh.size, outputs, extra)
        return compiled, 0.0
    t0 = time.perf_counter()
    fn = functools.partial(_eval_chunk, kernel=kernel, lay=lay, mesh=mesh, per_dev=per_dev, parts=parts)
    lowered = jax.jit(fn).lower(start, specs)
    _check_output_shapes(lowered.out_info, per_dev * mesh.size, outputs, extra)
    compiled = lowered.compile(compiler_options=compiler_options(mesh.devices.flat[0].platform))
    release_free_heap()
    if key is not None:
        _CACHE[key] = compiled
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
    return compiled, time.perf_counter() - t0


def _check_output_shapes(got: Any, n: int, outputs: Mapping[str, VarMeta], extra: ExtraCoords) -> None:
    """Check the kernel's output names and shapes (from the traced program) against `outputs`."""
    if not isinstance(got, Mapping):
        raise FrontierError(f"kernel must return a dict of arrays, got {type(got).__name__}")
    if set(got) != set(outputs):
        missing, unexpected = sorted(set(outputs) - set(got)), sorted(set(got) - set(outputs))
        raise FrontierError(f"kernel outputs do not match outputs_meta (missing {missing}, unexpected {unexpected}); "
                            "make them agree")
    for name, m in outputs.items():
        want = (n,) + tuple(len(extra[d][0]) for d in m.dims_extra)
        if tuple(got[name].shape) != want:
            raise FrontierError(f"kernel output {name!r} has shape {tuple(got[name].shape)} for {n} points; "
                                f"expected {want} from dims_extra {m.dims_extra}")


def _resumable_chunk(partial: str, spec: SweepSpec, outputs: Mapping[str, VarMeta], process: tuple[int, int]) -> int:
    """Check that `partial` belongs to this sweep and return the chunk size it was written with."""
    import netCDF4

    try:
        with netCDF4.Dataset(partial, "r") as ds:
            info = netcdf.progress_info(ds)
            same = (ds.getncattr("spec") == spec.to_json() and info["data_vars"] == list(outputs)
                    and info["size"] == spec.size and (info["process_index"], info["process_count"]) == process)
    except (OSError, KeyError, AttributeError, IndexError) as e:
        raise FrontierError(f"cannot resume from {partial!r} ({e}); pass overwrite=True to start over") from None
    if not same:
        raise FrontierError(f"{partial!r} was written by a different spec, outputs or process split; "
                            "pass overwrite=True to start over")
    return info["chunk_points"]


def _resolve_process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    count = jax.process_count() if process_count is None else int(process_count)
    index = jax.process_index() if process_index is None else int(process_index)
    if count < 1 or not 0 <= index < count:
        raise FrontierError(f"process_index={index} with process_count={count}; need 0 <= index < count")
    return index, count


def run_sweep(spec: SweepSpec, kernel: Kernel, outputs_meta: Mapping[str, VarMeta], out_path: str | os.PathLike, *,
              extra_coords: ExtraCoords | None = None, chunk: int | None = None, resume: bool = False,
              overwrite: bool = False, progress: bool = True, devices: Sequence[Any] | None = None,
              process_index: int | None = None, process_count: int | None = None,
              share: bool = True) -> SweepSummary:
    """Evaluate `kernel` on every point of `spec`'s grid and stream the outputs to netCDF at `out_path`.

    With process_count > 1 this process computes chunks i with i % process_count == process_index and writes
    `OUT.part{index}of{count}.nc`; join the parts with `merge_parts`. `share=False` evaluates every point in full,
    without the kernel's shared parts (sweep/sharing.py; the same values, for benchmarks and tests)."""
    t_begin = time.perf_counter()
    extra = dict(extra_coords or {})
    outputs = dict(outputs_meta)
    netcdf.check_outputs(spec.input_names, outputs, extra)
    proc = _resolve_process(process_index, process_count)
    out_path = os.fspath(out_path)
    final = out_path if proc[1] == 1 else netcdf.part_path(out_path, *proc)
    partial = final + ".partial"
    netcdf.check_out_path(final, overwrite)
    if os.path.exists(partial) and not (resume or overwrite):
        raise FrontierError(f"an interrupted sweep left {partial!r}; pass resume=True to continue it "
                            "or overwrite=True to start over")
    if chunk is not None and chunk < 1:
        raise FrontierError(f"chunk={chunk}; it must be a positive number of points")

    devices = list(devices) if devices is not None else jax.local_devices()
    if chunk is None:  # intermediates of a chunk stay in cache on a CPU; a GPU wants wide batches
        per = CPU_CHUNK_PER_DEVICE if devices[0].platform == "cpu" else GPU_CHUNK_PER_DEVICE
        chunk = per * len(devices)
    mesh = Mesh(np.array(devices), (AXIS,))
    ndev = len(devices)
    lay, size = layout(spec), spec.size
    host_arrays = point_arrays(spec)

    resuming = resume and os.path.exists(partial)
    if resuming:
        chunk_pts = _resumable_chunk(partial, spec, outputs, proc)
        if chunk_pts % ndev:
            raise FrontierError(f"{partial!r} used chunks of {chunk_pts} points, not a multiple of {ndev} devices; "
                                "resume with the same number of devices")
    else:
        chunk_pts = math.ceil(min(chunk, size) / ndev) * ndev
    n_chunks = math.ceil(size / chunk_pts)
    if size + chunk_pts > np.iinfo(index_dtype()).max:
        raise FrontierError(f"{size} points overflow {index_dtype()} indices; enable jax_enable_x64")
    per_dev = chunk_pts // ndev
    parts = sharing.plan(kernel, lay, per_dev, share)
    compiled, compile_s = _executable(kernel, lay, mesh, per_dev, host_arrays, outputs, extra, parts)
    if resuming:
        ds = netcdf.open_dataset(partial, "a")
    else:
        ds = netcdf.create(partial, spec, outputs, extra, attrs=netcdf.provenance_attrs(devices),
                           chunk_points=chunk_pts, n_chunks=n_chunks, process_index=proc[0], process_count=proc[1])
    bar = None
    try:
        done = netcdf.done_mask(ds)
        todo = [i for i in range(proc[0], n_chunks, proc[1]) if not done[i]]

        replicated = NamedSharding(mesh, P())
        dev_arrays = {k: jax.device_put(v, replicated) for k, v in host_arrays.items()}
        n_points = sum(min(chunk_pts, size - i * chunk_pts) for i in todo)
        dtypes = {k: np.dtype(m.dtype) for k, m in outputs.items()}
        bar = _progress_bar(n_points, spec.name, progress)
        start_dt = index_dtype()

        writer = _Writer(ds, spec.shape, chunk_pts, size, bar)

        def finish(i: int, result: dict[str, jax.Array]) -> None:
            n = min(chunk_pts, size - i * chunk_pts)
            writer.add(i, {k: np.asarray(result[k])[:n].astype(dtypes[k], copy=False) for k in outputs})

        pending = None
        with deferred_sigint() as interrupted:
            for i in todo:  # dispatch chunk i before pulling chunk i-1 to the host: compute overlaps the write
                if interrupted:
                    break
                result = compiled(np.asarray(i * chunk_pts, dtype=start_dt), dev_arrays)
                if pending is not None:
                    finish(*pending)
                pending = (i, result)
            if pending is not None:
                finish(*pending)  # computed already: keep it
            writer.flush()
            if interrupted:
                raise KeyboardInterrupt
    finally:
        if bar is not None:  # also on Ctrl-C, so that the interruption message starts on its own line
            bar.close()
        ds.close()
    os.replace(partial, final)
    seconds = time.perf_counter() - t_begin
    return SweepSummary(n_points, seconds, compile_s, n_points / max(seconds - compile_s, 1e-9), final)


def _write_chunk(ds: Any, shape: tuple[int, ...], a: int, b: int, host: Mapping[str, np.ndarray]) -> None:
    netcdf.write_block(ds, shape, a, b, host)


class _Writer:
    """Writes computed chunks to the partial file, consecutive chunks together: netCDF4 spends ~0.3 ms of Python per
    variable and hyperslab written (measured: 25 of the 31 s of a 1e6-point sweep written chunk by chunk, 2,048 points
    each), so the chunks computed in the last WRITE_SECONDS, up to WRITE_POINTS points, go in one write. A chunk is
    marked done only once its values are in the file, and the progress bar counts only such points, so what the bar
    shows survives a kill."""

    def __init__(self, ds: Any, shape: tuple[int, ...], chunk_pts: int, size: int, bar: Any):
        self.ds, self.shape, self.chunk_pts, self.size, self.bar = ds, shape, chunk_pts, size, bar
        self.chunks: list[tuple[int, dict[str, np.ndarray]]] = []
        self.since = time.perf_counter()
        self.writes = 0

    def add(self, i: int, host: dict[str, np.ndarray]) -> None:
        if self.chunks and i != self.chunks[-1][0] + 1:  # not adjacent (other processes' or done chunks between)
            self.flush()
        self.chunks.append((i, host))
        held = min(len(self.chunks) * self.chunk_pts, self.size - self.chunks[0][0] * self.chunk_pts)
        if held >= WRITE_POINTS or time.perf_counter() - self.since >= WRITE_SECONDS:
            self.flush()

    def flush(self) -> None:
        self.since = time.perf_counter()
        if not self.chunks:
            return
        first, last = self.chunks[0][0], self.chunks[-1][0]
        a, b = first * self.chunk_pts, min((last + 1) * self.chunk_pts, self.size)
        names = self.chunks[0][1].keys()
        host = {k: np.concatenate([h[k] for _, h in self.chunks]) if len(self.chunks) > 1 else self.chunks[0][1][k]
                for k in names}
        _write_chunk(self.ds, self.shape, a, b, host)
        netcdf.mark_done(self.ds, slice(first, last + 1))
        self.chunks = []
        self.bar.update(b - a)
        self.writes += 1
        if self.writes % TRIM_EVERY_WRITES == 1:
            release_free_heap()


@contextmanager
def deferred_sigint() -> Iterator[list[int]]:
    """While the chunks run, Ctrl-C (SIGINT) only sets a flag, which the chunk loop reads between chunks: the
    interruption then happens where the partial file is consistent, never inside a netCDF write, and it cannot be
    lost in a place that swallows exceptions (a KeyboardInterrupt raised inside a finalizer or a C extension's
    callback is reported and dropped). A second Ctrl-C interrupts at once. Outside the main thread (where Python
    cannot take signals) it does nothing."""
    flag: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if flag:
            signal.default_int_handler(signum, frame)
        flag.append(signum)

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _progress_bar(total: int, name: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="pt", unit_scale=True, file=sys.stderr, disable=not enabled,
                dynamic_ncols=True)

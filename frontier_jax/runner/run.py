"""The sweep driver: fixed-shape chunks of the flat grid, generated and evaluated on device under one compiled
program, sharded over a 1-D device mesh, streamed to netCDF chunk by chunk, resumable."""
from __future__ import annotations

import ctypes
import functools
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from frontier_jax.errors import FrontierError, Interrupted, option
from frontier_jax.runner import limits, netcdf, provenance, sharing, signals
from frontier_jax.runner.lock import OutputLock
from frontier_jax.runner.netcdf import ExtraCoords, VarMeta
from frontier_jax.runner.grid import Layout, decode_points, index_dtype, layout, point_arrays
from frontier_jax.runner.sharing import SharedPart, representatives
from frontier_jax.runner.signals import deferred_sigint as deferred_sigint  # noqa: F401 (re-exported)
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
                parts: tuple[SharedPart, ...] = (), announce: Callable[[], None] | None = None) -> tuple[Any, float]:
    """Trace, check and compile the chunk program once; reuse it for later sweeps of the same kernel and layout
    (axis values are arguments, so only their lengths matter). Returns (executable, compile seconds); `announce`
    is called before a compile (not on reuse)."""
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
    if announce is not None:
        announce()
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


def _resumable_chunk(partial: str, spec: SweepSpec, outputs: Mapping[str, VarMeta], process: tuple[int, int],
                     prov: Mapping[str, str]) -> int:
    """Check that `partial` belongs to this sweep, was computed the same way (provenance) and can be written to;
    return the chunk size it was written with."""
    start_over = option("--overwrite", "overwrite=True")
    if os.path.isdir(partial):
        raise FrontierError(f"{partial!r} is a directory, not an interrupted sweep; move it away or choose another "
                            "output path")
    try:
        with netcdf.open_dataset(partial, "r") as ds:
            info = netcdf.progress_info(ds)
            same = (ds.getncattr("spec") == spec.to_json() and info["data_vars"] == list(outputs)
                    and info["size"] == spec.size and (info["process_index"], info["process_count"]) == process)
            old_prov = netcdf.read_provenance(ds)
    except (OSError, KeyError, AttributeError, IndexError, RuntimeError, ValueError) as e:
        raise FrontierError(f"cannot resume from {partial!r} ({e}); start over with {start_over}") from None
    if not same:
        raise FrontierError(f"{partial!r} was written by a different spec, outputs or process split; "
                            f"start over with {start_over}")
    provenance.compare(partial, old_prov, prov)
    if not os.access(partial, os.W_OK):
        raise FrontierError(f"cannot resume {partial!r}: the file is read-only; make it writable "
                            f"(chmod u+w) or start over with {start_over}")
    try:  # root passes os.access; a real open for update (no change made) tells the truth
        with open(partial, "r+b"):
            pass
    except OSError as e:
        raise FrontierError(f"cannot resume {partial!r}: it cannot be opened for writing ({e.strerror or e}); "
                            f"start over with {start_over}") from None
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
              share: bool = True, max_points: int | None = None,
              provenance_extra: Mapping[str, str] | None = None,
              attrs: Mapping[str, str] | None = None) -> SweepSummary:
    """Evaluate `kernel` on every point of `spec`'s grid and stream the outputs to netCDF at `out_path`.

    With process_count > 1 this process computes chunks i with i % process_count == process_index and writes
    `OUT.part{index}of{count}.nc`; join the parts with `merge_parts`. `share=False` evaluates every point in full,
    without the kernel's shared parts (sweep/sharing.py; the same values, for benchmarks and tests).

    One writer per output: `OUT.partial` is guarded by an exclusive lock (runner/lock.py). The partial records what
    determines its values (runner/provenance.py; `provenance_extra` adds entries) and a CRC32 per chunk; `resume`
    refuses a partial made differently and recomputes chunks whose checksum fails. Grids above `max_points`
    (default limits.max_points()) are refused before anything is compiled. `attrs` are written as global attributes
    of the file (the caller's, e.g. the assumptions behind the numbers)."""
    t_begin = time.perf_counter()
    extra = dict(extra_coords or {})
    outputs = dict(outputs_meta)
    netcdf.check_outputs(spec.input_names, outputs, extra)
    proc = _resolve_process(process_index, process_count)
    out_path = os.fspath(out_path)
    final = out_path if proc[1] == 1 else netcdf.part_path(out_path, *proc)
    partial = final + ".partial"
    netcdf.check_out_path(final, overwrite)
    if chunk is not None and chunk < 1:
        raise FrontierError(f"{option(f'--chunk {chunk}', f'chunk={chunk}')}; it must be a positive number of points")
    size = spec.size
    limits.check_grid(spec, outputs, extra, max_points)
    if os.path.isdir(partial):
        raise FrontierError(f"{partial!r} is a directory, not an interrupted sweep; move it away or choose another "
                            "output path")
    with OutputLock(partial):
        if os.path.exists(partial) and not (resume or overwrite):
            raise FrontierError(f"an interrupted sweep left {partial!r}; pass {option('--resume', 'resume=True')} "
                                f"to continue it or {option('--overwrite', 'overwrite=True')} to start over")
        prov = provenance.collect(spec, outputs, extra, share=share, extra_items=provenance_extra)
        return _run_locked(spec, kernel, outputs, extra, final, partial, proc, chunk, resume, progress, devices,
                           share, prov, t_begin, dict(attrs or {}))


def _run_locked(spec: SweepSpec, kernel: Kernel, outputs: dict[str, VarMeta], extra: ExtraCoords, final: str,
                partial: str, proc: tuple[int, int], chunk: int | None, resume: bool, progress: bool,
                devices: Sequence[Any] | None, share: bool, prov: dict[str, str], t_begin: float,
                file_attrs: dict[str, str]) -> SweepSummary:
    devices = list(devices) if devices is not None else jax.local_devices()
    if chunk is None:  # intermediates of a chunk stay in cache on a CPU; a GPU wants wide batches
        per = CPU_CHUNK_PER_DEVICE if devices[0].platform == "cpu" else GPU_CHUNK_PER_DEVICE
        chunk = per * len(devices)
    mesh = Mesh(np.array(devices), (AXIS,))
    ndev = len(devices)
    lay, size = layout(spec), spec.size

    resuming = resume and os.path.exists(partial)
    if resuming:
        chunk_pts = _resumable_chunk(partial, spec, outputs, proc, prov)
        if chunk_pts % ndev:
            raise FrontierError(f"{partial!r} used chunks of {chunk_pts} points, not a multiple of {ndev} devices; "
                                "resume with the same number of devices")
    else:
        chunk_pts = math.ceil(min(chunk, size) / ndev) * ndev
    n_chunks = math.ceil(size / chunk_pts)
    if size + chunk_pts > np.iinfo(index_dtype()).max:
        raise FrontierError(f"{size} points overflow {index_dtype()} indices; compute in float64 "
                            f"({option('without --float32', 'jax_enable_x64 on')})")
    if not resuming:
        limits.check_disk(final, spec, outputs, extra)
    host_arrays = point_arrays(spec)
    per_dev = chunk_pts // ndev
    parts = sharing.plan(kernel, lay, per_dev, share)
    announce = (lambda: print(f"{spec.name}: compiling the chunk program ({per_dev * ndev} points per chunk; "
                              "tens of seconds cold, reused from the compile cache after)", file=sys.stderr,
                              flush=True)) if progress else None
    compiled, compile_s = _executable(kernel, lay, mesh, per_dev, host_arrays, outputs, extra, parts, announce)
    with signals.deferred() as interrupted:  # from here a signal stops the sweep between chunks
        ds = None
        bar = None
        try:
            if resuming:
                ds = _guard_io(partial, lambda: netcdf.open_dataset(partial, "a"))
                bad = _guard_io(partial, lambda: netcdf.verify_chunks(ds, spec.shape, list(outputs)))
                if bad:
                    print(f"frontier: note: {len(bad)} done chunk(s) of {partial!r} failed their checksum "
                          f"(first: chunk {bad[0]}); recomputing them", file=sys.stderr)
            else:
                attrs = {**file_attrs, **netcdf.provenance_attrs(devices), provenance.ATTR: provenance.dumps(prov)}
                ds = _guard_io(partial, lambda: netcdf.create(
                    partial, spec, outputs, extra, attrs=attrs, chunk_points=chunk_pts, n_chunks=n_chunks,
                    process_index=proc[0], process_count=proc[1]))
            done = netcdf.done_mask(ds)
            mine = np.arange(proc[0], n_chunks, proc[1], dtype=np.int64)
            todo = mine[~done[mine]]
            n_points = int(len(todo)) * chunk_pts
            if len(todo) and todo[-1] == n_chunks - 1:
                n_points -= n_chunks * chunk_pts - size  # the last chunk is short

            replicated = NamedSharding(mesh, P())
            dev_arrays = {k: jax.device_put(v, replicated) for k, v in host_arrays.items()}
            dtypes = {k: np.dtype(m.dtype) for k, m in outputs.items()}
            bar = _progress_bar(n_points, spec.name, progress)
            start_dt = index_dtype()

            writer = _Writer(ds, spec.shape, chunk_pts, size, bar)

            def finish(i: int, result: dict[str, jax.Array]) -> None:
                n = min(chunk_pts, size - i * chunk_pts)
                host = {k: np.asarray(result[k])[:n].astype(dtypes[k], copy=False) for k in outputs}
                _guard_io(partial, lambda: writer.add(i, host))

            pending = None
            for i in todo.tolist() if len(todo) < 1 << 20 else todo:
                if interrupted:  # dispatch chunk i before pulling chunk i-1 to the host: compute overlaps the write
                    break
                result = compiled(np.asarray(int(i) * chunk_pts, dtype=start_dt), dev_arrays)
                if pending is not None:
                    finish(*pending)
                pending = (int(i), result)
            if pending is not None:
                finish(*pending)  # computed already: keep it
            _guard_io(partial, writer.flush)
            if interrupted:
                raise Interrupted(interrupted[0])
        finally:
            if bar is not None:  # also on Ctrl-C, so that the interruption message starts on its own line
                bar.close()
            if ds is not None:
                try:
                    ds.close()
                except (RuntimeError, OSError):  # a full disk can fail the close too; chunks marked done are safe
                    pass
        os.replace(partial, final)
    seconds = time.perf_counter() - t_begin
    return SweepSummary(n_points, seconds, compile_s, n_points / max(seconds - compile_s, 1e-9), final)


def _guard_io(partial: str, fn: Callable[[], Any]) -> Any:
    """Run a netCDF operation on the partial file; its low-level failures (disk full, I/O error) become one line
    that says the partial stays resumable."""
    try:
        return fn()
    except FrontierError:
        raise
    except (RuntimeError, OSError) as e:
        text = str(e)
        hint = ""
        try:
            free = shutil.disk_usage(os.path.dirname(os.path.abspath(partial))).free
            if free < 64 << 20:
                hint = f"; the disk is (nearly) full ({free / 2**20:.0f} MiB free)"
        except OSError:
            pass
        raise FrontierError(f"writing {partial!r} failed ({text}{hint}); free space or fix the path, then rerun "
                            f"with {option('--resume', 'resume=True')} (chunks already written are kept)") from None


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
        crcs = [netcdf.chunk_crc(h) for _, h in self.chunks]
        _write_chunk(self.ds, self.shape, a, b, host)
        netcdf.mark_done(self.ds, slice(first, last + 1), crcs)
        self.chunks = []
        self.bar.update(b - a)
        self.writes += 1
        if self.writes % TRIM_EVERY_WRITES == 1:
            release_free_heap()


def _progress_bar(total: int, name: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="pt", unit_scale=True, file=sys.stderr, disable=not enabled,
                dynamic_ncols=True)

"""Streaming netCDF4 output for sweeps: create the file with CF metadata first, then write each chunk of the flat
C-order grid into its region. Progress (which chunks are done) lives in the `progress` group, which
`xarray.open_dataset` does not read."""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import math
import os
import re
import tempfile
import tomllib
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from frontier_jax.errors import FrontierError, option

PROGRESS = "progress"
CRC_VAR = "chunk_crc"
CHUNK_DIM = "chunk"
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_HDF5_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class VarMeta:
    """One kernel output. Stored with dims (*sweep axes, *dims_extra); each extra dim needs an extra coord."""

    dims_extra: tuple[str, ...]
    units: str
    long_name: str
    dtype: Any = np.float64
    flag_values: Sequence[int] | None = None
    flag_meanings: Sequence[str] | str | None = None


ExtraCoords = Mapping[str, tuple[Sequence[Any], Mapping[str, Any]]]


def hyperslabs(start: int, stop: int, shape: Sequence[int]) -> list[tuple[slice, ...]]:
    """Split the flat C-order range [start, stop) of an array of `shape` into at most 2*ndim-1 rectangular
    slabs, in flat order; each slab is itself a contiguous flat range."""
    shape = tuple(int(s) for s in shape)
    if start >= stop:
        return []
    if not shape:
        return [()]
    inner = math.prod(shape[1:])
    (i0, r0), (i1, r1) = divmod(start, inner), divmod(stop, inner)
    if i0 == i1:
        return [(slice(i0, i0 + 1),) + s for s in hyperslabs(r0, r1, shape[1:])]
    out = []
    if r0:
        out += [(slice(i0, i0 + 1),) + s for s in hyperslabs(r0, inner, shape[1:])]
        i0 += 1
    if i1 > i0:
        out.append((slice(i0, i1),) + tuple(slice(0, n) for n in shape[1:]))
    if r1:
        out += [(slice(i1, i1 + 1),) + s for s in hyperslabs(0, r1, shape[1:])]
    return out


def part_path(out_path: str, index: int, count: int) -> str:
    """`OUT.part{index}of{count}.nc` (a trailing .nc on OUT is dropped first)."""
    stem = out_path[:-3] if out_path.endswith(".nc") else out_path
    return f"{stem}.part{index}of{count}.nc"


def check_out_path(final: str, overwrite: bool) -> None:
    """Fail before any computation if `final` cannot be written."""
    if final.endswith(("/", os.sep)) or os.path.isdir(final):
        raise FrontierError(f"output {final!r} is a directory; give a file path such as "
                            f"{os.path.join(final, 'out.nc')!r}")
    out_dir = os.path.dirname(os.path.abspath(final))
    try:
        name_max = os.pathconf(out_dir, "PC_NAME_MAX") if os.path.isdir(out_dir) else 255
    except (OSError, ValueError):
        name_max = 255
    longest = len(os.path.basename(final).encode()) + len(".partial.lock")
    if longest > name_max:
        raise FrontierError(f"output file name {os.path.basename(final)[:40]!r}... is too long ({longest} bytes with "
                            f"its .partial.lock suffix; the limit here is {name_max}); choose a shorter name")
    if not os.path.isdir(out_dir):
        raise FrontierError(f"output directory {out_dir!r} does not exist; create it first")
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise FrontierError(f"output directory {out_dir!r} is not writable; choose another path")
    try:  # os.access says yes to root everywhere; a real (anonymous, self-deleting) file tells the truth
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        raise FrontierError(f"output directory {out_dir!r} is not writable ({e.strerror or e}); "
                            "choose another path") from None
    if os.path.exists(final) and not overwrite:
        raise FrontierError(f"output {final!r} already exists; pass {option('--overwrite', 'overwrite=True')} or "
                            "choose another path")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _own_version() -> str:
    import frontier_jax

    v = getattr(frontier_jax, "__version__", None) or _version("frontier-jax")
    if v == "unknown":  # running from a source checkout that is not installed
        pyproject = os.path.join(os.path.dirname(list(frontier_jax.__path__)[0]), "pyproject.toml")
        try:
            with open(pyproject, "rb") as f:
                v = tomllib.load(f)["project"]["version"] + "+source"
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            pass
    return v


def provenance_attrs(devices: Sequence[Any]) -> dict[str, Any]:
    """Global attributes that say how a file was made: versions, devices, precision, date."""
    import jax
    import netCDF4
    import xarray

    d0 = devices[0]
    return {
        "frontier_jax_version": _own_version(),
        "jax_version": jax.__version__,
        "jaxlib_version": _version("jaxlib"),
        "numpy_version": np.__version__,
        "xarray_version": xarray.__version__,
        "netCDF4_version": netCDF4.__version__,
        "device": f"{d0.device_kind} ({d0.platform}) x{len(devices)}",
        "device_kind": d0.device_kind,
        "device_platform": d0.platform,
        "device_count": len(devices),
        "jax_enable_x64": int(bool(jax.config.jax_enable_x64)),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def check_outputs(names_in_use: Sequence[str], outputs: Mapping[str, VarMeta], extra: ExtraCoords) -> None:
    """User-facing checks of the output description: CF-safe names, no clashes, known dims and dtypes."""
    taken = set(names_in_use)
    for name in list(extra) + list(outputs):
        if not _NAME_RE.match(name):
            raise FrontierError(f"name {name!r} is not CF-safe; start with a letter, use letters, digits and _")
        if name in taken:
            raise FrontierError(f"name {name!r} is used twice (input, extra coord or output); rename one")
        taken.add(name)
    for name, m in outputs.items():
        dt = np.dtype(m.dtype)
        if dt.kind not in "fi":
            raise FrontierError(f"output {name!r} has dtype {dt}; use a float or signed int dtype (int8 for flags)")
        for d in m.dims_extra:
            if d not in extra:
                raise FrontierError(f"output {name!r} uses dim {d!r} with no extra_coords entry; add one")
        if (m.flag_values is None) != (m.flag_meanings is None):
            raise FrontierError(f"output {name!r} needs both flag_values and flag_meanings, or neither")


def _hdf5_chunks(shape: tuple[int, ...], extra: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """HDF5 chunk whose grid part covers a contiguous flat range (C order), about 1 MiB."""
    target = max(1, _HDF5_CHUNK_BYTES // (itemsize * max(1, math.prod(extra))))
    out = [1] * len(shape)
    acc = 1
    for k in range(len(shape) - 1, -1, -1):
        take = min(shape[k], max(1, target // acc))
        out[k] = take
        if take < shape[k]:
            break
        acc *= take
    return tuple(out) + extra


def _string_or_number_var(ds: Any, name: str, dims: tuple[str, ...], values: Sequence[Any]) -> Any:
    arr = np.asarray(values)
    if arr.dtype.kind in "US":
        var = ds.createVariable(name, str, dims)
        if dims:
            var[:] = arr.astype(object)
        else:
            var[0] = str(arr)  # netCDF4 writes a scalar vlen string only through an integer index
        return var
    var = ds.createVariable(name, arr.dtype, dims)
    var[...] = arr
    return var


def create(path: str, spec: Any, outputs: Mapping[str, VarMeta], extra: ExtraCoords, *, attrs: Mapping[str, Any],
           chunk_points: int, n_chunks: int, process_index: int, process_count: int) -> Any:
    """Create the sweep file (coordinates, empty output variables, progress group) and return it open for writing."""
    import netCDF4

    try:
        ds = netCDF4.Dataset(path, "w", format="NETCDF4")
    except OSError as e:
        raise FrontierError(f"cannot create {path!r} ({e.strerror or e}); choose another output path") from None
    try:
        for a in spec.axes:
            ds.createDimension(a.name, a.size)
            values = np.array(a.values, dtype=np.int64) if a.kind == "integer" else list(a.values)
            v = _string_or_number_var(ds, a.name, (a.name,), values)
            v.setncatts({"units": a.units, "long_name": a.long_name})
        for f in spec.fixed:
            v = _string_or_number_var(ds, f.name, (), np.int64(f.value) if f.kind == "integer" else f.value)
            v.setncatts({"units": f.units, "long_name": f.long_name})
        for dim, (values, cattrs) in extra.items():
            ds.createDimension(dim, len(values))
            _string_or_number_var(ds, dim, (dim,), list(values)).setncatts(dict(cattrs))
        scalar_coords = " ".join(f.name for f in spec.fixed)
        for name, m in outputs.items():
            dt = np.dtype(m.dtype)
            extra_shape = tuple(len(extra[d][0]) for d in m.dims_extra)
            dims = spec.axis_names + tuple(m.dims_extra)
            var = ds.createVariable(name, dt, dims, fill_value=np.nan if dt.kind == "f" else None,
                                    chunksizes=_hdf5_chunks(spec.shape, extra_shape, dt.itemsize) if dims else None)
            va: dict[str, Any] = {"units": m.units, "long_name": m.long_name}
            if m.flag_values is not None:
                va["flag_values"] = np.asarray(m.flag_values, dtype=dt)
                fm = m.flag_meanings
                va["flag_meanings"] = fm if isinstance(fm, str) else " ".join(fm)
            if scalar_coords:
                va["coordinates"] = scalar_coords
            var.setncatts(va)
        optional = {"comment": spec.description, "spec_toml": spec.source}
        ds.setncatts({"title": spec.title, "Conventions": "CF-1.10", "sweep_name": spec.name,
                      "spec": spec.to_json(), **{k: v for k, v in optional.items() if v}, **attrs})
        g = ds.createGroup(PROGRESS)
        g.createDimension(CHUNK_DIM, n_chunks)
        done = g.createVariable("chunk_done", np.int8, (CHUNK_DIM,), fill_value=np.int8(0))
        done.setncatts({"long_name": "chunk completed by this file's process", "flag_values": np.int8([0, 1]),
                        "flag_meanings": "pending done"})
        crc = g.createVariable(CRC_VAR, np.int64, (CHUNK_DIM,), fill_value=np.int64(-1))
        crc.setncatts({"long_name": "CRC32 of the chunk's values (each data variable's bytes in file order, "
                                    "variables in data_vars order; -1: not written)"})
        g.setncatts({"chunk_points": chunk_points, "n_chunks": n_chunks, "size": spec.size,
                     "process_index": process_index, "process_count": process_count,
                     "data_vars": " ".join(outputs), "axes": " ".join(spec.axis_names)})
        ds.sync()
    except BaseException:
        ds.close()
        raise
    return limit_chunk_cache(ds)


def limit_chunk_cache(ds: Any) -> Any:
    """Cap HDF5's per-variable chunk cache (64 MiB by default) at a few chunks: writes and reads go in flat
    order, so a small cache suffices and memory stays O(chunk) however many variables there are."""
    for var in ds.variables.values():
        if var.dimensions:
            var.set_var_chunk_cache(size=4 * _HDF5_CHUNK_BYTES)
    return ds


def open_dataset(path: str, mode: str = "r") -> Any:
    """netCDF4.Dataset with a small chunk cache (see limit_chunk_cache)."""
    import netCDF4

    return limit_chunk_cache(netCDF4.Dataset(path, mode))


def progress_info(ds: Any) -> dict[str, Any]:
    """The partial file's bookkeeping: chunk size, chunk count, grid size, process split."""
    g = ds.groups[PROGRESS]
    info = {k: g.getncattr(k) for k in g.ncattrs()}
    for k in ("chunk_points", "n_chunks", "size", "process_index", "process_count"):
        info[k] = int(info[k])
    info["data_vars"] = info["data_vars"].split()
    info["axes"] = info["axes"].split()
    return info


def done_mask(ds: Any) -> np.ndarray:
    """One bool per chunk: its values are in the file."""
    return np.asarray(ds.groups[PROGRESS]["chunk_done"][:], dtype=bool)


def write_block(ds: Any, shape: tuple[int, ...], start: int, stop: int, values: Mapping[str, np.ndarray]) -> None:
    """Write per-point values for flat grid indices [start, stop) (each array has leading length stop-start)."""
    slabs = hyperslabs(start, stop, shape)
    for name, arr in values.items():
        var = ds[name]
        extra = arr.shape[1:]
        off = 0
        for slab in slabs:
            sshape = tuple(s.stop - s.start for s in slab)
            n = math.prod(sshape)
            var[(slab + (slice(None),) * len(extra)) or ...] = arr[off:off + n].reshape(sshape + extra)
            off += n


def mark_done(ds: Any, chunks: int | slice, crcs: Sequence[int] | None = None) -> None:
    """Mark a chunk (or a slice of chunks) written, with its CRC32s (chunk_crc), and flush the file."""
    g = ds.groups[PROGRESS]
    if crcs is not None and CRC_VAR in g.variables:
        g[CRC_VAR][chunks] = np.asarray(crcs, dtype=np.int64)
    g["chunk_done"][chunks] = 1
    ds.sync()


def chunk_crc(values: Mapping[str, np.ndarray]) -> int:
    """CRC32 of one chunk's values: each array's bytes (C order), in the mapping's order."""
    crc = 0
    for arr in values.values():
        crc = zlib.crc32(np.ascontiguousarray(arr).tobytes(), crc)
    return crc


def read_block(ds: Any, shape: tuple[int, ...], start: int, stop: int, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The stored values of flat grid indices [start, stop), as written (no masking), leading length stop-start."""
    slabs = hyperslabs(start, stop, shape)
    out = {}
    for name in names:
        var = ds[name]
        var.set_auto_maskandscale(False)
        extra = var.shape[len(shape):]
        pieces = [np.asarray(var[(slab + (slice(None),) * len(extra)) or ...]).reshape((-1,) + tuple(extra))
                  for slab in slabs]
        out[name] = np.concatenate(pieces) if len(pieces) != 1 else pieces[0]
    return out


VERIFY_POINTS = 1 << 18  # points read back at a time when checking chunk checksums


def verify_chunks(ds: Any, shape: tuple[int, ...], names: Sequence[str],
                  fix: bool = True) -> list[int]:
    """Check the CRC32 of every chunk marked done against its stored values; return the chunks that fail. With
    `fix`, those are marked pending again (so a resume recomputes them). Files without checksums pass."""
    g = ds.groups[PROGRESS]
    if CRC_VAR not in g.variables:
        return []
    info = progress_info(ds)
    step, size = info["chunk_points"], info["size"]
    done = done_mask(ds)
    stored = np.asarray(g[CRC_VAR][:].filled(-1) if np.ma.isMaskedArray(g[CRC_VAR][:]) else g[CRC_VAR][:],
                        dtype=np.int64)
    bad: list[int] = []
    idx = np.flatnonzero(done)
    per_read = max(1, VERIFY_POINTS // step)
    k = 0
    while k < len(idx):  # runs of consecutive done chunks, read a block at a time
        j = k
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1 and j + 1 - k < per_read:
            j += 1
        first, last = int(idx[k]), int(idx[j])
        a, b = first * step, min((last + 1) * step, size)
        block = read_block(ds, shape, a, b, names)
        for c in range(first, last + 1):
            lo, hi = c * step - a, min((c + 1) * step, size) - a
            if chunk_crc({n: v[lo:hi] for n, v in block.items()}) != stored[c]:
                bad.append(c)
        k = j + 1
    if bad and fix:
        g["chunk_done"][np.asarray(bad)] = 0
        ds.sync()
    return bad


def read_provenance(ds: Any) -> dict[str, str] | None:
    """The resume provenance a partial file recorded (None if it has none: written before it existed)."""
    import json

    from frontier_jax.runner.provenance import ATTR
    if ATTR not in ds.ncattrs():
        return None
    return json.loads(ds.getncattr(ATTR))

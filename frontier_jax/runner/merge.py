"""Join the per-process part files of a multi-process sweep into one netCDF file, chunk by chunk."""
from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np

from frontier_jax.errors import FrontierError, option
from frontier_jax.runner import netcdf
from frontier_jax.runner.lock import OutputLock

_SAME = ("chunk_points", "n_chunks", "size", "data_vars", "axes")


def merge_parts(paths: Sequence[str | os.PathLike], out_path: str | os.PathLike, *, overwrite: bool = False) -> str:
    """Merge part files into `out_path`. Each chunk's values come from the part that recorded it as done
    (the first such part if several did); every chunk must be done in some part. Returns `out_path`."""
    import netCDF4

    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise FrontierError("merge_parts got no part files; pass the OUT.part*of*.nc paths")
    out_path = os.fspath(out_path)
    netcdf.check_out_path(out_path, overwrite)
    with ExitStack() as stack:
        parts = []
        for p in paths:
            try:
                ds = stack.enter_context(netcdf.open_dataset(p))
                info = netcdf.progress_info(ds)
            except (OSError, KeyError, RuntimeError, ValueError) as e:
                raise FrontierError(f"{p!r} is not a sweep part file ({e}); pass the OUT.part*of*.nc files a "
                                    "multi-process sweep wrote") from None
            ds.set_auto_mask(False)
            parts.append((ds, info))
        ds0, info0 = parts[0]
        for (ds, info), p in zip(parts[1:], paths[1:]):
            if ds.getncattr("spec") != ds0.getncattr("spec") or any(info[k] != info0[k] for k in _SAME):
                raise FrontierError(f"{p!r} belongs to a different sweep than {paths[0]!r}; merge parts of one sweep")
        owner = np.full(info0["n_chunks"], -1)
        for j, (ds, _) in enumerate(parts):
            owner[(owner < 0) & netcdf.done_mask(ds)] = j
        missing = np.flatnonzero(owner < 0)
        if missing.size:
            raise FrontierError(f"{missing.size} chunks (first: {missing[0]}) are done in no part; finish the missing "
                                f"processes with {option('--resume', 'resume=True')}, then merge again")
        partial = out_path + ".partial"
        with OutputLock(partial, "merge"):
            _merge_locked(parts, paths, owner, ds0, info0, partial)
            os.replace(partial, out_path)
    return out_path


def _merge_locked(parts: list, paths: list[str], owner: np.ndarray, ds0: Any, info0: dict, partial: str) -> None:
    """Copy every chunk from its owner part into `partial`, checking each chunk's CRC32 where the part has them. A
    failure removes the partial and names the part."""
    try:
        out = _copy_structure(ds0, partial, info0)
    except (OSError, RuntimeError) as e:
        _remove(partial)
        raise FrontierError(f"cannot create {partial!r} ({getattr(e, 'strerror', None) or e}); choose another "
                            "output path") from None
    where = paths[0]
    try:
        shape = tuple(len(ds0.dimensions[a]) for a in info0["axes"])
        step, size = info0["chunk_points"], info0["size"]
        names = info0["data_vars"]
        crcs = []
        for j, (ds, _) in enumerate(parts):
            g = ds.groups[netcdf.PROGRESS]
            crcs.append(np.asarray(g[netcdf.CRC_VAR][:]) if netcdf.CRC_VAR in g.variables else None)
        out_crc = np.full(len(owner), -1, dtype=np.int64)
        for i, j in enumerate(owner):
            a, b = i * step, min((i + 1) * step, size)
            src, where = parts[j][0], paths[j]
            block = netcdf.read_block(src, shape, a, b, names)
            crc = netcdf.chunk_crc(block)
            if crcs[j] is not None and int(crcs[j][i]) != crc:
                raise FrontierError(f"chunk {i} of {where!r} fails its checksum (the file is damaged); rerun that "
                                    f"process with {option('--resume', 'resume=True')} to recompute it, then merge "
                                    "again")
            netcdf.write_block(out, shape, a, b, block)
            out_crc[i] = crc
        g = out.groups[netcdf.PROGRESS]
        if netcdf.CRC_VAR in g.variables:
            g[netcdf.CRC_VAR][:] = out_crc
        g["chunk_done"][:] = 1
        out.close()
    except FrontierError:
        out.close()
        _remove(partial)
        raise
    except (OSError, RuntimeError, ValueError, IndexError) as e:
        try:
            out.close()
        except (OSError, RuntimeError):
            pass
        _remove(partial)
        raise FrontierError(f"merging failed while reading {where!r} or writing {partial!r} ({e}); check that part "
                            "(rerun its process if it is damaged) and the free space, then merge again") from None


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _copy_structure(src: Any, path: str, info: dict[str, Any]) -> Any:
    """New file with src's dims, variables, attributes and coordinate values; data variables left empty."""
    import netCDF4

    out = netCDF4.Dataset(path, "w", format="NETCDF4")
    try:
        out.set_auto_mask(False)
        for name, dim in src.dimensions.items():
            out.createDimension(name, len(dim))
        for name, v in src.variables.items():
            attrs = {k: v.getncattr(k) for k in v.ncattrs()}
            fill = attrs.pop("_FillValue", None)
            chunking = v.chunking()
            w = out.createVariable(name, v.dtype, v.dimensions, fill_value=fill,
                                   chunksizes=None if chunking == "contiguous" else chunking)
            w.setncatts(attrs)
            if name not in info["data_vars"]:
                if v.dimensions:
                    w[:] = v[:]
                else:
                    w[0] = v.getValue()  # also works for scalar vlen strings
        out.setncatts({**{k: src.getncattr(k) for k in src.ncattrs()}, "merged_from_parts": info["process_count"]})
        g0, g = src.groups[netcdf.PROGRESS], out.createGroup(netcdf.PROGRESS)
        g.createDimension(netcdf.CHUNK_DIM, info["n_chunks"])
        done = g0["chunk_done"]
        d = g.createVariable("chunk_done", done.dtype, done.dimensions, fill_value=np.int8(0))
        d.setncatts({k: done.getncattr(k) for k in done.ncattrs() if k != "_FillValue"})
        if netcdf.CRC_VAR in g0.variables:
            c0 = g0[netcdf.CRC_VAR]
            c = g.createVariable(netcdf.CRC_VAR, c0.dtype, c0.dimensions, fill_value=np.int64(-1))
            c.setncatts({k: c0.getncattr(k) for k in c0.ncattrs() if k != "_FillValue"})
        g.setncatts({**{k: g0.getncattr(k) for k in g0.ncattrs()}, "process_index": 0, "process_count": 1})
    except BaseException:
        out.close()
        raise
    return netcdf.limit_chunk_cache(out)

"""Resume provenance: what determines a sweep's values, recorded in the partial file (global attribute
`resume_provenance`, a JSON object) and compared on resume, so that a resumed file never mixes values computed two
ways. Each entry is a short text or a SHA-256 prefix:

- spec: the spec as given; outputs: the output variables and extra coordinates;
- dtype: the float and index dtypes (float64 / float32, from jax_enable_x64);
- catalogue: the resolved hardware and model TOML files the spec names (their bytes, wherever they were found on
  the search path, $FRONTIER_JAX_PATH included); calibration: frontier_jax/data/calibration.json;
- frontier_jax_version: the package version; engine_options: options that change values (shared parts on/off).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from frontier_jax.errors import FrontierError, option

ATTR = "resume_provenance"
ORDER = ("spec", "outputs", "dtype", "catalogue", "calibration", "frontier_jax_version", "engine_options")
WHAT = {
    "spec": ("the spec", "resume with the spec it was started with"),
    "outputs": ("the output variables", "resume with the same kernel and outputs"),
    "dtype": ("the precision", "resume with the precision it was started with ({float32} only if it was started "
                               "with it)"),
    "catalogue": ("the GPU/model catalogue files", "restore the hardware/model TOML files (and FRONTIER_JAX_PATH) it "
                                                   "was started with"),
    "calibration": ("the engine calibration (data/calibration.json)", "restore the calibration it was started with"),
    "frontier_jax_version": ("the frontier-jax version", "resume with the version it was started with"),
    "engine_options": ("the engine options", "resume with the options it was started with"),
    "breakeven_options": ("the break-even settings (solved input, [breakeven] options, samples, max steps, "
                          "tolerances, pinned configuration)", "resume with the settings it was started with"),
}


def sha(data: bytes | str) -> str:
    """A short SHA-256 hex digest."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:16]


def _used(spec: Any, name: str) -> list[str]:
    for a in spec.axes:
        if a.name == name:
            return [str(v) for v in a.values]
    for f in spec.fixed:
        if f.name == name:
            return [str(f.value)]
    return []


def collect(spec: Any, outputs: Mapping[str, Any], extra: Mapping[str, Any], *, share: bool = True,
            extra_items: Mapping[str, str] | None = None) -> dict[str, str]:
    """The provenance of a run of `spec` in this process (catalogue entries: the GPUs and models the spec names)."""
    from frontier_jax.costmodel import catalog
    from frontier_jax.runner.grid import float_dtype, index_dtype
    from frontier_jax.runner.netcdf import _own_version

    outs = json.dumps({k: [list(m.dims_extra), m.units, str(m.dtype)] for k, m in outputs.items()}, sort_keys=True)
    ext = json.dumps({k: [list(map(str, v[0]))] for k, v in extra.items()}, sort_keys=True)
    prov = {
        "spec": sha(spec.to_json()),
        "outputs": sha(outs + ext),
        "dtype": f"{float_dtype()}/{index_dtype()}",
        "catalogue": catalog.digest(_used(spec, "hardware"), _used(spec, "model")),
        "calibration": catalog.calibration_digest(),
        "frontier_jax_version": _own_version(),
        "engine_options": json.dumps({"share": bool(share)}, sort_keys=True),
    }
    prov.update({str(k): str(v) for k, v in (extra_items or {}).items()})
    return prov


def dumps(prov: Mapping[str, str]) -> str:
    """The provenance as the JSON text stored in the partial file."""
    return json.dumps(dict(prov), sort_keys=True)


def compare(partial: str, old: Mapping[str, str] | None, new: Mapping[str, str]) -> None:
    """FrontierError naming the first entry that differs between the partial's provenance and this run's."""
    start_over = option("--overwrite", "overwrite=True")
    if old is None:
        raise FrontierError(f"cannot resume {partial!r}: it records no provenance (an older frontier-jax wrote it), "
                            f"so its values may not match this run's; start over with {start_over}")
    keys = [k for k in ORDER if k in old or k in new] + sorted((set(old) | set(new)) - set(ORDER))
    for k in keys:
        if old.get(k) != new.get(k):
            what, fix = WHAT.get(k, (k, "resume with the settings it was started with"))
            fix = fix.format(float32=option("--float32", "jax_enable_x64 off"))
            raise FrontierError(f"cannot resume {partial!r}: {what} changed since it was started "
                                f"({old.get(k)} then, {new.get(k)} now); {fix}, or start over with {start_over}")

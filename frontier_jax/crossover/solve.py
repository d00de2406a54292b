"""Break-even surfaces and crossover sensitivities (MODEL.md section 7).

The advantage A = log cost(best colocated mode) - log cost(disaggregated) is solved for A = 0 along one input (the
*solved axis*: KV bandwidth, input/output ratio, arrival rate, SLO slack or any other continuous input) at every
point of the grid of the other axes. The grid runs through the sweep runner (`run_sweep`: chunked, sharded,
streamed to netCDF, resumable) with a kernel that solves per point (crossover.kernel); the solved axis' range in
the spec is the bracket and travels as fixed data (`bracket_lower`, `bracket_upper`), so changing it does not
recompile. See docs/breakeven.md.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence

import numpy as np

from ..costmodel.kernel import sweep_assumptions
from ..costmodel.types import SearchSpace
from ..runner.provenance import sha
from ..runner.run import run_sweep
from ..solvers import OUTCOME_DOCS
from .kernel import make_kernel
from .problem import prepare


def breakeven(spec, solve_for: str | None = None, out: str | os.PathLike | None = None, chunk: int = 2048, *,
              samples: int | None = None, max_steps: int | None = None, wrt: Sequence[str] | str | None = None,
              ftol: float | None = None, xtol: float | None = None, probe: float | None = None,
              kink_rtol: float | None = None, space: SearchSpace | None = None, progress: bool = False,
              **run_kw):
    """Solve advantage = 0 for `solve_for` over the grid of the spec's other axes and return an xarray.Dataset.

    spec: a path, a TOML string or a dict shaped like a sweep spec (optionally with a [breakeven] table of
    options); the solved axis' min and max are the bracket. With `out` the results are streamed to that netCDF
    file and the returned dataset is opened from it lazily (close it when done); without, a temporary file is used
    and the dataset is loaded into memory. Other keyword arguments go to `run_sweep` (resume, overwrite, devices,
    process_index, process_count)."""
    import netCDF4
    import xarray as xr

    prob = prepare(spec, solve_for, samples=samples, max_steps=max_steps, wrt=wrt, ftol=ftol, xtol=xtol,
                   probe=probe, kink_rtol=kink_rtol, space=space)
    kernel = make_kernel(prob.key)
    tmpdir = None
    if out is None:
        tmpdir = tempfile.mkdtemp(prefix="breakeven-")
        out = os.path.join(tmpdir, f"{prob.spec.name}.nc")
    try:
        t0 = time.perf_counter()
        settings = json.dumps({"solve_for": prob.solve_for, "log": prob.log, "options": prob.options,
                               "space": repr(prob.key.space)}, sort_keys=True, default=str)
        summary = run_sweep(prob.reduced, kernel, prob.outputs_meta(), out, chunk=chunk, progress=progress,
                            provenance_extra={"breakeven_options": sha(settings)},
                            attrs=sweep_assumptions(prob.spec), **run_kw)
        attrs = {
            "breakeven_solve_for": prob.solve_for, "breakeven_units": prob.units,
            "breakeven_variable": "log" if prob.log else "linear",
            "breakeven_bracket": np.array([prob.lower, prob.upper]),
            "breakeven_wrt": " ".join(t.name for t in prob.thetas),
            "breakeven_options": json.dumps(prob.options, separators=(",", ":")),
            "breakeven_outcomes": "; ".join(f"{k}: {v}" for k, v in OUTCOME_DOCS.items()),
            "breakeven_method": ("coarse scan of the bracket, safeguarded Newton (forward-mode jvp) with bisection "
                                 "fallback, kink probes, implicit-function-theorem sensitivities; advantage = log "
                                 "min(colocated, chunked) cost - log disaggregated cost, +inf/-inf where only one "
                                 "side is feasible"),
            "breakeven_seconds": time.perf_counter() - t0,
            "breakeven_compile_seconds": summary.compile_seconds,
            "breakeven_points_per_second": summary.points_per_second,
        }
        with netCDF4.Dataset(summary.out_path, "a") as nc:
            nc.setncatts(attrs)
        if tmpdir is not None:
            with xr.open_dataset(summary.out_path) as ds:
                return ds.load()
        return xr.open_dataset(summary.out_path)
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)

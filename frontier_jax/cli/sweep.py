"""`frontier sweep [SPEC]`: run a sweep spec (TOML) and write netCDF; `frontier` alone runs the default spec."""
from __future__ import annotations

from pathlib import Path

from ..errors import FrontierError
from ..resources import shipped_dir
from .common import jax_setup

DEFAULT_SPEC = "default.toml"


def register(sub) -> None:
    """Add the `sweep` command to the parser's subcommands."""
    s = sub.add_parser("sweep", help="run a sweep spec (TOML) and write netCDF")
    s.add_argument("spec", nargs="?", help="sweep spec; default: the shipped sweeps/default.toml")
    s.add_argument("-o", "--output", help="output netCDF path (default: NAME.nc from the spec)")
    s.add_argument("--chunk", type=int, default=None,
                   help="points per chunk (default 1024 per device on the CPU, 65536 per device on a GPU)")
    s.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--float32", action="store_true", help="compute in float32 (the GPU default) instead of float64")
    s.add_argument("--max-points", type=float, default=None, metavar="N",
                   help="refuse grids above N points (default 1e9, or $FRONTIER_JAX_MAX_POINTS)")
    s.set_defaults(run=run)


def default_spec() -> Path:
    """The shipped default spec (sweeps/default.toml)."""
    path = shipped_dir("sweeps") / DEFAULT_SPEC
    if not path.exists():
        raise FrontierError(f"the default spec {path} is missing; pass a spec path")
    return path


def summary_lines(path: str, summary) -> str:
    """What the sweep found: timing, the share of points each architecture wins, per GPU."""
    import numpy as np
    import xarray as xr

    from ..costmodel.types import ARCHS
    with xr.open_dataset(path) as ds:
        best = ds["best_arch"].values.ravel()
        lines = [f"{summary.points:,} points in {summary.seconds:.1f} s ({summary.points_per_second:,.0f} points/s, "
                 f"compile {summary.compile_seconds:.1f} s) -> {path}"]
        for i, arch in enumerate(ARCHS):
            lines.append(f"  {arch:14s} cheapest at {np.mean(best == i) * 100:5.1f}% of points")
        lines.append(f"  {'infeasible':14s} {np.mean(best == -1) * 100:5.1f}% of points (no architecture meets the "
                     "contract)")
        if "hardware" in ds.dims and "input_len" in ds.dims:
            for hw in ds["hardware"].values:
                frac = float((ds["advantage"].sel(hardware=hw) > 0).mean()) * 100
                lines.append(f"  {str(hw):16s} disaggregation cheaper at {frac:5.1f}% of its points")
    return "\n".join(lines)


def max_points_arg(value: float | None) -> int | None:
    """--max-points N (a float on the command line, so 1e10 works) as an int, checked."""
    if value is None:
        return None
    if not (value >= 1 and value == int(value)):
        raise FrontierError(f"--max-points {value:g}; give a whole number of points, at least 1")
    return int(value)


def run(a) -> None:
    """Run the sweep and print its summary."""
    jax_setup(not a.float32)
    from ..costmodel.kernel import EXTRA_COORDS, load_sweep_spec, make_kernel, outputs_meta, sweep_assumptions
    from ..runner import run_sweep
    spec = load_sweep_spec(Path(a.spec) if a.spec else default_spec())
    out = a.output or f"{spec.name}.nc"
    summary = run_sweep(spec, make_kernel(spec), outputs_meta(), out, extra_coords=EXTRA_COORDS, chunk=a.chunk,
                        resume=a.resume, overwrite=a.overwrite, progress=not a.quiet,
                        max_points=max_points_arg(a.max_points), attrs=sweep_assumptions(spec))
    print(summary_lines(summary.out_path, summary))

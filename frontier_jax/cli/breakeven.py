"""`frontier breakeven SPEC.toml`: a break-even surface and its sensitivities, written to netCDF."""
from __future__ import annotations

from ..errors import FrontierError
from .common import jax_setup

MAX_SAMPLES = 4096    # bracket samples per point: each is a full model evaluation with its derivative
MAX_STEPS = 1000      # refinement steps per point


def register(sub) -> None:
    """Add the `breakeven` command to the parser's subcommands."""
    b = sub.add_parser("breakeven", help="solve advantage = 0 for one axis over the grid of the others (netCDF)",
                       description="Break-even surface: for every point of the grid of the spec's other axes, the "
                                   "lowest root of log cost(best colocated) - log cost(disaggregated) along the "
                                   "solved axis, whose range in the spec is the bracket; with the implicit-function "
                                   "sensitivities of the root. See docs/breakeven.md.")
    b.add_argument("spec", help="sweep spec (TOML); an optional [breakeven] table holds the options")
    b.add_argument("--solve-for", help="the axis to solve for (default: [breakeven] solve_for, else kv_bandwidth)")
    b.add_argument("-o", "--output", help="output netCDF path (default: NAME_breakeven_AXIS.nc)")
    b.add_argument("--wrt", help="comma-separated model inputs for sensitivities, besides the other continuous axes "
                                 "(default: hbm_bandwidth_scale,flops_scale,eta_flops,eta_hbm; '' for none)")
    b.add_argument("--samples", type=int, help="bracket samples of the coarse scan (default 16)")
    b.add_argument("--max-steps", type=int, help="refinement steps before giving up (default 40)")
    b.add_argument("--chunk", type=int, default=2048, help="points per chunk (default 2048)")
    b.add_argument("--resume", action="store_true", help="continue an interrupted run")
    b.add_argument("--overwrite", action="store_true", help="replace an existing output")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.add_argument("--float32", action="store_true", help="compute in float32 instead of float64")
    b.set_defaults(run=run)


def run(a) -> None:
    """Solve the surface and print its summary."""
    jax_setup(not a.float32)
    from ..crossover import breakeven, prepare

    wrt = None if a.wrt is None else [w.strip() for w in a.wrt.split(",") if w.strip()]
    for flag, value, cap in (("--samples", a.samples, MAX_SAMPLES), ("--max-steps", a.max_steps, MAX_STEPS)):
        if value is not None and not 1 <= value <= cap:
            raise FrontierError(f"{flag} {value}; it must be between 1 and {cap:,} (the default is "
                                f"{16 if flag == '--samples' else 40})")
    if a.chunk is not None and a.chunk < 1:
        raise FrontierError(f"--chunk {a.chunk}; it must be a positive number of points")
    opts = dict(samples=a.samples, max_steps=a.max_steps, wrt=wrt)
    prob = prepare(a.spec, a.solve_for, **opts)
    if prob.solver.samples > MAX_SAMPLES or prob.solver.max_steps > MAX_STEPS:
        raise FrontierError(f"[breakeven] samples = {prob.solver.samples}, max_steps = {prob.solver.max_steps}; "
                            f"at most {MAX_SAMPLES:,} and {MAX_STEPS:,}: lower them in the spec or with --samples / "
                            "--max-steps")
    out = a.output or f"{prob.spec.name}_breakeven_{prob.solve_for}.nc"
    ds = breakeven(a.spec, a.solve_for, out, chunk=a.chunk, resume=a.resume, overwrite=a.overwrite,
                   progress=not a.quiet, **opts)
    try:
        print(summary(ds, out))
    finally:
        ds.close()


def summary(ds, path: str) -> str:
    """A few lines about a break-even file: timing, outcomes, the roots per hardware."""
    import numpy as np

    from ..solvers import OUTCOMES

    axis = ds.attrs["breakeven_solve_for"]
    units = ds.attrs.get("breakeven_units", "")
    root = ds[f"breakeven_{axis}"]
    outcome = ds["solver_outcome"].values.ravel()
    n = outcome.size
    lines = [f"{n:,} break-even points in {float(ds.attrs['breakeven_seconds']):.1f} s "
             f"({float(ds.attrs['breakeven_points_per_second']):,.0f} points/s, compile "
             f"{float(ds.attrs['breakeven_compile_seconds']):.1f} s) -> {path}",
             "  outcomes: " + ", ".join(f"{r} {np.mean(outcome == i) * 100:.1f}%" for i, r in enumerate(OUTCOMES)
                                        if np.any(outcome == i)),
             f"  mean iterations {float(ds['iterations'].mean()):.1f}, mean evaluations "
             f"{float(ds['evaluations'].mean()):.1f} per point"]
    groups = [(str(h), root.sel(hardware=h)) for h in ds["hardware"].values] if "hardware" in root.dims \
        else [("all", root)]
    for name, r in groups:
        v = r.values.ravel()
        v = v[np.isfinite(v)]
        if v.size:
            lines.append(f"  {name:16s} break-even {axis} at {v.size}/{r.size} points: min {v.min():.4g}, median "
                         f"{np.median(v):.4g}, max {v.max():.4g} {units}")
        else:
            lines.append(f"  {name:16s} no break-even {axis} in the bracket at any of its {r.size} points")
    return "\n".join(lines)

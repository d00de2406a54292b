"""`frontier pareto`: output tokens/s per GPU against tokens/s per user of every configuration, per architecture."""
from __future__ import annotations

from .common import jax_setup


def register(sub) -> None:
    """Add the `pareto` command to the parser's subcommands."""
    p = sub.add_parser("pareto", help="tokens/s per GPU against tokens/s per user over configurations and TPOT "
                                      "bounds (figure and netCDF)")
    p.add_argument("--hardware", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--isl", type=float, required=True, help="input length, tokens")
    p.add_argument("--osl", type=float, required=True, help="output length, tokens")
    p.add_argument("--ttft", type=float, required=True, help="TTFT bound, s")
    p.add_argument("--tpot", type=float, nargs="+", default=[0.015, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2],
                   help="TPOT bounds, s (each sets the load of every configuration)")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--engine", default="current")
    p.add_argument("--price", type=float, help="USD per GPU-hour")
    p.add_argument("-o", "--output", default="pareto.png", help="figure path")
    p.add_argument("--data", help="also write the points to this netCDF path")
    p.set_defaults(run=run)


def run(a) -> None:
    """Compute the Pareto view, draw it, print the fronts."""
    jax_setup()
    import math

    from ..plotting import check_figure_path, plot_pareto
    from ..planning import pareto
    check_figure_path(a.output)
    ds = pareto(a.hardware, a.model, a.isl, a.osl, a.ttft, tuple(a.tpot), precision=a.precision, engine=a.engine,
                price=a.price)
    plot_pareto(ds).savefig(a.output, dpi=120, bbox_inches="tight")
    if a.data:
        ds.to_netcdf(a.data)
    for arch in ds["arch"].values:
        d = ds.sel(arch=arch)
        on = d["on_front"].values.astype(bool)
        pts = sorted({(round(float(u), 1), round(float(g), 1), float(p), float(q)) for u, g, p, q in zip(
            d["tokens_per_user"].values[on], d["throughput"].values[on], d["tp_prefill"].values[on],
            d["tp_decode"].values[on])})
        print(f"{arch}: " + "; ".join(f"{u:.0f} tok/s/user -> {g:.0f} tok/s/GPU (TP {p:g}/{q:g})"
                                      for u, g, p, q in pts if math.isfinite(g)))
    print(a.output)

"""Every figure of frontier-jax, in one palette (matplotlib's object-oriented API: `Figure` objects, no pyplot
state, no backend change).

- `plot_sweep`: the cheapest architecture (`best_arch`) of a sweep file as a map over two axes, one panel per GPU.
- `plot_breakeven`: the break-even value of the solved axis against one other axis, one panel per GPU, with the
  winning architecture shaded below and above the curve (`arch_below`, `arch_above`); kinks are open circles, and
  a triangle marks points with further sign changes above the (lowest) root, where the shading above holds only up
  to the next one.
- `plot_seed`: the seed paper's evidence (`papers.report.seed_evidence`): the cheapest architecture over input_len
  and output_len, one row per contract, one column per GPU.
- `plot_frontier`: the papers' common frame (`papers.frontier.common_frame`): the winning system per contract
  (TPOT bound on x, TTFT bound on y) with the frontier cost as contours, one row per workload, one column per GPU.
- `plot_file`: a sweep or break-even netCDF file to a PNG (`frontier plot`).

Conventions of every figure: one colour per architecture (`ARCH_COLORS`, grey where none is feasible) and per
system of the papers registry (`SYSTEM_COLORS`: each in its architecture's colour, the three disaggregated systems
in shades of it; `system_colors` gives other systems further distinct colours); length maps put input_len on x and
output_len on y; log-spaced coordinates get log axes; axis labels carry the units of the variables' `units`
attributes, made readable by `units_text`.
"""
from __future__ import annotations

import colorsys
import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap, to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .costmodel.types import ARCHS, NO_ARCH, Arch
from .errors import FrontierError
from .variables import USD_PER_MTOK


# ---- the palette: every colour of every figure is defined here ----
def _mix(color: str, other: str, t: float) -> str:
    """`color` moved a fraction t of the way to `other`."""
    return to_hex((1.0 - t) * np.asarray(to_rgb(color)) + t * np.asarray(to_rgb(other)))


TITLE_SIZE, SUPTITLE_SIZE = 9, 10  # points: panel titles, figure titles
NONE_COLOR = "#d9d9d9"  # no architecture / no system meets the contract
ARCH_COLORS: dict[int, str] = {
    NO_ARCH: NONE_COLOR,
    int(Arch.COLOCATED): "#4c72b0",      # blue
    int(Arch.CHUNKED): "#dd8452",        # orange
    int(Arch.DISAGGREGATED): "#55a868",  # green
}
ARCH_LABELS: dict[int, str] = {NO_ARCH: "none feasible", **{int(a): ARCHS[a] for a in Arch}}
_DIS = ARCH_COLORS[int(Arch.DISAGGREGATED)]
# The systems of the papers registry (papers/registry.py), each in its architecture's colour.
SYSTEM_COLORS: dict[str, str] = {
    "vllm": ARCH_COLORS[int(Arch.COLOCATED)],
    "sarathi-serve": ARCH_COLORS[int(Arch.CHUNKED)],
    "distserve": _DIS,
    "splitwise": _mix(_DIS, "black", 0.45),
    "mooncake": _mix(_DIS, "white", 0.5),
}
# Systems registered by the user: hues away from blue, orange, green and grey.
EXTRA_COLORS = ("#8172b3", "#c44e52", "#937860", "#da8bc3", "#ccb974", "#64b5cd")


def system_colors(systems: Sequence[str]) -> dict[str, str]:
    """The colour of each system: SYSTEM_COLORS for the registry's own, then EXTRA_COLORS (then further hues) for
    the others in the order given."""
    others = [s for s in dict.fromkeys(systems) if s not in SYSTEM_COLORS]
    return {s: SYSTEM_COLORS[s] if s in SYSTEM_COLORS else _extra_color(others.index(s)) for s in systems}


def _extra_color(k: int) -> str:
    if k < len(EXTRA_COLORS):
        return EXTRA_COLORS[k]
    return to_hex(colorsys.hsv_to_rgb((0.83 + 0.618 * k) % 1.0, 0.55, 0.72))  # golden-ratio steps of hue


def _category_cmap(colors: Sequence[str]):
    """Colormap and norm for integer codes -1 (none feasible, grey), 0, 1, ... in `colors`."""
    cmap = ListedColormap([NONE_COLOR] + list(colors))
    return cmap, BoundaryNorm(np.arange(-1.5, len(colors)), cmap.N)


def _arch_cmap():
    return _category_cmap([ARCH_COLORS[int(a)] for a in Arch])


def _arch_legend(fig, extra=()):
    codes = [int(a) for a in Arch] + [NO_ARCH]
    _legend(fig, [Patch(color=ARCH_COLORS[k], label=ARCH_LABELS[k]) for k in codes] + list(extra))


def _legend(fig, handles):
    """One legend below the panels, in as many columns as the figure's width holds (labels at 8 pt)."""
    widths = [0.5 + 0.075 * len(h.get_label()) for h in handles]  # inches

    def width(ncol):  # matplotlib fills columns first, the first n % ncol of them one entry longer
        rows, long = divmod(len(handles), ncol)
        sizes = [rows + 1] * long + [rows] * (ncol - long)
        starts = np.cumsum([0] + sizes)
        return sum(max(widths[a:b]) for a, b in zip(starts[:-1], starts[1:]) if b > a)
    ncol = next((k for k in range(len(handles), 1, -1) if width(k) <= fig.get_figwidth()), 1)
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, frameon=False, fontsize=8)


# ---- units and labels ----
HUMAN_UNITS = {USD_PER_MTOK: "USD per 1e6 tokens", "s-1": "1/s", "byte s-1": "byte/s"}


def units_text(units: str | None, long_name: str = "") -> str:
    """Readable units for a label from a UDUNITS string ("" for a pure number; "tokens" for a dimensionless length
    whose long_name says it is counted in tokens)."""
    if units in (None, "", "1"):
        return "tokens" if "in tokens" in long_name else ""
    return HUMAN_UNITS.get(units, units)


def _units(ds, name) -> str:
    attrs = ds[name].attrs if name in ds.variables else {}
    return units_text(attrs.get("units"), attrs.get("long_name", ""))


def axis_label(ds, name: str) -> str:
    """`name [units]` of a variable or coordinate of `ds` (just the name for a pure number)."""
    u = _units(ds, name)
    return f"{name} [{u}]" if u else name


def _quantity(ds, name, value) -> str:
    u = _units(ds, name)
    return f"{_fmt(value)} {u}" if u else _fmt(value)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)


# ---- axes ----
def _is_log(values) -> bool:
    """Log-spaced: positive and more evenly spaced in log than linearly (two values: 3x apart or more, where
    linear cells would reach below zero)."""
    v = np.unique(np.asarray(values, float))
    if v.size < 2 or v[0] <= 0:
        return False
    if v.size == 2:
        return bool(v[1] / v[0] >= 3)
    dlog, dlin = np.diff(np.log(v)), np.diff(v)
    return bool(np.ptp(dlog) / dlog.mean() < np.ptp(dlin) / dlin.mean())


def _edges(values, log: bool):
    v = np.asarray(values, float)
    if v.size == 1:
        return np.array([v[0] * 0.9, v[0] * 1.1]) if log else np.array([v[0] - 0.5, v[0] + 0.5])
    t = np.log(v) if log else v
    mid = 0.5 * (t[1:] + t[:-1])
    e = np.concatenate([[t[0] - (mid[0] - t[0])], mid, [t[-1] + (t[-1] - mid[-1])]])
    return np.exp(e) if log else e


def _mesh(ax, xv, yv, z, cmap, norm, xlog=None, ylog=None):
    """Cells of codes z (rows over y, columns over x) centred on xv, yv; log axes for log-spaced coordinates."""
    xlog = _is_log(xv) if xlog is None else xlog
    ylog = _is_log(yv) if ylog is None else ylog
    xe, ye = _edges(xv, xlog), _edges(yv, ylog)
    ax.pcolormesh(xe, ye, np.asarray(z, float), cmap=cmap, norm=norm)
    ax.set_xscale("log" if xlog else "linear")
    ax.set_yscale("log" if ylog else "linear")
    if xlog:
        _log_ticks(ax.xaxis, xe)
    if ylog:
        _log_ticks(ax.yaxis, ye)


def _log_ticks(axis, edges):
    """Ticks of a log axis at the powers of ten, and at 2 and 5 times them where it spans under two decades
    (matplotlib would label crowded minor ticks there); plain numbers from 0.001 to 99999."""
    axis.set_minor_formatter(NullFormatter())
    axis.set_major_formatter(FuncFormatter(_tick))
    if np.log10(np.max(edges) / np.min(edges)) < 2:
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))


def _tick(v, _pos=None) -> str:
    if 1e-3 <= v < 1e5:
        return f"{v:g}"
    mantissa, exponent = f"{v:.0e}".split("e")
    return f"$10^{{{int(exponent)}}}$" if mantissa == "1" else f"${mantissa}\\times10^{{{int(exponent)}}}$"


def _grid(rows: int, cols: int, width: float, height: float, share: bool = False):
    fig = Figure(figsize=(width * cols, height * rows + 0.6), layout="constrained")
    axs = fig.subplots(rows, cols, squeeze=False, sharex=share, sharey=share)
    return fig, axs


def _wrapped(n: int, width: float = 4.2, height: float = 3.4):
    """n panels in rows of at most three."""
    cols = min(n, 3)
    fig, axs = _grid(int(np.ceil(n / cols)), cols, width, height)
    axs = axs.ravel()
    for ax in axs[n:]:
        ax.set_visible(False)
    return fig, axs[:n]


# ---- files (`frontier plot`) ----
def plot_file(path: str, out: str | None = None, *, x: str | None = None, y: str | None = None,
              facet: str | None = None, sel: Mapping[str, str] | None = None) -> str:
    """Plot a sweep or break-even netCDF file to `out` (default: the file name with .png); returns the path."""
    import xarray as xr

    if str(path).lower().endswith(".toml"):
        raise FrontierError(f"{path!r} is a spec, not a result: run `frontier sweep {path} -o RESULT.nc`, then "
                            "`frontier plot RESULT.nc`")
    out = out or os.path.splitext(path)[0] + ".png"
    check_figure_path(out)
    if x is not None and facet is not None and x == facet:
        raise FrontierError(f"--facet {facet!r} is also --x; choose another axis to facet by (or --facet none)")
    try:
        ds = xr.open_dataset(path)
    except Exception as e:  # noqa: BLE001 - any reader error is a file that is not ours
        raise FrontierError(f"{path!r} is not a netCDF file written by frontier ({type(e).__name__}); pass the .nc "
                            "file of `frontier sweep` or `frontier breakeven`") from None
    with ds:
        if "breakeven_solve_for" in ds.attrs:
            fig = plot_breakeven(ds, x=x, facet=facet, sel=sel)
        elif "best_arch" in ds:
            fig = plot_sweep(ds, x=x, y=y, facet=facet, sel=sel)
        else:
            raise FrontierError(f"{path!r} is neither a sweep file (best_arch) nor a break-even file")
    try:
        fig.savefig(out, dpi=120, bbox_inches="tight")
    except OSError as e:
        if os.path.exists(out):
            os.remove(out)
        raise FrontierError(f"cannot write {out!r} ({e.strerror or e}); choose another -o path") from None
    plot_file.notes = getattr(fig, "frontier_notes", [])
    return out


plot_file.notes = []  # the axes the last plot_file fixed ("AXIS=VALUE (first value)"), for the CLI to report


FIGURE_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp", "pgf", "raw", "rgba",
                  "svgz")


def check_figure_path(out: str) -> None:
    """FrontierError unless `out` names a figure format matplotlib writes, in an existing, writable folder."""
    ext = os.path.splitext(out)[1].lstrip(".").lower()
    if ext not in FIGURE_FORMATS:
        raise FrontierError(f"-o {out!r}: unknown figure format {ext or '(none)'!r}; end it in .png, .pdf or .svg")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise FrontierError(f"-o {out!r}: folder {folder!r} does not exist; create it first")
    if not os.access(folder, os.W_OK) or folder.startswith("/proc"):
        raise FrontierError(f"-o {out!r}: folder {folder!r} is not writable; choose another -o path")


def _continuous(da) -> list[str]:
    return [d for d in da.dims if d in da.coords and np.issubdtype(da[d].dtype, np.number) and da.sizes[d] > 1]


def _facet(da, facet):
    if facet in (None, ""):
        return "hardware" if "hardware" in da.dims else None
    if facet.lower() == "none":
        return None
    if facet not in da.dims:
        raise FrontierError(f"--facet {facet!r} is not an axis of the file; axes: {', '.join(da.dims)}")
    return facet


def _select(ds, keep: list[str], sel: Mapping[str, str] | None):
    """Fix every dimension not in `keep`: at the --sel value (nearest for numbers) or at its first value."""
    from .hints import closest
    sel = dict(sel or {})
    notes = []
    for k in sel:
        if k not in ds.dims:
            near = closest(k, [d for d in ds.dims if d != "arch"])
            raise FrontierError(f"--sel {k}: not an axis of the file" + (f"; did you mean {near[0]!r}?" if near
                                else f"; axes: {', '.join(ds.dims)}"))
        if k in keep:
            raise FrontierError(f"--sel {k}: it is plotted; fix another axis")
    for d in list(ds.dims):
        if d in keep or d == "arch":
            continue
        if d in sel:
            coord = ds[d]
            if np.issubdtype(coord.dtype, np.number):
                try:
                    value = float(sel[d])
                except ValueError:
                    raise FrontierError(f"--sel {d}={sel[d]}: write a plain number in {d}'s units "
                                        f"({_units(ds, d) or '1'}), e.g. {d}={_fmt(coord.values[0])}") from None
                if not np.isfinite(value):
                    raise FrontierError(f"--sel {d}={sel[d]}: write a finite number; {d} runs from "
                                        f"{_fmt(coord.values.min())} to {_fmt(coord.values.max())}")
                ds = ds.sel({d: value}, method="nearest")
            else:
                if sel[d] not in [str(v) for v in coord.values]:
                    raise FrontierError(f"--sel {d}={sel[d]}: not a value of {d}; values: "
                                        f"{', '.join(str(v) for v in coord.values)}")
                ds = ds.sel({d: sel[d]})
            notes.append(f"{d}={_quantity(ds, d, ds[d].values.item())}")
        else:
            ds = ds.isel({d: 0})
            notes.append(f"{d}={_quantity(ds, d, ds[d].values.item())} (first value; --sel {d}=VALUE to choose)")
    return ds, notes


def plot_sweep(ds, *, x=None, y=None, facet=None, sel=None) -> Figure:
    """best_arch over (x, y), one panel per value of `facet` (default x, y: the first two continuous axes)."""
    from .hints import closest
    da = ds["best_arch"]
    for name, flag in ((x, "--x"), (y, "--y"), (facet, "--facet")):
        if name not in (None, "", "none") and name not in da.dims:
            near = closest(name, list(da.dims))
            raise FrontierError(f"{flag} {name!r}: not an axis of the file" + (
                f"; did you mean {near[0]!r}?" if near else f"; axes: {', '.join(da.dims)}"))
    for name, flag in ((x, "--x"), (y, "--y")):
        if name is not None and not np.issubdtype(ds[name].dtype, np.number):
            raise FrontierError(f"{flag} {name!r} is categorical; put it in --facet (or --sel {name}=VALUE) and plot "
                                "a numeric axis")
    facet = _facet(da, facet)
    if facet is not None and facet in (x, y):
        raise FrontierError(f"--facet {facet!r} is also plotted on an axis; facet by another axis (or --facet none)")
    cont = [d for d in _continuous(da) if d != facet and d not in (sel or {})]
    if x is None and y is None and cont[:2] == ["output_len", "input_len"]:
        cont[:2] = ["input_len", "output_len"]  # length maps: input_len on x in every figure
    x = x or (cont[0] if cont else None)
    y = y or next((d for d in cont if d != x), None)
    if x is not None and y is None:
        return plot_sweep_lines(ds, x=x, facet=facet, sel=sel)
    for name, flag in ((x, "--x"), (y, "--y")):
        if name is None or name not in da.dims:
            raise FrontierError(f"{flag} {name!r}: need two axes to map; axes: {', '.join(da.dims)}")
    if x == y:
        raise FrontierError("--x and --y must differ")
    keep = [d for d in (facet, x, y) if d]
    sub, notes = _select(ds[["best_arch"]], keep, sel)
    facets = list(sub[facet].values) if facet else [None]
    fig, axs = _wrapped(len(facets))
    cmap, norm = _arch_cmap()
    for ax, fv in zip(axs, facets):
        panel = sub["best_arch"].sel({facet: fv}) if facet else sub["best_arch"]
        _mesh(ax, sub[x].values, sub[y].values, panel.transpose(y, x).values, cmap, norm)
        ax.set_xlabel(axis_label(ds, x))
        ax.set_ylabel(axis_label(ds, y))
        ax.set_title(str(fv) if fv is not None else ds.attrs.get("sweep_name", ""), fontsize=TITLE_SIZE)
    fig.suptitle(ds.attrs.get("title", "") + ("\n" + ", ".join(notes) if notes else ""), fontsize=SUPTITLE_SIZE)
    _arch_legend(fig)
    fig.frontier_notes = [n for n in notes if "first value" in n]
    return fig


def plot_sweep_lines(ds, *, x, facet=None, sel=None) -> Figure:
    """A sweep with one axis to plot: cost per SLO-compliant output token against `x`, one line per architecture
    (log axes for log-spaced x), one panel per value of `facet`."""
    keep = [d for d in (facet, x) if d]
    sub, notes = _select(ds[["cost_per_mtok"]], keep, sel)
    facets = list(sub[facet].values) if facet else [None]
    fig, axs = _wrapped(len(facets))
    xv = sub[x].values
    for ax, fv in zip(axs, facets):
        panel = sub["cost_per_mtok"].sel({facet: fv}) if facet else sub["cost_per_mtok"]
        for a in Arch:
            ax.plot(xv, panel.isel(arch=int(a)).values, color=ARCH_COLORS[int(a)], label=ARCH_LABELS[int(a)],
                    marker="o" if len(xv) < 12 else None, ms=3)
        if _is_log(xv):
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(axis_label(ds, x))
        ax.set_ylabel(axis_label(ds, "cost_per_mtok"))
        ax.set_title(str(fv) if fv is not None else ds.attrs.get("sweep_name", ""), fontsize=TITLE_SIZE)
    fig.suptitle(ds.attrs.get("title", "") + ("\n" + ", ".join(notes) if notes else ""), fontsize=SUPTITLE_SIZE)
    axs[0].legend(fontsize=7)
    fig.frontier_notes = [n for n in notes if "first value" in n]
    return fig


def plot_pareto(ds) -> Figure:
    """planning.pareto's dataset: output tokens/s per GPU against tokens/s per user, every configuration and TPOT
    bound as a dot, each architecture's Pareto front as a line."""
    fig, axs = _grid(1, 1, 5.2, 3.8)
    ax = np.ravel(axs)[0]
    for a in Arch:
        x = ds["tokens_per_user"].isel(arch=int(a)).values.ravel()
        y = ds["throughput"].isel(arch=int(a)).values.ravel()
        front = ds["on_front"].isel(arch=int(a)).values.ravel().astype(bool)
        c = ARCH_COLORS[int(a)]
        ax.scatter(x, y, s=8, color=c, alpha=0.35)
        order = np.argsort(x[front])
        ax.plot(x[front][order], y[front][order], color=c, marker="o", ms=3, label=ARCH_LABELS[int(a)])
    ax.set_xlabel("output tokens/s per user (1 / TPOT) [s-1]")
    ax.set_ylabel("output tokens/s per GPU [s-1]")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    t = ds.attrs
    ax.set_title(f"{t.get('model', '')} on {t.get('hardware', '')}: Pareto fronts over configurations and TPOT "
                 "bounds", fontsize=TITLE_SIZE)
    return fig


def plot_breakeven(ds, *, x=None, facet=None, sel=None, y_samples: int = 240) -> Figure:
    """The break-even curve of the solved axis against `x`, the winner shaded on each side, per facet."""
    from .solvers import CONVERGED, KINK

    axis = ds.attrs["breakeven_solve_for"]
    root_name = f"breakeven_{axis}"
    da = ds[root_name]
    facet = _facet(da, facet)
    cont = [d for d in _continuous(da) if d != facet and d not in (sel or {})]
    if x is None:
        x = cont[0] if cont else next((d for d in da.dims if d != facet), None)
    if x is not None and x not in da.dims:
        raise FrontierError(f"--x {x!r} is not an axis of the file; axes: {', '.join(da.dims)}")
    keep = [d for d in (facet, x) if d]
    sub, notes = _select(ds[[root_name, "arch_below", "arch_above", "solver_outcome", "n_crossings"]], keep, sel)
    lo, hi = (float(v) for v in np.atleast_1d(ds.attrs["breakeven_bracket"]))
    ylog = ds.attrs.get("breakeven_variable") == "log"
    ys = np.geomspace(lo, hi, y_samples) if ylog else np.linspace(lo, hi, y_samples)
    numeric_x = x is not None and np.issubdtype(sub[x].dtype, np.number)
    xv = sub[x].values if x is not None else np.array([0])
    xpos = xv.astype(float) if numeric_x else np.arange(len(xv), dtype=float)
    xlog = numeric_x and _is_log(xpos)
    root_units = units_text(ds[root_name].attrs.get("units", ds.attrs.get("breakeven_units")))
    facets = list(sub[facet].values) if facet else [None]
    fig, axs = _wrapped(len(facets))
    cmap, norm = _arch_cmap()
    for ax, fv in zip(axs, facets):
        p = sub.sel({facet: fv}) if facet else sub
        if x is None:
            p = p.expand_dims("_x")
        xdim = x or "_x"
        root = p[root_name].transpose(xdim).values
        below = p["arch_below"].transpose(xdim).values.astype(float)
        above = p["arch_above"].transpose(xdim).values.astype(float)
        outcome = p["solver_outcome"].transpose(xdim).values
        more = p["n_crossings"].transpose(xdim).values > 1
        located = np.isfinite(root)
        none_color = np.where(below == above, below, float(NO_ARCH))
        z = np.where(located[None, :], np.where(ys[:, None] < root[None, :], below[None, :], above[None, :]),
                     none_color[None, :])
        _mesh(ax, xpos, ys, z, cmap, norm, xlog=xlog, ylog=ylog)
        ax.plot(xpos, root, color="k", lw=1.2)
        smooth, kink = outcome == CONVERGED, outcome == KINK
        ax.plot(xpos[smooth], root[smooth], "o", color="k", ms=3)
        ax.plot(xpos[kink], root[kink], "o", mfc="none", mec="k", ms=6)
        ax.plot(xpos[more & located], root[more & located], "^", color="k", ms=7, mfc="w")
        ax.set_ylim(lo, hi)
        if x is not None and not numeric_x:
            ax.set_xticks(xpos, [str(v) for v in xv], rotation=30)
        ax.set_xlabel(axis_label(ds, x) if x else "")
        ax.set_ylabel(f"{axis} [{root_units}]" if root_units else axis)
        ax.set_title(str(fv) if fv is not None else "", fontsize=TITLE_SIZE)
    fig.suptitle(ds.attrs.get("title", "") + f"\nbreak-even {axis}" + (" (" + ", ".join(notes) + ")" if notes else ""),
                 fontsize=SUPTITLE_SIZE)
    _arch_legend(fig, [Line2D([], [], color="k", marker="o", ms=3, label="break-even (smooth)"),
                       Line2D([], [], color="k", marker="o", mfc="none", ms=6, lw=0, label="kink"),
                       Line2D([], [], color="k", marker="^", mfc="w", ms=7, lw=0,
                              label="more crossings above (shading valid to the next one)")])
    return fig


# ---- the papers' report (frontier_jax.papers) ----
def plot_seed(ds) -> Figure:
    """The cheapest architecture over input_len (x) and output_len (y), one row per contract, one column per GPU
    (`ds` from papers.report.seed_evidence)."""
    hws, cs = list(ds["hardware"].values), list(ds["contract"].values)
    fig, axes = _grid(len(cs), len(hws), 3.6, 3.1, share=True)
    cmap, norm = _arch_cmap()
    for r, c in enumerate(cs):
        for k, hw in enumerate(hws):
            ax = axes[r, k]
            best = ds["best_arch"].sel(hardware=hw, contract=c)
            _mesh(ax, ds["input_len"].values, ds["output_len"].values, best.transpose("output_len", "input_len").values,
                  cmap, norm)
            ax.set_title(f"{hw} | {c}", fontsize=TITLE_SIZE)
            if r == len(cs) - 1:
                ax.set_xlabel(axis_label(ds, "input_len"))
            if k == 0:
                ax.set_ylabel(axis_label(ds, "output_len"))
    contracts = ds["contract"].attrs.get("long_name", "")
    fig.suptitle(f"Cheapest architecture ({ds.attrs.get('model', '')}, engine {ds.attrs.get('engine', '')})"
                 + (f"\n{contracts}" if contracts else ""), fontsize=SUPTITLE_SIZE)
    _arch_legend(fig)
    return fig


def plot_frontier(ds, workloads: Sequence[str] | None = None, hardware: Sequence[str] | None = None) -> Figure:
    """One panel per (workload, GPU): the frontier's winning system as colour, TPOT bound on x and TTFT bound on y,
    the frontier cost as labelled contours (`ds` from papers.frontier.common_frame)."""
    wls = list(workloads if workloads is not None else ds["workload"].values)
    hws = list(hardware if hardware is not None else ds["hardware"].values)
    systems = [str(s) for s in ds["system"].values]
    colors = system_colors(systems)
    cmap, norm = _category_cmap([colors[s] for s in systems])
    fig, axes = _grid(len(wls), len(hws), 3.8, 3.2, share=True)
    x, y = ds["tpot"].values, ds["ttft"].values
    for r, w in enumerate(wls):
        for c, hw in enumerate(hws):
            ax = axes[r, c]
            panel = ds.sel(workload=w, hardware=hw)
            _mesh(ax, x, y, panel["winner"].transpose("ttft", "tpot").values, cmap, norm)
            cost = panel["frontier_cost"].transpose("ttft", "tpot").values
            if np.sum(np.isfinite(cost)) >= 4 and len(x) > 1 and len(y) > 1:
                levels = np.unique([float(f"{v:.2g}") for v in np.geomspace(np.nanmin(cost), np.nanmax(cost), 6)])
                if len(levels) > 1:
                    cs = ax.contour(x, y, cost, levels=levels, colors="k", linewidths=0.7)
                    ax.clabel(cs, fmt="%.3g", fontsize=6)
            ax.set_title(f"{hw} | {w}\ninput {_quantity(ds, 'input_len', float(panel['input_len']))}, "
                         f"output {_quantity(ds, 'output_len', float(panel['output_len']))}", fontsize=TITLE_SIZE)
            if r == len(wls) - 1:
                ax.set_xlabel(axis_label(ds, "tpot"))
            if c == 0:
                ax.set_ylabel(axis_label(ds, "ttft"))
    archs = [str(a) for a in ds["system_arch"].values] if "system_arch" in ds.coords else [""] * len(systems)
    _legend(fig, [Patch(color=colors[s], label=f"{s} ({a})" if a else s) for s, a in zip(systems, archs)]
            + [Patch(color=NONE_COLOR, label=ARCH_LABELS[NO_ARCH])])
    pct = ds.attrs.get("percentile")
    fig.suptitle(f"Cost frontier ({ds.attrs.get('model', '')}, engine {ds.attrs.get('engine', '')}): winning system "
                 f"by {'p%g ' % (pct * 100) if pct is not None else ''}contract\ncontours: frontier_cost "
                 f"[{_units(ds, 'frontier_cost')}]", fontsize=SUPTITLE_SIZE)
    return fig

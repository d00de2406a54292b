"""Figures from sweep and break-even files (matplotlib, object-oriented API: no pyplot state, no backend change).

- A sweep file: the cheapest architecture (`best_arch`) as a map over two axes, one panel per GPU.
- A break-even file: the break-even value of the solved axis against one other axis, one panel per GPU, with the
  winning architecture shaded below and above the curve (`arch_below`, `arch_above`); kinks are open circles, and
  a triangle marks points with further sign changes above the (lowest) root, where the shading above holds only up
  to the next one.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from .errors import FrontierError
from .costmodel.types import ARCHS

ARCH_COLORS = {-1: "#d9d9d9", 0: "#4c72b0", 1: "#55a868", 2: "#c44e52"}
ARCH_LABELS = {-1: "none feasible", 0: ARCHS[0], 1: ARCHS[1], 2: ARCHS[2]}


def plot_file(path: str, out: str | None = None, *, x: str | None = None, y: str | None = None,
              facet: str | None = None, sel: Mapping[str, str] | None = None) -> str:
    """Plot a sweep or break-even netCDF file to `out` (default: the file name with .png); returns the path."""
    import xarray as xr

    out = out or os.path.splitext(path)[0] + ".png"
    with xr.open_dataset(path) as ds:
        if "breakeven_solve_for" in ds.attrs:
            fig = plot_breakeven(ds, x=x, facet=facet, sel=sel)
        elif "best_arch" in ds:
            fig = plot_sweep(ds, x=x, y=y, facet=facet, sel=sel)
        else:
            raise FrontierError(f"{path!r} is neither a sweep file (best_arch) nor a break-even file")
    fig.savefig(out, dpi=120, bbox_inches="tight")
    return out


# ---- helpers ----
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
    sel = dict(sel or {})
    notes = []
    for k in sel:
        if k not in ds.dims:
            raise FrontierError(f"--sel {k}: not an axis of the file; axes: {', '.join(ds.dims)}")
        if k in keep:
            raise FrontierError(f"--sel {k}: it is plotted; fix another axis")
    for d in list(ds.dims):
        if d in keep or d == "arch":
            continue
        if d in sel:
            coord = ds[d]
            if np.issubdtype(coord.dtype, np.number):
                ds = ds.sel({d: float(sel[d])}, method="nearest")
            else:
                if sel[d] not in [str(v) for v in coord.values]:
                    raise FrontierError(f"--sel {d}={sel[d]}: not a value of {d}; values: "
                                        f"{', '.join(str(v) for v in coord.values)}")
                ds = ds.sel({d: sel[d]})
        else:
            ds = ds.isel({d: 0})
        notes.append(f"{d}={_fmt(ds[d].values.item())}")
    return ds, notes


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)


def _is_log(values) -> bool:
    v = np.asarray(values, float)
    return bool(v.size > 1 and np.all(v > 0) and v.max() / v.min() > 20)


def _edges(values, log: bool):
    v = np.asarray(values, float)
    if v.size == 1:
        return np.array([v[0] * 0.9, v[0] * 1.1]) if log else np.array([v[0] - 0.5, v[0] + 0.5])
    t = np.log(v) if log else v
    mid = 0.5 * (t[1:] + t[:-1])
    e = np.concatenate([[t[0] - (mid[0] - t[0])], mid, [t[-1] + (t[-1] - mid[-1])]])
    return np.exp(e) if log else e


def _axes_grid(n: int, width: float = 4.2, height: float = 3.4):
    from matplotlib.figure import Figure

    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(width * cols, height * rows), constrained_layout=True)
    axs = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axs[n:]:
        ax.set_visible(False)
    return fig, axs[:n]


def _arch_cmap():
    from matplotlib.colors import BoundaryNorm, ListedColormap

    cmap = ListedColormap([ARCH_COLORS[k] for k in (-1, 0, 1, 2)])
    return cmap, BoundaryNorm([-1.5, -0.5, 0.5, 1.5, 2.5], cmap.N)


def _legend(fig, extra=()):
    from matplotlib.patches import Patch

    handles = [Patch(color=ARCH_COLORS[k], label=ARCH_LABELS[k]) for k in (0, 1, 2, -1)] + list(extra)
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)


def _label(ds, name):
    units = ds[name].attrs.get("units", "") if name in ds.variables else ""
    return f"{name} [{units}]" if units and units != "1" else name


# ---- sweep files ----
def plot_sweep(ds, *, x=None, y=None, facet=None, sel=None):
    """best_arch over (x, y), one panel per value of `facet`."""
    da = ds["best_arch"]
    facet = _facet(da, facet)
    cont = [d for d in _continuous(da) if d != facet and d not in (sel or {})]
    x = x or (cont[0] if cont else None)
    y = y or next((d for d in cont if d != x), None)
    for name, flag in ((x, "--x"), (y, "--y")):
        if name is None or name not in da.dims:
            raise FrontierError(f"{flag} {name!r}: need two axes to map; axes: {', '.join(da.dims)}")
    if x == y:
        raise FrontierError("--x and --y must differ")
    keep = [d for d in (facet, x, y) if d]
    sub, notes = _select(ds[["best_arch"]], keep, sel)
    facets = list(sub[facet].values) if facet else [None]
    fig, axs = _axes_grid(len(facets))
    cmap, norm = _arch_cmap()
    xlog, ylog = _is_log(sub[x].values), _is_log(sub[y].values)
    for ax, fv in zip(axs, facets):
        panel = sub["best_arch"].sel({facet: fv}) if facet else sub["best_arch"]
        z = panel.transpose(y, x).values.astype(float)
        ax.pcolormesh(_edges(sub[x].values, xlog), _edges(sub[y].values, ylog), z, cmap=cmap, norm=norm)
        ax.set_xscale("log" if xlog else "linear")
        ax.set_yscale("log" if ylog else "linear")
        ax.set_xlabel(_label(ds, x))
        ax.set_ylabel(_label(ds, y))
        ax.set_title(str(fv) if fv is not None else ds.attrs.get("sweep_name", ""))
    fig.suptitle(ds.attrs.get("title", "") + ("\n" + ", ".join(notes) if notes else ""), fontsize=10)
    _legend(fig)
    return fig


# ---- break-even files ----
def plot_breakeven(ds, *, x=None, facet=None, sel=None, y_samples: int = 240):
    """The break-even curve of the solved axis against `x`, the winner shaded on each side, per facet."""
    from matplotlib.lines import Line2D

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
    facets = list(sub[facet].values) if facet else [None]
    fig, axs = _axes_grid(len(facets))
    cmap, norm = _arch_cmap()
    from frontier_jax.solvers import CONVERGED, KINK

    for ax, fv in zip(axs, facets):
        p = sub.sel({facet: fv}) if facet else sub
        if x is None:
            p = p.expand_dims("_x")
            xdim = "_x"
        else:
            xdim = x
        root = p[root_name].transpose(xdim).values
        below = p["arch_below"].transpose(xdim).values.astype(float)
        above = p["arch_above"].transpose(xdim).values.astype(float)
        outcome = p["solver_outcome"].transpose(xdim).values
        more = p["n_crossings"].transpose(xdim).values > 1
        located = np.isfinite(root)
        none_color = np.where(below == above, below, -1.0)
        z = np.where(located[None, :], np.where(ys[:, None] < root[None, :], below[None, :], above[None, :]),
                     none_color[None, :])
        ax.pcolormesh(_edges(xpos, xlog), _edges(ys, ylog), z, cmap=cmap, norm=norm)
        ax.plot(xpos, root, color="k", lw=1.2)
        smooth, kink = outcome == CONVERGED, outcome == KINK
        ax.plot(xpos[smooth], root[smooth], "o", color="k", ms=3)
        ax.plot(xpos[kink], root[kink], "o", mfc="none", mec="k", ms=6)
        ax.plot(xpos[more & located], root[more & located], "^", color="k", ms=7, mfc="w")
        ax.set_xscale("log" if xlog else "linear")
        ax.set_yscale("log" if ylog else "linear")
        ax.set_ylim(lo, hi)
        if x is not None and not numeric_x:
            ax.set_xticks(xpos, [str(v) for v in xv], rotation=30)
        ax.set_xlabel(_label(ds, x) if x else "")
        ax.set_ylabel(f"break-even {axis} [{ds.attrs.get('breakeven_units', '')}]")
        ax.set_title(str(fv) if fv is not None else "")
    fig.suptitle(ds.attrs.get("title", "") + f"\nbreak-even {axis}" + (" (" + ", ".join(notes) + ")" if notes else ""),
                 fontsize=10)
    extra = [Line2D([], [], color="k", marker="o", ms=3, label="break-even (smooth)"),
             Line2D([], [], color="k", marker="o", mfc="none", ms=6, lw=0, label="kink"),
             Line2D([], [], color="k", marker="^", mfc="w", ms=7, lw=0,
                    label="more crossings above (shading valid to the next one)")]
    _legend(fig, extra)
    return fig

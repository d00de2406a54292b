"""Figures: one palette across the sweep map, the break-even surface, the seed map and the frontier figure; length
maps with input_len on x; units in the labels; PNGs from small hand-built datasets (no cost-model runs)."""
import colorsys
import inspect
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from matplotlib.colors import to_hex, to_rgb
from matplotlib.patches import Patch

import frontier_jax
from frontier_jax import plotting
from frontier_jax.costmodel.types import ARCHS, NO_ARCH, Arch
from frontier_jax.papers.registry import SYSTEMS
from frontier_jax.variables import POINT, USD_PER_MTOK, frontier_variables

HW = ["a100-80gb-sxm", "h100-80gb-sxm"]
INPUT = np.array([128.0, 512.0, 2048.0, 8192.0, 32768.0])
OUTPUT = np.array([32.0, 256.0, 2048.0])
LEN_ATTRS = {"input_len": {"units": "1", "long_name": "mean input (prompt) length in tokens"},
             "output_len": {"units": "1", "long_name": "mean output length in tokens"}}
CODES = [NO_ARCH] + [int(a) for a in Arch]


def _codes(shape, seed=0):
    """Arch codes -1..2 in a fixed pattern that uses every code."""
    return (np.arange(int(np.prod(shape))).reshape(shape) * 7 + seed) % 4 - 1


@pytest.fixture
def sweep_ds():
    best = _codes((len(HW), len(INPUT), len(OUTPUT))).astype(np.int8)
    return xr.Dataset({"best_arch": (("hardware", "input_len", "output_len"), best, POINT["best_arch"].attrs())},
                      coords={"hardware": ("hardware", HW, {"units": "1", "long_name": "GPU type"}),
                              "input_len": ("input_len", INPUT, LEN_ATTRS["input_len"]),
                              "output_len": ("output_len", OUTPUT, LEN_ATTRS["output_len"])},
                      attrs={"title": "synthetic sweep", "sweep_name": "synthetic"})


@pytest.fixture
def seed_ds():
    best = _codes((len(HW), 2, len(INPUT), len(OUTPUT)), seed=1).astype(np.int8)
    return xr.Dataset({"best_arch": (("hardware", "contract", "input_len", "output_len"), best,
                                     POINT["best_arch"].attrs())},
                      coords={"hardware": HW,
                              "contract": ("contract", ["tight", "loose"],
                                           {"long_name": "p99 contract: tight = TTFT 2.0 s / TPOT 0.04 s, loose = "
                                                         "TTFT 8.0 s / TPOT 0.1 s"}),
                              "input_len": ("input_len", INPUT, LEN_ATTRS["input_len"]),
                              "output_len": ("output_len", OUTPUT, LEN_ATTRS["output_len"])},
                      attrs={"model": "llama-3.1-70b", "engine": "current", "percentile": 0.99})


def _frontier_ds(systems, archs):
    ttft, tpot = np.geomspace(0.25, 32.0, 4), np.geomspace(0.01, 0.2, 5)
    shape = (2, len(HW), len(ttft), len(tpot))
    winner = ((np.arange(np.prod(shape)).reshape(shape) % (len(systems) + 1)) - 1).astype(np.int8)
    cost = np.exp(np.linspace(-1.0, 2.0, np.prod(shape))).reshape(shape)
    cost[winner < 0] = np.nan
    var = {v.name: v for v in frontier_variables(systems, 0.01)}
    dims = ("workload", "hardware", "ttft", "tpot")
    return xr.Dataset(
        {"winner": (dims, winner, var["winner"].attrs()), "frontier_cost": (dims, cost, var["frontier_cost"].attrs())},
        coords={"workload": ["sharegpt", "arxiv_summarization"], "hardware": HW,
                "ttft": ("ttft", ttft, {"units": "s", "long_name": "TTFT bound at p99"}),
                "tpot": ("tpot", tpot, {"units": "s", "long_name": "TPOT bound at p99"}),
                "system": systems, "system_arch": ("system", archs),
                "input_len": ("workload", [256.0, 8192.0],
                              {"units": "1", "long_name": "mean prompt length in tokens"}),
                "output_len": ("workload", [256.0, 256.0],
                               {"units": "1", "long_name": "mean output length in tokens"})},
        attrs={"model": "llama-3.1-70b", "engine": "current", "percentile": 0.99})


@pytest.fixture
def frontier_ds():
    names = list(SYSTEMS)
    return _frontier_ds(names, [SYSTEMS[s].arch for s in names])


@pytest.fixture
def breakeven_ds():
    tpot = np.array([0.025, 0.05, 0.1, 0.2])
    dims = ("hardware", "tpot")
    root = np.array([[2e9, np.nan, 5e10, 8e10], [1e9, 3e9, np.nan, 4e10]])
    return xr.Dataset(
        {"breakeven_kv_bandwidth": (dims, root, {"units": "byte s-1", "long_name": "break-even KV bandwidth"}),
         "arch_below": (dims, np.array([[0, 1, 0, 1], [0, 0, -1, 1]], np.int8)),
         "arch_above": (dims, np.array([[2, 1, 2, 2], [2, 2, -1, 2]], np.int8)),
         "solver_outcome": (dims, np.array([[0, 3, 1, 0], [0, 0, 3, 1]], np.int8)),
         "n_crossings": (dims, np.array([[1, 0, 2, 1], [1, 1, 0, 1]], np.int16))},
        coords={"hardware": HW, "tpot": ("tpot", tpot, {"units": "s", "long_name": "time-per-output-token bound"})},
        attrs={"breakeven_solve_for": "kv_bandwidth", "breakeven_bracket": [1e8, 1e12], "breakeven_variable": "log",
               "breakeven_units": "byte s-1", "title": "synthetic break-even"})


def _meshes(fig):
    return [c for ax in fig.axes for c in ax.collections if type(c).__name__ == "QuadMesh"]


def _mesh_color(mesh, code):
    return to_hex(mesh.cmap(mesh.norm(code)))


def _legend_colors(fig):
    """label -> colour of every patch in the figure legend."""
    (legend,) = fig.legends
    return {t.get_text(): to_hex(h.get_facecolor()) for t, h in zip(legend.get_texts(), legend.legend_handles)
            if isinstance(h, Patch)}


# ---- (a) one palette ----
def test_each_architecture_has_one_colour_in_every_figure(sweep_ds, seed_ds, breakeven_ds, frontier_ds):
    figs = {"sweep": plotting.plot_sweep(sweep_ds), "seed": plotting.plot_seed(seed_ds),
            "breakeven": plotting.plot_breakeven(breakeven_ds)}
    expected = {plotting.ARCH_LABELS[k]: to_hex(plotting.ARCH_COLORS[k]) for k in CODES}
    assert len(set(expected.values())) == len(CODES)
    for name, fig in figs.items():
        meshes = _meshes(fig)
        assert meshes, name
        for mesh in meshes:
            assert {plotting.ARCH_LABELS[k]: _mesh_color(mesh, k) for k in CODES} == expected, name
        assert _legend_colors(fig) == expected, name
    # the frontier: each system in its architecture's colour (vLLM, Sarathi-Serve), grey where none is feasible
    fig = plotting.plot_frontier(frontier_ds)
    legend = _legend_colors(fig)
    assert legend["none feasible"] == expected["none feasible"]
    assert legend["vllm (colocated)"] == expected["colocated"]
    assert legend["sarathi-serve (chunked)"] == expected["chunked"]
    systems = list(frontier_ds["system"].values)
    for mesh in _meshes(fig):
        assert _mesh_color(mesh, NO_ARCH) == expected["none feasible"]
        assert _mesh_color(mesh, systems.index("vllm")) == expected["colocated"]
        assert _mesh_color(mesh, systems.index("sarathi-serve")) == expected["chunked"]


def _hue(color):
    return colorsys.rgb_to_hsv(*to_rgb(color))[0]


def test_each_registered_system_has_a_colour_of_its_own_in_its_family():
    colors = plotting.system_colors(list(SYSTEMS))
    assert len(set(colors.values())) == len(SYSTEMS)
    arch_hex = {a: to_hex(plotting.ARCH_COLORS[int(Arch[a.upper()])]) for a in ARCHS}
    dis_hue = _hue(arch_hex["disaggregated"])
    for name, system in SYSTEMS.items():
        if system.arch == "disaggregated":
            assert abs(_hue(colors[name]) - dis_hue) < 0.03, name  # a shade of the disaggregated colour
            assert to_hex(colors[name]) not in arch_hex.values() or name == "distserve"
        else:
            assert to_hex(colors[name]) == arch_hex[system.arch], name
    # user-registered systems: further distinct colours, stable in every figure
    extra = [f"user-{k}" for k in range(12)]
    more = plotting.system_colors(list(SYSTEMS) + extra)
    assert len({to_hex(c) for c in more.values()} | {plotting.NONE_COLOR}) == len(SYSTEMS) + len(extra) + 1
    assert {s: more[s] for s in SYSTEMS} == colors


def test_frontier_legend_and_mesh_with_a_user_system():
    names = list(SYSTEMS) + ["my-system"]
    ds = _frontier_ds(names, [SYSTEMS[s].arch for s in SYSTEMS] + ["chunked"])
    fig = plotting.plot_frontier(ds)
    legend = _legend_colors(fig)
    colors = plotting.system_colors(names)
    for s, a in zip(names, ds["system_arch"].values):
        assert legend[f"{s} ({a})"] == to_hex(colors[s])
        assert all(_mesh_color(m, names.index(s)) == to_hex(colors[s]) for m in _meshes(fig))
    assert len(set(legend.values())) == len(names) + 1


# ---- (b) axes ----
def test_seed_map_has_input_len_on_x_and_output_len_on_y(seed_ds):
    fig = plotting.plot_seed(seed_ds)
    for ax in fig.axes:
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    bottom_left = fig.axes[(seed_ds.sizes["contract"] - 1) * seed_ds.sizes["hardware"]]
    assert bottom_left.get_xlabel() == "input_len [tokens]"
    assert bottom_left.get_ylabel() == "output_len [tokens]"
    ax = fig.axes[0]
    (mesh,) = [c for c in ax.collections if type(c).__name__ == "QuadMesh"]
    xy = mesh.get_coordinates()  # (rows + 1, columns + 1, 2): columns over x
    assert xy.shape[:2] == (len(OUTPUT) + 1, len(INPUT) + 1)
    assert xy[0, 0, 0] < INPUT.min() < INPUT.max() < xy[0, -1, 0]
    assert xy[0, 0, 1] < OUTPUT.min() < OUTPUT.max() < xy[-1, 0, 1]
    cells = np.asarray(mesh.get_array()).reshape(len(OUTPUT), len(INPUT))
    np.testing.assert_array_equal(cells, seed_ds["best_arch"].isel(hardware=0, contract=0).values.T)


def test_sweep_map_input_len_on_x_by_default_and_units(sweep_ds):
    for ds in (sweep_ds, sweep_ds.transpose("hardware", "output_len", "input_len")):
        ax = plotting.plot_sweep(ds).axes[0]
        assert ax.get_xlabel() == "input_len [tokens]" and ax.get_ylabel() == "output_len [tokens]"
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


def test_frontier_axes_and_units(frontier_ds):
    fig = plotting.plot_frontier(frontier_ds)
    assert fig.axes[-1].get_xlabel() == "tpot [s]" and fig.axes[0].get_ylabel() == "ttft [s]"
    assert all(ax.get_xscale() == "log" and ax.get_yscale() == "log" for ax in fig.axes)
    assert "USD per 1e6 tokens" in fig.get_suptitle()
    assert "256 tokens" in fig.axes[0].get_title()


def test_units_text():
    assert plotting.units_text(USD_PER_MTOK) == "USD per 1e6 tokens"
    assert plotting.units_text("s") == "s"
    assert plotting.units_text("1") == ""
    assert plotting.units_text("1", "mean output length in tokens") == "tokens"


def test_breakeven_units_in_labels(breakeven_ds):
    fig = plotting.plot_breakeven(breakeven_ds)
    assert fig.axes[0].get_xlabel() == "tpot [s]"
    assert fig.axes[0].get_ylabel() == "kv_bandwidth [byte/s]"


def test_breakeven_two_value_length_axis_is_log_and_positive(breakeven_ds):
    """Issue 20: a 2-value input_len (2048, 8192) on x was drawn linear from -2500 to 12000."""
    ds = breakeven_ds.isel(tpot=[0, 1]).rename(tpot="input_len").assign_coords(
        input_len=("input_len", [2048.0, 8192.0], {"units": "1", "long_name": "prompt length"}))
    ax = plotting.plot_breakeven(ds, x="input_len").axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlim()[0] > 0


# ---- (c) rendering ----
def test_figures_render_to_png(sweep_ds, seed_ds, breakeven_ds, frontier_ds, tmp_path):
    figs = {"sweep": plotting.plot_sweep(sweep_ds), "seed": plotting.plot_seed(seed_ds),
            "breakeven": plotting.plot_breakeven(breakeven_ds), "frontier": plotting.plot_frontier(frontier_ds)}
    for name, fig in figs.items():
        path = tmp_path / f"{name}.png"
        fig.savefig(path, dpi=60)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    nc = tmp_path / "sweep.nc"
    sweep_ds.to_netcdf(nc)
    out = plotting.plot_file(str(nc))
    assert Path(out).stat().st_size > 1000


def test_no_pyplot_and_no_matplotlib_in_the_papers():
    root = Path(frontier_jax.__file__).parent
    source = inspect.getsource(plotting)
    assert "matplotlib.pyplot" not in source and "matplotlib.use" not in source
    for path in ("papers/frontier.py", "papers/report.py"):
        assert "matplotlib" not in (root / path).read_text(), path
    from frontier_jax.papers import plot_frontier
    assert callable(plot_frontier)


# ---- issue 20: one-axis sweeps as lines, unlisted axes reported, `frontier plot` mistakes in one line ----
def _cost_ds(kv=(1e9, 1e10, 1e11)):
    """A sweep file with input_len (log-spaced), hardware and kv_bandwidth axes, cost and best_arch."""
    shape = (len(HW), len(INPUT), len(kv), len(ARCHS))
    cost = np.linspace(0.1, 3.0, int(np.prod(shape))).reshape(shape)
    best = _codes(shape[:-1]).astype(np.int8)
    return xr.Dataset({"best_arch": (("hardware", "input_len", "kv_bandwidth"), best, POINT["best_arch"].attrs()),
                       "cost_per_mtok": (("hardware", "input_len", "kv_bandwidth", "arch"), cost,
                                         POINT["cost_per_mtok"].attrs())},
                      coords={"hardware": ("hardware", HW, {"units": "1"}), "arch": list(ARCHS),
                              "input_len": ("input_len", INPUT, LEN_ATTRS["input_len"]),
                              "kv_bandwidth": ("kv_bandwidth", np.asarray(kv), {"units": "byte s-1"})},
                      attrs={"title": "synthetic", "sweep_name": "synthetic"})


def test_one_axis_sweep_plots_lines_one_per_architecture_with_log_x(tmp_path):
    ds = _cost_ds(kv=(5e10,))
    fig = plotting.plot_sweep(ds)
    ax = fig.axes[0]
    assert len(ax.get_lines()) == len(ARCHS)                           # one line per architecture
    assert ax.get_xscale() == "log"                                    # INPUT is log-spaced (128 .. 32768)
    colors = {to_hex(line.get_color()) for line in ax.get_lines()}
    assert colors == {plotting.ARCH_COLORS[int(a)] for a in Arch}
    assert "USD" in ax.get_ylabel()
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), INPUT)


def test_unlisted_axes_are_reported_not_silently_fixed(tmp_path):
    path = tmp_path / "s.nc"
    _cost_ds().to_netcdf(path)
    out = plotting.plot_file(str(path), str(tmp_path / "s.png"), x="input_len", y="kv_bandwidth", facet="none")
    assert Path(out).is_file()
    assert len(plotting.plot_file.notes) == 1
    assert plotting.plot_file.notes[0].startswith("hardware=a100-80gb-sxm")       # HW[0], the first value
    assert "--sel hardware=VALUE" in plotting.plot_file.notes[0]


@pytest.mark.parametrize("kwargs, words", [
    (dict(sel={"kv_bandwidth": "abc"}), "plain number"),
    (dict(sel={"kv_bandwidth": "nan"}), "finite"),
    (dict(sel={"kv_bandwidth": "50GB"}), "plain number"),
    (dict(sel={"kv_bandwith": "5e10"}), "did you mean 'kv_bandwidth'"),
    (dict(x="hardware"), "categorical"),
    (dict(x="input_len", facet="input_len"), "also"),
])
def test_plot_mistakes_are_one_line_errors(tmp_path, kwargs, words):
    path = tmp_path / "s.nc"
    _cost_ds().to_netcdf(path)
    with pytest.raises(frontier_jax.FrontierError, match=words) as e:
        plotting.plot_file(str(path), str(tmp_path / "s.png"), **kwargs)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "s.png").exists()


def test_plot_output_paths_and_inputs_are_checked_before_drawing(tmp_path):
    path = tmp_path / "s.nc"
    _cost_ds().to_netcdf(path)
    for out, words in ((tmp_path / "missing" / "a.png", "does not exist"), (tmp_path / "a.xyz", "format"),
                       ("/proc/a.png", "not writable")):
        with pytest.raises(frontier_jax.FrontierError, match=words):
            plotting.plot_file(str(path), str(out))
    spec = tmp_path / "x.toml"
    spec.write_text("[sweep]\nname='x'\n")
    with pytest.raises(frontier_jax.FrontierError, match="spec, not a result"):
        plotting.plot_file(str(spec))
    junk = tmp_path / "junk.nc"
    junk.write_text("not netcdf")
    with pytest.raises(frontier_jax.FrontierError, match="not a netCDF file"):
        plotting.plot_file(str(junk), str(tmp_path / "j.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.nc", "s.nc", "x.toml"]   # nothing left behind


def test_pareto_figure_has_one_front_per_architecture():
    tpu = np.array([[[10.0, 20, 30], [40, 50, 60]], [[15, 25, 35], [45, 55, 65]]])  # (tpot, config, arch)
    thr = 1000.0 / tpu
    front = np.ones(tpu.shape, np.int8)
    ds = xr.Dataset({"tokens_per_user": (("tpot", "config", "arch"), tpu),
                     "throughput": (("tpot", "config", "arch"), thr),
                     "on_front": (("tpot", "config", "arch"), front)},
                    coords={"arch": list(ARCHS)}, attrs={"model": "m", "hardware": "h"})
    fig = plotting.plot_pareto(ds)
    assert len(fig.axes[0].get_lines()) == len(ARCHS)
    assert "per user" in fig.axes[0].get_xlabel() and "per GPU" in fig.axes[0].get_ylabel()

"""Break-even surfaces: the scalar solver on analytic functions (fast), then the cost model through `breakeven`.

The model-level tests share one spec shape (hardware x input_len x tpot, kv_bandwidth solved), so the break-even
kernel compiles once for the whole module (about a minute on 2 CPU cores); every other run reuses the executable,
which the tests check (compile_seconds == 0, no new trace). The dense brute-force grid is one plain sweep."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from frontier_jax import cli
from frontier_jax import crossover as be
from frontier_jax.costmodel.catalog import load_efficiency
from frontier_jax.costmodel.kernel import EXTRA_COORDS, INPUTS, load_sweep_spec, make_kernel, outputs_meta
from frontier_jax.crossover.kernel import kernel_traces
from frontier_jax.errors import FrontierError
from frontier_jax.runner import run_sweep
from frontier_jax.solvers import (CONVERGED, KINK, MAX_STEPS, NO_SIGN_CHANGE, OUTCOMES, BracketedNewton, Outcome,
                                  root_find)

# ---------------------------------------------------------------------------------------------------------------
# The solver on analytic functions
# ---------------------------------------------------------------------------------------------------------------
CUBE, JUMP, ABS_KINK, ALL_NAN, SINE, CONST, NAN_GAP, SWITCH, PLATEAU = range(9)
TRACES: list[int] = []


def analytic(y, th, case):
    """Test functions of y with parameters th = (t0, t1); the signature flips at y > t0 + 1e-7 for SWITCH."""
    TRACES.append(1)
    fs = {
        CUBE: y**3 - th[0] * th[1],                             # root (t0 t1)^(1/3)
        JUMP: jnp.where(y > th[0], 1.0, -1.0) + 0.0 * th[1],    # jump at t0
        ABS_KINK: (y - th[0]) + 0.5 * jnp.abs(y - th[0]),       # slopes 0.5 | 1.5 at t0
        ALL_NAN: jnp.nan * y,
        SINE: jnp.sin(y * th[1]) - 0.5,                         # many roots
        CONST: 1.0 + 0.0 * y,
        NAN_GAP: jnp.where(jnp.abs(y - th[0]) < 0.5, jnp.nan, y - th[0]),  # sign change hidden in a NaN gap
        SWITCH: y - th[0],                                      # smooth, but the branch changes at the root
        PLATEAU: jnp.minimum(y - th[0], 0.0) + jnp.maximum(y - th[0] - 1.0, 0.0),  # f == 0 on [t0, t0 + 1]
    }
    f = jnp.select([case == k for k in fs], list(fs.values()), jnp.nan)
    sig = jnp.where(case == SWITCH, (y > th[0] + 1e-7).astype(y.dtype), 0.0)[None]
    return f, (sig, {"positive": (f > 0).astype(jnp.int32)})


AUX = (jax.ShapeDtypeStruct((1,), jnp.float64), {"positive": jax.ShapeDtypeStruct((), jnp.int32)})
SOLVER = BracketedNewton(samples=12)


@jax.jit
def solve_batch(cases, thetas, lower, upper):
    return jax.vmap(lambda c, t, lo, hi: root_find(analytic, SOLVER, lo, hi, t, c, aux_like=AUX))(
        cases, thetas, lower, upper)


def _batch():
    cases = jnp.array([CUBE, CUBE, JUMP, ABS_KINK, ALL_NAN, SINE, CONST, NAN_GAP, SWITCH, CUBE, PLATEAU])
    thetas = jnp.array([[2.0, 1.0], [3.0, 2.5], [0.7, 0.0], [-1.2, 0.0], [0.0, 0.0], [0.0, 3.0], [0.0, 0.0],
                        [0.3, 0.0], [1.1, 0.0], [-5.0, 1.0], [-0.4, 0.0]])
    lower = jnp.full(cases.shape, -3.0)
    upper = jnp.full(cases.shape, 3.0)
    return cases, thetas, lower, upper


def test_outcome_codes_and_roots():
    cases, thetas, lower, upper = _batch()
    sol = solve_batch(cases, thetas, lower, upper)
    outcome = [OUTCOMES[int(r)] for r in sol.outcome]
    assert outcome == [Outcome(int(r)).name.lower() for r in sol.outcome]
    assert outcome == ["converged", "converged", "kink", "kink", "non_finite", "converged", "no_sign_change",
                      "non_finite", "kink", "converged", "kink"]
    root = np.asarray(sol.root)
    np.testing.assert_allclose(root[[0, 1, 9]], np.cbrt([2.0, 7.5, -5.0]), rtol=1e-9)
    assert abs(root[2] - 0.7) <= 1e-8 * 6          # the jump is located to xtol times the bracket
    assert abs(root[3] + 1.2) <= 1e-9
    assert -0.4 - 1e-9 <= root[10] <= 0.6 + 1e-9    # somewhere on the plateau of zeros (a tie), flagged
    np.testing.assert_allclose(root[5], (np.pi / 6 - 2 * np.pi) / 3, rtol=1e-9)  # the lowest of the sine's roots
    assert int(sol.crossings[5]) == 6 and int(sol.crossings[0]) == 1
    assert np.all(np.isnan(root[[4, 6, 7]]))
    assert np.all(np.asarray(sol.located) == np.isin(np.asarray(sol.outcome), [CONVERGED, KINK]))
    # sensitivities only at smooth roots; the winner (here: the sign of f) on each side
    assert np.all(np.isnan(np.asarray(sol.sensitivities)[[2, 3, 4, 6, 7, 8, 10]]))
    np.testing.assert_array_equal(np.asarray(sol.aux_below["positive"])[[0, 2, 3, 5, 8]], 0)
    np.testing.assert_array_equal(np.asarray(sol.aux_above["positive"])[[0, 2, 3, 5, 8]], 1)
    assert int(sol.aux_below["positive"][6]) == int(sol.aux_above["positive"][6]) == 1  # const: both ends
    # the iterations are few from the secant start, and bounded by samples + max_steps + probes + parameters
    assert int(sol.steps[0]) <= 6
    assert int(np.max(sol.evaluations)) <= SOLVER.max_evaluations(2)


def test_max_steps_is_flagged_not_reported():
    solver = BracketedNewton(samples=3, max_steps=2)
    sol = root_find(analytic, solver, -3.0, 3.0, jnp.array([2.0, 1.0]), CUBE, aux_like=AUX)
    assert int(sol.outcome) == MAX_STEPS and not bool(sol.located)
    assert np.isnan(float(sol.root)) and np.isfinite(float(sol.value))


def test_implicit_sensitivities_match_analytic_and_finite_differences():
    cases, thetas, lower, upper = _batch()
    sol = solve_batch(cases, thetas, lower, upper)
    for i in (0, 1):
        t0, t1 = (float(v) for v in thetas[i])
        r = np.cbrt(t0 * t1)
        exact = np.array([t1, t0]) / (3 * r**2)
        np.testing.assert_allclose(np.asarray(sol.sensitivities[i]), exact, rtol=1e-9)
        h = 1e-5
        for j in range(2):
            tp, tm = thetas.at[i, j].multiply(1 + h), thetas.at[i, j].multiply(1 - h)
            fd = (solve_batch(cases, tp, lower, upper).root[i] - solve_batch(cases, tm, lower, upper).root[i]) \
                / (2 * h * float(thetas[i, j]))
            np.testing.assert_allclose(float(fd), exact[j], rtol=1e-6)
    # the sine: d root / d frequency = -root / frequency
    np.testing.assert_allclose(float(sol.sensitivities[5, 1]), -float(sol.root[5]) / 3.0, rtol=1e-9)


def test_vmap_matches_loop_and_traces_once():
    cases, thetas, lower, upper = _batch()
    before = len(TRACES)
    batch = solve_batch(cases, thetas, lower, upper)
    again = solve_batch(cases, thetas * 1.01, lower, upper)  # new values, same shapes: no new trace
    assert len(TRACES) == before  # traced when the batch was first compiled (above), never again
    del again
    one = jax.jit(lambda c, t, lo, hi: root_find(analytic, SOLVER, lo, hi, t, c, aux_like=AUX))
    for i in range(cases.shape[0]):
        single = one(cases[i], thetas[i], lower[i], upper[i])
        for name, a, b in zip(single._fields, single, batch):
            jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)[i], err_msg=name),
                         a, b)


def test_sharded_matches_single_device():
    devices = jax.local_devices()
    if len(devices) < 2:
        pytest.skip("needs several (fake) devices")
    cases, thetas, lower, upper = (jnp.tile(a, (4,) + (1,) * (a.ndim - 1)) for a in _batch())
    n = len(devices)
    cases, thetas, lower, upper = (a[: (a.shape[0] // n) * n] for a in (cases, thetas, lower, upper))
    mesh = Mesh(np.array(devices), ("points",))
    sharded = jax.jit(jax.shard_map(
        lambda c, t, lo, hi: jax.vmap(lambda *a: root_find(analytic, SOLVER, a[2], a[3], a[1], a[0],
                                                           aux_like=AUX))(c, t, lo, hi),
        mesh=mesh, in_specs=P("points"), out_specs=P("points"), check_vma=False))(cases, thetas, lower, upper)
    single = solve_batch(cases, thetas, lower, upper)
    for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(single)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_solver_configuration_is_validated():
    with pytest.raises(ValueError, match="samples"):
        BracketedNewton(samples=1)
    with pytest.raises(ValueError, match="ftol"):
        BracketedNewton(ftol=0.0)


# ---------------------------------------------------------------------------------------------------------------
# The cost model
# ---------------------------------------------------------------------------------------------------------------
HW = ["a100-80gb-sxm", "h200-141gb-sxm"]
INPUT = [512.0, 2048.0, 8192.0, 16384.0]
# TPOT 0.02 on the A100 is where disaggregation wins across the whole bracket ("no_sign_change") under pooled
# queues; at 0.025 its crossover is 1.09e8 B/s, just inside the bracket
TPOT = [0.02, 0.05, 0.1]
BRACKET = (1e8, 1e12)
CHUNK = 64
SCALES = dict(hbm_bandwidth_scale=1.0, flops_scale=1.0, eta_flops_scale=1.0, eta_hbm_scale=1.0)


def spec_text(hw=HW, input_len=INPUT, tpot=TPOT, kv=f"{{ logspace = [{BRACKET[0]:g}, {BRACKET[1]:g}, 9] }}",
              scales=True, **fixed):
    """Llama-3.1-70B, p99 TTFT 4 s, output 256 tokens; fluid goodput (no rate), so the advantage is smooth in
    kv_bandwidth wherever the cheapest configuration does not switch."""
    f = {**(SCALES if scales else {}), **fixed}
    fixed_lines = "\n".join(f"{k} = {float(v)!r}" for k, v in f.items())
    q = lambda xs: "[" + ", ".join(f'"{x}"' if isinstance(x, str) else repr(float(x)) for x in xs) + "]"  # noqa
    return f"""
[sweep]
name = "breakeven_test"
percentile = 0.99
[fixed]
model = "llama-3.1-70b"
ttft = 4.0
output_len = 256
{fixed_lines}
[axes]
hardware = {q(hw)}
input_len = {q(input_len)}
tpot = {q(tpot)}
kv_bandwidth = {kv}
"""


@pytest.fixture(scope="module")
def base():
    before = kernel_traces()
    ds = be.breakeven(spec_text(), chunk=CHUNK)
    assert kernel_traces() == before + 1
    return ds


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """The sweep kernel on a dense grid of the solved axis (161 points over the bracket, 0.025 decades apart)."""
    spec = load_sweep_spec(spec_text(kv=f"{{ logspace = [{BRACKET[0]:g}, {BRACKET[1]:g}, 161] }}", scales=False))
    path = tmp_path_factory.mktemp("dense") / "dense.nc"
    run_sweep(spec, make_kernel(spec), outputs_meta(), path, extra_coords=EXTRA_COORDS, chunk=4096, progress=False)
    with xr.open_dataset(path) as ds:
        return ds.load()


def _extended_advantage(ds):
    """log min(colocated, chunked) - log disaggregated with +-inf where only one side is feasible."""
    c = np.where(ds["feasible"].values == 1, ds["cost_per_mtok"].values, np.inf)
    with np.errstate(invalid="ignore"):
        return np.log(np.minimum(c[..., 0], c[..., 1])) - np.log(c[..., 2])


def test_roots_agree_with_dense_brute_force(base, dense):
    adv = _extended_advantage(dense)
    kv = dense["kv_bandwidth"].values
    outcomes = set()
    for idx in np.ndindex(adv.shape[:-1]):
        a = adv[idx]
        valid = ~np.isnan(a)
        change = np.flatnonzero(valid[:-1] & valid[1:] & ((a[:-1] > 0) != (a[1:] > 0)))
        r = base.isel(hardware=idx[0], input_len=idx[1], tpot=idx[2])
        outcome = OUTCOMES[int(r["solver_outcome"])]
        outcomes.add(outcome)
        root = float(r["breakeven_kv_bandwidth"])
        where = f"point {idx}: {outcome}, root {root:.6g}, dense changes at {kv[change]}"
        if outcome in ("converged", "kink"):
            assert change.size, where
            q = change[0]
            assert kv[q] * (1 - 1e-12) <= root <= kv[q + 1] * (1 + 1e-12), where
            assert int(r["n_crossings"]) <= change.size
            assert int(r["arch_below"]) == int(dense["best_arch"].values[idx][q]), where
            assert int(r["arch_above"]) == int(dense["best_arch"].values[idx][q + 1]), where
        elif outcome == "no_sign_change":
            assert not change.size and valid.any(), where
            assert int(r["arch_below"]) == int(dense["best_arch"].values[idx][0]), where
            assert int(r["arch_above"]) == int(dense["best_arch"].values[idx][-1]), where
        else:
            assert outcome == "non_finite" and not valid.all(), where
            assert np.isnan(root)
    # the grid exercises smooth roots and both kinds of "no root"
    assert {"converged", "no_sign_change", "non_finite"} <= outcomes


def test_decode_side_links_are_not_overloaded_at_any_root(base):
    """Issue 19: at every root the solver reports, the disaggregated decode pool's receiving links run below
    capacity (the cost model at kv_bandwidth = root, evaluated afresh through the public API)."""
    import frontier_jax as fj
    checked = 0
    for h, hw in enumerate(base["hardware"].values):
        r = base.isel(hardware=h)
        ok = np.isin(r["solver_outcome"].values, [int(CONVERGED), int(KINK)])
        if not ok.any():
            continue
        i, t = np.meshgrid(r["input_len"].values, r["tpot"].values, indexing="ij")
        # every GPU's roots padded to the grid's size with copies of its first: one shape, one compile of evaluate
        take = np.concatenate([np.flatnonzero(ok), np.full(ok.size - ok.sum(), np.argmax(ok.ravel()))])
        ds = fj.evaluate(str(hw), "llama-3.1-70b", input_len=i.ravel()[take], output_len=256.0, ttft=4.0,
                         tpot=t.ravel()[take], kv_bandwidth=r["breakeven_kv_bandwidth"].values.ravel()[take])
        u = ds["kv_receive_utilization"].sel(arch="disaggregated").values[: ok.sum()]
        assert np.all(np.isfinite(u)) and np.all(u < 1.0), (hw, u)
        checked += u.size
    assert checked >= 15


def test_outputs_flags_and_metadata(base):
    assert base.attrs["breakeven_solve_for"] == "kv_bandwidth"
    assert base.attrs["assumed_price"].startswith("USD/GPU-hour")
    assert "kv_bandwidth input" in base.attrs["assumed_kv_bandwidth"]
    root = base["breakeven_kv_bandwidth"]
    assert root.attrs["units"] == INPUTS["kv_bandwidth"].units == "byte s-1"
    assert "reason" not in base.data_vars  # the solver's outcome, not the cost model's infeasibility reason
    assert base["solver_outcome"].attrs["flag_meanings"] == " ".join(OUTCOMES)
    assert list(base["solver_outcome"].attrs["flag_values"]) == list(range(len(OUTCOMES)))
    assert base.attrs["breakeven_outcomes"].startswith("converged: ")
    assert base["arch_below"].attrs["flag_meanings"] == "none colocated chunked disaggregated"
    assert float(base["bracket_lower"]) == BRACKET[0] and float(base["bracket_upper"]) == BRACKET[1]
    outcome = base["solver_outcome"].values
    located = np.isin(outcome, [CONVERGED, KINK])
    np.testing.assert_array_equal(base["converged"].values == 1, located)
    assert np.all(np.isfinite(root.values[located])) and np.all(np.isnan(root.values[~located]))
    assert np.all((root.values[located] >= BRACKET[0]) & (root.values[located] <= BRACKET[1]))
    assert np.all(np.abs(base["residual"].values[outcome == CONVERGED]) <= 1e-10)
    assert np.all(base["n_crossings"].values[located] >= 1)
    assert np.all(base["n_crossings"].values[outcome == NO_SIGN_CHANGE] == 0)
    assert np.all(base["iterations"].values[outcome == NO_SIGN_CHANGE] == 0)
    assert np.all(base["iterations"].values[outcome == CONVERGED] <= 8)
    thetas = ["input_len", "tpot", "hbm_bandwidth_scale", "flops_scale", "eta_flops", "eta_hbm"]
    assert base.attrs["breakeven_wrt"].split() == thetas
    for t in thetas:
        d = base[f"d_breakeven_kv_bandwidth_d_{t}"]
        assert np.all(np.isfinite(d.values[outcome == CONVERGED]))
        assert np.all(np.isnan(d.values[outcome != CONVERGED]))
    assert base["d_breakeven_kv_bandwidth_d_tpot"].attrs["units"] == "(byte s-1)/(s)"
    assert base["d_breakeven_kv_bandwidth_d_eta_hbm"].attrs["units"] == "byte s-1"
    assert base["elasticity_kv_bandwidth_tpot"].attrs["units"] == "1"
    # crossing from a colocated winner below the root to disaggregation above it (the advantage increases in B_kv)
    conv = outcome == CONVERGED
    assert np.all(np.isin(base["arch_below"].values[conv], [0, 1]))
    assert np.all(base["arch_above"].values[conv] == 2)
    assert np.all(base["advantage_slope"].values[conv] > 0)


H = 1e-3
I0, T0 = 2048.0, 0.05
FD_INPUT, FD_TPOT = [I0 * (1 - H), I0, I0 * (1 + H), 8192.0], [T0 * (1 - H), T0, T0 * (1 + H)]
CENTRE = dict(input_len=1, tpot=1)


def _run_same_shape(**kw):
    before = kernel_traces()
    ds = be.breakeven(spec_text(input_len=FD_INPUT, tpot=FD_TPOT, **kw), chunk=CHUNK)
    assert kernel_traces() == before and ds.attrs["breakeven_compile_seconds"] == 0.0  # compiled once per spec
    return ds


def test_implicit_gradients_match_central_differences(base):
    ds = _run_same_shape()
    assert np.all(ds["solver_outcome"].isel(input_len=slice(0, 3)).values == CONVERGED)
    root = lambda d, **i: d["breakeven_kv_bandwidth"].isel(**{**CENTRE, **i}).values  # noqa: E731
    ift = lambda name: ds[f"d_breakeven_kv_bandwidth_d_{name}"].isel(**CENTRE).values  # noqa: E731
    checks = {"input_len": ((root(ds, input_len=2) - root(ds, input_len=0)) / (2 * H * I0), ift("input_len")),
              "tpot": ((root(ds, tpot=2) - root(ds, tpot=0)) / (2 * H * T0), ift("tpot"))}
    eff = load_efficiency("current")
    for name, scale, unit in (("hbm_bandwidth_scale", "hbm_bandwidth_scale", 1.0), ("flops_scale", "flops_scale", 1.0),
                              ("eta_flops", "eta_flops_scale", float(eff.eta_flops)),
                              ("eta_hbm", "eta_hbm_scale", float(eff.eta_hbm))):
        plus, minus = _run_same_shape(**{scale: 1 + H}), _run_same_shape(**{scale: 1 - H})
        checks[name] = ((root(plus) - root(minus)) / (2 * H * unit), ift(name))
    for name, (fd, implicit) in checks.items():
        np.testing.assert_allclose(implicit, fd, rtol=1e-4, err_msg=name)
    # elasticities: d log root / d log theta, dimensionless
    e = ds["elasticity_kv_bandwidth_input_len"].isel(**CENTRE).values
    np.testing.assert_allclose(e, ift("input_len") * I0 / root(ds), rtol=1e-12)


def test_batch_composition_does_not_change_results(base):
    """Each point's solve is independent of its neighbours in the vmapped batch and of its device."""
    ds = _run_same_shape_values(hw=HW[::-1], input_len=INPUT[::-1], tpot=[TPOT[1], TPOT[2], TPOT[0]])
    ref = base.sel(hardware=ds["hardware"], input_len=ds["input_len"], tpot=ds["tpot"])
    for name in ("breakeven_kv_bandwidth", "solver_outcome", "iterations", "d_breakeven_kv_bandwidth_d_eta_hbm"):
        np.testing.assert_array_equal(ds[name].values, ref[name].values, err_msg=name)


def _run_same_shape_values(**kw):
    before = kernel_traces()
    ds = be.breakeven(spec_text(**kw), chunk=CHUNK)
    assert kernel_traces() == before and ds.attrs["breakeven_compile_seconds"] == 0.0
    return ds


def test_cli_breakeven_and_plots(base, dense, tmp_path, capsys):
    spec = tmp_path / "be.toml"
    spec.write_text(spec_text())
    out = tmp_path / "be.nc"
    assert cli.main(["breakeven", str(spec), "-o", str(out), "--chunk", str(CHUNK), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "break-even points" in text and "h200-141gb-sxm" in text
    with xr.open_dataset(out) as ds:
        np.testing.assert_array_equal(ds["breakeven_kv_bandwidth"].values, base["breakeven_kv_bandwidth"].values)
    assert cli.main(["breakeven", str(spec), "-o", str(out), "--quiet"]) == 2  # exists: one-line error
    assert "already exists" in capsys.readouterr().err
    fig = tmp_path / "be.png"
    assert cli.main(["plot", str(out), "-o", str(fig), "--sel", "tpot=0.05"]) == 0
    assert fig.stat().st_size > 10_000
    sweep = tmp_path / "dense.nc"
    dense.to_netcdf(sweep)
    fig2 = tmp_path / "dense.png"
    assert cli.main(["plot", str(sweep), "-o", str(fig2), "--x", "input_len", "--y", "kv_bandwidth"]) == 0
    assert fig2.stat().st_size > 10_000
    assert cli.main(["plot", str(sweep), "--x", "nope"]) == 2


@pytest.mark.parametrize("change, message", [
    ({"solve_for": "hardware"}, "categorical"),
    ({"solve_for": "ttft"}, "in \\[fixed\\]"),
    ({"solve_for": "rate"}, "not in the spec"),
    ({"wrt": ["nope"]}, "unknown sensitivity input"),
    ({"wrt": ["rate"]}, "fluid"),
    ({"wrt": ["kv_bandwidth"]}, "itself"),
    ({"samples": 1}, "at least 2"),
])
def test_spec_errors(change, message):
    with pytest.raises(FrontierError, match=message):
        be.prepare(spec_text(), **change)


def test_breakeven_table_and_unknown_keys():
    prob = be.prepare(spec_text() + '\n[breakeven]\nsolve_for = "tpot"\nsamples = 8\nwrt = []\n')
    assert prob.solve_for == "tpot" and prob.solver.samples == 8 and prob.log
    assert [t.name for t in prob.thetas] == ["input_len", "kv_bandwidth"]
    assert (prob.lower, prob.upper) == (TPOT[0], TPOT[-1]) == (0.02, 0.1)
    with pytest.raises(FrontierError, match="did you mean 'samples'"):
        be.prepare(spec_text() + "\n[breakeven]\nsample = 8\n")

#!/usr/bin/env bash
# GPU check of the sweep engine: is the GPU used, do GPU and CPU agree, how fast are 1e6 and 1e7 sweeps and a
# 1e6-point break-even solve. Prints a short table; writes gpu_check.log and gpu_check.json under ${OUT}.
#
#   bash benchmarks/gpu_check.sh                # from the repository root, on a machine with an NVIDIA GPU
#   OUT=/somewhere GPU_CHUNK=131072 bash benchmarks/gpu_check.sh
#
# Needs the package (`pip install -e .`) and a CUDA build of jax (`pip install "jax[cuda12]"`); both are tried
# once if missing. Without a GPU backend it says so and exits 2. Budget: about 8 minutes on an H100 (each stage
# checks the time left, and the 1e7 sweep is skipped if the 1e6 rate says it would not fit).
# Environment: OUT (default /tmp/gpu_check), WORK (netCDF scratch, default /tmp/gpu_check_work; the sweep
# outputs are 0.4 GB at 1e6 and 4 GB at 1e7 points, so they are not put in OUT), GPU_CHUNK (points per compiled
# call, default 262144), BUDGET_S (default 450), BREAKEVEN_CHUNK (points per break-even chunk, default 65536),
# NO_INSTALL=1 (never pip install), DRY_RUN=1 (test this script on a CPU-only machine: CPU as the "GPU",
# 1e4-point grids in place of 1e6 and 1e7; the numbers then mean nothing).
# The break-even solve runs in the same process as the sweeps (frontier_jax.crossover.breakeven): a `frontier
# breakeven` subprocess would find 90 % of the GPU's memory preallocated by this one and run out of memory.
# Exit status: 0 when every row of the summary is fine, 1 when one says CHECK or FAILED (or the GPU is not used),
# 2 without a GPU backend.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
WORK=${WORK:-/tmp/gpu_check_work}
mkdir -p "$OUT" "$WORK"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export OUT WORK
export GPU_CHUNK=${GPU_CHUNK:-262144}
export BUDGET_S=${BUDGET_S:-450}
export T_START=$(date +%s)
export DRY_RUN=${DRY_RUN:-0}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
echo "== frontier-jax GPU check, $(date -u +%FT%TZ), $(hostname)"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
else
  echo "nvidia-smi not found"
fi

python -c 'import frontier_jax' 2>/dev/null || { echo "installing the package (pip install -e .)"; \
  pip install -q -e . || pip install -q --no-deps -e .; }
backend() { python -c 'import jax; print(jax.default_backend())' 2>/dev/null; }
B=$(backend)
if [ "${DRY_RUN:-0}" = 1 ]; then echo "DRY RUN on the CPU: timings are not GPU timings"; B=gpu; fi
if [ "$B" != "gpu" ] && [ "${NO_INSTALL:-0}" != 1 ]; then
  V=$(python -c 'import jax; print(jax.__version__)' 2>/dev/null)
  echo "JAX backend is '${B:-none}': trying pip install \"jax[cuda12]==$V\" (needs a package index) ..."
  timeout 240 pip install -q "jax[cuda12]==$V" || echo "pip install jax[cuda12] failed"
  B=$(backend)
fi
python -c 'import jax; print("jax", jax.__version__, "devices:", jax.devices())' || true
[ "${DRY_RUN:-0}" = 1 ] && B=gpu
if [ "$B" != "gpu" ]; then
  echo "NO GPU BACKEND: jax.default_backend() is '${B:-none}'. Install a CUDA build of jax matching the driver"
  echo "(pip install \"jax[cuda12]\") and rerun. Nothing was timed."
  exit 2
fi

python - <<'PY'
import json, os, sys, time
from pathlib import Path
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)  # the CLI's default precision
import jax.numpy as jnp
from frontier_jax.costmodel.kernel import EXTRA_COORDS, load_sweep_spec, make_kernel, outputs_meta
from frontier_jax.resources import shipped_dir
from frontier_jax.runner import run_sweep
from frontier_jax.runner.grid import decode_points, layout, point_arrays

SWEEPS = shipped_dir("sweeps")
OUT, WORK = Path(os.environ["OUT"]), Path(os.environ["WORK"])
CHUNK, BUDGET, T0 = int(os.environ["GPU_CHUNK"]), float(os.environ["BUDGET_S"]), float(os.environ["T_START"])
left = lambda: BUDGET - (time.time() - T0)  # noqa: E731
res = {"devices": [str(d) for d in jax.devices()], "jax": jax.__version__, "chunk": CHUNK, "rows": []}
rows = res["rows"]


def save():
    (OUT / "gpu_check.json").write_text(json.dumps(res, indent=1, default=float))


DRY = os.environ["DRY_RUN"] == "1"
SIZES = {"1e6": "1e4", "1e7": "1e4"} if DRY else {"1e6": "1e6", "1e7": "1e7"}
# 1. the GPU is used
gpu = jax.devices("cpu" if DRY else "gpu")[0]
x = jax.jit(lambda a: jnp.sin(a) @ a)(jnp.ones((512, 512)))
used = {d.platform for d in x.devices()}
print(f"[1] default backend {jax.default_backend()}, result on {used}, device kind {gpu.device_kind}")
res["gpu_used"] = used == {gpu.platform}
if not res["gpu_used"]:
    print("FAIL: the computation did not run on the GPU"); save(); sys.exit(1)

# 2. GPU vs CPU on random points of the same (small) spec, float64 on both
spec = load_sweep_spec(SWEEPS / "bench_1e4.toml")
lay, host = layout(spec), point_arrays(spec)
idx = np.sort(np.random.default_rng(0).choice(spec.size, 2048, replace=False))
kern = make_kernel(spec)
f = lambda a, i: kern(decode_points(lay, a, i))  # noqa: E731
outs = {}
for name, dev in (("gpu", gpu), ("cpu", jax.devices("cpu")[0])):
    t = time.perf_counter()
    with jax.default_device(dev):
        a = {k: jax.device_put(v, dev) for k, v in host.items()}
        o = jax.jit(f)(a, jax.device_put(idx, dev))
        outs[name] = {k: np.asarray(v) for k, v in o.items()}
    print(f"[2] {name}: 2048 random points, compile + run {time.perf_counter() - t:.1f} s")
g, c = outs["gpu"], outs["cpu"]
# Configuration choices may flip at a tie (two configurations of equal cost: the last bit decides the argmin; the
# same happens between 1- and 2-device CPU runs, tests/test_determinism.py). A flip counts as a tie only where the
# cost and the goodput agree to 1e-9; the other per-architecture values of tied pairs come from different
# configurations and are not compared. Anything else must agree to 1e-6, flags and NaN patterns exactly.
CHOICES, FLAGS = ("tp_prefill", "tp_decode", "chunk", "overlap"), ("feasible", "reason", "best_arch")


def close(k, rtol):
    a, b = g[k].astype(float), c[k].astype(float)
    return np.isclose(a, b, rtol=rtol, atol=0.0) | (np.isnan(a) & np.isnan(b))


flip = ~np.all([close(k, 0.0) for k in CHOICES], axis=0)
tie = flip & close("cost_per_mtok", 1e-9) & close("goodput", 1e-9)
untied = int((flip & ~tie).sum())
cmp = {}
for k in g:
    a, b = g[k].astype(float), c[k].astype(float)
    nan_same = bool(np.array_equal(np.isnan(a), np.isnan(b)))
    ok = np.isfinite(a) & np.isfinite(b) & (~tie if a.shape == tie.shape else True)
    rel = float((np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-300)).max()) if ok.any() else 0.0
    cmp[k] = dict(max_rel=rel, nan_pattern_equal=nan_same)
worst = max((v["max_rel"] for k, v in cmp.items() if k not in FLAGS), default=0.0)
flags_equal = all(np.array_equal(g[k], c[k]) for k in FLAGS)
nan_equal = all(v["nan_pattern_equal"] for v in cmp.values())
res["gpu_vs_cpu"] = dict(points=len(idx), worst_rel=worst, flags_equal=flags_equal, nan_patterns_equal=nan_equal,
                         tied_choices=int(tie.sum()), untied_choice_flips=untied, per_variable=cmp)
print(f"[2] GPU vs CPU (float64): worst relative difference {worst:.2e}; flags equal {flags_equal}; "
      f"NaN patterns equal {nan_equal}; configuration choices differ at {int(tie.sum())} ties (equal cost) and "
      f"{untied} other (point, architecture) pairs")
good = worst < 1e-6 and flags_equal and nan_equal and untied == 0 and tie.mean() <= 0.02
rows.append(("GPU vs CPU, 2048 random points", f"max rel diff {worst:.1e}, {int(tie.sum())} ties",
             "OK" if good else "CHECK"))
save()


# 3. sweeps
def sweep(size, tag="f64"):
    sp = load_sweep_spec(SWEEPS / f"bench_{SIZES[size]}.toml")
    out = WORK / f"bench_{size}_{tag}.nc"
    t = time.perf_counter()
    s = run_sweep(sp, make_kernel(sp), outputs_meta(), out, extra_coords=EXTRA_COORDS, chunk=CHUNK, overwrite=True,
                  progress=False)
    wall = time.perf_counter() - t
    out.unlink(missing_ok=True)
    r = dict(points=s.points, wall_s=wall, compile_s=s.compile_seconds, eval_s=s.seconds - s.compile_seconds,
             points_per_s=s.points_per_second)
    res[f"sweep_{size}_{tag}"] = r
    print(f"[3] {size} sweep ({tag}): {s.points:,} points in {wall:.1f} s, compile {s.compile_seconds:.1f} s, "
          f"{s.points_per_second:,.0f} points/s")
    rows.append((f"sweep {size} points ({tag}, run_sweep, netCDF)", f"{s.points_per_second:,.0f} points/s",
                 f"{r['eval_s']:.1f} s + compile {s.compile_seconds:.1f} s"))
    save()
    return r


r6 = sweep("1e6")
need7 = 10 * r6["eval_s"] + r6["compile_s"] + 30
if left() > need7:
    sweep("1e7")
else:
    print(f"[3] 1e7 sweep skipped: needs about {need7:.0f} s, {left():.0f} s left in the budget")
    rows.append(("sweep 1e7 points", "skipped (time budget)", f"would need ~{need7:.0f} s"))

# 4. break-even: frontier_jax.crossover.breakeven on sweeps/bench_breakeven_1e6.toml (1e6 points), in this process
#    (a `frontier breakeven` subprocess would find the GPU's memory preallocated by this one)
BE_SPEC = SWEEPS / "bench_breakeven_1e6.toml"
BE_CHUNK = int(os.environ.get("BREAKEVEN_CHUNK", "65536"))
if left() < 60:
    print("[4] break-even: skipped, time budget spent")
    rows.append(("break-even 1e6", "skipped (time budget)", ""))
else:
    import tomllib
    from frontier_jax.crossover import breakeven
    from frontier_jax.solvers import OUTCOMES
    be_out = WORK / "breakeven.nc"
    spec_src = BE_SPEC
    if DRY:  # a 160-point version of the same problem
        raw = tomllib.loads(BE_SPEC.read_text())
        raw["axes"].update(input_len={"logspace": [64, 32768, 4]}, output_len={"logspace": [16, 4096, 4]})
        del raw["axes"]["slo_scale"]
        spec_src = raw
    how = "frontier_jax.crossover.breakeven"
    print(f"[4] break-even via {how}, chunk {BE_CHUNK}", flush=True)
    t = time.perf_counter()
    try:
        ds = breakeven(spec_src, out=be_out, chunk=BE_CHUNK, overwrite=True)
        info = {k: float(ds.attrs[k]) for k in ("breakeven_seconds", "breakeven_compile_seconds",
                                                "breakeven_points_per_second") if k in ds.attrs}
        outcome = ds["solver_outcome"].values
        info["outcomes"] = {o: int((outcome == i).sum()) for i, o in enumerate(OUTCOMES)}
        ds.close()
        ok = True
        print(f"[4] outcomes: {info['outcomes']}")
    except Exception as e:  # report, never abort the check
        ok, info = False, {"error": repr(e)}
        print("break-even failed:", repr(e))
    wall = time.perf_counter() - t
    be_out.unlink(missing_ok=True)
    res["breakeven"] = dict(how=how, wall_s=wall, ok=ok, **info)
    pps = info.get("breakeven_points_per_second")
    rows.append(("break-even 1e6 points (crossover.breakeven, in process)",
                 (f"{pps:,.0f} points/s" if pps else f"{wall:.1f} s wall") if ok else "FAILED",
                 f"{wall:.1f} s wall" + (f", compile {info['breakeven_compile_seconds']:.1f} s"
                                         if "breakeven_compile_seconds" in info else "")))
    save()

# 5. float32 rate at 1e6 if there is time (the GPU's fast precision)
if left() > 2 * r6["wall_s"] + 30:
    jax.config.update("jax_enable_x64", False)
    sweep("1e6", "f32")
    jax.config.update("jax_enable_x64", True)

res["total_s"] = time.time() - T0
save()
print("\n== summary (" + ", ".join(res["devices"]) + f"; chunk {CHUNK:,}; {res['total_s']:.0f} s in all)")
w = max(len(r[0]) for r in rows)
for a, b, c in rows:
    print(f"  {a:<{w}}  {b:>24}  {c}")
bad = [r[0] for r in rows if {"CHECK", "FAILED"} & {r[1], r[2]}]
res["failed_rows"] = bad
save()
if bad:
    print("FAILED: " + "; ".join(bad))
    sys.exit(1)
PY
rc=$?
echo "outputs: $OUT/gpu_check.log, $OUT/gpu_check.json (rc=$rc)"
exit $rc

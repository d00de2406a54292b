"""The cost of the measured-kernel latency path (issue 18), side by side with the roofline in one run.

    python benchmarks/kernel_engine.py [--spec sweeps/bench_1e4.toml] [--repeats 3]
    python benchmarks/kernel_engine.py --spec sweeps/bench_1e6.toml --repeats 0   # the issue's bench_1e6, one run each

Runs the same sweep with engine "current" (roofline) and "current-kernels" (iterations from measured kernels):
the first run of each includes compilation (cold: wall, its compile seconds and the evaluation rest, each as a
ratio kernels / roofline), the next `repeats` reuse the compiled chunk program (warm, median reported). Prints one
JSON object with the machine, both timings and their ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path

# every run compiles from scratch: the persistent compile cache (frontier_jax.configure) would load a program
# compiled by an earlier run of the same code and hide its compile time
os.environ.setdefault("FRONTIER_JAX_CACHE", "off")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _time_sweep(spec: dict, engine: str, repeats: int) -> dict:
    from frontier_jax.costmodel.kernel import EXTRA_COORDS, load_sweep_spec, make_kernel, outputs_meta, \
        sweep_assumptions
    from frontier_jax.runner import run_sweep
    s = json.loads(json.dumps(spec))
    s.setdefault("fixed", {})["engine"] = engine
    s["sweep"]["name"] = f"{s['sweep']['name']}_{engine}"
    sp = load_sweep_spec(s)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats + 1):  # as frontier_jax.sweep, keeping run_sweep's summary (compile seconds)
            t0 = time.perf_counter()
            summary = run_sweep(sp, make_kernel(sp), outputs_meta(), os.path.join(tmp, f"r{i}.nc"),
                                extra_coords=EXTRA_COORDS, progress=False, attrs=sweep_assumptions(sp))
            runs.append((time.perf_counter() - t0, summary.compile_seconds))
    points = summary.points
    wall, comp = runs[0]
    out = {"points": points, "cold_s": wall, "compile_s": comp, "eval_s": wall - comp,
           "cold_points_per_s": points / wall, "eval_points_per_s": points / (wall - comp)}
    if repeats:  # a new sweep call traces its kernel again: warm still compiles, it only reuses what jax caches
        warm = statistics.median(w for w, _ in runs[1:])
        out.update(warm_s=warm, warm_points_per_s=points / warm)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default=str(ROOT / "sweeps" / "bench_1e4.toml"))
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    import jax
    spec = tomllib.loads(Path(a.spec).read_text())
    res = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                      f"jax {jax.__version__} on {jax.default_backend()}", "spec": a.spec}
    for engine in ("current", "current-kernels"):
        res[engine] = _time_sweep(spec, engine, a.repeats)
        print(engine, res[engine], file=sys.stderr, flush=True)
    res["ratio_cold"] = res["current-kernels"]["cold_s"] / res["current"]["cold_s"]
    res["ratio_compile"] = res["current-kernels"]["compile_s"] / res["current"]["compile_s"]
    res["ratio_eval"] = res["current-kernels"]["eval_s"] / res["current"]["eval_s"]
    if a.repeats:
        res["ratio_warm"] = res["current-kernels"]["warm_s"] / res["current"]["warm_s"]
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

"""The cost of the measured-kernel latency path (issue 18), side by side with the roofline in one run.

    python benchmarks/kernel_engine.py [--spec sweeps/bench_1e4.toml] [--repeats 3]
    python benchmarks/kernel_engine.py --spec sweeps/bench_1e6.toml --repeats 0   # the issue's bench_1e6, one run each

Runs the same sweep with engine "current" (roofline) and "current-kernels" (iterations from measured kernels):
the first run of each includes compilation (cold), the next `repeats` reuse the compiled chunk program (warm,
median reported). Prints one JSON object with the machine, both timings and their ratios.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _time_sweep(spec: dict, engine: str, repeats: int) -> dict:
    import frontier_jax as fj
    s = json.loads(json.dumps(spec))
    s.setdefault("fixed", {})["engine"] = engine
    s["sweep"]["name"] = f"{s['sweep']['name']}_{engine}"
    points = 1
    for ax in s["axes"].values():
        points *= len(ax["values"]) if "values" in ax else int(next(iter(v for k, v in ax.items()
                                                                          if k in ("logspace", "linspace")))[2])
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            fj.sweep(s, out=os.path.join(tmp, f"r{i}.nc"), progress=False)
            times.append(time.perf_counter() - t0)
    out = {"points": points, "cold_s": times[0], "cold_points_per_s": points / times[0]}
    if repeats:  # a new sweep call traces its kernel again: warm still compiles, it only reuses what jax caches
        warm = statistics.median(times[1:])
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
    if a.repeats:
        res["ratio_warm"] = res["current-kernels"]["warm_s"] / res["current"]["warm_s"]
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

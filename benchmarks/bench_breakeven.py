"""Break-even points solved per second (KV bandwidth solved over a workload x contract grid), for several grid sizes.

    python benchmarks/bench_breakeven.py                      # 1e4 and 1e5 points
    python benchmarks/bench_breakeven.py --sizes 1e4,1e5,1e6  # the 1e6 run takes a long time on a CPU

On a CPU the host is split into one JAX device per core (XLA_FLAGS=--xla_force_host_platform_device_count=N, set
here unless XLA_FLAGS is already given), so the sweep engine shards the points over the cores. Each size is a new
grid shape and compiles once; the compile time is reported apart from the solve rate. Prints a table and writes
JSON to benchmarks/results/.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

if "XLA_FLAGS" not in os.environ and os.environ.get("JAX_PLATFORMS", "cpu") == "cpu":
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={os.cpu_count() or 1}"

import jax  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def factors(n: int) -> tuple[int, int, int]:
    """Three near-equal factors of n (the grid shape)."""
    divisors = lambda m, cap: max(d for d in range(1, int(cap) + 1) if m % d == 0)  # noqa: E731
    a = divisors(n, round(n ** (1 / 3)) + 1e-9)
    b = divisors(n // a, math.isqrt(n // a))
    return a, b, n // a // b


def spec(n: int, hardware: str) -> str:
    a, b, c = factors(n)
    return f"""
[sweep]
name = "bench_breakeven_{n}"
percentile = 0.99
[fixed]
model = "llama-3.1-70b"
hardware = "{hardware}"
ttft = 4.0
[axes]
input_len = {{ logspace = [256, 16384, {a}] }}
output_len = {{ logspace = [32, 2048, {b}] }}
tpot = {{ logspace = [0.02, 0.1, {c}] }}
kv_bandwidth = {{ logspace = [1e8, 1e12, 2] }}
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e4,1e5", help="comma-separated numbers of points (default 1e4,1e5)")
    ap.add_argument("--chunk", type=int, default=4096, help="points per chunk (default 4096)")
    ap.add_argument("--samples", type=int, default=16, help="bracket samples (default 16)")
    ap.add_argument("--wrt", default=None, help="sensitivity inputs (default: the library default; '' for none)")
    ap.add_argument("--hardware", default="h100-80gb-sxm")
    ap.add_argument("--float32", action="store_true", help="float32 instead of float64")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/bench_breakeven_<time>.json)")
    a = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", not a.float32)
    from frontier_jax.crossover import breakeven
    from frontier_jax.solvers import OUTCOMES

    sizes = [int(float(s)) for s in a.sizes.split(",") if s.strip()]
    wrt = None if a.wrt is None else [w for w in a.wrt.split(",") if w]
    devices = jax.local_devices()
    rows = []
    print(f"device: {devices[0].device_kind} ({devices[0].platform}) x{len(devices)}, "
          f"{'float32' if a.float32 else 'float64'}, chunk {a.chunk}, samples {a.samples}", flush=True)
    header = (f"{'points':>9s} {'shape':>14s} {'compile s':>9s} {'solve s':>9s} {'points/s':>9s} {'iter mean':>9s} "
              f"{'iter max':>8s} {'evals mean':>10s} {'evals max':>9s} {'located %':>9s}")
    print(header, flush=True)
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            ds = breakeven(spec(n, a.hardware), out=os.path.join(tmp, "b.nc"), chunk=a.chunk, samples=a.samples,
                           wrt=wrt)
            wall = time.perf_counter() - t0
            it, ev = ds["iterations"].values, ds["evaluations"].values
            outcome = ds["solver_outcome"].values
            row = dict(points=n, shape=list(factors(n)), compile_seconds=float(ds.attrs["breakeven_compile_seconds"]),
                       wall_seconds=wall, points_per_second=float(ds.attrs["breakeven_points_per_second"]),
                       iterations_mean=float(it.mean()), iterations_max=int(it.max()),
                       iterations_mean_located=float(it[ds["converged"].values == 1].mean())
                       if np.any(ds["converged"].values == 1) else None,
                       evaluations_mean=float(ev.mean()), evaluations_max=int(ev.max()),
                       outcomes={o: int(np.sum(outcome == i)) for i, o in enumerate(OUTCOMES)},
                       wrt=ds.attrs["breakeven_wrt"].split())
            ds.close()
        solve_s = n / row["points_per_second"]
        located = 100.0 * (row["outcomes"]["converged"] + row["outcomes"]["kink"]) / n
        print(f"{n:>9,d} {'x'.join(map(str, row['shape'])):>14s} {row['compile_seconds']:>9.1f} {solve_s:>9.1f} "
              f"{row['points_per_second']:>9.1f} {row['iterations_mean']:>9.2f} {row['iterations_max']:>8d} "
              f"{row['evaluations_mean']:>10.2f} {row['evaluations_max']:>9d} {located:>9.1f}", flush=True)
        rows.append(row)
    d0 = devices[0]
    record = dict(benchmark="breakeven", created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                  device=f"{d0.device_kind} ({d0.platform}) x{len(devices)}", host=platform.node(),
                  cpu_count=os.cpu_count(), jax_version=jax.__version__, x64=not a.float32, chunk=a.chunk,
                  samples=a.samples, hardware=a.hardware, python=sys.version.split()[0], results=rows)
    out = Path(a.out) if a.out else RESULTS / f"bench_breakeven_{_dt.datetime.now():%Y%m%d_%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Performance benchmarks of the full evaluation (three architectures, configuration search, goodput).

    python benchmarks/run.py                      # 1e4, 1e5, 1e6 points, per-point loop, numpy tail, float32 check
    python benchmarks/run.py --quick              # 1e4 and 1e5 only, fewer loop points
    python benchmarks/run.py --sizes 1e4,1e5,1e6,1e7
    python benchmarks/run.py --tune-chunks 512,1024,2048,4096,8192 --sizes 1e5

Every size runs `run_sweep` on sweeps/bench_<size>.toml (netCDF written to a temporary folder, as a user would
run it); compile time is reported separately from the evaluation rate. The same model is then run as a per-point
loop: `frontier_jax.api.evaluate` called on one point of the grid at a time (the jitted single-point program, compiled
once and timed after a warm-up; the same code without vectorisation), whose outputs are checked against the sweep's
at the same points. Speed-ups are ratios of points per second. Medians over repeats after a warm-up; JAX results are
blocked on (run_sweep pulls every chunk to the host). Results: a table on stdout and JSON in benchmarks/results/.

The one numpy baseline is the M/G/1 prefill-queue tail (`numpy_tail` below): the Cramer-Lundberg decay rate
(queueing.decay_rate: Newton from the heavy-traffic bound) and the sojourn quantile (queueing.sojourn) over the
5-node quadrature, written in ~40 lines of numpy and timed against the JAX functions on the same 1e6 inputs, with
their agreement checked. It is the only one because it is the model's innermost closed form and small and stable
enough to keep written twice; a numpy transliteration of the whole model (benchmarks/numpy_reference.py, retired)
doubled the code to maintain for a comparison of two copies. The model's correctness is tested against independent
closed forms (tests/test_closed_forms.py) and the simulator, not against a second implementation.

The machine may be shared: the JSON records the load average, and each phase's process CPU time next to its
wall time (points per CPU-second do not depend on how many other processes share the cores).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import functools
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np  # the numpy baseline (numpy_tail); jax is imported after main() sets XLA_FLAGS

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"1e4": 10_000, "1e5": 100_000, "1e6": 1_000_000, "1e7": 10_000_000}


def parse_args(argv=None):
    a = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--sizes", default=None, help="comma-separated grid sizes among 1e4,1e5,1e6,1e7 "
                   "(default 1e4,1e5,1e6; --quick: 1e4,1e5)")
    a.add_argument("--quick", action="store_true", help="small sizes, fewer loop points and repeats")
    a.add_argument("--repeats", type=int, default=3, help="timed repeats per size up to 1e5 (median reported); "
                   "1e6 and 1e7 are timed once after the compile")
    a.add_argument("--chunk", type=int, default=None, help="run_sweep chunk (points per compiled call; default "
                   "run_sweep's: 1024 per CPU device)")
    a.add_argument("--tail-points", type=int, default=1_000_000, help="inputs of the M/G/1 tail timed in numpy and "
                   "in JAX (0 to skip)")
    a.add_argument("--loop-points", type=int, default=50, help="points of the first grid for the per-point loop "
                   "(frontier_jax.api.evaluate one point at a time; 0 to skip)")
    a.add_argument("--dense-sizes", default="1e5", help="sizes also timed with every point evaluated in full "
                   "(run_sweep share=False): the same work as the per-point loop")
    a.add_argument("--f32-size", default="1e5", help="grid for the float32 vs float64 comparison ('' to skip)")
    a.add_argument("--tune-chunks", default="", help="comma-separated chunk sizes to time on the smallest grid "
                   "of --sizes above 1e4 (one compile each)")
    a.add_argument("--cpu-devices", type=int, default=len(os.sched_getaffinity(0)),
                   help="split the CPU into N XLA devices (run_sweep shards each chunk over them; default: one per "
                        "core, as the CLI does); 0 = JAX default (one device)")
    a.add_argument("--no-flops", action="store_true", help="skip the FLOP count (unrolled lowering, ~30 s)")
    a.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for the JSON")
    args = a.parse_args(argv)
    if args.sizes is None:
        args.sizes = "1e4,1e5" if args.quick else "1e4,1e5,1e6"
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    args.dense_sizes = [s.strip() for s in args.dense_sizes.split(",") if s.strip() in args.sizes]
    for s in args.sizes:
        if s not in SIZES:
            a.error(f"unknown size {s!r}; choose from {', '.join(SIZES)}")
    if args.quick:
        args.loop_points = min(args.loop_points, 20)
        args.repeats = min(args.repeats, 2)
    return args


# ---------------------------------------------------------------- measurement helpers
def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Phase:
    """Wall time, process CPU time and peak RSS (sampled every 20 ms) of a block."""

    def __enter__(self):
        self.peak, self._stop = rss_bytes(), threading.Event()

        def sample():
            while not self._stop.wait(0.02):
                self.peak = max(self.peak, rss_bytes())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        self.load0 = os.getloadavg()[0]
        self.t0, self.c0 = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.t0, cpu_seconds() - self.c0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        self.load = (self.load0 + os.getloadavg()[0]) / 2


def machine() -> dict:
    import jax
    import numpy as np

    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    flags = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        flags = next((ln for ln in f if ln.startswith("flags")), "")
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1]) * 1024
    mhz = None
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        mhz = float(next(ln for ln in f if ln.startswith("cpu MHz")).split(":")[1])
    import hashlib

    model_files = (sorted((ROOT / "frontier_jax" / "costmodel").rglob("*.py"))
                   + sorted((ROOT / "frontier_jax" / "runner").rglob("*.py")) + [ROOT / "frontier_jax" / "tracing.py"])
    code = hashlib.sha256(b"".join(p.read_bytes() for p in model_files)).hexdigest()[:12]
    return dict(model_code_sha256=code, cpu_model=model, cores=os.cpu_count(),
                cores_usable=len(os.sched_getaffinity(0)),
                cpu_mhz=mhz, avx512="avx512f" in flags, avx2="avx2" in flags, memory_bytes=mem,
                hostname=platform.node(), python=platform.python_version(), numpy=np.__version__,
                jax=jax.__version__, backend=jax.default_backend(), devices=[str(d) for d in jax.devices()],
                xla_flags=os.environ.get("XLA_FLAGS", ""), load_average=os.getloadavg())


# ---------------------------------------------------------------- the JAX side
def spec_path(size: str) -> Path:
    return ROOT / "sweeps" / f"bench_{size}.toml"


def jax_sweep(size: str, chunk: int, repeats: int, tmp: Path, tag: str = "f64", share: bool = True) -> dict:
    """run_sweep on the size's grid: a cold run (compile + evaluation), then `repeats` warm runs (cached
    executable) for sizes up to 1e5. Returns the rates and the output path of the last run. share=False evaluates
    every point in full (the work the per-point loop does); by default run_sweep shares the link-blind part over
    the KV-bandwidth axis and the prefill part over the output length (runner/sharing.py)."""
    from frontier_jax.costmodel.kernel import EXTRA_COORDS, load_sweep_spec, make_kernel, outputs_meta
    from frontier_jax.runner import run_sweep

    spec = load_sweep_spec(spec_path(size))
    kernel, meta = make_kernel(spec), outputs_meta()
    out = tmp / f"{size}_{tag}.nc"
    runs = []
    n_warm = repeats if SIZES[size] <= 100_000 else 0
    for i in range(1 + n_warm):
        with Phase() as ph:
            s = run_sweep(spec, kernel, meta, out, extra_coords=EXTRA_COORDS, chunk=chunk, overwrite=True,
                          progress=False, share=share)
        runs.append(dict(wall=ph.wall, cpu=ph.cpu, compile=s.compile_seconds, eval=s.seconds - s.compile_seconds,
                         peak_rss=ph.peak, load=ph.load))
        print(f"  [{tag} {size}] run {i}: {s.seconds:.1f} s (compile {s.compile_seconds:.1f} s), "
              f"{s.points_per_second:,.0f} points/s, load {ph.load:.1f}", flush=True)
    cold, warm = runs[0], runs[1:] or runs[:1]
    evals = [r["eval"] for r in warm]
    ev = statistics.median(evals)
    # CPU seconds of the evaluation alone: the warm runs have no compile; for a cold-only size, subtract the
    # compile's wall time: XLA compiles on up to ~1.6 cores, so for these sizes points per CPU-second is a lower bound.
    cpu = statistics.median([r["cpu"] for r in warm]) if n_warm else cold["cpu"] - cold["compile"]
    return dict(points=spec.size, compile_s=cold["compile"], eval_s=ev, eval_s_all=evals,
                points_per_s=spec.size / ev, cpu_s=cpu, points_per_cpu_s=spec.size / max(cpu, 1e-9),
                peak_rss_bytes=max(r["peak_rss"] for r in runs), ru_maxrss_bytes=resource.getrusage(
                    resource.RUSAGE_SELF).ru_maxrss * 1024, load=statistics.mean(r["load"] for r in runs),
                repeats=len(warm) if n_warm else 1, chunk=chunk, share=share, out=str(out),
                compile_from_disk_s=compile_from_disk(spec, kernel, chunk, share))


def _plan(spec, kernel, chunk: int, share: bool):
    import jax
    import numpy as np
    from jax.sharding import Mesh

    from frontier_jax.runner import run as engine
    from frontier_jax.runner import sharing
    from frontier_jax.runner.grid import layout

    devices = jax.local_devices()
    mesh = Mesh(np.array(devices), (engine.AXIS,))
    per = -(-min(chunk, spec.size) // len(devices))
    return mesh, per, sharing.plan(kernel, layout(spec), per, share)


def compile_from_disk(spec, kernel, chunk: int, share: bool) -> float | None:
    """Seconds to trace the chunk program again and load it from JAX's persistent compilation cache (what a later
    `frontier sweep` of the same axis names and lengths pays instead of the compile); None without the cache."""
    import jax

    from frontier_jax.costmodel.kernel import EXTRA_COORDS, outputs_meta
    from frontier_jax.runner import run as engine
    from frontier_jax.runner.grid import layout, point_arrays

    if not jax.config.jax_compilation_cache_dir:
        return None
    engine._CACHE.clear()
    jax.clear_caches()
    mesh, per, parts = _plan(spec, kernel, chunk, share)
    _, seconds = engine._executable(kernel, layout(spec), mesh, per, point_arrays(spec), outputs_meta(),
                                    EXTRA_COORDS, parts)
    return seconds


def kernel_only(size: str, chunk: int, repeats: int) -> dict:
    """The compiled chunk program alone (no host transfer or netCDF write): what run_sweep's I/O costs."""
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from frontier_jax.costmodel.kernel import EXTRA_COORDS, load_sweep_spec, make_kernel, outputs_meta
    from frontier_jax.runner import run as engine
    from frontier_jax.runner.grid import index_dtype, layout, point_arrays

    spec = load_sweep_spec(spec_path(size))
    kernel = make_kernel(spec)
    mesh, per, parts = _plan(spec, kernel, chunk, True)
    host = point_arrays(spec)
    exe, _ = engine._executable(kernel, layout(spec), mesh, per, host, outputs_meta(), EXTRA_COORDS, parts)
    dev = {k: jax.device_put(v, NamedSharding(mesh, P())) for k, v in host.items()}
    step = per * mesh.size
    starts = [np.asarray(a, index_dtype()) for a in range(0, spec.size, step)]
    jax.block_until_ready(exe(starts[0], dev))  # warm-up
    times = []
    for _ in range(repeats):
        with Phase() as ph:
            for s in starts:
                r = exe(s, dev)
            jax.block_until_ready(r)
        times.append((ph.wall, ph.cpu))
    wall, cpu = sorted(times)[len(times) // 2]
    n = len(starts) * step
    return dict(points=n, eval_s=wall, points_per_s=n / wall, points_per_cpu_s=n / cpu)


def count_flops(n: int = 8) -> dict:
    """FLOPs and transcendentals per point, per architecture and in all: the kernel lowered with every
    lax.scan unrolled (XLA's cost analysis counts a while-loop body once, not once per trip). Pre-optimisation
    HLO: an upper bound on what XLA executes (CSE and loop-invariant motion remove some)."""
    import jax
    import jax.numpy as jnp

    from frontier_jax.costmodel import search
    from frontier_jax.costmodel.cost import evaluate_point
    from frontier_jax.costmodel.kernel import load_sweep_spec, make_kernel, point_inputs, stacked_tables
    from frontier_jax.costmodel.types import SearchSpace
    from frontier_jax.runner.grid import decode_points, layout, point_arrays

    spec = load_sweep_spec(spec_path("1e4"))
    tables = stacked_tables(spec.choices)
    lay, arr = layout(spec), {k: jnp.asarray(v) for k, v in point_arrays(spec).items()}
    space = SearchSpace()

    def part(name):
        def f(s, a):
            p, d, price = point_inputs(decode_points(lay, a, s + jnp.arange(n)), tables)
            if name == "all":
                return jax.vmap(lambda p, d, c: evaluate_point(p, d, c, space))(p, d, price)
            if name == "disaggregated":  # its three searches (the join is a few additions)
                return jax.vmap(lambda p, d: (search.search_decode_pool(p, d, space),
                                              search.search_prefill_free_link(p, d, space),
                                              search.search_prefill_pool(p, d, space)))(p, d)
            fn = {"colocated": search.search_colocated, "chunked": search.search_chunked}[name]
            return jax.vmap(lambda p, d: fn(p, d, space))(p, d)
        return f

    out = {}
    scan = jax.lax.scan
    jax.lax.scan = functools.partial(scan, unroll=True)
    try:
        for name in ("colocated", "chunked", "disaggregated", "all"):
            ca = jax.jit(part(name)).lower(0, arr).cost_analysis()
            out[name] = dict(flops=ca["flops"] / n, transcendentals=ca["transcendentals"] / n)
    finally:
        jax.lax.scan = scan
    # Bytes: the compiled (optimised, fused) chunk program, loops rolled: its bytes accessed count each loop body
    # once, so they are a floor on memory traffic; the compulsory traffic is the inputs read and outputs written.
    c = jax.jit(lambda s, a: make_kernel(spec)(decode_points(lay, a, s + jnp.arange(4096)))).lower(0, arr).compile()
    ca = c.cost_analysis()
    ca = ca[0] if isinstance(ca, list) else ca
    outs = jax.eval_shape(lambda s, a: make_kernel(spec)(decode_points(lay, a, s + jnp.arange(1))), 0, arr)
    out["bytes_compiled_rolled_per_point"] = ca["bytes accessed"] / 4096
    out["bytes_out_per_point"] = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(outs))
    out["bytes_in_per_point"] = len(spec.input_names) * 8
    return out


# ---------------------------------------------------------------- the per-point loop
def loop_side(size: str, n_points: int, sweep_out: str) -> dict:
    """`frontier_jax.api.evaluate` on one point at a time, `n_points` points spread over the grid: one scalar call
    per point, so one compiled single-point program (its compile is the warm-up, timed apart). What a user's Python
    loop over scenarios pays, input checks, catalogue look-ups and the xarray result included. The loop's costs are
    checked against the sweep's at the same points (max relative difference)."""
    import inspect

    import jax.numpy as jnp
    import numpy as np
    import xarray as xr

    from frontier_jax import api
    from frontier_jax.costmodel import catalog
    from frontier_jax.costmodel.kernel import CATEGORICAL, load_sweep_spec
    from frontier_jax.runner import make_point_fn

    spec = load_sweep_spec(spec_path(size))
    n = min(n_points, spec.size)
    idx = np.unique(np.linspace(0, spec.size - 1, n).astype(np.int64))
    pts = {k: np.asarray(v) for k, v in make_point_fn(spec)(jnp.asarray(idx)).items()}
    takes = set(inspect.signature(api.evaluate).parameters)
    unused = set(pts) - takes - {"price_scale", "io_ratio", "total_len"}
    if unused:
        raise SystemExit(f"the loop cannot pass {sorted(unused)} to frontier_jax.api.evaluate")

    def kwargs(i):
        kw = {k: spec.choices[k][int(v[i])] if k in CATEGORICAL else float(v[i]) for k, v in pts.items()
              if k in takes}
        if np.isnan(kw.get("rate", 0.0)):
            kw.pop("rate")  # fluid goodput
        if np.isinf(kw.get("total_gpus", 0.0)):
            kw.pop("total_gpus")
        if "price_scale" in pts:
            kw["price"] = float(catalog.load_hardware(kw["hardware"]).price) * float(pts["price_scale"][i])
        return kw

    calls = [kwargs(i) for i in range(idx.size)]
    with Phase() as ph:
        api.evaluate(**calls[0])  # compiles the single-point program
    compile_s = ph.wall
    costs = np.empty((idx.size, 3))
    with Phase() as ph:
        for i, kw in enumerate(calls):
            costs[i] = api.evaluate(**kw)["cost_per_mtok"].values
    with xr.open_dataset(sweep_out) as ds:
        ref = ds["cost_per_mtok"].transpose(*spec.axis_names, "arch").values.reshape(spec.size, 3)[idx]
    same_nan = bool(np.array_equal(np.isnan(costs), np.isnan(ref)))
    ok = np.isfinite(costs) & np.isfinite(ref)
    rel = np.abs(costs[ok] - ref[ok]) / np.abs(ref[ok])
    return dict(loop_points=int(idx.size), loop_compile_s=compile_s, loop_s_per_point=ph.wall / idx.size,
                loop_cpu_s_per_point=ph.cpu / idx.size, loop_same_nan_as_sweep=same_nan,
                loop_max_rel_diff_from_sweep=float(rel.max(initial=0.0)))


# ---------------------------------------------------------------- the one numpy baseline: the M/G/1 tail
def numpy_decay_rate(lam, service, w, newton_steps, max_exponent):
    """theta solving lam (E[exp(theta S)] - 1) = theta (Cramer-Lundberg); service (N, nodes), weights (nodes,).
    Newton on h(x) = log rho + log E[expm1(x s)] - log x, x = theta E[S], from the heavy-traffic upper bound."""
    es = service @ w
    rho = lam * es
    s = service / es[:, None]
    x_max = max_exponent / s.max(axis=1)
    rho_c = np.clip(rho, 1e-12, 1.0 - 1e-12)
    x = np.clip(2.0 * (1.0 - rho_c) / (rho_c * ((s * s) @ w)), 1e-9, x_max)
    for _ in range(newton_steps):
        em1 = np.expm1(np.minimum(x[:, None] * s, max_exponent))
        m1 = em1 @ w
        h = np.log(rho_c) + np.log(m1) - np.log(x)
        dh = (s * (em1 + 1.0)) @ w / m1 - 1.0 / x
        x = np.clip(x - h / dh, 1e-9, x_max)
    return np.where(rho < 1.0, x / es, 0.0)


def numpy_tail(lam, service, w, q, own_quantile, arrival_ca2):
    """q-quantile of the M/G/1 (G/G/1, Kingman-scaled) sojourn: log(rho M_S(theta) / (1 - q)) / theta, at least
    the own service's quantile; inf where rho >= 1."""
    from frontier_jax.costmodel import queueing as qu

    es, es2 = service @ w, (service * service) @ w
    rho = lam * es
    cs2 = es2 / es**2 - 1.0
    burst = np.maximum((arrival_ca2 + cs2) / (1.0 + cs2), qu.BURST_FLOOR)
    theta = numpy_decay_rate(lam, service, w, qu._NEWTON_STEPS, qu._MAX_EXPONENT) / burst
    mgf = np.exp(np.minimum(theta[:, None] * service, qu._MAX_EXPONENT)) @ w
    tail = (np.log(rho) + np.log(mgf) - np.log1p(-q)) / theta
    return np.where(rho < 1.0, np.maximum(tail, own_quantile), np.inf)


def tail_inputs(n: int, seed: int = 0) -> tuple:
    """n prefill queues: lognormal prompts (mean 32 to 32k tokens, CV 0 to 2) on the 5-node quadrature, affine
    prefill times, utilisation 0.05 to 0.95, percentiles 0.5 to 0.999, Poisson or bursty arrivals."""
    import statistics as st

    import numpy as np

    from frontier_jax.costmodel import queueing as qu

    rng = np.random.default_rng(seed)
    logu = lambda lo, hi: np.exp(rng.uniform(np.log(lo), np.log(hi), n))  # noqa: E731
    mean, cv = logu(32, 32768), rng.uniform(0.0, 2.0, n)
    sigma = np.sqrt(np.log1p(cv**2))
    x, w = np.polynomial.hermite_e.hermegauss(qu.N_NODES)
    w = w / w.sum()
    tokens = mean[:, None] * np.exp(sigma[:, None] * x - 0.5 * sigma[:, None] ** 2)
    a, b = logu(1e-3, 5e-2), logu(1e-5, 2e-4)  # fixed and per-token seconds of a prefill
    service = a[:, None] + b[:, None] * tokens
    q = rng.choice([0.5, 0.9, 0.99, 0.999], n)
    z = np.array([st.NormalDist().inv_cdf(v) for v in (0.5, 0.9, 0.99, 0.999)])[np.searchsorted([0.5, 0.9, 0.99,
                                                                                                    0.999], q)]
    own = a + b * mean * np.exp(sigma * z - 0.5 * sigma**2)
    lam = rng.uniform(0.05, 0.95, n) / (service @ w)
    ca2 = np.where(rng.random(n) < 0.5, 1.0, rng.uniform(0.0, 4.0, n))
    return lam, service, w, q, own, ca2


def tail_side(n: int, repeats: int) -> dict:
    """numpy_tail against queueing.sojourn (jitted, inputs on the device, result blocked on) on the same n inputs."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from frontier_jax.costmodel import queueing as qu

    args = tail_inputs(n)
    numpy_tail(*(a[:1000] if a.ndim and a.shape[0] == n else a for a in args))  # warm-up
    np_times = []
    for _ in range(repeats):
        with Phase() as ph:
            want = numpy_tail(*args)
        np_times.append((ph.wall, ph.cpu, ph.peak))
    fn = jax.jit(lambda lam, s, w, q, own, ca2: qu.sojourn(lam, s, w, q, 0.0, own, arrival_ca2=ca2))
    dev = [jnp.asarray(a) for a in args]
    with Phase() as ph:
        jax.block_until_ready(fn(*dev))
    compile_s = ph.wall
    jax_times = []
    for _ in range(repeats):
        with Phase() as ph:
            got = jax.block_until_ready(fn(*dev))
        jax_times.append((ph.wall, ph.cpu, ph.peak))
    got = np.asarray(got)
    same_inf = bool(np.array_equal(np.isinf(got), np.isinf(want)) and not np.isnan(got).any())
    ok = np.isfinite(want)
    rel = np.abs(got[ok] - want[ok]) / np.abs(want[ok])
    (nw, nc, npk), (jw, jc, jpk) = sorted(np_times)[len(np_times) // 2], sorted(jax_times)[len(jax_times) // 2]
    return dict(points=n, numpy_s=nw, numpy_cpu_s=nc, numpy_peak_rss_bytes=npk, jax_s=jw, jax_cpu_s=jc,
                jax_compile_s=compile_s, jax_peak_rss_bytes=jpk, speedup=nw / jw, max_rel_diff=float(rel.max()),
                same_inf=same_inf, repeats=repeats)


# ---------------------------------------------------------------- float32 vs float64
def f32_compare(size: str, chunk: int, tmp: Path, f64_path: str) -> dict:
    import jax
    import numpy as np
    import xarray as xr

    jax.config.update("jax_enable_x64", False)
    try:
        r32 = jax_sweep(size, chunk, 1 if SIZES[size] <= 100_000 else 0, tmp, tag="f32")
    finally:
        jax.config.update("jax_enable_x64", True)
    diffs = {}
    with xr.open_dataset(f64_path) as a, xr.open_dataset(r32["out"]) as b:
        feas = (a["feasible"].values == 1) & (b["feasible"].values == 1)
        diffs["feasible_mismatch_fraction"] = float(np.mean(a["feasible"].values != b["feasible"].values))
        diffs["best_arch_mismatch_fraction"] = float(np.mean(a["best_arch"].values != b["best_arch"].values))
        for name in ("cost_per_mtok", "ttft_achieved", "tpot_achieved", "goodput", "gpus"):
            x, y = a[name].values[feas], b[name].values[feas]
            ok = np.isfinite(x) & np.isfinite(y)
            rel = np.abs(x[ok] - y[ok]) / np.maximum(np.abs(x[ok]), 1e-300)
            diffs[name] = dict(max_rel=float(rel.max()) if rel.size else None,
                               p99_rel=float(np.quantile(rel, 0.99)) if rel.size else None)
    return dict(size=size, f32=r32, diff=diffs)


# ---------------------------------------------------------------- report
def fmt_rate(x):
    return "-" if x is None else f"{x:,.0f}"


def table(res: dict) -> str:
    lines = [f"machine: {res['machine']['cpu_model']}, {res['machine']['cores_usable']} cores, "
             f"jax {res['machine']['jax']} ({res['machine']['backend']}, {len(res['machine']['devices'])} device(s)), "
             f"load average at start {res['machine']['load_average'][0]:.1f}", ""]
    hdr = (f"{'points':>10} {'compile s':>9} {'cached s':>8} {'eval s':>8} {'JAX pts/s':>10} {'pts/cpu-s':>10} "
           f"{'peak RSS':>9} {'dense pts/s':>11} {'loop s/pt':>9} {'JAX/loop':>15} {'load':>5}")
    lines += [hdr, "-" * len(hdr)]
    for size, r in res["sizes"].items():
        j, dense = r["jax"], r.get("jax_dense")
        loop = res.get("loop", {}).get("loop_s_per_point")
        ratio = "-" if loop is None else f"{loop * j['points_per_s']:,.0f}x"
        if dense and loop is not None:
            ratio = f"{ratio} ({loop * dense['points_per_s']:,.0f}x)"
        cached = j.get("compile_from_disk_s")
        lines.append(f"{j['points']:>10,} {j['compile_s']:>9.1f} {'-' if cached is None else f'{cached:.1f}':>8} "
                     f"{j['eval_s']:>8.2f} {j['points_per_s']:>10,.0f} {j['points_per_cpu_s']:>10,.0f} "
                     f"{j['peak_rss_bytes'] / 2**20:>7.0f}MB {fmt_rate(dense and dense['points_per_s']):>11} "
                     f"{'-' if loop is None else f'{loop:.4f}':>9} {ratio:>15} {j['load']:>5.1f}")
    lines.append("(JAX/loop: the sweep as run, its link-blind and prefill parts shared between points that differ "
                 "only in inputs those parts ignore (runner/sharing.py); in brackets every point in full, the same "
                 "work as the loop)")
    if "loop" in res:
        lp = res["loop"]
        nan = "in the same places" if lp["loop_same_nan_as_sweep"] else "IN OTHER PLACES"
        lines.append(f"\nper-point loop: frontier_jax.api.evaluate on {lp['loop_points']} points of {lp['size']}, one "
                     f"at a time: {lp['loop_s_per_point'] * 1e3:.1f} ms per point "
                     f"({lp['loop_cpu_s_per_point'] * 1e3:.1f} CPU-ms), compile {lp['loop_compile_s']:.1f} s; "
                     f"cost_per_mtok against the sweep at the same points: max relative difference "
                     f"{lp['loop_max_rel_diff_from_sweep']:.2e}, NaN {nan}")
    if "numpy_tail" in res:
        t = res["numpy_tail"]
        lines.append(f"\nM/G/1 prefill-queue tail (decay rate + sojourn quantile, 5 nodes) on {t['points']:,} inputs: "
                     f"numpy {t['numpy_s']:.3f} s ({t['points'] / t['numpy_s']:,.0f} /s), JAX {t['jax_s']:.3f} s "
                     f"({t['points'] / t['jax_s']:,.0f} /s, compile {t['jax_compile_s']:.1f} s): {t['speedup']:.1f}x; "
                     f"max relative difference {t['max_rel_diff']:.2e}, infinities "
                     f"{'in the same places' if t['same_inf'] else 'DIFFER'}")
    if "kernel_only" in res:
        k = res["kernel_only"]
        lines.append(f"\nkernel only (no host copy, no netCDF), {k['points']:,} points: {k['points_per_s']:,.0f} "
                     f"points/s ({k['points_per_cpu_s']:,.0f} per CPU-second)")
    if "flops" in res:
        f = res["flops"]
        lines.append("\ncost per point (unrolled HLO, before XLA optimisation):")
        for name in ("colocated", "chunked", "disaggregated", "all"):
            lines.append(f"  {name:14s} {f[name]['flops'] / 1e6:7.2f} MFLOP  {f[name]['transcendentals'] / 1e3:7.1f} k "
                         "transcendentals")
        lines.append(f"  bytes: {f['bytes_in_per_point']} in + {f['bytes_out_per_point']} out (compulsory); "
                     f"compiled program, loop bodies once: {f['bytes_compiled_rolled_per_point'] / 1e3:.0f} kB")
    if "f32" in res:
        f = res["f32"]
        j32 = f["f32"]
        j64 = res["sizes"].get(f["size"], {}).get("jax")
        lines.append(f"\nfloat32 vs float64 on {j32['points']:,} points: f32 {j32['points_per_s']:,.0f} points/s"
                     + (f", f64 {j64['points_per_s']:,.0f} points/s ({j32['points_per_s'] / j64['points_per_s']:.2f}x)"
                        if j64 else "") + f", compile {j32['compile_s']:.1f} s")
        d = f["diff"]
        lines.append(f"  feasibility differs at {d['feasible_mismatch_fraction'] * 100:.3f}% of points, best "
                     f"architecture at {d['best_arch_mismatch_fraction'] * 100:.3f}%")
        for name in ("cost_per_mtok", "ttft_achieved", "tpot_achieved", "goodput", "gpus"):
            if d[name]["max_rel"] is not None:
                lines.append(f"  {name:16s} max rel. diff {d[name]['max_rel']:.2e} (p99 {d[name]['p99_rel']:.2e}) "
                             "on points feasible in both")
    if res.get("chunks"):
        lines.append("\nchunk size tuning:")
        for c, r in res["chunks"].items():
            lines.append(f"  chunk {int(c):>6}: {r['points_per_s']:>9,.0f} points/s ({r['points_per_cpu_s']:,.0f} per "
                         f"CPU-s), compile {r['compile_s']:.1f} s, peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MB, "
                         f"load {r['load']:.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cpu_devices:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={args.cpu_devices}").strip()
    import jax

    jax.config.update("jax_enable_x64", True)  # the CLI's default precision
    tmp = Path(tempfile.mkdtemp(prefix="frontier_bench_"))
    # as the CLI does, but empty: the first compile of each program is cold, then timed again from the disk cache
    jax.config.update("jax_compilation_cache_dir", str(tmp / "xla_cache"))
    if args.chunk is None:
        from frontier_jax.runner.run import CPU_CHUNK_PER_DEVICE, GPU_CHUNK_PER_DEVICE
        per = CPU_CHUNK_PER_DEVICE if jax.default_backend() == "cpu" else GPU_CHUNK_PER_DEVICE
        args.chunk = per * len(jax.devices())
    res = dict(date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), args=vars(args),
               machine=machine(), sizes={})
    try:
        if not args.no_flops:
            print("counting FLOPs per point ...", flush=True)
            res["flops"] = count_flops()
        for size in args.sizes:
            print(f"size {size}: run_sweep (JAX, float64) ...", flush=True)
            entry = {"jax": jax_sweep(size, args.chunk, args.repeats, tmp)}
            if size in args.dense_sizes:
                print(f"size {size}: run_sweep, every point in full ...", flush=True)
                entry["jax_dense"] = jax_sweep(size, args.chunk, min(args.repeats, 1), tmp, tag="dense", share=False)
            res["sizes"][size] = entry
            if args.loop_points and size == args.sizes[0]:  # its cost per point does not depend on the grid
                print(f"size {size}: per-point loop (frontier_jax.api.evaluate) on {args.loop_points} points ...",
                      flush=True)
                res["loop"] = dict(size=size, **loop_side(size, args.loop_points, entry["jax"]["out"]))
        if args.tail_points:
            print(f"M/G/1 tail on {args.tail_points:,} inputs, numpy and JAX ...", flush=True)
            res["numpy_tail"] = tail_side(args.tail_points, max(1, args.repeats))
        mid = next((s for s in args.sizes if SIZES[s] == 100_000), args.sizes[0])
        print(f"kernel only on {mid} ...", flush=True)
        res["kernel_only"] = kernel_only(mid, args.chunk, max(1, args.repeats))
        if args.f32_size and args.f32_size in res["sizes"]:
            print(f"float32 on {args.f32_size} ...", flush=True)
            res["f32"] = f32_compare(args.f32_size, args.chunk, tmp, res["sizes"][args.f32_size]["jax"]["out"])
        if args.tune_chunks:
            size = next((s for s in args.sizes if SIZES[s] > 10_000), args.sizes[0])
            res["chunks"] = {}
            for c in [int(x) for x in args.tune_chunks.split(",")]:
                print(f"chunk {c} on {size} ...", flush=True)
                res["chunks"][str(c)] = jax_sweep(size, c, 1, tmp, tag=f"chunk{c}")
        res["machine"]["load_average_end"] = os.getloadavg()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for entry in res["sizes"].values():
            entry["jax"].pop("out", None)
            entry.get("jax_dense", {}).pop("out", None)
        for r in res.get("chunks", {}).values():
            r.pop("out", None)
        if "f32" in res:
            res["f32"]["f32"].pop("out", None)
    text = table(res)
    print("\n" + text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    cpu = "".join(ch if ch.isalnum() else "-" for ch in res["machine"]["cpu_model"]).strip("-").lower()
    path = out / f"{stamp}_{cpu}_{res['machine']['cores_usable']}c.json"
    path.write_text(json.dumps(res, indent=1, default=float))
    print(f"\nwritten {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

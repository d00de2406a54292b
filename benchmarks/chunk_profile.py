"""Where one chunk of a sweep spends its time, by part of the model: XLA's own timings of the compiled program.

    python benchmarks/chunk_profile.py [--engine current-kernels] [--spec sweeps/bench_1e6.toml] [--devices 2]
                                      [--opt-level 0]   # ~2 min on a 2-core CPU

Compiles the sweep's chunk program (1,024 points per device, the CPU compiler options `run_sweep` uses) with the
model's parts under named scopes (the searches, the iteration tables, the primitives, the chunked latency inside
its solvers), times 8 chunks spread over the grid (wall, median), then records 3 chunks with `jax.profiler` and
adds up the time of every compiled operation (XLA thunk) by the innermost of those scopes its HLO comes from.
The thunk sums count both devices' threads and the profiler's own overhead, so they exceed the wall time; they
are for comparing parts and engines, not for timing. docs/performance.md records the numbers.
"""
from __future__ import annotations

import argparse
import collections
import functools
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["FRONTIER_JAX_CACHE"] = "off"

SCOPES = ("itable", "tabulate", "shared_prims", "prims", "colocated", "chunked", "free_link", "decode_pool",
          "prefill_pool", "chunk_latency", "deploy")


def _scoped(f, name):
    import jax

    @functools.wraps(f)
    def g(*a, **k):
        with jax.named_scope(name):
            return f(*a, **k)
    return g


def _instrument():
    """Put the model's parts under named scopes (module attributes, as the search module calls them)."""
    from frontier_jax.costmodel import kernel as K
    from frontier_jax.costmodel import search as S
    from frontier_jax.costmodel.arch import chunked as CH
    for mod, attr, name in ((S, "iteration_table", "itable"), (CH, "tabulate", "tabulate"),
                            (S, "_shared_primitives", "shared_prims"), (S, "_primitives", "prims"),
                            (S, "search_colocated", "colocated"), (S, "search_chunked", "chunked"),
                            (S, "search_prefill_free_link", "free_link"), (S, "search_decode_pool", "decode_pool"),
                            (CH, "latency", "chunk_latency"), (S, "_deploy", "deploy"),
                            (K, "search_prefill_pool", "prefill_pool")):
        setattr(mod, attr, _scoped(getattr(mod, attr), name))
    K.SweepKernel.PARTS = {**K.SweepKernel.PARTS,
                           "prefill": (K.search_prefill_pool, K.SweepKernel.PARTS["prefill"][1])}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", default="current-kernels")
    ap.add_argument("--spec", default=str(ROOT / "sweeps" / "bench_1e6.toml"))
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--opt-level", type=int, default=None,
                    help="xla_backend_optimization_level (default: run_sweep's CPU options)")
    a = ap.parse_args(argv)
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={a.devices}"
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh
    jax.config.update("jax_enable_x64", True)
    _instrument()
    from frontier_jax.costmodel.kernel import load_sweep_spec, make_kernel
    from frontier_jax.runner import run as engine
    from frontier_jax.runner import sharing
    from frontier_jax.runner.grid import index_dtype, layout, point_arrays

    s = tomllib.loads(Path(a.spec).read_text())
    s.setdefault("fixed", {})["engine"] = a.engine
    spec = load_sweep_spec(s)
    kernel, lay, host = make_kernel(spec), layout(spec), point_arrays(spec)
    mesh = Mesh(np.array(jax.local_devices()), (engine.AXIS,))
    per = engine.CPU_CHUNK_PER_DEVICE
    fn = functools.partial(engine._eval_chunk, kernel=kernel, lay=lay, mesh=mesh, per_dev=per,
                           parts=sharing.plan(kernel, lay, per))
    specs = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in host.items()}
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(jax.ShapeDtypeStruct((), index_dtype()), specs).compile(
        compiler_options=engine.compiler_options("cpu") if a.opt_level is None
        else {"xla_backend_optimization_level": a.opt_level})
    compile_s = time.perf_counter() - t0
    arrays = {k: jnp.asarray(v) for k, v in host.items()}
    starts = [jnp.asarray(int(x), index_dtype()) for x in np.linspace(0, lay.size - a.devices * per, 9)]
    jax.block_until_ready(compiled(starts[0], arrays))
    wall = []
    for st in starts[1:]:
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(st, arrays))
        wall.append(time.perf_counter() - t0)
    names = {m.group(1): m.group(2) for m in re.finditer(r"^\s*(?:ROOT )?%(\S+) = .*?op_name=\"([^\"]*)\"",
                                                           compiled.as_text(), re.M)}
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for st in starts[3:6]:
                jax.block_until_ready(compiled(st, arrays))
        trace = sorted(glob.glob(os.path.join(tmp, "plugins", "profile", "*", "*.trace.json.gz")))[-1]
        events = json.load(gzip.open(trace))["traceEvents"]
    by = collections.Counter()
    for e in events:  # one event per executed thunk; loops are containers whose bodies are counted themselves
        if e.get("ph") == "X" and e.get("name") in names and not e["name"].startswith("while"):
            path = [x for x in re.split(r"[/()]", names[e["name"]]) if x in SCOPES]
            by[" > ".join(dict.fromkeys(path)) or "(elsewhere)"] += e["dur"] / 3e3
    print(f"{a.engine}: {a.devices} devices x {per} points per chunk, compile {compile_s:.1f} s, "
          f"{1e3 * float(np.median(wall)):.1f} ms per chunk (median of 8); thunk ms per chunk by part "
          f"(both devices, profiled):")
    for k, v in by.most_common():
        print(f"  {v:8.2f}  {k}")
    print(f"  {sum(by.values()):8.2f}  total")


if __name__ == "__main__":
    main()

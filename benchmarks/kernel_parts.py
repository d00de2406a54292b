"""Where a sweep's time goes, by search: each search of the chunk program replaced in turn by a constant.

    python benchmarks/kernel_parts.py [--engines current-kernels,current] [--grid 20,25]
        # ~10 min on a 2-core CPU

Runs a copy of sweeps/bench_1e6.toml with `--grid` input and output lengths (default 20 x 25: 200,000 points, the
same GPUs, models and KV bandwidths) four times per engine: with every search, then with the chunked search, then
also the colocated one, then also the decode pool and the free-link prefill pool replaced by constants (what is
left is the linked prefill pool and the cost decomposition). Each run reports its compile seconds and the best of
two warm evaluations (the compiled program reused); the differences between rows are the parts' costs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tomllib
from pathlib import Path

os.environ.setdefault("FRONTIER_JAX_CACHE", "off")  # compile seconds from scratch
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from frontier_jax.costmodel import search as se  # noqa: E402

STEPS = ((), ("search_chunked",), ("search_chunked", "search_colocated"),
         ("search_chunked", "search_colocated", "search_decode_pool", "search_prefill_free_link"))
RESULT = {"search_chunked": se.InstanceChoice, "search_colocated": se.InstanceChoice,
          "search_decode_pool": se.DecodePool, "search_prefill_free_link": se.FreeLinkPrefill}


def _constant(cls):
    def search(p, demand, space, *rest):
        one = p.sc.input_len * 0.0 + 1.0
        return cls(*[one.astype(jnp.int32) if f == "reason" else one for f in cls._fields])
    return search


def run(spec: dict, engine: str, replaced: tuple) -> tuple[float, float]:
    """(compile seconds, best warm evaluation seconds) of the spec with the `replaced` searches constant."""
    from frontier_jax.costmodel.kernel import EXTRA_COORDS, load_sweep_spec, make_kernel, outputs_meta, \
        sweep_assumptions
    from frontier_jax.runner import run_sweep
    saved = {name: getattr(se, name) for name in RESULT}
    try:
        for name in replaced:
            setattr(se, name, _constant(RESULT[name]))
        s = json.loads(json.dumps(spec))
        s.setdefault("fixed", {})["engine"] = engine
        sp = load_sweep_spec(s)
        kernel = make_kernel(sp)
        out = []
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(3):
                t0 = time.perf_counter()
                summary = run_sweep(sp, kernel, outputs_meta(), os.path.join(tmp, f"r{i}.nc"),
                                    extra_coords=EXTRA_COORDS, progress=False, attrs=sweep_assumptions(sp))
                out.append((summary.compile_seconds, time.perf_counter() - t0 - summary.compile_seconds))
        return out[0][0], min(e for _, e in out[1:])
    finally:
        for name, f in saved.items():
            setattr(se, name, f)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engines", default="current-kernels,current")
    ap.add_argument("--grid", default="20,25", help="input and output length counts")
    a = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    spec = tomllib.loads((ROOT / "sweeps" / "bench_1e6.toml").read_text())
    n_in, n_out = (int(x) for x in a.grid.split(","))
    spec["axes"]["input_len"]["logspace"][2] = n_in
    spec["axes"]["output_len"]["logspace"][2] = n_out
    spec["sweep"]["name"] = "bench_parts"
    for engine in a.engines.split(","):
        for replaced in STEPS:
            compile_s, eval_s = run(spec, engine, replaced)
            names = ", ".join(r.removeprefix("search_") for r in replaced)
            label = f"without {names}" if replaced else "everything"
            print(f"{engine:16s} {label:60s} compile {compile_s:6.1f} s  evaluation {eval_s:6.2f} s", flush=True)


if __name__ == "__main__":
    main()

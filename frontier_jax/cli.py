"""The `frontier` command line. User mistakes print one line and exit 2; no traceback, no half-written file."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import FrontierError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = REPO / "sweeps" / "default.toml"


CACHE_ENV = "FRONTIER_JAX_CACHE"


def compile_cache_dir() -> str | None:
    """Where compiled programs persist between runs: $FRONTIER_JAX_CACHE ("off" disables it), else
    $XDG_CACHE_HOME/frontier-jax/xla (~/.cache/frontier-jax/xla). None when off, or when JAX_COMPILATION_CACHE_DIR
    already names one (JAX then uses that)."""
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in ("", "0", "off", "no", "false"):
        return None
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    if value:
        return value
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "frontier-jax", "xla")


def _jax_setup(x64: bool = True):
    """float64 unless asked otherwise, and on the CPU one XLA device per core: XLA runs one device's program on one
    thread, and the sweep engine shards each chunk over the devices (unless the user set a device count).
    Compiled programs are cached on disk (compile_cache_dir): a sweep of the same axis names and lengths compiles
    once (~25-50 s on a 2-core CPU) and later runs load it in a few seconds."""
    import jax
    jax.config.update("jax_enable_x64", x64)
    cache = compile_cache_dir()
    if cache:
        try:
            os.makedirs(cache, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", cache)
        except OSError:  # an unwritable home: run without the cache
            pass
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", "") \
            and "JAX_NUM_CPU_DEVICES" not in os.environ:
        try:
            jax.config.update("jax_num_cpu_devices", max(1, len(os.sched_getaffinity(0))))
        except (AttributeError, RuntimeError):  # no affinity on this OS, or a backend already started
            pass


def _default_spec() -> Path:
    if not DEFAULT_SPEC.exists():
        raise FrontierError(f"the default spec {DEFAULT_SPEC} is missing; pass a spec path")
    return DEFAULT_SPEC


def _summary(path: str, summary) -> str:
    import numpy as np
    import xarray as xr
    from .search import ARCHS
    with xr.open_dataset(path) as ds:
        best = ds["best_arch"].values.ravel()
        lines = [f"{summary.points:,} points in {summary.seconds:.1f} s ({summary.points_per_second:,.0f} points/s, "
                 f"compile {summary.compile_seconds:.1f} s) -> {path}"]
        total = best.size
        for i, arch in enumerate(ARCHS):
            lines.append(f"  {arch:14s} cheapest at {np.mean(best == i) * 100:5.1f}% of points")
        lines.append(f"  {'infeasible':14s} {np.mean(best == -1) * 100:5.1f}% of points (no architecture meets the contract)")
        if "hardware" in ds.dims and "input_len" in ds.dims:
            for hw in ds["hardware"].values:
                sub = ds["advantage"].sel(hardware=hw)
                frac = float((sub > 0).mean()) * 100
                lines.append(f"  {str(hw):16s} disaggregation cheaper at {frac:5.1f}% of its points")
        del total
    return "\n".join(lines)


def cmd_sweep(a):
    _jax_setup(not a.float32)
    from .sweep import load_spec, run_sweep
    from .sweep.kernel import EXTRA_COORDS, make_kernel, outputs_meta
    spec_path = Path(a.spec) if a.spec else _default_spec()
    spec = load_spec(spec_path)
    out = a.output or f"{spec.name}.nc"
    summary = run_sweep(spec, make_kernel(spec), outputs_meta(), out, extra_coords=EXTRA_COORDS,
                        chunk=a.chunk,
                        resume=a.resume, overwrite=a.overwrite, progress=not a.quiet)
    print(_summary(summary.out_path, summary))


def cmd_eval(a):
    _jax_setup()
    from .evaluate import evaluate
    pct = a.percentile.strip()
    if pct.lower() == "mean":
        pct = "mean"
    else:
        try:
            pct = float(pct)
        except ValueError:
            pass  # evaluate rejects it with the API's one-line message
    ds = evaluate(hardware=a.hardware, model=a.model, input_len=a.isl, output_len=a.osl, ttft=a.ttft, tpot=a.tpot,
                  percentile=pct, rate=a.rate, kv_bandwidth=a.kv_bandwidth, total_gpus=a.total_gpus,
                  engine=a.engine, precision=a.precision)
    if a.json:
        out = {str(arch): {k: _jsonable(ds[k].sel(arch=arch).item()) for k in ds.data_vars if "arch" in ds[k].dims}
               for arch in ds["arch"].values}
        out["best_arch"] = _best_name(int(ds["best_arch"].item()))
        out["advantage"] = _jsonable(float(ds["advantage"].item()))
        print(json.dumps(out, indent=1))
        return
    rows = ["cost_per_mtok", "prefill_cost", "decode_cost", "kv_tax", "cost_per_mtok_total", "ttft", "tpot",
            "goodput", "throughput", "gpus", "tp_prefill", "tp_decode", "n_prefill", "n_decode", "chunk", "overlap",
            "feasible", "reason"]
    archs = [str(x) for x in ds["arch"].values]
    print(f"{a.model} on {a.hardware}, input {a.isl} / output {a.osl} tokens, contract p"
          f"{'mean' if pct == 'mean' else f'{pct * 100:g}'} TTFT {a.ttft} s / TPOT {a.tpot} s "
          f"({'rate ' + str(a.rate) + ' req/s' if a.rate else 'fluid goodput'}; Poisson arrivals)")
    print(f"{'':22s}" + "".join(f"{x:>16s}" for x in archs))
    for r in rows:
        units = ds[r].attrs.get("units", "")
        vals = ds[r].values
        print(f"{r:22s}" + "".join(f"{_fmt(v):>16s}" for v in vals) + f"   {units}")
    print(f"best: {_best_name(int(ds['best_arch'].item()))}; advantage (log colocated-best / disaggregated) = "
          f"{float(ds['advantage'].item()):+.3f}")


def _best_name(i):
    from .search import ARCHS
    return "none feasible" if i < 0 else ARCHS[i]


def _fmt(v):
    import math
    v = float(v)
    if math.isnan(v):
        return "nan"
    return f"{v:.4g}"


def _jsonable(v):
    import math
    return None if isinstance(v, float) and math.isnan(v) else v


def cmd_catalog(a, kind):
    from . import catalog
    names = catalog.list_hardware() if kind == "hardware" else catalog.list_models()
    if a.action == "list" or a.action is None:
        for n in names:
            info = catalog.hardware_info(n) if kind == "hardware" else catalog.model_info(n)
            print(f"{n:18s} {info.get('long_name', '')}")
        return
    if not a.name:
        raise FrontierError(f"`frontier {kind} show` needs a NAME; see `frontier {kind} list`")
    info = catalog.hardware_info(a.name) if kind == "hardware" else catalog.model_info(a.name)
    for k, v in info.items():
        if isinstance(v, dict):
            extra = ", ".join(f"{kk}={vv}" for kk, vv in v.items() if kk not in ("value", "units", "source"))
            print(f"{k:18s} {v.get('value')} {v.get('units', '')}" + (f" ({extra})" if extra else ""))
            if "source" in v:
                print(f"{'':18s}   source: {v['source']}")
        else:
            print(f"{k:18s} {v}")


def cmd_merge(a):
    from .sweep import merge_parts
    print(merge_parts(a.parts, a.output, overwrite=a.overwrite))


def cmd_calibrate(a):
    _jax_setup()
    from . import fit
    fit.main([])


def cmd_validate(a):
    _jax_setup()
    from . import validation
    validation.main(["--scenarios", str(a.scenarios), "--seed", str(a.seed)])


EXTRA_COMMANDS = {}  # name -> (help, add_arguments(parser), run(args)); filled by optional modules


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="frontier", description="Cost per SLO-compliant token of colocated, chunked-"
                                "prefill and disaggregated LLM serving; million-point sweeps in JAX. With no "
                                "arguments: run the default sweep (sweeps/default.toml).")
    sub = p.add_subparsers(dest="command")
    s = sub.add_parser("sweep", help="run a sweep spec (TOML) and write netCDF")
    s.add_argument("spec", nargs="?", help="sweep spec; default: sweeps/default.toml")
    s.add_argument("-o", "--output", help="output netCDF path (default: NAME.nc from the spec)")
    s.add_argument("--chunk", type=int, default=None,
                   help="points per chunk (default 1024 per device on the CPU, 65536 per device on a GPU)")
    s.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--float32", action="store_true", help="compute in float32 (the GPU default) instead of float64")
    s.set_defaults(run=cmd_sweep)
    e = sub.add_parser("eval", help="one scenario as a per-architecture table (or JSON)")
    e.add_argument("--hardware", required=True)
    e.add_argument("--model", required=True)
    e.add_argument("--isl", type=float, required=True, help="input length, tokens")
    e.add_argument("--osl", type=float, required=True, help="output length, tokens")
    e.add_argument("--ttft", type=float, required=True, help="TTFT bound, s")
    e.add_argument("--tpot", type=float, required=True, help="TPOT bound, s")
    e.add_argument("--percentile", default="0.99", help="contract percentile in (0, 1) or 'mean'")
    e.add_argument("--rate", type=float, help="arrival rate, requests/s (default: fluid goodput)")
    e.add_argument("--kv-bandwidth", type=float, help="KV link bandwidth per prefill GPU, bytes/s")
    e.add_argument("--total-gpus", type=int, help="cap on GPUs (with --rate)")
    e.add_argument("--engine", default="current", help="current | vllm-2023")
    e.add_argument("--precision", default="bf16", help="bf16 | fp8")
    e.add_argument("--json", action="store_true")
    e.set_defaults(run=cmd_eval)
    for kind in ("hardware", "models"):
        c = sub.add_parser(kind, help=f"list or show the {kind} catalogue")
        c.add_argument("action", nargs="?", choices=["list", "show"], default="list")
        c.add_argument("name", nargs="?")
        c.set_defaults(run=lambda a, k=("hardware" if kind == "hardware" else "models"): cmd_catalog(a, k))
    m = sub.add_parser("merge", help="join the part files of a multi-process sweep")
    m.add_argument("parts", nargs="+")
    m.add_argument("-o", "--output", required=True)
    m.add_argument("--overwrite", action="store_true")
    m.set_defaults(run=cmd_merge)
    c = sub.add_parser("calibrate", help="refit the efficiency terms (optax) and rewrite data/calibration.json")
    c.set_defaults(run=cmd_calibrate)
    v = sub.add_parser("validate", help="closed-form p99 TTFT/TPOT against the discrete-event simulator")
    v.add_argument("--scenarios", type=int, default=60)
    v.add_argument("--seed", type=int, default=0)
    v.set_defaults(run=cmd_validate)
    _more_commands(sub)
    return p


def _more_commands(sub):
    from . import breakeven_cli
    from .papers import cli as papers_cli
    breakeven_cli.register(sub)
    papers_cli.register(sub)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.command is None:
        a = parser.parse_args(["sweep"])
    try:
        a.run(a)
    except FrontierError as err:
        print(f"frontier: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("frontier: interrupted; rerun with --resume to continue a sweep", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

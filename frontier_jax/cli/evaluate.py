"""`frontier eval`: one scenario as a per-architecture table (or JSON)."""
from __future__ import annotations

import json

from .common import jax_setup


def register(sub) -> None:
    """Add the `eval` command to the parser's subcommands."""
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
    e.set_defaults(run=run)


def run(a) -> None:
    """Evaluate one scenario and print the per-architecture table (or JSON)."""
    jax_setup()
    from ..api import evaluate
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
    rows = ["cost_per_mtok", "prefill_cost", "decode_cost", "kv_tax", "cost_per_mtok_total", "ttft_achieved",
            "tpot_achieved",
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
    from ..costmodel.types import ARCHS
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

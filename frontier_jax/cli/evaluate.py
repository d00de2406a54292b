"""`frontier eval`: one scenario as a per-architecture table (or JSON)."""
from __future__ import annotations

import json
import math

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
    e.add_argument("--price", type=float, help="GPU price, USD per GPU-hour (default: the catalogue's, printed)")
    e.add_argument("--top", type=int, metavar="K", help="the K cheapest configurations per architecture, ranked")
    e.add_argument("--gpus", type=int, metavar="N", help="a fixed budget of N GPUs: the most SLO-compliant load "
                                                         "each architecture carries on them, and its cost")
    e.add_argument("--engine", default="current", help="current | vllm-2023 (roofline); current-kernels | "
                   "vllm-2023-kernels (iterations from measured kernels)")
    e.add_argument("--precision", default="bf16", help="weights: bf16 | fp8")
    e.add_argument("--kv-precision", help="KV cache: bf16 | fp8 (default: the weights'; vLLM keeps a bf16 cache "
                                          "for fp8 weights unless started with --kv-cache-dtype fp8)")
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
                  engine=a.engine, precision=a.precision, price=a.price, top=a.top, gpus=a.gpus,
                  kv_precision=a.kv_precision)
    if a.top is not None:
        return _print_top(a, ds)
    if a.gpus is not None:
        return _print_budget(a, ds)
    if a.json:
        out = {str(arch): {k: _jsonable(ds[k].sel(arch=arch).item()) for k in ds.data_vars if "arch" in ds[k].dims}
               for arch in ds["arch"].values}
        out["best_arch"] = _best_name(int(ds["best_arch"].item()))
        out["advantage"] = _jsonable(float(ds["advantage"].item()))
        for arch in ds["arch"].values:
            out[str(arch)]["reason_name"] = reason_name(out[str(arch)]["reason"])
        out["assumptions"] = assumptions_json(ds)
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
    print(assumptions_line(ds))
    print(f"{'':22s}" + "".join(f"{x:>16s}" for x in archs))
    fluid = a.rate is None
    for r in rows:
        units = ds[r].attrs.get("units", "")
        vals = ds[r].values
        if r == "reason":
            cells = [reason_name(v) for v in vals]
        elif r in ("gpus", "n_prefill", "n_decode") and not fluid:
            cells = [_fmt(v) if not math.isfinite(float(v)) else f"{int(round(float(v)))}" for v in vals]
        else:
            cells = [_fmt(v) for v in vals]
        note = "   (fluid: per prefill instance; pass --rate or --gpus for whole instances)" if (
            fluid and r in ("gpus", "n_decode")) else ""
        print(f"{r:22s}" + "".join(f"{c:>{max(16, len(c) + 1)}s}" for c in cells) + f"   {units}{note}")
    for i, arch in enumerate(archs):
        if int(ds["reason"].values[i]) == 4:  # exceeds_total_gpus: say what it would need
            print(f"{arch}: infeasible on {a.total_gpus} GPUs; needs {needed_gpus(ds['gpus'].values[i])} GPUs at "
                  f"rate {a.rate} req/s")
    print(f"best: {_best_name(int(ds['best_arch'].item()))}; advantage (log colocated-best / disaggregated) = "
          f"{float(ds['advantage'].item()):+.3f}")


def reason_name(code) -> str:
    """The Infeasible name of a reason code."""
    from ..planning import reason_name as name
    return name(code)


def needed_gpus(g) -> int:
    """Whole GPUs."""
    from ..planning import needed_gpus as n
    return n(g)


def assumptions_json(ds) -> dict:
    """The answer's assumptions (api.ASSUMPTION_KEYS) from its attributes."""
    from ..api import ASSUMPTION_KEYS
    return {k: _jsonable(ds.attrs[k]) if not hasattr(ds.attrs[k], "item") else ds.attrs[k].item()
            for k in ASSUMPTION_KEYS if k in ds.attrs}


def assumptions_line(ds) -> str:
    """One line of the assumptions behind an answer."""
    t = ds.attrs
    kv = t["kv_bandwidth"]
    kv_txt = f"{float(kv) / 1e9:g} GB/s" if not isinstance(kv, str) else f"{kv} B/s"
    src = "catalogue" if str(t["price_source"]).startswith("catalogue") else "given"
    date = f", {t['price_date']}" if t.get("price_date") else ""
    kv_src = "the GPU's NIC" if str(t["kv_bandwidth_source"]).startswith("the GPU") else "given"
    kv_cache = str(t.get("kv_precision", t["precision"])).split(" ")[0]
    precision = t["precision"] if kv_cache == t["precision"] else f"{t['precision']}, KV cache {kv_cache}"
    return (f"assumptions: price {t['price']} USD/GPU-hour ({src}{date}); KV bandwidth {kv_txt} per prefill GPU "
            f"({kv_src}); engine {t['engine']}; precision {precision}; percentile {t['percentile']}; dispatch "
            f"{str(t['dispatch']).split(' ')[0]}; arrivals {t['arrivals']}")


TOP_COLUMNS = (("cost_per_mtok", "USD/Mtok", "{:.4g}"), ("prefill_cost", "prefill", "{:.3g}"),
               ("decode_cost", "decode", "{:.3g}"), ("kv_tax", "kv_tax", "{:.3g}"), ("tp_prefill", "TP_p", "{:g}"),
               ("tp_decode", "TP_d", "{:g}"), ("n_prefill", "n_p", "{:.3g}"), ("n_decode", "n_d", "{:.3g}"),
               ("chunk", "chunk", "{:g}"), ("overlap", "ovl", "{:g}"), ("gpus", "GPUs", "{:.3g}"),
               ("ttft_achieved", "TTFT_s", "{:.3g}"), ("tpot_achieved", "TPOT_s", "{:.3g}"),
               ("throughput", "tok/s/GPU", "{:.4g}"), ("tokens_per_user", "tok/s/user", "{:.3g}"))


def _print_top(a, ds) -> None:
    if a.json:
        rows = {str(arch): [{k: _jsonable(float(ds[k].sel(arch=arch, rank=r).item())) for k, _, _ in TOP_COLUMNS}
                            for r in ds["rank"].values] for arch in ds["arch"].values}
        print(json.dumps({"ranked": rows, "assumptions": assumptions_json(ds)}, indent=1))
        return
    print(f"{a.model} on {a.hardware}, input {a.isl:g} / output {a.osl:g} tokens, TTFT {a.ttft} s / TPOT {a.tpot} s"
          f" ({'rate ' + str(a.rate) + ' req/s' if a.rate else 'fluid goodput'}): the {a.top} cheapest "
          "configurations per architecture")
    print(assumptions_line(ds))
    print(f"{'arch':14s}{'rank':>5s}" + "".join(f"{h:>11s}" for _, h, _ in TOP_COLUMNS))
    for arch in ds["arch"].values:
        for r in ds["rank"].values:
            row = ds.sel(arch=arch, rank=r)
            if not math.isfinite(float(row["cost_per_mtok"])):
                continue
            cells = [f.format(float(row[k])) for k, _, f in TOP_COLUMNS]
            print(f"{str(arch):14s}{int(r):>5d}" + "".join(f"{c:>11s}" for c in cells))


def _print_budget(a, ds) -> None:
    if a.json:
        out = {str(arch): {k: _jsonable(float(ds[k].sel(arch=arch))) for k in ds.data_vars if "arch" in ds[k].dims}
               for arch in ds["arch"].values}
        out["best_arch"] = _best_name(int(ds["best_arch"].item()))
        out["assumptions"] = assumptions_json(ds)
        print(json.dumps(out, indent=1))
        return
    print(f"{a.model} on {a.gpus} x {a.hardware}, input {a.isl:g} / output {a.osl:g} tokens, TTFT {a.ttft} s / "
          f"TPOT {a.tpot} s: the most SLO-compliant load per architecture (rates to "
          f"{float(ds.attrs['rate_resolution']) * 100:.1f} %)")
    print(assumptions_line(ds))
    rows = ["max_rate", "budget_cost_per_mtok", "cost_per_mtok", "gpus", "tp_prefill", "tp_decode", "n_prefill",
            "n_decode", "chunk", "ttft_achieved", "tpot_achieved", "throughput"]
    print(f"{'':22s}" + "".join(f"{str(x):>16s}" for x in ds["arch"].values))
    for r in rows:
        print(f"{r:22s}" + "".join(f"{_fmt(v):>16s}" for v in ds[r].values) + f"   {ds[r].attrs.get('units', '')}")
    print(f"most load on {a.gpus} GPUs: {_best_name(int(ds['best_arch'].item()))} (budget_cost_per_mtok pays for "
          "all of them; cost_per_mtok for the GPUs deployed)")


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

"""The break-even KV bandwidth report: tables per workload and contract, a map per GPU, one sensitivity.

`kv_tables(ds)` turns a `frontier breakeven` file solved for kv_bandwidth (axes hardware, input_len, output_len,
ttft, tpot) into markdown tables; `report_steps()` gives the step `frontier reproduce` runs to write
breakeven_kv.nc, breakeven_kv.md and breakeven_kv.png (the spec is sweeps/breakeven_kv.toml, embedded below so an
installed package needs no checkout).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..costmodel.types import ARCHS
from ..solvers import OUTCOMES

WORKLOADS = {"prefill-heavy": (8192.0, 256.0), "decode-heavy": (512.0, 1024.0)}
REFERENCE = (2.0, 0.05)  # p99 TTFT (s), p99 TPOT (s): the contract set in bold

SPEC = {
    "sweep": {"name": "breakeven_kv", "title": "Break-even KV bandwidth, Llama-3.1-70B, p99 contracts",
              "percentile": 0.99},
    "fixed": {"model": "llama-3.1-70b"},
    "axes": {"hardware": {"values": ["a100-80gb-sxm", "h100-80gb-sxm", "h200-141gb-sxm"]},
             "input_len": {"values": [512, 8192]}, "output_len": {"values": [256, 1024]},
             "ttft": {"values": [1.0, 2.0, 4.0]}, "tpot": {"values": [0.025, 0.05, 0.1]},
             "kv_bandwidth": {"logspace": [1e8, 1e12, 2]}},
    "breakeven": {"solve_for": "kv_bandwidth", "samples": 16,
                  "wrt": ["hbm_bandwidth_scale", "flops_scale", "eta_flops", "eta_hbm"]},
}


def _cell(r) -> str:
    """One table cell: the root in GB/s, or why there is none."""
    reason = OUTCOMES[int(r["solver_outcome"])]
    root = float(r["breakeven_kv_bandwidth"])
    if np.isfinite(root):
        return f"{root / 1e9:.3g}" + (" (kink)" if reason == "kink" else "")
    below, above = int(r["arch_below"]), int(r["arch_above"])
    if reason == "non_finite" or (below < 0 and above < 0):
        return "infeasible"
    winner = above if above >= 0 else below
    return f"no root: {ARCHS[winner]}"


def kv_tables(ds) -> str:
    """Markdown: one table per workload, rows = p99 (TTFT, TPOT), columns = GPUs; cells in GB/s."""
    gpus = [str(h) for h in ds["hardware"].values]
    out = []
    for name, (inp, outp) in WORKLOADS.items():
        sub = ds.sel(input_len=inp, output_len=outp)
        out.append(f"**{name.capitalize()}, input {inp:g} / output {outp:g} tokens** (break-even B_kv in GB/s per "
                   "prefill GPU; disaggregation is cheaper above it)\n")
        out.append("| p99 TTFT / TPOT | " + " | ".join(gpus) + " |")
        out.append("|---" * (len(gpus) + 1) + "|")
        for ttft in ds["ttft"].values:
            for tpot in ds["tpot"].values:
                cells = [_cell(sub.sel(hardware=h, ttft=ttft, tpot=tpot)) for h in gpus]
                label = f"{ttft:g} s / {tpot * 1e3:g} ms"
                if (float(ttft), float(tpot)) == REFERENCE:
                    label, cells = f"**{label}**", [f"**{c}**" for c in cells]
                out.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def sensitivities(ds, limit: int = 6) -> str:
    """Markdown list: the elasticities of the root at the first few smooth roots."""
    names = [v for v in ds.data_vars if v.startswith("elasticity_kv_bandwidth_")]
    conv = ds["solver_outcome"] == OUTCOMES.index("converged")
    lines = []
    for idx in np.argwhere(conv.values)[:limit]:
        r = ds.isel({d: int(i) for d, i in zip(conv.dims, idx)})
        where = ", ".join(f"{d} {r[d].values}" for d in conv.dims)
        el = ", ".join(f"{n.removeprefix('elasticity_kv_bandwidth_')} {_g(float(r[n]))}" for n in names)
        lines.append(f"- {where}: B_kv* = {float(r['breakeven_kv_bandwidth']) / 1e9:.3g} GB/s; d log B_kv* / d log "
                     f"x: {el}")
    return "\n".join(lines)


def write_report(out_dir: Path, quick: bool = False) -> list[str]:
    """Solve the embedded spec, write breakeven_kv.{nc,md,png} into out_dir and return their names."""
    from ..plotting import plot_file
    from .solve import breakeven

    out_dir = Path(out_dir)
    nc = out_dir / "breakeven_kv.nc"
    ds = breakeven(SPEC, out=str(nc), overwrite=True)
    try:
        text = ("# Break-even KV-transfer bandwidth, Llama-3.1-70B\n\n"
                "Fluid goodput, Poisson arrivals, deterministic lengths, engine `current`, BF16, B_kv per prefill "
                "GPU in [0.1, 1000] GB/s. A number is the bandwidth above which disaggregation is cheaper per "
                "SLO-compliant token than the best colocated mode; `no root` names the architecture that wins at "
                "every bandwidth in the bracket.\n\n" + kv_tables(ds)
                + "\n## Sensitivities at smooth roots\n\n" + sensitivities(ds) + "\n")
    finally:
        ds.close()
    (out_dir / "breakeven_kv.md").write_text(text)
    png = plot_file(str(nc), str(out_dir / "breakeven_kv.png"), x="tpot",
                    sel={"input_len": "8192", "output_len": "256", "ttft": "2"})
    return [nc.name, "breakeven_kv.md", Path(png).name]


def report_steps():
    """The steps `frontier reproduce` runs for this report."""
    return [write_report]


def _g(x: float) -> str:
    return "0" if abs(x) < 1e-12 else f"{x:+.3g}"

"""Calibration of the engine terms with optax, and its report (fit and leave-one-group-out errors).

    python -m frontier_jax.calibration.fit [ENGINE ...] [--report-only]   # rewrite frontier_jax/data/calibration.json

Roofline engines ("current", "vllm-2023") fit the seven Efficiency terms; measured-kernel engines ("-kernels")
fit only the three KernelEngine terms on top of the fixed kernel fits (issue 18).

engine "vllm-2023": per-iteration prefill and decode latencies (data/measured_latency.csv: SplitwiseSim's
vLLM profile and the Sarathi-Serve artifact). engine "current": mean TTFT and TPOT of closed-loop serving runs of
vLLM 0.12 on H100 (data/measured_serving_current.csv), predicted by the closed-loop model. Loss: mean squared log
error. Groups for leave-one-group-out: (model, hardware, precision, TP).
"""
from __future__ import annotations

import csv
import functools
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..costmodel import latency as lat
from ..costmodel.arch.closed_loop import closed_loop
from ..costmodel.catalog import (CALIBRATION_FILE, ENGINES, KERNEL_PRIOR, PRIOR, engine_form, load_efficiency,
                                 stacked_hardware, stacked_models)
from ..costmodel.types import Efficiency, KernelEngine, Point, Scenario
from ..resources import data_file

DATA = data_file("")
LONG_PROMPT = 4000.0  # tokens: the long-prompt TTFT check of issue 18
# input-length buckets of the serving runs (1024; 4000 and 4096; 8192 tokens): (label, lowest, highest)
INPUT_BUCKETS = (("input < 2000", 0.0, 2000.0), ("2000 <= input < 6000", 2000.0, 6000.0),
                 ("input >= 6000", 6000.0, np.inf))
# The token budget (max_num_batched_tokens) of the serving runs' closed loop. vLLM's default for the OpenAI
# server is 8192 on GPUs of at least 70 GiB other than A100 (the runs' H100) and 2048 otherwise
# (EngineArgs.get_batch_defaults in vllm/engine/arg_utils.py; the A100 exception since vLLM PR #17885); the runs
# record no override. The measured-kernel engines are fitted at that default. The roofline engine's stored terms
# were fitted at 2048, before the default was checked: a refit at 8192 moves every golden file and is pending
# (docs/model.md section 10), so its report keeps 2048.
SERVING_BUDGET = 8192.0
ROOFLINE_SERVING_BUDGET = 2048.0
# The KV-cache precision of the FP8 serving runs, which they do not record (vLLM keeps a BF16 cache for FP8 weights
# unless started with --kv-cache-dtype fp8). Read off the measurements with bytes alone, not the model
# (docs/model.md section 10; tests/test_calibration_reports.py checks both readings on the CSV):
# - llama-3.1-70b fp8: BF16. The TP2 run of 8192/1024 tokens at 32 clients keeps 262k-295k tokens in flight,
#   above the BF16 cache's 224k and below an FP8 cache's 448k, and its TTFT (6.5 s against 1.3 s at 16 clients)
#   is a KV-bound queue that an FP8 cache would not have.
# - qwen3-32b fp8: FP8. At TP1 and TP2 the measured TPOT is below the time to read the FP8 weights and a BF16
#   cache of the running requests at the GPU's peak HBM bandwidth.
RUN_KV_PRECISION = {("llama-3.1-70b", "fp8"): "bf16", ("qwen3-32b", "fp8"): "fp8"}


def _rows(name):
    with open(DATA / name, newline="") as f:
        return list(csv.DictReader(f))


def to_params(u, form=Efficiency):
    """Engine terms from unconstrained parameters: Efficiency (sigmoid fractions, exponential overheads) or
    KernelEngine (exponentials)."""
    if form is KernelEngine:
        return KernelEngine(*(jnp.exp(u[i]) for i in range(3)))
    s = jax.nn.sigmoid
    return Efficiency(s(u[0]), 0.5 * s(u[1]), s(u[2]), 0.5 * s(u[3]), jnp.exp(u[4]), jnp.exp(u[5]), jnp.exp(u[6]))


def from_params(e):
    """The unconstrained parameters of engine terms (the inverse of to_params)."""
    if isinstance(e, KernelEngine):
        return jnp.log(jnp.asarray([float(x) for x in e], dtype=float))
    logit = lambda x: np.log(x / (1 - x))  # noqa: E731
    return jnp.asarray([logit(e.eta_flops), logit(2 * e.eta_flops_decay), logit(e.eta_hbm),
                        logit(2 * e.eta_hbm_decay), np.log(e.overhead), np.log(e.overhead_tp),
                        np.log(e.allreduce_latency)], dtype=float)


def _serving(engine: str) -> bool:
    """Whether an engine is fitted on the closed-loop serving runs (else on the per-iteration latencies)."""
    return not engine.startswith("vllm-2023")


def iteration_data():
    """The per-iteration measurements (measured_latency.csv) as stacked arrays."""
    rows = _rows("measured_latency.csv")
    f = lambda k: jnp.asarray([float(r[k]) for r in rows])  # noqa: E731
    return dict(hw=stacked_hardware([r["hardware"] for r in rows]), md=stacked_models([r["model"] for r in rows]),
                tp=f("tp"), batch=f("batch"), prompt=f("prompt_tokens"), context=f("context"),
                prefill=jnp.asarray([r["phase"] == "prefill" for r in rows]), time=f("time_ms") / 1e3,
                group=[f'{r["model"]}/{r["hardware"]}/TP{r["tp"]}' for r in rows])


def predict_iterations(eff: Efficiency, d):
    """Predicted seconds of each measured iteration under `eff`."""
    def one(hw, md, tp, batch, prompt, context, is_prefill):
        pre = lat.prefill_seconds(hw, md, eff, prompt, tp, batch)
        dec = lat.decode_seconds(hw, md, eff, batch, context, tp)
        return jnp.where(is_prefill, pre, dec)
    return jax.vmap(one)(d["hw"], d["md"], d["tp"], d["batch"], d["prompt"], d["context"], d["prefill"])


def serving_data():
    """The closed-loop serving measurements (measured_serving_current.csv) as stacked arrays."""
    rows = _rows("measured_serving_current.csv")
    f = lambda k: jnp.asarray([float(r[k]) for r in rows])  # noqa: E731
    return dict(hw=stacked_hardware([r["hardware"] for r in rows]), md=stacked_models([r["model"] for r in rows]),
                tp=f("tp"), isl=f("input_len"), osl=f("output_len"), conc=f("concurrency"),
                fp8=jnp.asarray([float(r["precision"] == "fp8") for r in rows]),
                kv_fp8=jnp.asarray([float(run_kv_precision(r["model"], r["precision"]) == "fp8") for r in rows]),
                ttft=f("ttft_ms") / 1e3, tpot=f("tpot_ms") / 1e3,
                group=[f'{r["model"]}/{r["precision"]}/TP{r["tp"]}' for r in rows])


def run_kv_precision(model: str, precision: str) -> str:
    """The KV-cache precision of a serving run of `model` at `precision` (RUN_KV_PRECISION; else the weights')."""
    return RUN_KV_PRECISION.get((model, precision), precision)


def serving_budget(eff) -> float:
    """The token budget at which an engine's terms are fitted on the serving runs (SERVING_BUDGET above)."""
    return SERVING_BUDGET if isinstance(eff, KernelEngine) else ROOFLINE_SERVING_BUDGET


def predict_serving(eff: Efficiency, d, arrival_ca2=1.0):
    """Predicted mean TTFT and TPOT (s) of each measured serving run under `eff`; `arrival_ca2` is the squared
    coefficient of variation of the closed loop's arrivals (1: Poisson)."""
    def one(hw, md, tp, isl, osl, conc, fp8, kv_fp8):
        sc = Scenario.build(input_len=isl, output_len=osl, ttft=1.0, tpot=1.0, q=0.5, mean_mode=1.0, fp8=fp8,
                            kv_fp8=kv_fp8, arrival_ca2=arrival_ca2)
        ttft, tpot, _ = closed_loop(Point(hw, md, eff, sc), tp, jnp.zeros_like(isl) + serving_budget(eff), conc)
        return ttft, tpot
    return jax.vmap(one)(d["hw"], d["md"], d["tp"], d["isl"], d["osl"], d["conc"], d["fp8"], d["kv_fp8"])


def _loss_fn(engine):
    form = engine_form(engine)
    if not _serving(engine):
        def loss(u, d, mask):
            err = jnp.log(predict_iterations(to_params(u, form), d)) - jnp.log(d["time"])
            return jnp.sum(jnp.where(mask, err**2, 0.0)) / jnp.sum(mask)
    else:
        def loss(u, d, mask):
            ttft, tpot = predict_serving(to_params(u, form), d)
            # measured kernels: the engine terms are fitted on TPOT alone (decode iterations), TTFT is a prediction
            ttft = d["ttft"] if form is KernelEngine else ttft
            e1 = jnp.log(ttft) - jnp.log(d["ttft"])
            e2 = jnp.log(tpot) - jnp.log(d["tpot"])
            e = jnp.where(jnp.isfinite(e1), e1, 10.0) ** 2 + jnp.where(jnp.isfinite(e2), e2, 10.0) ** 2
            return jnp.sum(jnp.where(mask, e, 0.0)) / jnp.sum(mask)
    return loss


def _arrays(d):
    return {k: v for k, v in d.items() if k != "group"}


@functools.lru_cache(maxsize=None)
def _compiled(engine: str):
    """(loss, value-and-gradient) of an engine, jitted once: every fit of the leave-one-group-out loop reuses them
    (the mask is an argument)."""
    return jax.jit(_loss_fn(engine)), jax.jit(jax.value_and_grad(_loss_fn(engine)))


def fit(engine: str, mask=None, steps=600, lr=0.05):
    """Fit one engine's efficiency with Adam on the mean squared log error; (Efficiency, loss). `mask` selects rows."""
    d = serving_data() if _serving(engine) else iteration_data()
    mask = jnp.ones(len(d["group"]), bool) if mask is None else mask
    loss, grad = _compiled(engine)
    opt = optax.adam(lr)
    form = engine_form(engine)
    u = from_params(KERNEL_PRIOR if form is KernelEngine else PRIOR)
    state = opt.init(u)
    arrays = _arrays(d)
    best = (np.inf, u)
    for _ in range(steps):
        val, g = grad(u, arrays, mask)
        g = jnp.where(jnp.isfinite(g), g, 0.0)
        if float(val) < best[0]:
            best = (float(val), u)
        upd, state = opt.update(g, state)
        u = optax.apply_updates(u, upd)
    return to_params(best[1], form), float(loss(best[1], arrays, mask))


def _errors(engine, eff, d):
    arrays = _arrays(d)
    if not _serving(engine):
        return {"time": np.asarray(predict_iterations(eff, arrays)) / np.asarray(d["time"]) - 1.0}
    ttft, tpot = predict_serving(eff, arrays)
    return {"ttft": np.asarray(ttft) / np.asarray(d["ttft"]) - 1.0,
            "tpot": np.asarray(tpot) / np.asarray(d["tpot"]) - 1.0}


def report(engine, eff, logo_steps=300):
    """Fit errors per row group and leave-one-group-out errors of an engine's fit."""
    d = serving_data() if _serving(engine) else iteration_data()
    groups = sorted(set(d["group"]))
    rel = _errors(engine, eff, d)
    out = {"rows": len(d["group"]), "fit": {}, "per_group": {}, "leave_one_group_out": {}}
    for k, e in rel.items():
        out["fit"][k] = {"median_abs_rel_error": float(np.median(np.abs(e))),
                         "mean_abs_rel_error": float(np.mean(np.abs(e))), "max_abs_rel_error": float(np.max(np.abs(e)))}
    g_arr = np.asarray(d["group"])
    logo = {k: np.zeros_like(e) for k, e in rel.items()}  # each row predicted by the fit without its group
    for g in groups:
        m = g_arr == g
        out["per_group"][g] = {k: float(np.mean(np.abs(e[m]))) for k, e in rel.items()}
        held, _ = fit(engine, mask=jnp.asarray(~m), steps=logo_steps)
        e_held = _errors(engine, held, d)
        out["leave_one_group_out"][g] = {k: float(np.mean(np.abs(e[m]))) for k, e in e_held.items()}
        for k, e in e_held.items():
            logo[k][m] = e[m]
    out["leave_one_group_out_all_rows"] = {k: {"mean_abs_rel_error": float(np.mean(np.abs(e))),
                                               "median_abs_rel_error": float(np.median(np.abs(e)))}
                                           for k, e in logo.items()}
    if "ttft" in rel:
        out.update(_by_input_bucket(engine, d, logo, logo_steps))
    if "ttft" in rel:  # prompts of 4000 tokens or more (issue 18's long-prompt target)
        long = np.asarray(d["isl"]) >= LONG_PROMPT
        out["long_prompt_ttft"] = {"min_input_len": LONG_PROMPT, "rows": int(long.sum()),
                                   "fit_median_abs_rel_error": float(np.median(np.abs(rel["ttft"][long]))),
                                   "logo_median_abs_rel_error": float(np.median(np.abs(logo["ttft"][long]))),
                                   "fit_median_rel_error": float(np.median(rel["ttft"][long]))}
    return out


def _by_input_bucket(engine, d, logo, logo_steps):
    """Errors by input-length bucket: of the leave-one-group-out predictions above, and of a fit that never saw
    any run of the bucket (leave one bucket out)."""
    isl = np.asarray(d["isl"])
    by_group, held_out = {}, {}
    for label, lo, hi in INPUT_BUCKETS:
        m = (isl >= lo) & (isl < hi)
        by_group[label] = {"rows": int(m.sum()), **{k: float(np.mean(np.abs(e[m]))) for k, e in logo.items()}}
        held, _ = fit(engine, mask=jnp.asarray(~m), steps=logo_steps)
        held_out[label] = {"rows": int(m.sum()),
                           **{k: float(np.mean(np.abs(e[m]))) for k, e in _errors(engine, held, d).items()}}
    return {"leave_one_group_out_by_input_bucket": by_group, "leave_one_input_bucket_out": held_out}


def main(argv=None):
    """Refit the engines named in argv (default: every engine) and rewrite their records in
    frontier_jax/data/calibration.json, keeping the others (`frontier calibrate`). With "--report-only" the
    stored terms are kept and only their report is recomputed."""
    argv = list(argv or [])
    report_only = "--report-only" in argv
    argv = [a for a in argv if a != "--report-only"]
    engines = argv or list(ENGINES)
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise SystemExit(f"unknown engine {unknown[0]!r}; known: {', '.join(ENGINES)}")
    result = json.loads(CALIBRATION_FILE.read_text()) if CALIBRATION_FILE.exists() else {}
    for engine in engines:
        if report_only:  # keep the stored terms, recompute only the report
            eff = load_efficiency(engine)
            loss = result[engine]["report"]["loss_mean_squared_log_error"]
        else:
            eff, loss = fit(engine)
        rep = report(engine, eff)
        rep["loss_mean_squared_log_error"] = loss
        if engine_form(engine) is KernelEngine and _serving(engine):
            rep["fitted_on"] = "mean TPOT only (TTFT predicted, not fitted)"
        if _serving(engine):
            rep["token_budget"] = serving_budget(eff)  # the closed loop's max_num_batched_tokens in fit and report
        result[engine] = {"params": {k: float(v) for k, v in eff._asdict().items()}, "report": rep}
        print(engine, json.dumps(result[engine], indent=1), file=sys.stderr)
    tmp = CALIBRATION_FILE.with_name(CALIBRATION_FILE.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(CALIBRATION_FILE)
    print(f"wrote {CALIBRATION_FILE}")


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    main(sys.argv[1:])

"""Calibrated efficiency terms of the roofline, one set per serving-engine generation.

The datasheet numbers (hardware/*.toml) say what a GPU could do; these terms say what an engine achieved on it.
They are fitted with optax by `frontier_jax.fit` on measured latencies and stored in data/calibration.json;
`python -m frontier_jax.fit` refits and rewrites that file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .errors import FrontierError

CALIBRATION_FILE = Path(__file__).parent / "data" / "calibration.json"
ENGINES = ("current", "vllm-2023")


class Efficiency(NamedTuple):
    """Achieved fractions of peak and fixed overheads. eta(g) = eta1 * g**(-decay) for TP degree g."""

    eta_flops: jax.Array        # achieved fraction of dense FLOP/s at TP 1 (compute-bound iterations)
    eta_flops_decay: jax.Array  # exponent of its fall with TP degree
    eta_hbm: jax.Array          # achieved fraction of HBM bandwidth at TP 1 (memory-bound iterations)
    eta_hbm_decay: jax.Array
    overhead: jax.Array         # fixed per-iteration time per layer, s (kernel launches, synchronisation)
    overhead_tp: jax.Array      # extra per-iteration time per doubling of TP, s
    allreduce_latency: jax.Array  # per all-reduce launch latency, s (2 per layer when TP > 1)


# Starting point of the fit (and the values used if no calibration file exists): mid-range of the 2023-era
# efficiencies quoted in MODEL.md section 3 (20-65 % MFU in prefill, 11-62 % of HBM bandwidth in decode).
PRIOR = Efficiency(0.5, 0.1, 0.6, 0.1, 1e-4, 1e-3, 1e-5)


def _read() -> dict:
    if not CALIBRATION_FILE.exists():
        return {}
    return json.loads(CALIBRATION_FILE.read_text())


def calibration_record(engine: str) -> dict:
    """The fitted parameters plus the fit report (errors, data used) for an engine."""
    data = _read()
    if engine not in ENGINES:
        raise FrontierError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    return data.get(engine, {"params": PRIOR._asdict(), "report": {"status": "prior (not fitted)"}})


def load_efficiency(engine: str = "current") -> Efficiency:
    rec = calibration_record(engine)
    return Efficiency(**{k: jnp.asarray(float(rec["params"][k])) for k in Efficiency._fields})


def stacked_efficiency(engines=ENGINES) -> Efficiency:
    effs = [load_efficiency(e) for e in engines]
    return Efficiency(*(jnp.stack(xs) for xs in zip(*effs)))

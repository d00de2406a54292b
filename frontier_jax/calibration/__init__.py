"""Calibration of the latency model on measured data (optax fits and their error reports).

- `fit`: the efficiency terms per serving-engine generation; `frontier calibrate` rewrites
  frontier_jax/data/calibration.json.
"""

"""Calibration of the latency model on measured data (optax fits and their error reports).

- `fit`: the efficiency terms per serving-engine generation; `frontier calibrate` rewrites
  frontier_jax/data/calibration.json.
- `kernels`: per-kernel latencies (GEMM, attention, all-reduce) fitted to measured vLLM kernel tables;
  `frontier calibrate --kernels` rewrites frontier_jax/data/kernel_fit.json (issue 18, phase 1).
"""

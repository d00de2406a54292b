"""frontier-jax: cost per SLO-compliant token of colocated, chunked-prefill and disaggregated LLM serving.

Public API (SI units throughout): `evaluate` one scenario or a 1-D batch; the latency primitives `prefill_time`,
`decode_step_time`, `closed_loop`; the catalogue (`list_hardware`, `list_models`, `load_hardware`, `load_model`);
the named constants `Arch` and `Infeasible`. Sweeps and break-even surfaces: `frontier_jax.runner`,
`frontier_jax.crossover`, or the `frontier` command.
"""
from .api import closed_loop, decode_step_time, evaluate, prefill_time
from .costmodel.catalog import list_hardware, list_models, load_hardware, load_model
from .costmodel.types import ARCHS, Arch, Infeasible
from .errors import FrontierError

__version__ = "0.1.0"
__all__ = ["evaluate", "prefill_time", "decode_step_time", "closed_loop", "list_hardware", "list_models",
           "load_hardware", "load_model", "ARCHS", "Arch", "Infeasible", "FrontierError", "__version__"]

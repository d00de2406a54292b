"""frontier-jax: cost per SLO-compliant token of colocated, chunked-prefill and disaggregated LLM serving.

Public API (SI units throughout): `evaluate` one scenario or a 1-D batch (`top=k`: ranked configurations;
`gpus=N`: a fixed GPU budget); `sweep` a spec to an xarray.Dataset; `breakeven` a break-even surface; `pareto`
tokens/s per GPU against tokens/s per user; the latency primitives `prefill_time`,
`decode_step_time`, `closed_loop`; the catalogue (`list_hardware`, `list_models`, `load_hardware`, `load_model`);
the named constants `Arch` and `Infeasible`. Importing the package turns on float64 (jax_enable_x64; set
FRONTIER_JAX_X64=0 before importing to keep float32) and the persistent compile cache, as the `frontier` command.
"""
from .api import configure

configure()  # float64 and the persistent compile cache, as the CLI (FRONTIER_JAX_X64=0 keeps float32)

from .api import assumptions, closed_loop, decode_step_time, evaluate, prefill_time, sweep  # noqa: E402
from .crossover import breakeven  # noqa: E402
from .planning import budget, pareto  # noqa: E402
from .costmodel.catalog import list_hardware, list_models, load_hardware, load_model  # noqa: E402
from .costmodel.types import ARCHS, Arch, Infeasible  # noqa: E402
from .errors import FrontierError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["evaluate", "sweep", "breakeven", "pareto", "budget", "assumptions", "prefill_time", "decode_step_time",
           "closed_loop", "list_hardware", "list_models", "load_hardware", "load_model", "ARCHS", "Arch", "Infeasible", "FrontierError", "__version__"]

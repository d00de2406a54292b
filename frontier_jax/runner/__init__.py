"""The sweep runner, generic over its kernel: a spec (TOML) -> an on-device grid -> chunked, sharded, resumable
evaluation -> streamed netCDF. It knows chunks, devices and files; the cost model reaches it as a kernel
(costmodel.kernel) and a table of output variables."""
from frontier_jax.runner.grid import decode_points as decode_points
from frontier_jax.runner.grid import make_point_fn as make_point_fn
from frontier_jax.runner.grid import point_arrays as point_arrays
from frontier_jax.runner.merge import merge_parts as merge_parts
from frontier_jax.runner.netcdf import VarMeta as VarMeta
from frontier_jax.runner.netcdf import hyperslabs as hyperslabs
from frontier_jax.runner.run import SweepSummary as SweepSummary
from frontier_jax.runner.run import run_sweep as run_sweep
from frontier_jax.runner.spec import InputSpec as InputSpec
from frontier_jax.runner.spec import SweepSpec as SweepSpec
from frontier_jax.runner.spec import load_spec as load_spec

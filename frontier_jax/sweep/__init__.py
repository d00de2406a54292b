"""Parameter sweeps: spec -> on-device grid -> chunked, sharded, resumable evaluation -> netCDF."""
from frontier_jax.io.netcdf import VarMeta as VarMeta
from frontier_jax.io.netcdf import hyperslabs as hyperslabs
from frontier_jax.sweep.engine import SweepSummary as SweepSummary
from frontier_jax.sweep.engine import run_sweep as run_sweep
from frontier_jax.sweep.grid import decode_points as decode_points
from frontier_jax.sweep.grid import make_point_fn as make_point_fn
from frontier_jax.sweep.grid import point_arrays as point_arrays
from frontier_jax.sweep.merge import merge_parts as merge_parts
from frontier_jax.sweep.spec import DEFAULT_REGISTRY as DEFAULT_REGISTRY
from frontier_jax.sweep.spec import InputSpec as InputSpec
from frontier_jax.sweep.spec import SweepSpec as SweepSpec
from frontier_jax.sweep.spec import load_spec as load_spec

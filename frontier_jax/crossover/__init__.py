"""Break-even surfaces between colocated and disaggregated serving and the crossover's sensitivities.

- `problem`: a spec with a [breakeven] table -> the solved axis, its bracket, the sensitivities, the reduced grid;
- `kernel`: one root solve per point (frontier_jax.solvers) with the cost model inside;
- `solve`: `breakeven(spec, ...)`, the grid through the sweep runner to netCDF;
- `report`: the break-even tables of docs/breakeven.md.
"""
from .problem import BREAKEVEN_REGISTRY, DEFAULT_WRT, OPTION_KEYS, Problem, prepare
from .solve import breakeven

__all__ = ["BREAKEVEN_REGISTRY", "DEFAULT_WRT", "OPTION_KEYS", "Problem", "breakeven", "prepare"]

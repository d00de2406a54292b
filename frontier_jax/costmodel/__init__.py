"""The cost model, in one place (MODEL.md; derivations in docs/model.md).

| part | module |
| --- | --- |
| types and named constants (Hardware, Model, Efficiency, Scenario, Point, Demand, Arch, Infeasible) | `types` |
| catalogue: GPUs and models from TOML, engines' calibrated efficiency | `catalog` |
| user inputs to pytrees, with one-line errors | `inputs` |
| latency primitives: roofline iteration times | `latency` |
| queueing tails: quadrature, Cramer-Lundberg decay, sojourn quantiles | `queueing` |
| the three architectures (and closed-loop serving) | `arch/` |
| operating point: the largest compliant rate, its IFT derivative | `operating_point` |
| configuration search and sizing | `search` |
| cost decomposition, feasibility, the winner | `cost` |
| the model as a sweep kernel, and the inputs a spec may set | `kernel` |
"""
from .cost import ArchCost, PointResult, evaluate_point
from .search import search_link_blind, search_prefill_pool
from .types import (ARCHS, NO_LINK_LIMIT, Arch, Demand, Efficiency, Hardware, Infeasible, Latency, Model, Point,
                    Scenario, SearchSpace)

__all__ = ["ARCHS", "NO_LINK_LIMIT", "Arch", "ArchCost", "Demand", "Efficiency", "Hardware", "Infeasible", "Latency",
           "Model", "Point", "PointResult", "Scenario", "SearchSpace", "evaluate_point", "search_link_blind",
           "search_prefill_pool"]

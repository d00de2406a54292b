"""The one table of output variables: name, units, long_name, dimensions and flags of everything frontier-jax
writes, used by `evaluate`, sweeps, break-even files and the papers' datasets.

Units are UDUNITS-2 expressions (they parse with udunits2 / cf-units) with one symbol UDUNITS does not define:
`USD`, the US dollar. Counted things (tokens, requests, GPUs, instances) are dimensionless, so a cost per million
tokens is in `1e-6 USD` (per token) and a rate per GPU in `s-1`; the long_name says what is counted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .costmodel.types import ARCHS, INFEASIBLE_NAMES, NO_ARCH, Arch
from .solvers import OUTCOMES

USD_PER_MTOK = "1e-6 USD"
NON_UDUNITS_SYMBOLS = ("USD",)


@dataclass(frozen=True)
class Variable:
    """One output variable. `dims` are the dimensions after the swept ones (("arch",) for per-architecture
    values); flags carry flag_values and flag_meanings (CF)."""

    name: str
    units: str
    long_name: str
    dims: tuple[str, ...] = ("arch",)
    dtype: Any = np.float64
    flag_values: Sequence[int] | None = None
    flag_meanings: str | None = None

    def attrs(self) -> dict:
        """The CF attributes of the variable (units, long_name and, for flags, flag_values / flag_meanings)."""
        a: dict = {"units": self.units, "long_name": self.long_name}
        if self.flag_values is not None:
            a["flag_values"] = np.asarray(self.flag_values, self.dtype)
            a["flag_meanings"] = self.flag_meanings
        return a


def _flag(name, long_name, values, meanings, dims=("arch",)) -> Variable:
    return Variable(name, "1", long_name, dims, np.int8, list(values), " ".join(meanings))


ARCH_FLAG_VALUES = [NO_ARCH] + [int(a) for a in Arch]
ARCH_FLAG_MEANINGS = ("none",) + ARCHS

# The cost model's outputs, in the order of costmodel.cost.PointResult.
POINT_VARIABLES: tuple[Variable, ...] = (
    Variable("cost_per_mtok", USD_PER_MTOK, "cost per SLO-compliant output token (USD per million output tokens)"),
    Variable("prefill_cost", USD_PER_MTOK, "prefill term of the cost (USD per million output tokens)"),
    Variable("decode_cost", USD_PER_MTOK, "decode term of the cost (USD per million output tokens)"),
    Variable("kv_tax", USD_PER_MTOK, "KV-transfer tax, cost(B_kv) - cost(B_kv = infinity) (USD per million output "
                                     "tokens)"),
    Variable("kv_tax_direct", USD_PER_MTOK, "direct KV tax: link occupancy and its capacity (USD per million output "
                                            "tokens)"),
    Variable("kv_tax_indirect", USD_PER_MTOK, "indirect KV tax: TTFT slack eaten by the transfer (USD per million "
                                              "output tokens)"),
    Variable("idle_cost", USD_PER_MTOK, "idle term of the cost: GPU time neither prefilling nor decoding (USD per "
                                        "million output tokens)"),
    Variable("cost_per_mtok_total", USD_PER_MTOK, "cost per SLO-compliant input+output token (USD per million "
                                                  "input+output tokens)"),
    Variable("ttft_achieved", "s", "time to first token at the contract percentile, at the operating point"),
    Variable("tpot_achieved", "s", "time per output token at the contract percentile, at the operating point"),
    Variable("goodput", "s-1", "largest SLO-compliant request rate per GPU (requests per second per GPU)"),
    Variable("throughput", "s-1", "output tokens per second per GPU at the operating point"),
    Variable("gpus", "1", "GPUs deployed (fluid mode: one prefill instance and its share of decode)"),
    Variable("tp_prefill", "1", "tensor-parallel degree (GPUs) of the prefill (or colocated) instances"),
    Variable("tp_decode", "1", "tensor-parallel degree (GPUs) of the decode (or colocated) instances"),
    Variable("n_prefill", "1", "prefill (or colocated) instances"),
    Variable("n_decode", "1", "decode instances (fluid disaggregated mode: per prefill instance)"),
    Variable("chunk", "1", "chunked-prefill token budget per iteration in tokens (0: not chunked)"),
    Variable("overlap", "1", "layer-wise KV-transfer overlap (1 = on)"),
    Variable("kv_receive_utilization", "1", "utilisation of the decode instances' KV links by incoming transfers "
                                            "(disaggregated; 0 otherwise)"),
    _flag("feasible", "the contract can be met", [0, 1], ("infeasible", "feasible")),
    _flag("reason", "why the point is infeasible", range(len(INFEASIBLE_NAMES)), INFEASIBLE_NAMES),
    _flag("best_arch", "cheapest feasible architecture (-1: none feasible)", ARCH_FLAG_VALUES, ARCH_FLAG_MEANINGS,
          dims=()),
    Variable("advantage", "1", "log cost of the best colocated mode minus log cost of disaggregated (> 0: "
                               "disaggregation cheaper)", dims=()),
)
POINT = {v.name: v for v in POINT_VARIABLES}

# The capacity planner's outputs (frontier_jax.planning): ranked configurations, the Pareto view, a GPU budget.
PLANNING_VARIABLES: tuple[Variable, ...] = (
    Variable("tokens_per_user", "s-1", "output tokens per second per user at the operating point (1 / TPOT)"),
    Variable("max_rate", "s-1", "largest SLO-compliant request rate on the GPU budget (requests per second)"),
    Variable("budget_cost_per_mtok", USD_PER_MTOK, "cost per SLO-compliant output token with every GPU of the "
                                                   "budget paid for, at max_rate (USD per million output tokens)"),
    _flag("on_front", "on the architecture's Pareto front of output tokens/s per GPU against tokens/s per user",
          [0, 1], ("no", "yes")),
)
PLANNING = {v.name: v for v in PLANNING_VARIABLES}

ARCH_COORD = ("arch", list(ARCHS), {"long_name": "serving architecture"})


# ---- break-even files: fixed variables, and the ones named after the solved axis and the sensitivities ----
def _per(ux: str, ut: str) -> str:
    """Units of d x / d t in UDUNITS form."""
    if ut == "1":
        return ux
    return f"({ux})/({ut})" if ux != "1" else f"({ut})-1"


def breakeven_variables(solve_for: str, units: str, long_name: str, log: bool,
                        thetas: Sequence[tuple[str, str]]) -> tuple[Variable, ...]:
    """Variables of a break-even file solving advantage = 0 for `solve_for` (with `units` and `long_name`), with
    sensitivities to `thetas` ((name, units) pairs)."""
    out = [
        Variable(f"breakeven_{solve_for}", units, f"break-even {long_name}: the lowest root of advantage = 0 in the "
                                                  "bracket (NaN: none located)", ()),
        _flag("converged", "the root is located to tolerance (outcome converged or kink)", [0, 1], ("no", "yes"), ()),
        _flag("solver_outcome", "outcome of the root solve", range(len(OUTCOMES)), OUTCOMES, ()),
        Variable("iterations", "1", "refinement steps (Newton or bisection)", (), np.int16),
        Variable("evaluations", "1", "evaluations of the advantage and its forward-mode derivative", (), np.int16),
        Variable("residual", "1", "advantage at the reported root (for max_steps: the smallest |advantage| seen)", ()),
        Variable("n_crossings", "1", "sign changes of the advantage between the bracket samples (a lower bound on "
                                     "the number of roots; the lowest is reported)", (), np.int16),
        _flag("arch_below", "cheapest architecture just below the root (no root: at the lower end of the bracket)",
              ARCH_FLAG_VALUES, ARCH_FLAG_MEANINGS, ()),
        _flag("arch_above", "cheapest architecture just above the root (no root: at the upper end of the bracket)",
              ARCH_FLAG_VALUES, ARCH_FLAG_MEANINGS, ()),
        Variable("advantage_slope", "1" if log else _per("1", units),
                 f"d advantage / d {'log ' if log else ''}{solve_for} at the root", ()),
    ]
    for name, t_units in thetas:
        out.append(Variable(f"d_breakeven_{solve_for}_d_{name}", _per(units, t_units),
                            f"sensitivity of the break-even {solve_for} to {name} (implicit function theorem; NaN "
                            "unless the outcome is converged)", ()))
        out.append(Variable(f"elasticity_{solve_for}_{name}", "1",
                            f"d log(break-even {solve_for}) / d log({name})", ()))
    return tuple(out)


# ---- the papers' common frame (papers.frontier): per-system costs are POINT variables, plus the envelope ----
def frontier_variables(systems: Sequence[str], tie: float) -> tuple[Variable, ...]:
    """Variables of the cross-system frontier over `systems` (registry order), ties within `tie` (relative)."""
    return (
        Variable("frontier_cost", USD_PER_MTOK, "Pareto frontier: lowest cost over systems (USD per million "
                                                "SLO-compliant output tokens)", ()),
        _flag("winner", "system on the frontier (-1: none feasible)", [-1] + list(range(len(systems))),
              ("none",) + tuple(systems), ()),
        Variable("n_tied", "1", f"systems within {tie:.0%} of the frontier cost (ties go to the first in registry "
                                "order)", (), np.int8),
        Variable("advantage", "1", "log cost of the best colocated system (vLLM, Sarathi-Serve) minus log cost of "
                                   "the best disaggregated one (> 0: disaggregation cheaper)", ()),
    )

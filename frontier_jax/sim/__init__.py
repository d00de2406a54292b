"""Seeded discrete-event simulator (numpy) of colocated, chunked-prefill and disaggregated LLM serving.

It is independent of the closed-form model on purpose: the tests check the closed-form p_q TTFT / TPOT against it.
See ``simulate`` for the policies, the pools' dispatch policies (random, central, jsq; lor, the simulator's least
outstanding requests, a finding: it herds) and the conventions.
"""

from ._closed_loop import ClosedLoopResult, run_closed_loop
from ._result import SimResult
from ._simulate import DISPATCHES, POLICIES, simulate
from ._workload import IterationCosts, sample_arrivals, sample_lengths

__all__ = ["ClosedLoopResult", "run_closed_loop", "IterationCosts", "SimResult", "simulate", "POLICIES", "DISPATCHES",
           "sample_arrivals", "sample_lengths"]

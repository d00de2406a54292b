"""Seeded discrete-event simulator (numpy) of colocated, chunked-prefill and disaggregated LLM serving.

It is independent of the closed-form model on purpose: the tests check the closed-form p_q TTFT / TPOT against it.
See ``simulate`` for the policies and conventions.
"""

from ._result import SimResult
from ._simulate import POLICIES, simulate
from ._workload import IterationCosts, sample_arrivals, sample_lengths

__all__ = ["IterationCosts", "SimResult", "simulate", "POLICIES", "sample_arrivals", "sample_lengths"]

"""The five systems papers in one frame (MODEL.md section 8): a registry of systems, the papers' published claims
re-derived by the engine, the cross-system cost frontier, and `reproduce`, which writes the whole report.

    from frontier_jax.papers import SYSTEMS, evaluate_system, predict_claims, common_frame, reproduce
"""
from .registry import (SYSTEMS, System, evaluate_system, get_system, list_systems, register_system,
                       unregister_system)

__all__ = ["SYSTEMS", "System", "evaluate_system", "get_system", "list_systems", "register_system",
           "unregister_system", "predict_claims", "load_claims", "common_frame", "plot_frontier", "reproduce"]


def __getattr__(name):  # lazy: claims/frontier/report pull in pandas and matplotlib
    if name in ("predict_claims", "load_claims"):
        from . import claims
        return getattr(claims, name)
    if name in ("common_frame", "plot_frontier"):
        from .frontier import common_frame, plot_frontier
        return {"common_frame": common_frame, "plot_frontier": plot_frontier}[name]
    if name == "reproduce":
        from .report import reproduce
        return reproduce
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

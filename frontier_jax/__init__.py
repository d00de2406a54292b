"""frontier-jax: cost per SLO-compliant token of colocated, chunked-prefill and disaggregated LLM serving."""
from .catalog import list_hardware, list_models, load_hardware, load_model
from .errors import FrontierError
from .evaluate import evaluate
from .primitives import closed_loop, decode_step_time, prefill_time

__version__ = "0.1.0"
__all__ = ["evaluate", "prefill_time", "decode_step_time", "closed_loop", "list_hardware", "list_models", "load_hardware",
           "load_model", "FrontierError", "__version__"]

"""Tracing the model cheaply: jnp functions inlined as primitives, and scans that stay loops.

Every jnp function and array operator (`x * y` on a tracer is `jnp.multiply`) is a `jax.jit`-wrapped Python
function. Traced inside a program, each call walks jit's Python path (argument inference, a cache lookup, a
nested jaxpr that is then inlined) before it binds its one or two primitives; the chunk program of a sweep made
about 27,000 such calls. Under `jax.disable_jit()` a jitted function is called as plain Python, which binds the
same primitives directly: the same program, traced and lowered ~8 % faster (docs/performance.md). Most of the
trace time is per primitive and is cut only by binding fewer (Scenario.z, queueing.ndtri).

`jax.lax.scan` under `disable_jit` is unrolled into a Python loop, so the model's loops use `scan` below, which
re-enables jit for the scan itself and disables it again inside the body.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import jax

# LLVM at -O1 instead of -O2 for the model's programs. On the CPU the compile is mostly LLVM, one module per XLA
# fusion (~170 in the colocated search alone, ~30 ms each): the bench_1e6 chunk program compiles in 26 s instead of
# 30 s and runs as fast (29.7 / 30.0 against 31.0 / 33.3 ms per chunk, two runs each). Values move by about one
# ulp (~4e-16 relative on costs; LLVM picks other vector forms of exp and log), far below the model's accuracy.
COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


@contextmanager
def inline_jnp():
    """Trace what runs inside with jnp functions bound as primitives (see the module docstring). Only for code
    being traced: eager code inside it runs one primitive at a time."""
    with jax.disable_jit():
        yield


def scan(body: Callable[[Any, Any], tuple[Any, Any]], init: Any, length: int) -> tuple[Any, Any]:
    """`jax.lax.scan(body, init, None, length=length)`, a loop also inside `inline_jnp`, its body traced inline."""
    def inlined(carry, x):
        with jax.disable_jit():
            return body(carry, x)

    with jax.disable_jit(False):
        return jax.lax.scan(inlined, init, None, length=length)

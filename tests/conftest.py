import gc
import os

# Four fake CPU devices for sharding tests; must be set before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# CLI runs in tests compile afresh and leave nothing in ~/.cache (test_determinism checks the cache on a tmp folder).
os.environ.setdefault("FRONTIER_JAX_CACHE", "off")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs():
    """Each test file's compiled programs are dropped when it ends (the sweep runner's executables, jax's jit
    caches) and the C heap's free pages handed back, so an xdist worker that runs many files does not grow with
    them. Before this, XLA's compile in a late file crashed a worker (SIGSEGV or SIGABRT inside
    backend_compile_and_load) in 3 of 5 full-suite runs on the 2-core, 24 GB machine, one with a 9 GB core; the
    growth is the suspected cause, not a proven one (docs/reliability.md, D14)."""
    yield
    from frontier_jax.runner import run
    run._CACHE.clear()
    jax.clear_caches()
    gc.collect()
    run.release_free_heap()

import os

# Four fake CPU devices for sharding tests; must be set before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# CLI runs in tests compile afresh and leave nothing in ~/.cache (test_determinism checks the cache on a tmp folder).
os.environ.setdefault("FRONTIER_JAX_CACHE", "off")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

"""What every `frontier` command shares: JAX set-up (float64, one CPU device per core, the compile cache)."""
from __future__ import annotations

import os

CACHE_ENV = "FRONTIER_JAX_CACHE"


def compile_cache_dir() -> str | None:
    """Where compiled programs persist between runs: $FRONTIER_JAX_CACHE ("off" disables it), else
    $XDG_CACHE_HOME/frontier-jax/xla (~/.cache/frontier-jax/xla). None when off, or when JAX_COMPILATION_CACHE_DIR
    already names one (JAX then uses that)."""
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in ("", "0", "off", "no", "false"):
        return None
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    if value:
        return value
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "frontier-jax", "xla")


def jax_setup(x64: bool = True):
    """float64 unless asked otherwise, and on the CPU one XLA device per core: XLA runs one device's program on one
    thread, and the sweep engine shards each chunk over the devices (unless the user set a device count).
    Compiled programs are cached on disk (compile_cache_dir): a sweep of the same axis names and lengths compiles
    once (~25-50 s on a 2-core CPU) and later runs load it in a few seconds."""
    import jax
    jax.config.update("jax_enable_x64", x64)
    cache = compile_cache_dir()
    if cache:
        try:
            os.makedirs(cache, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", cache)
        except OSError:  # an unwritable home: run without the cache
            pass
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", "") \
            and "JAX_NUM_CPU_DEVICES" not in os.environ:
        try:
            jax.config.update("jax_num_cpu_devices", max(1, len(os.sched_getaffinity(0))))
        except (AttributeError, RuntimeError):  # no affinity on this OS, or a backend already started
            pass

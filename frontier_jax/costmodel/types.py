"""The cost model's vocabulary: immutable pytrees every kernel takes, and the named constants of its outputs.

Every leaf of Hardware, Model, Efficiency, Scenario and Demand is a (broadcastable) array, so any field can be swept
or differentiated; names and sources live in the catalogue, never in the pytree. Static configuration (the search
space) is a hashable dataclass, kept apart from the traced arrays.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

NO_LINK_LIMIT = float("inf")
"""The KV-link bandwidth (bytes/s) that means "no limit": transfers take no time. The one sentinel for it."""


class Arch(enum.IntEnum):
    """The three serving architectures; the value is the index on the `arch` axis of every output."""

    COLOCATED = 0      # continuous batching with prefill priority (vLLM, SOSP'23)
    CHUNKED = 1        # chunked-prefill colocation (Sarathi-Serve, OSDI'24)
    DISAGGREGATED = 2  # prefill and decode pools with KV transfer (DistServe, Splitwise, Mooncake)


ARCHS = tuple(a.name.lower() for a in Arch)
NO_ARCH = -1  # `best_arch` where no architecture meets the contract


class Infeasible(enum.IntEnum):
    """Why a (point, architecture) misses the contract: the `reason` output. FEASIBLE (0) when it does not."""

    FEASIBLE = 0
    TTFT_UNREACHABLE = 1          # the TTFT bound fails even at vanishing load
    TPOT_UNREACHABLE = 2          # the TPOT bound fails even at vanishing load
    KV_MEMORY = 3                 # the decode batch's KV cache does not fit even at vanishing load
    EXCEEDS_TOTAL_GPUS = 4        # the cheapest compliant deployment needs more GPUs than total_gpus
    PINNED_INSTANCES_TOO_FEW = 5  # pinned n_prefill / n_decode cannot carry the rate
    INVALID_INPUT = 6             # an input outside the model's domain


INFEASIBLE_NAMES = tuple(r.name.lower() for r in Infeasible)


class Hardware(NamedTuple):
    """One GPU. SI units: FLOP/s, bytes, bytes/s, USD per GPU-hour, W."""

    bf16_flops: jax.Array
    fp8_flops: jax.Array        # equals bf16_flops where the GPU has no FP8 tensor cores
    hbm_bytes: jax.Array
    hbm_bandwidth: jax.Array
    nvlink_bandwidth: jax.Array  # per GPU, per direction
    nic_bandwidth: jax.Array     # scale-out NIC per GPU, per direction
    gpus_per_node: jax.Array
    price: jax.Array             # USD per GPU-hour
    power: jax.Array             # W (TDP)
    kernel_gpu: jax.Array = -1.0  # index of its measured kernel tables (costmodel.kernels.GPUS); for a GPU without
    #                               tables the closest tabled GPU's; -1: pick by peaks. Not a catalogue field.


class Model(NamedTuple):
    """One transformer. Counts are dimensionless; params is the total parameter count (not billions)."""

    layers: jax.Array
    hidden: jax.Array
    q_heads: jax.Array
    kv_heads: jax.Array
    head_dim: jax.Array
    ffn: jax.Array
    vocab: jax.Array
    params: jax.Array


class Efficiency(NamedTuple):
    """Achieved fractions of peak and fixed overheads of one serving-engine generation (calibrated; see
    frontier_jax.calibration). eta(g) = eta1 * g**(-decay) for TP degree g."""

    eta_flops: jax.Array        # achieved fraction of dense FLOP/s at TP 1 (compute-bound iterations)
    eta_flops_decay: jax.Array  # exponent of its fall with TP degree
    eta_hbm: jax.Array          # achieved fraction of HBM bandwidth at TP 1 (memory-bound iterations)
    eta_hbm_decay: jax.Array
    overhead: jax.Array         # fixed per-iteration time per layer, s (kernel launches, synchronisation)
    overhead_tp: jax.Array      # extra per-iteration time per doubling of TP, s
    allreduce_latency: jax.Array  # per all-reduce launch latency, s (2 per layer when TP > 1)


HARDWARE_FIELDS = tuple(f for f in Hardware._fields if f != "kernel_gpu")  # the catalogue's (TOML) fields


class KernelEngine(NamedTuple):
    """A serving-engine generation on top of measured kernels (costmodel/kernels.py, operations.py): the terms the
    kernel tables do not hold, fitted end to end (frontier_jax.calibration.fit). An iteration of T tokens on a model
    of L layers costs, beyond its kernels, overhead + L (overhead_layer + elementwise_passes T hidden 2 / HBM)."""

    overhead: jax.Array            # s per iteration: scheduling, input preparation and sampling not hidden by the GPU
    overhead_layer: jax.Array      # s per layer per iteration: the small uncounted kernels (norms, rotary, activation)
    elementwise_passes: jax.Array  # reads and writes of the T x hidden bf16 activations per layer by those kernels
MODEL_FIELDS = Model._fields


def kv_flag(fp8, kv_fp8=None):
    """The KV cache's FP8 flag: `kv_fp8`, or the weights' `fp8` where it is None."""
    return fp8 if kv_fp8 is None else kv_fp8


class Scenario(NamedTuple):
    """Workload and contract of one point (all arrays; bounds already multiplied by the SLO scale). Build it with
    `Scenario.build`, by keyword."""

    input_len: jax.Array     # tokens (mean)
    output_len: jax.Array    # tokens (mean)
    input_cv: jax.Array      # coefficient of variation of the input length (lognormal)
    output_cv: jax.Array
    ttft: jax.Array          # s, bound
    tpot: jax.Array          # s, bound
    q: jax.Array             # contract percentile in (0, 1)
    mean_mode: jax.Array     # 1: report and constrain means instead of quantiles
    arrival_ca2: jax.Array   # squared coefficient of variation of inter-arrival times (1 = Poisson)
    kv_bandwidth: jax.Array  # bytes/s per prefill GPU (NO_LINK_LIMIT: free transfers)
    cache_hit: jax.Array     # fraction of prompt tokens served from a prefix KV cache
    fp8: jax.Array           # 1: FP8 weights and tensor cores
    kv_fp8: jax.Array        # 1: FP8 KV cache (its bytes, capacity, transfers and attention kernels)
    cache_load_bandwidth: jax.Array  # bytes/s per prefill GPU from a global prefix cache (NO_LINK_LIMIT: local)
    z: jax.Array             # ndtri(q), the standard normal quantile of the percentile

    @classmethod
    def build(cls, *, input_len, output_len, ttft, tpot, input_cv=0.0, output_cv=0.0, q=0.99, mean_mode=0.0,
              arrival_ca2=1.0, kv_bandwidth=NO_LINK_LIMIT, cache_hit=0.0, fp8=0.0, kv_fp8=None,
              cache_load_bandwidth=NO_LINK_LIMIT) -> "Scenario":
        """A Scenario from keyword arrays (broadcast against input_len's dtype); z is computed here, once.
        `kv_fp8` None: the KV cache takes the weights' precision (`fp8`)."""
        from .queueing import ndtri

        dt = jnp.result_type(input_len, float)
        f = lambda x: jnp.asarray(x, dt)  # noqa: E731
        q = f(q)
        return cls(f(input_len), f(output_len), f(input_cv), f(output_cv), f(ttft), f(tpot), q, f(mean_mode),
                   f(arrival_ca2), f(kv_bandwidth), f(cache_hit), f(fp8), f(kv_flag(fp8, kv_fp8)),
                   f(cache_load_bandwidth), ndtri(q))


class Point(NamedTuple):
    """Everything one evaluation reads: the GPU, the model, the engine's efficiency and the scenario. `hw_decode`
    is the decode pool's GPU when it differs from the prefill pool's (heterogeneous pools, Splitwise-HA); None: the
    same GPU everywhere."""

    hw: Hardware
    model: Model
    eff: Efficiency
    sc: Scenario
    hw_decode: Hardware | None = None

    def decode_side(self) -> "Point":
        """The point as the decode pool sees it (its own GPU)."""
        return self if self.hw_decode is None else self._replace(hw=self.hw_decode, hw_decode=None)


class Demand(NamedTuple):
    """Sizing inputs of one point: rate NaN = fluid (the large-deployment limit); pins 0 = free; total_gpus inf = no
    cap; dispatch AUTO = each pool's default (a central queue for the prefill pool, JSQ elsewhere)."""

    rate: jax.Array        # requests/s
    total_gpus: jax.Array
    n_prefill: jax.Array   # pinned prefill (or colocated) instances, 0 = free
    n_decode: jax.Array    # pinned decode instances, 0 = free
    dispatch: jax.Array | float = -1.0  # queueing.Dispatch code, or AUTO (-1)


AUTO_DISPATCH = -1.0


class Latency(NamedTuple):
    """Latency of one instance at a per-instance arrival rate, plus what the sizing and the cost split need."""

    ttft: jax.Array           # s, at the contract percentile (or mean)
    tpot: jax.Array           # s
    batch: jax.Array          # mean decode batch
    batch_q: jax.Array        # q-quantile of the decode batch (memory check)
    batch_max: jax.Array      # KV-cache limit on the batch
    prefill_busy: jax.Array   # fraction of instance time spent on prefill
    decode_busy: jax.Array    # fraction of instance time spent on decode (the rest is idle)


@dataclass(frozen=True)
class SearchSpace:
    """The discrete configuration choices searched per architecture (static: part of the compiled program)."""

    tp: tuple = (1, 2, 4, 8)           # colocated and chunked instances
    chunk: tuple = (512, 1024, 2048, 8192)
    tp_prefill: tuple = (1, 2, 4, 8)
    tp_decode: tuple = (1, 2, 4, 8)
    overlap: tuple = (0, 1)


def as_array_tree(tree, dtype=None):
    """Convert every leaf of a NamedTuple to a jnp array (default float dtype of the current x64 mode)."""
    dtype = dtype or jnp.result_type(float)
    return type(tree)(*(jnp.asarray(x, dtype=dtype) for x in tree))

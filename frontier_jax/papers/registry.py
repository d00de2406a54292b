"""The systems registry: each paper's system = one of the engine's scheduling policies (ARCHS) + its configuration
space + the features that set it apart (MODEL.md section 8).

    System(name, paper, arch, space_overrides, features, evaluate_kwargs)

`space_overrides` restricts the engine's SearchSpace (fields tp, chunk, tp_prefill, tp_decode, overlap);
`evaluate_kwargs` are defaults for `frontier_jax.evaluate` arguments; `features` are the distinguishing mechanisms,
resolved here per scenario:

- ``kv_link``: "nvlink" (the prefill GPU's NVLink bandwidth from the catalogue, DistServe's placement of the two
  phases of one model replica inside a node) or "nic" (the scale-out NIC per GPU, the engine's default).
- ``pools``: (prefill GPU, decode GPU) for heterogeneous pools (Splitwise-HA). See "Pool-separable evaluation".
- ``prefix_cache``: the system reuses prefix KV from a global cache (Mooncake). The workload's `cache_hit` removes
  the prefill compute of hit tokens (the engine's `cache_hit` input) and the hit KV must first be loaded from the
  cache pool, over ``cache_link`` ("nic": the prefill GPUs' NICs, one per GPU of the prefill instance).
- ``tbt_definition``: how the paper measures the per-token gap (used by `claims` for the baselines it compares).

Heterogeneous pools and prefix-cache loading are inputs of the cost model itself (costmodel.inputs.build:
`decode_hardware`, `decode_price`, `cache_load_bandwidth`): the decode pool is searched on its own GPU and priced at
its own price, and the hit KV of a contract-percentile prompt is loaded over the prefill instance's NICs before
its prefill can finish (a deterministic delay in TTFT, costmodel.arch.disaggregated.cache_load_time). Every system
is one evaluation of the model.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, NamedTuple

import jax
import numpy as np
import xarray as xr

from ..costmodel import inputs
from ..costmodel.catalog import load_hardware, load_model
from ..costmodel.cost import evaluate_point
from ..costmodel.types import ARCHS, SearchSpace
from ..errors import FrontierError
from ..variables import POINT_VARIABLES

RELAXED_S = 1.0e4       # a latency bound that never binds (s)
BUCKET = 256            # points per kernel call: one compiled shape for every batch
SPACE_FIELDS = ("tp", "chunk", "tp_prefill", "tp_decode", "overlap")
_DEFAULT_SPACE = SearchSpace()
SPACE_LEN = {f: len(getattr(_DEFAULT_SPACE, f)) for f in SPACE_FIELDS}
PIN_ALIASES = {"tp": ("tp", "tp_prefill", "tp_decode")}
SYSTEM_KEYS = tuple(v.name for v in POINT_VARIABLES if v.dims == ("arch",))
_EVAL_ARGS = ("input_len", "output_len", "ttft", "tpot", "percentile", "rate", "kv_bandwidth", "total_gpus",
              "input_cv", "output_cv", "arrival_ca2", "cache_hit", "slo_scale", "price", "hbm_bandwidth_scale",
              "flops_scale", "n_prefill", "n_decode", "decode_hardware", "decode_price", "cache_load_bandwidth")
_EVAL_DEFAULTS = dict(input_len=2048, output_len=256, ttft=2.0, tpot=0.05, percentile=0.99)
_POOLS_FROM_SYSTEM = "system"

# ----------------------------------------------------------------------------------------------- the registry

def _frozen(mapping) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class System:
    """A serving system: a scheduling policy (`arch`, one of ARCHS) plus its configuration space and features."""

    name: str
    paper: str
    arch: str
    space_overrides: Mapping[str, tuple] = field(default_factory=dict)
    features: Mapping[str, Any] = field(default_factory=dict)
    evaluate_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise FrontierError(f"System.name must be a non-empty string (got {self.name!r})")
        if self.arch not in ARCHS:
            raise FrontierError(f"System {self.name!r}: arch must be one of {', '.join(ARCHS)} (got {self.arch!r})")
        for key, values in dict(self.space_overrides).items():
            if key not in SPACE_FIELDS:
                raise FrontierError(f"System {self.name!r}: unknown space field {key!r}; known: "
                                    f"{', '.join(SPACE_FIELDS)}")
            _space_tuple(key, values)
        for key in dict(self.evaluate_kwargs):
            if key not in _EVAL_ARGS + ("engine", "precision", "model", "hardware"):
                raise FrontierError(f"System {self.name!r}: evaluate_kwargs has unknown argument {key!r}")
        link = dict(self.features).get("kv_link", "nic")
        if link not in ("nic", "nvlink"):
            raise FrontierError(f"System {self.name!r}: features['kv_link'] must be 'nic' or 'nvlink'")
        object.__setattr__(self, "space_overrides", _frozen(self.space_overrides))
        object.__setattr__(self, "features", _frozen(self.features))
        object.__setattr__(self, "evaluate_kwargs", _frozen(self.evaluate_kwargs))

    def __hash__(self):
        return hash((self.name, self.paper, self.arch))

    def replace(self, **changes) -> "System":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def space(self) -> dict[str, tuple]:
        """The full configuration space: the engine's defaults with this system's overrides."""
        return {f: tuple(self.space_overrides.get(f, getattr(_DEFAULT_SPACE, f))) for f in SPACE_FIELDS}


def _space_tuple(key, values) -> tuple:
    vals = tuple(float(v) for v in (values if isinstance(values, (tuple, list)) else (values,)))
    if not vals or len(vals) > SPACE_LEN[key]:
        raise FrontierError(f"space field {key!r} takes 1 to {SPACE_LEN[key]} values (got {values!r})")
    for v in vals:
        if not math.isfinite(v) or v < 0 or (key != "overlap" and v <= 0) or v != round(v):
            raise FrontierError(f"space field {key!r} takes whole positive numbers (got {values!r})")
    if key == "overlap" and any(v not in (0.0, 1.0) for v in vals):
        raise FrontierError(f"space field 'overlap' takes 0 and/or 1 (got {values!r})")
    return vals


_BUILTIN = (
    System("vllm", "vLLM (Kwon et al., SOSP'23)", "colocated",
           features={"scheduler": "continuous batching, prefill-prioritised: a prefill iteration stalls every "
                                  "running decode", "kv_memory": "PagedAttention (near-zero KV fragmentation)",
                     "tbt_definition": "normalised latency (mean end-to-end latency / output tokens)"}),
    System("sarathi-serve", "Sarathi-Serve (Agrawal et al., OSDI'24)", "chunked",
           features={"scheduler": "stall-free chunked prefill: decodes plus up to chunk - b prompt tokens per "
                                  "iteration", "tbt_definition": "p99 of every per-token gap (TBT)"}),
    System("distserve", "DistServe (Zhong et al., OSDI'24)", "disaggregated", space_overrides={"overlap": (0,)},
           features={"kv_link": "nvlink", "per_phase_parallelism": "tp_prefill and tp_decode chosen separately",
                     "placement": "prefill and decode instances of a replica share a node; KV moves over NVLink",
                     "kv_transfer": "after the prefill (no layer-wise overlap)",
                     "tbt_definition": "TPOT: per-request mean inter-token time, 90% attainment"}),
    System("splitwise", "Splitwise (Patel et al., ISCA'24)", "disaggregated", space_overrides={"overlap": (1,)},
           features={"kv_link": "nic", "kv_transfer": "layer-wise, overlapped with the prefill, over InfiniBand",
                     "pools": ("h100-80gb-sxm", "a100-80gb-sxm"),
                     "pools_note": "Splitwise-HA: prompt pool on H100, token pool on A100, priced separately",
                     "tbt_definition": "per-token gap percentiles P50/P90/P99 as slowdowns vs the request alone"}),
    System("mooncake", "Mooncake (Qin et al., FAST'25)", "disaggregated",
           features={"kv_link": "nic", "prefix_cache": True, "cache_link": "nic",
                     "kv_transfer": "layer-wise over RDMA (Transfer Engine)",
                     "tbt_definition": "mean of the slowest 10% of per-token gaps"}),
)
SYSTEMS: dict[str, System] = {s.name: s for s in _BUILTIN}


def register_system(system: System, *, replace: bool = False) -> System:
    """Add a user-defined system to the registry (and so to `frontier.common_frame` by default)."""
    if not isinstance(system, System):
        raise FrontierError(f"register_system takes a System (got {type(system).__name__})")
    if system.name in SYSTEMS and not replace:
        raise FrontierError(f"a system named {system.name!r} is already registered; pass replace=True")
    SYSTEMS[system.name] = system
    return system


def unregister_system(name: str) -> None:
    """Remove a system from the registry (FrontierError if unknown)."""
    if name not in SYSTEMS:
        raise FrontierError(f"no system named {name!r}")
    del SYSTEMS[name]


def get_system(system: str | System) -> System:
    """The registered System of a name (a System passes through); FrontierError listing the known ones."""
    if isinstance(system, System):
        return system
    if system in SYSTEMS:
        return SYSTEMS[system]
    raise FrontierError(f"unknown system {system!r}; known: {', '.join(SYSTEMS)}")


def list_systems() -> list[str]:
    """Names of the registered systems, in registry order."""
    return list(SYSTEMS)


# ----------------------------------------------------------------------------------------------- the kernel

class SpaceArrays(NamedTuple):
    """The configuration space as arrays (fixed length per field; a pinned choice is repeated), so that every
    system and pin shares one compiled kernel. Duplicate choices do not change the argmin."""

    tp: jax.Array
    chunk: jax.Array
    tp_prefill: jax.Array
    tp_decode: jax.Array
    overlap: jax.Array


def _padded(key, values) -> tuple:
    vals = _space_tuple(key, values)
    return vals + (vals[-1],) * (SPACE_LEN[key] - len(vals))


@jax.jit
def _kernel(point, demand, price, space: SpaceArrays):
    def one(p, d, c, s):
        ss = SearchSpace(**{f: tuple(getattr(s, f)[i] for i in range(SPACE_LEN[f])) for f in SPACE_FIELDS})
        return evaluate_point(p, d, c, ss)._asdict()
    return jax.vmap(one)(point, demand, price, space)


@dataclass
class Job:
    """One homogeneous batch for the kernel: a GPU, a model, an engine, a space and `evaluate`'s numeric inputs
    (scalars or 1-D arrays of one length)."""

    hardware: Any
    model: Any
    space: Mapping[str, tuple]
    kwargs: dict
    engine: str = "current"
    precision: str = "bf16"


def run_jobs(jobs: list[Job]) -> list[dict[str, np.ndarray]]:
    """Evaluate every job in one padded, chunked pass of the shared kernel. Each result maps the kernel's output
    names to arrays with a leading point axis (length 1 for all-scalar jobs) and, where per architecture, a
    trailing axis over ARCHS."""
    pieces, sizes = [], []
    for job in jobs:
        point, demand, price = inputs.build(job.hardware, job.model, engine=job.engine, precision=job.precision,
                                            **job.kwargs)
        shape = np.shape(price)
        n = int(np.prod(shape)) if shape else 1
        flat = jax.tree.map(lambda x, n=n, shape=shape: np.reshape(np.broadcast_to(np.asarray(x, float), shape),
                                                                   (n,)), (point, demand, price))
        sp = SpaceArrays(*(np.broadcast_to(np.asarray(_padded(f, job.space[f]), float), (n, SPACE_LEN[f]))
                           for f in SPACE_FIELDS))
        pieces.append((flat, sp))
        sizes.append(n)
    if not pieces:
        return []
    total = sum(sizes)
    padded = -(-total // BUCKET) * BUCKET
    allin = jax.tree.map(lambda *xs: np.concatenate(xs), *pieces)
    allin = jax.tree.map(lambda x: np.concatenate([x, np.repeat(x[-1:], padded - total, axis=0)]), allin)
    outs = []
    for start in range(0, padded, BUCKET):
        (pt, dm, pr), sp = jax.tree.map(lambda x, s=start: x[s:s + BUCKET], allin)
        outs.append(jax.tree.map(np.asarray, _kernel(pt, dm, pr, sp)))
    merged = {k: np.concatenate([o[k] for o in outs])[:total] for k in outs[0]}
    results, at = [], 0
    for n in sizes:
        results.append({k: v[at:at + n] for k, v in merged.items()})
        at += n
    return results


# ----------------------------------------------------------------------------------------------- plans

class Plan(NamedTuple):
    """The job one system needs for one scenario (a list, so that plans batch) and how to read the system's
    output from its result (the system's architecture's column)."""

    system: System
    jobs: list
    combine: Callable[[list], dict]
    shape: tuple
    attrs: dict


def _arr(x):
    return np.asarray(x, dtype=float)


def _broadcast(values: dict):
    try:
        shape = np.broadcast_shapes(*(np.shape(v) for v in values.values()))
    except ValueError as e:
        raise FrontierError(f"array inputs do not broadcast together: {e}") from None
    if len(shape) > 1:
        raise FrontierError("evaluate_system takes scalars or 1-D arrays")
    return shape


def _space_with_pins(system: System, pins: dict) -> dict:
    space = system.space
    for key, value in pins.items():
        if value is None:
            continue
        if np.ndim(value) != 0:
            raise FrontierError(f"the pin {key}= takes one value (got {value!r})")
        for f in PIN_ALIASES.get(key, (key,)):
            if key == "tp" and f != "tp" and pins.get(f) is not None:
                continue
            space[f] = _space_tuple(f, (float(bool(value)) if f == "overlap" else value,))
    return space


def _same_gpu(a, b) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.strip().lower() == b.strip().lower()
    return a is b


def _select(out: dict, a: int) -> dict:
    return {k: (v[:, a] if v.ndim == 2 else v) for k, v in out.items()}


def _as_system(res: dict) -> dict:
    return {k: np.asarray(res[k], dtype=float) for k in SYSTEM_KEYS}


def plan_system(system: str | System, **scenario) -> Plan:
    """The jobs and combination rule for `evaluate_system(system, **scenario)` (use it to batch many scenarios
    and systems into one kernel pass: `run_plans`)."""
    system = get_system(system)
    sc = {**_EVAL_DEFAULTS, **dict(system.evaluate_kwargs), **scenario}
    hardware = sc.pop("hardware", "h100-80gb-sxm")
    model = sc.pop("model", "llama-3.1-70b")
    engine = sc.pop("engine", "current")
    precision = sc.pop("precision", "bf16")
    pools = sc.pop("pools", _POOLS_FROM_SYSTEM)
    decode_price = sc.pop("decode_price", None)
    cache_bandwidth = sc.pop("cache_bandwidth", None)
    pins = {k: sc.pop(k, None) for k in ("tp", "tp_prefill", "tp_decode", "chunk", "overlap")}
    unknown = set(sc) - set(_EVAL_ARGS)
    if unknown:
        raise FrontierError(f"evaluate_system: unknown argument(s) {', '.join(sorted(unknown))}")
    space = _space_with_pins(system, pins)
    if pools == _POOLS_FROM_SYSTEM:
        pools = system.features.get("pools")
    if pools is not None and (not isinstance(pools, (tuple, list)) or len(pools) != 2):
        raise FrontierError(f"pools must be (prefill GPU, decode GPU) or None (got {pools!r})")
    arch = ARCHS.index(system.arch)
    hw_p, hw_d = (pools if (pools is not None and arch == 2) else (hardware, hardware))
    hwp_obj, hwd_obj = load_hardware(hw_p), load_hardware(hw_d)
    if arch == 2 and sc.get("kv_bandwidth") is None:
        if system.features.get("kv_link", "nic") == "nvlink":
            sc["kv_bandwidth"] = float(hwp_obj.nvlink_bandwidth)
        elif pools is not None:
            sc["kv_bandwidth"] = float(min(hwp_obj.nic_bandwidth, hwd_obj.nic_bandwidth))
    numeric = {k: _arr(v) for k, v in sc.items() if k != "percentile" and v is not None}
    shape = _broadcast(numeric)
    attrs = {"system": system.name, "paper": system.paper, "arch": system.arch, "engine": engine,
             "model": str(model) if isinstance(model, str) else "custom",
             "hardware": str(hw_p) if isinstance(hw_p, str) else "custom",
             "decode_hardware": str(hw_d) if isinstance(hw_d, str) else "custom"}
    prefix = bool(system.features.get("prefix_cache", False)) and np.any(_arr(sc.get("cache_hit", 0.0)) > 0)
    pooled = arch == 2 and (not _same_gpu(hw_p, hw_d) or decode_price is not None)
    kw = dict(sc, decode_hardware=hw_d, decode_price=decode_price if pooled else sc.get("price"))
    if prefix:
        kw["cache_load_bandwidth"] = float(hwp_obj.nic_bandwidth) if cache_bandwidth is None else cache_bandwidth
        attrs["cache_load"] = "TTFT includes cache_hit * I_q * KV bytes / (tp_prefill * NIC bandwidth)"
    if pooled:
        attrs["pools"] = "prefill pool on the prefill GPU, decode pool on the decode GPU, each at its own price"
    job = Job(hw_p, model, space, kw, engine, precision)
    return Plan(system, [job], lambda rs: _as_system(_select(rs[0], arch)), shape, attrs)


def run_plans(plans: list[Plan]) -> list[dict]:
    """Run many plans in one kernel pass; each result is a dict of 1-D arrays (length 1 for scalar scenarios)."""
    jobs = [job for p in plans for job in p.jobs]
    results = run_jobs(jobs)
    out, at = [], 0
    for p in plans:
        rs = results[at:at + len(p.jobs)]
        at += len(p.jobs)
        out.append(p.combine(rs))
    return out


def system_dataset(res: dict, shape: tuple, attrs: dict) -> xr.Dataset:
    """The system's result as a Dataset with the same variable names, units and long names as `evaluate`."""
    lead = ("point",) if shape else ()
    get = (lambda v: np.asarray(v)) if shape else (lambda v: np.asarray(v)[0])
    data = {v.name: (lead, get(res[v.name]).astype(v.dtype), v.attrs())
            for v in POINT_VARIABLES if v.dims == ("arch",)}
    ds = xr.Dataset(data, coords={"arch": ((), attrs["arch"], {"long_name": "serving architecture"})})
    ds.attrs.update({"title": f"frontier-jax evaluation of {attrs['system']}", **attrs})
    return ds


def evaluate_system(system: str | System, **scenario) -> xr.Dataset:
    """Evaluate one system (name or System) for one scenario (or a 1-D batch of them).

    Takes every argument of `frontier_jax.evaluate` (hardware, model, input_len, output_len, ttft, tpot,
    percentile, rate, kv_bandwidth, engine, cache_hit, slo_scale, price, pins tp/tp_prefill/tp_decode/chunk/overlap,
    ...), with the system's `evaluate_kwargs` as defaults and its space and features applied, plus:
    `pools=(prefill GPU, decode GPU)` or None (homogeneous on `hardware`; default: the system's own pools),
    `decode_price` (USD per decode-GPU-hour; default the decode GPU's catalogue price) and `cache_bandwidth`
    (bytes/s per prefill GPU for prefix-cache loads; default its NIC). Returns the variables of `evaluate` for the
    system's architecture (no `arch` dimension; `point` for array inputs); system, paper and pools in attrs.
    """
    plan = plan_system(system, **scenario)
    res = run_plans([plan])[0]
    return system_dataset(res, plan.shape, plan.attrs)

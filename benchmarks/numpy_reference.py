"""The closed-form cost model re-implemented in plain numpy (no jax import), vectorised over points AND
configurations, for benchmarks/run.py (speed) and tests/test_numpy_reference.py (agreement with the JAX model).

Layout: one section per JAX module, in the order they depend on each other, each a class used as a namespace
whose functions mirror the module's function by function (same names, same expressions). A diff against the JAX
source is then mostly `jnp` -> `np` plus the conventions below, so an equation change is easy to carry over:

    sed 's/jnp\\./np./g' frontier_jax/arch/colocated.py | diff - <(the `colocated` class below, dedented)

Array conventions (what replaces `jax.vmap`):
- every per-point quantity has shape (N, 1, 1): points on axis 0;
- the configuration grid of an architecture lies on axis 1 (shape (1, C, 1)); quantities that depend on both
  broadcast to (N, C, 1), so a `vmap` over configurations becomes plain broadcasting;
- the quadrature nodes of a length distribution lie on the LAST axis (size N_NODES); scalars keep a trailing
  axis of size 1 and `qu.expect` keeps it (keepdims), so the JAX code's `x[..., None]` disappears;
- `jax.lax.scan` becomes a Python for loop with the same number of steps; `jax.jvp` (the chunked-prefill batch
  fixed point) uses the forward-mode `Dual` numbers below with the same derivative rules as JAX.

Entry points: `load_tables` (catalogue TOML files and the calibration JSON read directly), `decode_points`
(flat grid index -> inputs, as frontier_jax/sweep/grid.py), `point_inputs` (as frontier_jax/sweep/kernel.py),
`evaluate_point` (as frontier_jax/search.py, on N points at once) and `Kernel` (the sweep kernel: same output
names as `frontier_jax.sweep.kernel.make_kernel`, each (N,) or (N, 3)).
"""
from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy.special import ndtri as _scipy_ndtri  # scipy is a dependency of jax, so it is always installed with the package

REPO = Path(__file__).resolve().parents[1]


# ============================================================== forward-mode dual numbers (stands in for jax.jvp)
def primal(x):
    """The plain value under any number of nested Duals."""
    while isinstance(x, Dual):
        x = x.v
    return x


def _balanced_eq(x, z, y):
    """JAX's derivative weight of max/min with respect to x (ans z, other operand y): 1, or 1/2 at a tie."""
    x, z, y = primal(x), primal(z), primal(y)
    return np.where(x == z, 1.0, 0.0) / np.where(y == z, 2.0, 1.0)


class Dual:
    """Value `v` plus tangent `d` times an infinitesimal of level `tag` (forward mode). Components may be Duals of
    lower levels, so jvp of a function that itself calls jvp nests like JAX's (no perturbation confusion); the
    derivative rules are JAX's (ties of max/min split 1/2, ceil flat, reductions as lax's)."""

    __array_priority__ = 1000
    _tags = 0

    def __init__(self, v, d, tag):
        self.v, self.d, self.tag = v, d, tag

    @staticmethod
    def level(*xs):
        return max((x.tag for x in xs if isinstance(x, Dual)), default=0)

    @staticmethod
    def split(x, tag):
        """(value, tangent) at level `tag`; the tangent of a constant is None (JAX's symbolic zero)."""
        return (x.v, x.d) if isinstance(x, Dual) and x.tag == tag else (x, None)

    def _bin(self, o, rule, swap=False):
        a, b = (o, self) if swap else (self, o)
        t = Dual.level(a, b)
        (x, dx), (y, dy) = Dual.split(a, t), Dual.split(b, t)
        v, d = rule(x, dx, y, dy)
        return Dual(v, d, t)

    def __add__(self, o):
        return self._bin(o, lambda x, dx, y, dy: (x + y, _plus(dx, dy)))

    def __radd__(self, o):
        return self._bin(o, lambda x, dx, y, dy: (x + y, _plus(dx, dy)), swap=True)

    def __sub__(self, o):
        return self._bin(o, lambda x, dx, y, dy: (x - y, _plus(dx, None if dy is None else -dy)))

    def __rsub__(self, o):
        return self._bin(o, lambda x, dx, y, dy: (x - y, _plus(dx, None if dy is None else -dy)), swap=True)

    def __mul__(self, o):
        return self._bin(o, lambda x, dx, y, dy: (x * y, _plus(_times(dx, y), _times(dy, x))))

    def __rmul__(self, o):
        return self._bin(o, lambda x, dx, y, dy: (x * y, _plus(_times(dx, y), _times(dy, x))), swap=True)

    @staticmethod
    def _div(x, dx, y, dy):  # JAX: g / y and -g x y**-2
        return x / y, _plus(None if dx is None else dx / y, None if dy is None else (-dy) * x * (1.0 / (y * y)))

    def __truediv__(self, o):
        return self._bin(o, Dual._div)

    def __rtruediv__(self, o):
        return self._bin(o, Dual._div, swap=True)

    def __neg__(self):
        return Dual(-self.v, -self.d, self.tag)

    def __pow__(self, n):
        if isinstance(n, Dual):
            raise TypeError("Dual ** Dual is not needed")
        return Dual(self.v ** n, n * self.v ** (n - 1) * self.d, self.tag)

    def __rpow__(self, base):
        raise TypeError("constant ** Dual is not needed")

    def __lt__(self, o):
        return primal(self) < primal(o)

    def __le__(self, o):
        return primal(self) <= primal(o)

    def __gt__(self, o):
        return primal(self) > primal(o)

    def __ge__(self, o):
        return primal(self) >= primal(o)

    def __eq__(self, o):
        return primal(self) == primal(o)

    __hash__ = None

    @property
    def shape(self):
        return np.shape(primal(self))

    _UNARY = {  # f(x) and f'(x) from the (possibly Dual) value x, as JAX's jvp rules
        np.exp: lambda x, y: y,
        np.expm1: lambda x, y: y + 1.0,
        np.log: lambda x, y: 1.0 / x,
        np.log1p: lambda x, y: 1.0 / (1.0 + x),
        np.log2: lambda x, y: 1.0 / (x * np.log(2.0)),
        np.sqrt: lambda x, y: 0.5 / y,
        np.negative: lambda x, y: -1.0,
        np.ceil: lambda x, y: 0.0,
        np.floor: lambda x, y: 0.0,
        np.absolute: lambda x, y: np.sign(primal(x)) * 1.0,
    }

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method != "__call__" or kwargs:
            return NotImplemented
        if ufunc in (np.isfinite, np.isnan, np.isinf, np.sign, np.less, np.less_equal, np.greater,
                     np.greater_equal, np.equal, np.not_equal):
            return ufunc(*(primal(x) for x in inputs))
        t = Dual.level(*inputs)
        if ufunc in Dual._UNARY:
            x, dx = Dual.split(inputs[0], t)
            y = ufunc(x)
            return Dual(y, Dual._UNARY[ufunc](x, y) * dx, t)
        if ufunc in (np.maximum, np.minimum):
            (x, dx), (y, dy) = (Dual.split(i, t) for i in inputs)
            z = ufunc(x, y)
            return Dual(z, _plus(_times(dx, _balanced_eq(x, z, y)), _times(dy, _balanced_eq(y, z, x))), t)
        binary = {np.add: Dual.__add__, np.subtract: Dual.__sub__, np.multiply: Dual.__mul__,
                  np.true_divide: Dual.__truediv__}
        if ufunc in binary:
            a, b = inputs
            if not isinstance(a, Dual) or a.tag != t:
                a = Dual(a, 0.0, t)
            return binary[ufunc](a, b)
        if ufunc is np.power and not isinstance(inputs[1], Dual):
            return Dual.__pow__(inputs[0], inputs[1])
        return NotImplemented

    def __array_function__(self, func, types, args, kwargs):
        if func is np.where:
            c, a, b = args
            t = Dual.level(a, b)
            (x, dx), (y, dy) = Dual.split(a, t), Dual.split(b, t)
            c = primal(c)  # select's jvp instantiates a constant branch's zeros
            zero = lambda u: np.zeros_like(primal(u), dtype=float)  # noqa: E731
            return Dual(np.where(c, x, y), np.where(c, zero(x) if dx is None else dx, zero(y) if dy is None else dy), t)
        if func is np.clip:  # as jnp.clip: maximum(min, x) then minimum(max, x)
            x, lo, hi = args[0], args[1], (args[2] if len(args) > 2 else kwargs.get("max"))
            x = x if lo is None else np.maximum(lo, x)
            return x if hi is None else np.minimum(hi, x)
        if func is np.sum:
            x = args[0]
            return Dual(np.sum(x.v, **kwargs), np.sum(x.d + np.zeros_like(primal(x.v), dtype=float), **kwargs), x.tag)
        if func is np.max:  # lax.reduce_max: the tangent at the maximum, averaged over ties
            x = args[0]
            z = np.max(x.v, **kwargs)
            ind = (primal(x.v) == primal(z)).astype(float)
            return Dual(z, np.sum(x.d * ind, **kwargs) / np.sum(ind, **kwargs), x.tag)
        if func in (np.zeros_like, np.ones_like):
            return func(primal(args[0]), **kwargs)
        if func is np.full_like:
            return np.full_like(primal(args[0]), *args[1:], **kwargs)
        if func is np.shape:
            return np.shape(primal(args[0]))
        return NotImplemented


def _plus(a, b):
    return b if a is None else a if b is None else a + b


def _times(d, y):
    return None if d is None else d * y


def jvp(f, x):
    """(f(x), f'(x) * 1) for an elementwise f, like jax.jvp(f, (x,), (jnp.ones_like(x),)); may be nested."""
    Dual._tags += 1
    t = Dual._tags
    out = f(Dual(x, np.ones_like(primal(x)), t))
    return Dual.split(out, t)


# ============================================================== frontier_jax/types.py, catalog.py, calibration.py
class Hardware(NamedTuple):
    bf16_flops: np.ndarray
    fp8_flops: np.ndarray
    hbm_bytes: np.ndarray
    hbm_bandwidth: np.ndarray
    nvlink_bandwidth: np.ndarray
    nic_bandwidth: np.ndarray
    gpus_per_node: np.ndarray
    price: np.ndarray
    power: np.ndarray


class Model(NamedTuple):
    layers: np.ndarray
    hidden: np.ndarray
    q_heads: np.ndarray
    kv_heads: np.ndarray
    head_dim: np.ndarray
    ffn: np.ndarray
    vocab: np.ndarray
    params: np.ndarray


class Efficiency(NamedTuple):
    eta_flops: np.ndarray
    eta_flops_decay: np.ndarray
    eta_hbm: np.ndarray
    eta_hbm_decay: np.ndarray
    overhead: np.ndarray
    overhead_tp: np.ndarray
    allreduce_latency: np.ndarray


PRIOR = Efficiency(0.5, 0.1, 0.6, 0.1, 1e-4, 1e-3, 1e-5)
CALIBRATION_FILE = REPO / "frontier_jax" / "data" / "calibration.json"


def _catalog_file(folder: str, name: str) -> Path:
    roots = [Path(p).expanduser() for p in os.environ.get("FRONTIER_JAX_PATH", "").split(os.pathsep) if p.strip()]
    for root in [*roots, REPO]:
        for p in sorted((root / folder).glob("*.toml")) if (root / folder).is_dir() else []:
            if p.stem.lower() == name.strip().lower():
                return p
    raise KeyError(f"no {folder}/{name}.toml")


def load_hardware(name: str) -> Hardware:
    info = tomllib.loads(_catalog_file("hardware", name).read_text())
    return Hardware(*(float(info[f]["value"]) for f in Hardware._fields))


def load_model(name: str) -> Model:
    info = tomllib.loads(_catalog_file("models", name).read_text())
    return Model(*(float(info[f]) for f in Model._fields))


def load_efficiency(engine: str = "current") -> Efficiency:
    data = json.loads(CALIBRATION_FILE.read_text()) if CALIBRATION_FILE.exists() else {}
    params = data.get(engine, {"params": PRIOR._asdict()})["params"]
    return Efficiency(*(float(params[k]) for k in Efficiency._fields))


def load_tables(hardware, models, engines=("current",)):
    """Stacked catalogue tables (one row per name) that categorical indices select from."""
    stack = lambda trees: type(trees[0])(*(np.array(x, dtype=float) for x in zip(*trees)))  # noqa: E731
    return (stack([load_hardware(h) for h in hardware]), stack([load_model(m) for m in models]),
            stack([load_efficiency(e) for e in engines]))


# ============================================================== frontier_jax/latency.py
class lat:
    ACTIVATION_BYTES = 2.0

    def weight_bytes(model, fp8=0.0):
        return model.params * (2.0 - fp8)

    def kv_bytes_per_token(model, fp8=0.0):
        return 2.0 * model.layers * model.kv_heads * model.head_dim * (2.0 - fp8)

    def linear_flops_per_token(model):
        return 2.0 * (model.params - model.vocab * model.hidden)

    def _attn_dim(model):
        return model.q_heads * model.head_dim

    def peak_flops(hw, fp8=0.0, xp=np):
        return xp.where(fp8 > 0.5, hw.fp8_flops, hw.bf16_flops)

    def iteration_time(hw, model, eff, flops, hbm_bytes, tokens, tp, fp8=0.0, xp=np):
        log2tp = xp.log2(tp)
        eta_f = eff.eta_flops * tp ** (-eff.eta_flops_decay)
        eta_b = eff.eta_hbm * tp ** (-eff.eta_hbm_decay)
        compute = flops / (tp * lat.peak_flops(hw, fp8, xp) * eta_f)
        memory = hbm_bytes / (tp * hw.hbm_bandwidth * eta_b)
        ring = 2.0 * (tp - 1.0) / tp * tokens * model.hidden * lat.ACTIVATION_BYTES / hw.nvlink_bandwidth
        allreduce = xp.where(tp > 1.0, 2.0 * model.layers * (eff.allreduce_latency + ring), 0.0)
        return xp.maximum(compute, memory) + allreduce + eff.overhead * model.layers + eff.overhead_tp * log2tp

    def prefill_cost(model, tokens, batch=1.0, fp8=0.0):
        flops = batch * (lat.linear_flops_per_token(model) * tokens
                         + 2.0 * model.layers * lat._attn_dim(model) * tokens**2)
        hbm = lat.weight_bytes(model, fp8) + batch * tokens * lat.kv_bytes_per_token(model, fp8)
        return flops, hbm, batch * tokens

    def decode_cost(model, batch, context, fp8=0.0):
        flops = lat.linear_flops_per_token(model) * batch + 4.0 * model.layers * lat._attn_dim(model) * batch * context
        hbm = lat.weight_bytes(model, fp8) + batch * context * lat.kv_bytes_per_token(model, fp8)
        return flops, hbm, batch

    def mixed_cost(model, batch, context, chunk_tokens, chunk_prefix, fp8=0.0):
        lin = lat.linear_flops_per_token(model)
        a = lat._attn_dim(model)
        flops = (lin * (batch + chunk_tokens) + 4.0 * model.layers * a * batch * context
                 + 4.0 * model.layers * a * chunk_tokens * (chunk_prefix + 0.5 * chunk_tokens))
        kvb = lat.kv_bytes_per_token(model, fp8)
        hbm = lat.weight_bytes(model, fp8) + (batch * context + chunk_prefix + chunk_tokens) * kvb
        return flops, hbm, batch + chunk_tokens

    def prefill_seconds(hw, model, eff, tokens, tp, batch=1.0, fp8=0.0):
        f, b, n = lat.prefill_cost(model, tokens, batch, fp8)
        return lat.iteration_time(hw, model, eff, f, b, n, tp, fp8)

    def decode_seconds(hw, model, eff, batch, context, tp, fp8=0.0):
        f, b, n = lat.decode_cost(model, batch, context, fp8)
        return lat.iteration_time(hw, model, eff, f, b, n, tp, fp8)

    def mixed_seconds(hw, model, eff, batch, context, chunk_tokens, chunk_prefix, tp, fp8=0.0):
        f, b, n = lat.mixed_cost(model, batch, context, chunk_tokens, chunk_prefix, fp8)
        return lat.iteration_time(hw, model, eff, f, b, n, tp, fp8)

    def kv_capacity_tokens(hw, model, tp, fp8=0.0, memory_fraction=0.9):
        free = tp * hw.hbm_bytes * memory_fraction - lat.weight_bytes(model, fp8)
        return np.maximum(free, 0.0) / lat.kv_bytes_per_token(model, fp8)


# ============================================================== frontier_jax/queueing.py (trailing node axis)
class qu:
    N_NODES = 5
    _GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(N_NODES)
    _GH_W = _GH_W / _GH_W.sum()
    _NEWTON_STEPS = 5
    _MAX_EXPONENT = 60.0
    BURST_FLOOR = 1e-6

    def _log_sigma(cv):
        cv = np.asarray(cv)
        u = cv**2
        big = u > 1e-5
        u_safe = np.where(big, u, 1.0)
        ratio = np.where(big, np.log1p(u_safe) / u_safe, 1.0 - u / 2.0 + u**2 / 3.0)
        return cv * np.sqrt(ratio)

    def length_nodes(mean, cv):
        mean = np.asarray(mean)
        sigma = qu._log_sigma(cv)
        x = qu._GH_X
        nodes = mean * np.exp(sigma * x - 0.5 * sigma**2)  # JAX: mean[..., None], sigma[..., None]
        return nodes, qu._GH_W

    def ndtri(p):
        return _scipy_ndtri(p)

    def lognormal_quantile(mean, cv, z):
        sigma = qu._log_sigma(cv)
        return mean * np.exp(sigma * z - 0.5 * sigma**2)

    def expect(values, weights):
        return np.sum(values * weights, axis=-1, keepdims=True)

    def cornish_fisher(mean, var, skew, z, mean_mode, floor):
        quant = mean + np.sqrt(np.maximum(var, 0.0)) * (z + (z**2 - 1.0) * skew / 6.0)
        return np.where(mean_mode, mean, np.maximum(quant, np.minimum(floor, mean)))

    def decay_rate(lam, service, weights):
        es = qu.expect(service, weights)
        rho = lam * es
        s = service / es  # JAX: es[..., None]
        m2 = qu.expect(s**2, weights)
        x_max = qu._MAX_EXPONENT / np.max(s, axis=-1, keepdims=True)
        rho_c = np.clip(rho, 1e-12, 1.0 - 1e-12)
        x = np.clip(2.0 * (1.0 - rho_c) / (rho_c * m2), 1e-9, x_max)

        def step(x, _):
            em1 = np.expm1(np.minimum(x * s, qu._MAX_EXPONENT))
            m1 = qu.expect(em1, weights)
            h = np.log(rho_c) + np.log(m1) - np.log(x)
            dh = qu.expect(s * (em1 + 1.0), weights) / m1 - 1.0 / x
            return np.clip(x - h / dh, 1e-9, x_max), None

        for _ in range(qu._NEWTON_STEPS):
            x, _ = step(x, None)
        return np.where(rho < 1.0, x / es, 0.0)

    def mgf(theta, values, weights):
        return qu.expect(np.exp(np.minimum(theta * values, qu._MAX_EXPONENT)), weights)

    def sojourn(lam, service, weights, q, mean_mode, own_quantile, extra_mean=0.0, extra_mgf=None,
                extra_quantile=0.0, arrival_ca2=1.0):
        es = qu.expect(service, weights)
        es2 = qu.expect(service**2, weights)
        rho = lam * es
        cs2 = es2 / es**2 - 1.0
        burst = np.maximum((arrival_ca2 + cs2) / (1.0 + cs2), qu.BURST_FLOOR)
        wait_mean = lam * es2 / (2.0 * (1.0 - rho)) * burst
        theta = qu.decay_rate(lam, service, weights) / burst
        x_mgf = 1.0 if extra_mgf is None else extra_mgf(theta)
        tail = (np.log(rho) + np.log(qu.mgf(theta, service, weights)) + np.log(x_mgf) - np.log1p(-q)) / theta
        quant = np.maximum(tail, own_quantile + extra_quantile)
        value = np.where(mean_mode, wait_mean + es + extra_mean, quant)
        return np.where(rho < 1.0, value, np.inf)

    def uniform_mgf(theta, width):
        x = theta * width
        return np.where(x > 1e-8, np.expm1(np.minimum(x, qu._MAX_EXPONENT)) / np.where(x > 1e-8, x, 1.0), 1.0)


# ============================================================== frontier_jax/arch/common.py
class Scenario(NamedTuple):
    input_len: np.ndarray
    output_len: np.ndarray
    input_cv: np.ndarray
    output_cv: np.ndarray
    ttft: np.ndarray
    tpot: np.ndarray
    q: np.ndarray
    mean_mode: np.ndarray
    arrival_ca2: np.ndarray
    kv_bandwidth: np.ndarray
    cache_hit: np.ndarray
    fp8: np.ndarray


class Point(NamedTuple):
    hw: Hardware
    model: Model
    eff: Efficiency
    sc: Scenario


class Latency(NamedTuple):
    ttft: np.ndarray
    tpot: np.ndarray
    batch: np.ndarray
    batch_q: np.ndarray
    batch_max: np.ndarray
    prefill_share: np.ndarray


class c:  # noqa: N801  (the JAX code imports arch/common.py as `c`)
    def decode_steps(sc):
        return np.maximum(sc.output_len - 1.0, 1.0)

    def mean_context(sc):
        return sc.input_len + 0.5 * sc.output_len * (1.0 + sc.output_cv**2)

    def decode_affine(p, tp, context):
        t0 = lat.decode_seconds(p.hw, p.model, p.eff, 0.0, context, tp, p.sc.fp8)
        f1, m1, _ = lat.decode_cost(p.model, 1.0, context, p.sc.fp8)
        eta_f = p.eff.eta_flops * tp ** (-p.eff.eta_flops_decay)
        eta_b = p.eff.eta_hbm * tp ** (-p.eff.eta_hbm_decay)
        s_compute = f1 / (tp * lat.peak_flops(p.hw, p.sc.fp8) * eta_f)
        mem0 = lat.weight_bytes(p.model, p.sc.fp8) / (tp * p.hw.hbm_bandwidth * eta_b)
        s_memory = m1 / (tp * p.hw.hbm_bandwidth * eta_b) - mem0
        extra0 = t0 - mem0
        s_extra = c._ring_slope(p, tp)
        return (extra0, s_compute + s_extra), (extra0 + mem0, s_memory + s_extra)

    def _ring_slope(p, tp):
        ring = 2.0 * (tp - 1.0) / tp * p.model.hidden * lat.ACTIVATION_BYTES / p.hw.nvlink_bandwidth
        return np.where(tp > 1.0, 2.0 * p.model.layers * ring, 0.0)

    def affine_time(branches, b):
        (a1, s1), (a2, s2) = branches
        return np.maximum(a1 + s1 * b, a2 + s2 * b)

    def affine_slope(branches, b):
        (a1, s1), (a2, s2) = branches
        return np.where(a1 + s1 * b >= a2 + s2 * b, s1, s2)

    def batch_fixed_point(branches, arrivals_per_step, constant=0.0):
        out = []
        for a, s in branches:
            den = 1.0 - arrivals_per_step * s
            b = (constant + arrivals_per_step * (a + s)) / np.where(den > 0.0, den, 1.0)
            out.append(np.where(den > 0.0, b, np.inf))
        return np.maximum(*out)

    def normal_z(sc):
        return qu.ndtri(sc.q)  # the JAX model caches it per point (Scenario.z); the reference recomputes it

    def batch_quantile(b, z, mean_mode):
        return np.where(mean_mode, b + 1.0, b + 1.0 + z * np.sqrt(b))

    def batch_variance_over_lifetime(b):
        return 2.0 / 3.0 * b

    def kv_batch_limit(p, tp, context):
        return lat.kv_capacity_tokens(p.hw, p.model, tp, p.sc.fp8) / context

    def prefill_nodes(p, tp):
        nodes, w = qu.length_nodes(p.sc.input_len, p.sc.input_cv)
        h = p.sc.cache_hit

        def service(n):
            return lat.mixed_seconds(p.hw, p.model, p.eff, 0.0, 0.0, (1.0 - h) * n, h * n, tp, p.sc.fp8)

        s = service(nodes)
        s_q = service(qu.lognormal_quantile(p.sc.input_len, p.sc.input_cv, c.normal_z(p.sc)))
        return s, w, s_q


# ============================================================== frontier_jax/arch/colocated.py
class colocated:  # noqa: N801
    def latency(p, tp, lam):
        sc = p.sc
        s, w, s_q = c.prefill_nodes(p, tp)
        es, es2, es3 = qu.expect(s, w), qu.expect(s**2, w), qu.expect(s**3, w)
        rho = lam * es
        stable = rho < 1.0
        g = np.where(stable, 1.0 - rho, 1.0)
        n = c.decode_steps(sc)
        ctx = c.mean_context(sc)
        br = c.decode_affine(p, tp, ctx)
        wait = lam * es2 / (2.0 * g)
        sojourn_mean = wait + es
        backlog = rho * sojourn_mean
        b = np.where(stable, c.batch_fixed_point(br, lam * n / g, lam * backlog / g), np.inf)
        step = c.affine_time(br, 1.0 + b)
        x0 = n * step + backlog
        life = x0 / g
        var = (x0 * lam * es2 / g**3 + lam * es2 * sojourn_mean / g**2
               + (n * c.affine_slope(br, 1.0 + b)) ** 2 * c.batch_variance_over_lifetime(b))
        mu3 = x0 * (lam * es3 / g**4 + 3.0 * (lam * es2) ** 2 / g**5) + lam * es3 * sojourn_mean / g**3
        skew = mu3 / np.maximum(var, 1e-300) ** 1.5
        tpot = np.where(stable, qu.cornish_fisher(life / n, var / n**2, skew, c.normal_z(sc), sc.mean_mode,
                                                      c.affine_time(br, 1.0)), np.inf)
        busy = 1.0 - np.exp(-b)
        ttft = qu.sojourn(lam, s, w, sc.q, sc.mean_mode, s_q, extra_mean=0.5 * busy * step,
                          extra_mgf=lambda th: busy * qu.uniform_mgf(th, step) + 1.0 - busy,
                          extra_quantile=busy * sc.q * step, arrival_ca2=sc.arrival_ca2)
        return Latency(ttft, tpot, b, c.batch_quantile(b, c.normal_z(sc), sc.mean_mode), c.kv_batch_limit(p, tp, ctx), rho)

    def rate_upper(p, tp):
        s, w, _ = c.prefill_nodes(p, tp)
        ctx = c.mean_context(p.sc)
        br = c.decode_affine(p, tp, ctx)
        mem = 2.0 * (c.kv_batch_limit(p, tp, ctx) + 1.0) / (c.decode_steps(p.sc) * c.affine_time(br, 1.0))
        return np.minimum(1.0 / qu.expect(s, w), mem)


# ============================================================== frontier_jax/arch/chunked.py
class chunked:  # noqa: N801
    _FIXED_POINT_STEPS = 6

    def _mixed_step(p, tp, chunk, b, ctx):
        sc = p.sc
        new = (1.0 - sc.cache_hit) * sc.input_len
        k = np.clip(chunk - b, 1.0, None)
        k_eff = np.minimum(k, new)
        prefix = sc.cache_hit * sc.input_len + 0.5 * np.maximum(new - k_eff, 0.0)
        t_mix = lat.mixed_seconds(p.hw, p.model, p.eff, b, ctx, k_eff, prefix, tp, sc.fp8)
        t_plain = lat.decode_seconds(p.hw, p.model, p.eff, b, ctx, tp, sc.fp8)
        return k_eff, t_mix, t_plain

    def latency(p, tp, chunk, lam):
        sc = p.sc
        n = c.decode_steps(sc)
        ctx = c.mean_context(sc)
        new = (1.0 - sc.cache_hit) * sc.input_len
        new2 = new**2 * (1.0 + sc.input_cv**2)
        new3 = new**3 * (1.0 + sc.input_cv**2) ** 3

        def state(b):
            k, t_mix, t_plain = chunked._mixed_step(p, tp, chunk, 1.0 + b, ctx)
            es, es2 = new / k * t_mix, new2 / k**2 * t_mix**2
            rho = lam * es
            g = np.where(rho < 1.0, 1.0 - rho, 1.0)
            sojourn_mean = lam * es2 / (2.0 * g) + es + 0.5 * t_mix
            a = lam * new / k
            delta = t_mix - t_plain
            tpot = np.minimum((t_plain + delta * a * sojourn_mean / n) / np.maximum(1.0 - delta * a, 1e-12), t_mix)
            ok = (rho < 1.0) & (delta * a < 1.0)
            return np.where(ok, tpot, np.inf), sojourn_mean, k, t_mix, t_plain, rho

        def gap(b):
            return lam * n * state(b)[0] - b

        def newton(b, _):
            g, dg = jvp(gap, b)  # JAX: jax.jvp(gap, (b,), (jnp.ones_like(b),))
            step = np.where(np.isfinite(g) & (dg < 0.0), -g / np.where(dg < 0.0, dg, -1.0), chunk)
            return np.clip(b + step, 0.0, chunk), None

        b0 = c.batch_fixed_point(c.decode_affine(p, tp, ctx), lam * n)  # warm start: decode with no prompt work
        b = np.clip(b0, 0.0, chunk)
        for _ in range(chunked._FIXED_POINT_STEPS):
            b, _ = newton(b, None)
        converged = np.abs(gap(b)) <= 1e-6 * (1.0 + b)
        b = np.where(converged & (b < chunk - 1.0), b, np.inf)
        mean, sojourn_mean, k, t_mix, t_plain, rho = state(b)

        life = n * mean
        window = lam * (sojourn_mean + life)
        delta = t_mix - t_plain
        slope = lat.decode_seconds(p.hw, p.model, p.eff, 2.0 + b, ctx, tp, sc.fp8) - t_plain
        batch_var = slope**2 * c.batch_variance_over_lifetime(b)
        var = (delta / (n * k)) ** 2 * window * new2 + batch_var
        skew = (delta / (n * k)) ** 3 * window * new3 / np.maximum(var, 1e-300) ** 1.5
        cap = t_mix + slope * np.where(sc.mean_mode, 0.0, c.normal_z(sc) * np.sqrt(2.0 / 3.0 * b))
        floor = lat.decode_seconds(p.hw, p.model, p.eff, 1.0, ctx, tp, sc.fp8)
        tpot = np.minimum(qu.cornish_fisher(mean, var, skew, c.normal_z(sc), sc.mean_mode, floor), np.maximum(cap, mean))

        nodes, w = qu.length_nodes(new, sc.input_cv)
        service = nodes / k * t_mix
        own_q = np.ceil(qu.lognormal_quantile(new, sc.input_cv, c.normal_z(sc)) / k) * t_mix
        busy = 1.0 - np.exp(-b)
        roundup = (np.ceil(nodes / k) - nodes / k) * t_mix
        ttft = qu.sojourn(lam, service, w, sc.q, sc.mean_mode, own_q,
                          extra_mean=0.5 * busy * t_plain + qu.expect(roundup, w),
                          extra_mgf=lambda th: (busy * qu.uniform_mgf(th, t_plain) + 1.0 - busy) * qu.mgf(th, roundup, w),
                          extra_quantile=busy * sc.q * t_plain, arrival_ca2=sc.arrival_ca2)
        extra = lam * (new / k) * delta
        return Latency(ttft, tpot, b, c.batch_quantile(b, c.normal_z(sc), sc.mean_mode), c.kv_batch_limit(p, tp, ctx), extra)

    def rate_upper(p, tp, chunk):
        sc = p.sc
        ctx = c.mean_context(sc)
        new = (1.0 - sc.cache_hit) * sc.input_len
        k, t_mix, t_plain = chunked._mixed_step(p, tp, chunk, 0.0, ctx)
        prefill_limit = 1.5 * k / (new * t_mix)
        mem = 2.0 * (c.kv_batch_limit(p, tp, ctx) + 1.0) / (c.decode_steps(sc) * lat.decode_seconds(
            p.hw, p.model, p.eff, 1.0, ctx, tp, sc.fp8))
        return np.minimum(prefill_limit, mem)


# ============================================================== frontier_jax/arch/disaggregated.py
class disaggregated:  # noqa: N801
    def transfer_nodes(p, tp, nodes):
        return nodes * lat.kv_bytes_per_token(p.model, p.sc.fp8) / (tp * p.sc.kv_bandwidth)

    def exposed_transfer(transfer, prefill, layers, overlap):
        hidden = np.maximum(transfer / layers, transfer - prefill * (layers - 1.0) / layers)
        return np.where(overlap > 0.5, hidden, transfer)

    def _link_at_least(link, level):  # JAX skips, for a fixed mode, the terms this multiplies by 0
        return np.where(link > level - 0.5, 1.0, 0.0)

    def prefill_latency(p, tp, overlap, link, lam):
        sc = p.sc
        s, w, s_q = c.prefill_nodes(p, tp)
        nodes, _ = qu.length_nodes(sc.input_len, sc.input_cv)
        iq = qu.lognormal_quantile(sc.input_len, sc.input_cv, c.normal_z(sc))
        on = disaggregated._link_at_least(link, 1)
        x = on * disaggregated.exposed_transfer(disaggregated.transfer_nodes(p, tp, nodes), s, p.model.layers, overlap)
        x_q = on * disaggregated.exposed_transfer(disaggregated.transfer_nodes(p, tp, iq), s_q, p.model.layers,
                                                  overlap)
        ttft = qu.sojourn(lam, s, w, sc.q, sc.mean_mode, s_q, extra_mean=qu.expect(x, w),
                          extra_mgf=lambda th: qu.mgf(th, x - s * 0.0, w), extra_quantile=x_q,
                          arrival_ca2=sc.arrival_ca2)
        full = disaggregated.transfer_nodes(p, tp, nodes)
        link_wait = qu.sojourn(lam, full, w, sc.q, sc.mean_mode, 0.0, arrival_ca2=sc.arrival_ca2) - np.where(
            sc.mean_mode, qu.expect(full, w), 0.0)
        ttft = ttft + np.where(disaggregated._link_at_least(link, 2) > 0.5, np.maximum(link_wait, 0.0), 0.0)
        rho = lam * qu.expect(s, w)
        zero = np.zeros_like(rho)
        room = lat.kv_capacity_tokens(p.hw, p.model, tp, sc.fp8) / sc.input_len
        return Latency(ttft, zero, zero, zero + 1.0, room, rho)

    def prefill_rate_upper(p, tp, overlap, link):
        s, w, _ = c.prefill_nodes(p, tp)
        nodes, _ = qu.length_nodes(p.sc.input_len, p.sc.input_cv)
        link_limit = np.where(disaggregated._link_at_least(link, 2) > 0.5,
                              1.0 / qu.expect(disaggregated.transfer_nodes(p, tp, nodes), w), np.inf)
        return np.minimum(1.0 / qu.expect(s, w), link_limit)

    def decode_latency(p, tp, lam):
        sc = p.sc
        n = c.decode_steps(sc)
        ctx = c.mean_context(sc)
        br = c.decode_affine(p, tp, ctx)
        b = c.batch_fixed_point(br, lam * n)
        mean = c.affine_time(br, 1.0 + b)
        var = c.affine_slope(br, 1.0 + b) ** 2 * c.batch_variance_over_lifetime(b)
        tpot = qu.cornish_fisher(mean, var, np.zeros_like(mean), c.normal_z(sc), sc.mean_mode, c.affine_time(br, 1.0))
        zero = np.zeros_like(b)
        return Latency(zero, tpot, b, c.batch_quantile(b, c.normal_z(sc), sc.mean_mode), c.kv_batch_limit(p, tp, ctx), zero)

    def decode_rate_upper(p, tp):
        ctx = c.mean_context(p.sc)
        br = c.decode_affine(p, tp, ctx)
        return 2.0 * (c.kv_batch_limit(p, tp, ctx) + 1.0) / (c.decode_steps(p.sc) * c.affine_time(br, 1.0))


# ============================================================== frontier_jax/operating.py
class op:  # noqa: N801
    BISECTION_STEPS = 30
    POLISH_STEPS = 4
    POLISH_TOL = 1e-10
    RANGE = 1e-9
    CONTINUOUS_STEPS = 20
    UTIL_MAX = 1e-12

    def batched_zeros(x, dtype=None):
        return np.zeros_like(x, dtype=dtype)  # (batched only matters to vmap's tracing)

    def _by_step(k, first, second, rest):
        # JAX folds the two end evaluations into the solvers' loop (so the constraint is traced once); here the ends
        # are evaluated before the loop, the same evaluations in the same order, and this selector is not needed
        return first if k == 0 else second if k == 1 else rest

    def _log_ratio(value, bound):
        ok = (value > 0.0) & (bound > 0.0)
        r = np.log(np.where(ok, value, 1.0)) - np.log(np.where(ok, bound, 1.0))
        return np.where(ok, r, np.where(value > 0.0, np.inf, -np.inf))

    def constraint_terms(lat, sc):
        def finite(x):
            return np.where(np.isfinite(x), x, np.inf)
        return (op._log_ratio(finite(lat.ttft), sc.ttft), op._log_ratio(finite(lat.tpot), sc.tpot),
                op._log_ratio(finite(lat.batch_q), lat.batch_max))

    def violation(lat, sc):
        t1, t2, t3 = op.constraint_terms(lat, sc)
        return np.maximum(np.maximum(t1, t2), t3)

    def _bisect(fn, upper_fn, args):
        """Safeguarded Illinois false position in log-rate: bracket [a, b] with f(a) <= 0 < f(b); a secant step when
        both ends are finite and the step lands inside the middle 90 % of the bracket, bisection otherwise."""
        hi = upper_fn(args)
        lo = hi * op.RANGE
        f_lo = fn(lo, args)
        ok_lo = f_lo <= 0.0
        x_lo, x_hi = np.log(lo), np.log(hi)
        f_hi = fn(hi, args)

        def step(carry, _):
            a, fa, b, fb, side, fa_true, fb_true = carry
            finite = np.isfinite(fa) & np.isfinite(fb) & (fb > fa)
            t = np.where(finite, fa / np.where(finite, fa - fb, 1.0), 0.5)
            t = np.where((t > 0.05) & (t < 0.95), t, 0.5)
            x = a + t * (b - a)
            fx = fn(np.exp(x), args)
            good = fx <= 0.0
            fa_new = np.where(good, fx, np.where(side == -1, 0.5 * fa, fa))
            fb_new = np.where(good, np.where(side == 1, 0.5 * fb, fb), fx)
            side_new = np.where(good, 1, -1).astype(np.int32)
            return (np.where(good, x, a), fa_new, np.where(good, b, x), fb_new, side_new,
                    np.where(good, fx, fa_true), np.where(good, fb_true, fx)), None

        carry = (x_lo, f_lo, x_hi, f_hi, op.batched_zeros(f_lo, np.int32), f_lo, f_hi)
        for _ in range(op.BISECTION_STEPS):
            carry, _ = step(carry, None)
        a, _, b, _, _, fa, fb = carry

        def polish(carry, _):
            a, fa, b, fb = carry
            secant = np.isfinite(fa) & np.isfinite(fb) & (fb > fa)
            t = np.where(secant, np.clip(fa / np.where(secant, fa - fb, 1.0), 0.0, 1.0), 0.5)
            x = a + t * (b - a)
            fx = fn(np.exp(x), args)
            good = fx <= op.POLISH_TOL
            return (np.where(good, x, a), np.where(good, fx, fa), np.where(good, b, x), np.where(good, fb, fx)), None

        carry = (a, fa, b, fb)
        for _ in range(op.POLISH_STEPS):
            carry, _ = polish(carry, None)
        x = carry[0]
        return np.where(ok_lo & np.isfinite(hi) & (hi > 0.0), np.exp(x), np.nan)

    def _logit(x):
        return np.log(x) - np.log1p(-x)

    def _chandrupatla(fn, upper_fn, args):
        hi = upper_fn(args)
        rate = lambda u: hi / (1.0 + np.exp(-u))  # noqa: E731
        f = lambda u: fn(rate(u), args)  # noqa: E731
        zero = op.batched_zeros(hi)
        lo_u, hi_u = zero + op._logit(op.RANGE), zero + op._logit(1.0 - op.UTIL_MAX)
        f_lo, f_hi = f(lo_u), f(hi_u)  # JAX: the loop's first two steps (op._by_step)

        def safe(x):
            return np.where(x != 0.0, x, 1.0)

        def step(carry, _):
            x1, f1, x2, f2, x3, f3, t = carry
            xt = x1 + t * (x2 - x1)
            ft = f(xt)
            same = (ft > 0.0) == (f1 > 0.0)
            x3, f3 = np.where(same, x1, x2), np.where(same, f1, f2)
            x2, f2 = np.where(same, x2, x1), np.where(same, f2, f1)
            x1, f1 = xt, ft
            with np.errstate(invalid="ignore"):
                xi = (x1 - x2) / safe(x3 - x2)
                phi = (f1 - f2) / safe(f3 - f2)
                iqi = (phi**2 < xi) & ((1.0 - phi) ** 2 < 1.0 - xi) & np.isfinite(f1) & np.isfinite(f2) & \
                    np.isfinite(f3)
                t_iqi = (f1 / safe(f2 - f1) * f3 / safe(f2 - f3)
                         + (x3 - x1) / safe(x2 - x1) * f1 / safe(f3 - f1) * f2 / safe(f3 - f2))
            tlim = np.minimum(1e-14 * (1.0 + np.abs(x1)) / safe(np.abs(x2 - x1)), 0.5)
            t = np.clip(np.where(iqi, t_iqi, 0.5), tlim, 1.0 - tlim)
            return (x1, f1, x2, f2, x3, f3, t), None

        carry = (lo_u, f_lo, hi_u, f_hi, hi_u, f_hi, zero + 0.5)
        for _ in range(op.CONTINUOUS_STEPS):
            carry, _ = step(carry, None)
        x1, f1, x2, f2 = carry[:4]
        ok1, ok2 = f1 <= op.POLISH_TOL, f2 <= op.POLISH_TOL
        x = np.where(ok1 & ok2, np.maximum(x1, x2), np.where(ok1, x1, x2))
        return np.where((f_lo <= 0.0) & np.isfinite(hi) & (hi > 0.0), rate(x), np.nan)

    def _max_rate(fn, upper_fn, continuous, args):
        return (op._chandrupatla if continuous else op._bisect)(fn, upper_fn, args)

    def max_rate(fn, upper_fn, args, continuous=False):
        return op._max_rate(fn, upper_fn, continuous, args)


# ============================================================== frontier_jax/search.py (axis 1 = configurations)
ARCHS = ("colocated", "chunked", "disaggregated")
SECONDS_PER_HOUR = 3600.0
PER_MTOK = 1e6


@dataclass(frozen=True)
class SearchSpace:
    tp: tuple = (1, 2, 4, 8)
    chunk: tuple = (512, 1024, 2048, 8192)
    tp_prefill: tuple = (1, 2, 4, 8)
    tp_decode: tuple = (1, 2, 4, 8)
    overlap: tuple = (0, 1)


class Demand(NamedTuple):
    rate: np.ndarray
    total_gpus: np.ndarray
    n_prefill: np.ndarray
    n_decode: np.ndarray


def _cfg(values):
    """A configuration axis: shape (1, C, 1)."""
    return np.asarray(values, dtype=float).reshape(1, -1, 1)


def _take(x, i):
    """x[i] along the configuration axis (JAX: x[i] inside the vmap over points); i has shape (N, 1, 1)."""
    x = np.asarray(x)
    if x.ndim < 3 or x.shape[1] == 1:
        return x
    return np.take_along_axis(x, i, axis=1)


def _coloc_fn(lam, args):
    p, tp = args
    return op.violation(colocated.latency(p, tp, lam), p.sc)


def _coloc_upper(args):
    return colocated.rate_upper(*args)


def _chunk_fn(lam, args):
    p, tp, ch = args
    return op.violation(chunked.latency(p, tp, ch, lam), p.sc)


def _chunk_upper(args):
    return chunked.rate_upper(*args)


def _prefill_fn(lam, args):
    p, tp, ov, link = args
    return op.violation(disaggregated.prefill_latency(p, tp, ov, link, lam), p.sc)


def _prefill_upper(args):
    return disaggregated.prefill_rate_upper(*args)


def _decode_fn(lam, args):
    p, tp = args
    return op.violation(disaggregated.decode_latency(p, tp, lam), p.sc)


def _decode_upper(args):
    return disaggregated.decode_rate_upper(*args)


def _reason(lat: Latency, p: Point):
    t = np.stack(np.broadcast_arrays(*op.constraint_terms(lat, p.sc)))
    return np.argmax(t, axis=0).astype(np.int32) + 1


def _size(demand: Demand, lam_star, gpus_per_instance, pin):
    fluid = np.isnan(demand.rate)
    n_int = np.where(pin > 0, pin, np.maximum(1.0, np.ceil(demand.rate / lam_star * (1.0 - 1e-12))))
    n = np.where(fluid, 1.0, n_int)
    per_rate = np.where(fluid, gpus_per_instance / lam_star, n * gpus_per_instance / demand.rate)
    lam_op = np.where(fluid, lam_star, demand.rate / n)
    ok = np.isfinite(lam_star) & (lam_op <= lam_star * (1.0 + 1e-9))
    return per_rate, n, lam_op, ok


def _pick(cost, *arrays):
    c_ = np.where(np.isnan(cost), np.inf, cost)
    i = np.argmin(c_, axis=1, keepdims=True)
    return i, _take(c_, i), tuple(_take(np.broadcast_to(a, c_.shape), i) for a in arrays)


def _colocated_like(p, demand, lat_fn, fn, upper, cfg_args, tps, chunk_of_cfg):
    lam = op.max_rate(fn, upper, (p,) + cfg_args)
    per_rate, n, lam_op, ok = _size(demand, lam, tps, demand.n_prefill * 0.0)
    cost = np.where(ok, per_rate, np.nan)
    lat_op = lat_fn(p, *cfg_args, np.where(ok, lam_op, lam))
    lat_zero = lat_fn(p, *cfg_args, upper((p,) + cfg_args) * op.RANGE)
    i, best, (tp, ch, n_i, lam_i) = _pick(cost, tps, chunk_of_cfg, n, lam)
    closest = np.argmin(op.violation(lat_zero, p.sc), axis=1, keepdims=True)
    lat_i = Latency(*(_take(np.broadcast_to(x, cost.shape), i) for x in lat_op))
    reason = np.where(np.isfinite(best), 0,
                      _reason(Latency(*(_take(np.broadcast_to(x, cost.shape), closest) for x in lat_zero)), p))
    return dict(per_rate=best, share=lat_i.prefill_share, ttft=lat_i.ttft, tpot=lat_i.tpot, goodput=lam_i / tp,
                tp_prefill=tp, tp_decode=tp, n_prefill=n_i, n_decode=n_i, chunk=ch, overlap=np.zeros_like(tp),
                reason=reason, lam_star=lam_i)


def _colocated(p, demand, space):
    tps = _cfg(space.tp)
    return _colocated_like(p, demand, colocated.latency, _coloc_fn, _coloc_upper, (tps,), tps, np.zeros_like(tps))


def _chunked(p, demand, space):
    tp, ch = np.meshgrid(np.asarray(space.tp, float), np.asarray(space.chunk, float), indexing="ij")
    tp, ch = _cfg(tp.ravel()), _cfg(ch.ravel())
    return _colocated_like(p, demand, chunked.latency, _chunk_fn, _chunk_upper, (tp, ch), tp, ch)


def _pool(p, demand, fn, upper, cfg_args, gpus, pin, continuous=False):
    lam = op.max_rate(fn, upper, (p,) + cfg_args, continuous)
    per_rate, n, lam_op, ok = _size(demand, lam, gpus, pin)
    return np.where(ok, per_rate, np.nan), n, lam_op, lam


def searched_overlaps(space):
    return (1.0,) if any(o > 0.5 for o in space.overlap) else tuple(space.overlap)


def _disaggregated(p, demand, space):
    tpp, ov = np.meshgrid(np.asarray(space.tp_prefill, float), np.asarray(searched_overlaps(space), float),
                          indexing="ij")
    tpp, ov = _cfg(tpp.ravel()), _cfg(ov.ravel())
    full = np.full_like(tpp, 2.0)
    c_p, n_p, lamop_p, lam_p = _pool(p, demand, _prefill_fn, _prefill_upper, (tpp, ov, full), tpp, demand.n_prefill,
                                      continuous=True)
    tpp_inf = _cfg(space.tp_prefill)
    zero = np.zeros_like(tpp_inf)
    c_inf, n_inf, _, lam_inf = _pool(p, demand, _prefill_fn, _prefill_upper, (tpp_inf, zero, zero), tpp_inf,
                                     demand.n_prefill, continuous=True)
    tpd = _cfg(space.tp_decode)
    c_d, n_d, lamop_d, lam_d = _pool(p, demand, _decode_fn, _decode_upper, (tpd,), tpd, demand.n_decode)

    ip, best_p, (g_p, o_p, np_i, lamop_pi, lam_pi) = _pick(c_p, tpp, ov, n_p, lamop_p, lam_p)
    _, best_inf, _ = _pick(c_inf)
    idd, best_d, (g_d, nd_i, lamop_di, lam_di) = _pick(c_d, tpd, n_d, lamop_d, lam_d)
    # The indirect tax: the chosen prefill configuration (g_p, o_p: one configuration each) with link = 1.
    c_nl, _, _, _ = _pool(p, demand, _prefill_fn, _prefill_upper, (g_p, o_p, np.ones((1, 1, 1))), g_p,
                          demand.n_prefill, continuous=True)
    best_nl = np.where(np.isnan(c_nl), np.inf, c_nl)

    lat_p = disaggregated.prefill_latency(p, g_p, o_p, 2.0, lamop_pi)
    lat_d = disaggregated.decode_latency(p, g_d, lamop_di)
    fluid = np.isnan(demand.rate)
    n_dec = np.where(fluid, lam_pi / lam_di, nd_i)
    gpus = np_i * g_p + n_dec * g_d
    lat0_p = disaggregated.prefill_latency(p, tpp, ov, full, _prefill_upper((p, tpp, ov, full)) * op.RANGE)
    lat0_d = disaggregated.decode_latency(p, tpd, _decode_upper((p, tpd)) * op.RANGE)
    cp = np.argmin(op.violation(lat0_p, p.sc), axis=1, keepdims=True)
    cd = np.argmin(op.violation(lat0_d, p.sc), axis=1, keepdims=True)
    shape_p, shape_d = c_p.shape, c_d.shape
    reason = np.where(np.isfinite(best_p), np.where(np.isfinite(best_d), 0,
                                                    _reason(Latency(*(_take(np.broadcast_to(x, shape_d), cd)
                                                                      for x in lat0_d)), p)),
                      _reason(Latency(*(_take(np.broadcast_to(x, shape_p), cp) for x in lat0_p)), p))
    total = best_p + best_d
    return dict(per_rate=total, prefill_per_rate=np.minimum(best_inf, best_p), decode_per_rate=best_d,
                indirect_per_rate=best_nl - best_inf, ttft=lat_p.ttft, tpot=lat_d.tpot,
                goodput=1.0 / (g_p / lam_pi + g_d / lam_di), tp_prefill=g_p, tp_decode=g_d, n_prefill=np_i,
                n_decode=n_dec, chunk=np.zeros_like(g_p), overlap=o_p, reason=reason, gpus=gpus)


def evaluate_point(p: Point, demand: Demand, price, space: SearchSpace = SearchSpace()):
    """Everything the JAX `evaluate_point` reports, for N points at once: (N, 3) per variable (ARCHS on the last
    axis), (N,) for best_arch and advantage. Point leaves have shape (N, 1, 1)."""
    o = p.sc.output_len
    usd_per_mtok = price / SECONDS_PER_HOUR * PER_MTOK / o
    fluid = np.isnan(demand.rate)
    results = []
    for r in (_colocated(p, demand, space), _chunked(p, demand, space)):
        total = r["per_rate"] * usd_per_mtok
        gpus = np.where(fluid, r["tp_prefill"], r["n_prefill"] * r["tp_prefill"])
        r = dict(r, cost=total, prefill=total * r["share"], decode=total * (1.0 - r["share"]), kv_tax=0.0 * total,
                 kv_direct=0.0 * total, kv_indirect=0.0 * total, gpus=gpus)
        results.append(r)
    d = _disaggregated(p, demand, space)
    total = d["per_rate"] * usd_per_mtok
    prefill = d["prefill_per_rate"] * usd_per_mtok
    decode = d["decode_per_rate"] * usd_per_mtok
    tax = np.maximum(total - prefill - decode, 0.0)  # an infinite link is never dearer: < 0 is rounding
    indirect = np.minimum(tax, np.maximum(0.0, d["indirect_per_rate"] * usd_per_mtok))  # jnp.clip(x, 0, tax)
    results.append(dict(d, cost=total, prefill=prefill, decode=decode, kv_tax=tax, kv_direct=tax - indirect,
                        kv_indirect=indirect))

    # From here on: per-point scalars as (N, 1), stacked architectures as (N, 3).
    N = o.shape[0]
    flat = lambda x: np.broadcast_to(np.asarray(x), (N, 1, 1)).reshape(N)  # noqa: E731
    col = lambda x: np.broadcast_to(np.asarray(x), (N, 1, 1)).reshape(N, 1)  # noqa: E731
    o, fluid = col(o), col(fluid)
    keys = ("cost", "prefill", "decode", "kv_tax", "kv_direct", "kv_indirect", "ttft", "tpot", "goodput", "gpus",
            "tp_prefill", "tp_decode", "n_prefill", "n_decode", "chunk", "overlap")
    out = {k: np.stack([flat(r[k]).astype(o.dtype) for r in results], axis=-1) for k in keys}
    out["reason"] = np.stack([flat(r["reason"]).astype(np.int32) for r in results], axis=-1)
    cap_ok = np.where(fluid, True, out["gpus"] <= col(demand.total_gpus))
    feasible = np.isfinite(out["cost"]) & cap_ok
    out["reason"] = np.where(feasible, 0, np.where(out["reason"] > 0, out["reason"],
                                                    np.where(cap_ok, 5, 4))).astype(np.int32)
    out["feasible"] = feasible
    nan_if = lambda x: np.where(feasible, x, np.nan)  # noqa: E731
    for k in ("cost", "prefill", "decode", "kv_tax", "kv_direct", "kv_indirect", "ttft", "tpot", "goodput"):
        out[k] = nan_if(out[k])
    rate = np.where(fluid, out["goodput"] * out["gpus"], col(demand.rate))
    with np.errstate(divide="ignore", invalid="ignore"):
        out["throughput"] = nan_if(rate * o / out["gpus"])
    out["cost_total"] = out["cost"] * o / (col(p.sc.input_len) + o)
    c_ = np.where(feasible, out["cost"], np.inf)
    best = np.argmin(c_, axis=-1)
    out["best_arch"] = np.where(np.any(feasible, axis=-1), best, -1).astype(np.int32)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["advantage"] = np.log(np.minimum(c_[..., 0], c_[..., 1])) - np.log(c_[..., 2])
    out["advantage"] = np.where(np.isfinite(out["advantage"]), out["advantage"], np.nan)
    return out


# ============================================================== frontier_jax/inputs.py (assemble)
def assemble(hw, md, eff, v):
    scale = v["slo_scale"]
    sc = Scenario(v["input_len"], v["output_len"], v["input_cv"], v["output_cv"], v["ttft"] * scale,
                  v["tpot"] * scale, v["q"], v["mean_mode"], v["arrival_ca2"], v["kv_bandwidth"], v["cache_hit"],
                  v["fp8"])
    hw = hw._replace(hbm_bandwidth=hw.hbm_bandwidth * v["hbm_bandwidth_scale"],
                     bf16_flops=hw.bf16_flops * v["flops_scale"], fp8_flops=hw.fp8_flops * v["flops_scale"])
    demand = Demand(v["rate"], v["total_gpus"], v["n_prefill"], v["n_decode"])
    return Point(hw, md, eff, sc), demand, v.get("price")


# ============================================================== frontier_jax/sweep/grid.py and sweep/kernel.py
DEFAULTS = dict(percentile=0.99, input_cv=0.0, output_cv=0.0, arrival_ca2=1.0, cache_hit=0.0, slo_scale=1.0,
                rate=np.nan, total_gpus=np.inf, price_scale=1.0, hbm_bandwidth_scale=1.0, flops_scale=1.0)
# kernel output -> sweep variable name (frontier_jax.evaluate.VARIABLES/FLAGS with kernel.SWEEP_NAMES applied)
RENAME = dict(cost="cost_per_mtok", prefill="prefill_cost", decode="decode_cost", kv_tax="kv_tax",
              kv_direct="kv_tax_direct", kv_indirect="kv_tax_indirect", cost_total="cost_per_mtok_total",
              ttft="ttft_achieved", tpot="tpot_achieved", goodput="goodput", throughput="throughput", gpus="gpus",
              tp_prefill="tp_prefill", tp_decode="tp_decode", n_prefill="n_prefill", n_decode="n_decode",
              chunk="chunk", overlap="overlap", feasible="feasible", reason="reason")


def decode_points(shape, axes, fixed, arrays, idx, derived=False):
    """Per-point inputs for flat C-order indices `idx` (as grid.decode_points): `axes`/`fixed` list input names,
    `arrays` holds each axis's values (1-D) and each fixed value (0-D), categorical ones as int indices."""
    points = {}
    if axes:
        subs = np.unravel_index(idx, shape)
        for name, sub in zip(axes, subs):
            points[name] = np.take(arrays[name], sub, mode="clip")
    for name in fixed:
        points[name] = np.broadcast_to(arrays[name], idx.shape)
    if derived:
        r, total = points["io_ratio"], points["total_len"]
        points["input_len"] = total * r / (1 + r)
        points["output_len"] = total / (1 + r)
    return points


def point_inputs(pts: dict, tables, fp8_index: int = 1):
    """(Point, Demand, price) with (N, 1, 1) leaves from per-point (N,) input arrays (as kernel.point_inputs)."""
    hw_t, md_t, eff_t = tables
    take = lambda table, key: type(table)(*(t[pts[key]] for t in table))  # noqa: E731
    hw, md = take(hw_t, "hardware"), take(md_t, "model")
    n = pts["hardware"].shape[0]
    eff = take(eff_t, "engine") if "engine" in pts else type(eff_t)(*(np.broadcast_to(t[0], (n,)) for t in eff_t))
    fp8 = (pts["precision"] == fp8_index).astype(float) if "precision" in pts else np.zeros((n,))
    v = {k: np.broadcast_to(np.asarray(d, float), (n,)) for k, d in DEFAULTS.items()}
    v.update({k: np.asarray(x, float) for k, x in pts.items() if k not in ("hardware", "model", "engine", "precision")})
    v["q"] = v.pop("percentile")
    v["kv_bandwidth"] = v["kv_bandwidth"] if "kv_bandwidth" in pts else hw.nic_bandwidth
    v.update(mean_mode=np.zeros((n,)), fp8=fp8, n_prefill=np.zeros((n,)), n_decode=np.zeros((n,)))
    r3 = lambda x: np.asarray(x, float).reshape(n, 1, 1)  # noqa: E731
    hw, md, eff = (type(t)(*(r3(x) for x in t)) for t in (hw, md, eff))
    v = {k: r3(x) for k, x in v.items()}
    point, demand, _ = assemble(hw, md, eff, v)
    return point, demand, hw.price * v["price_scale"]


class Kernel:
    """The sweep kernel in numpy: pts (dict of (N,) arrays) -> outputs named as make_kernel's, evaluated in
    blocks of `block` points (memory: about 10 kB per point of temporaries)."""

    def __init__(self, choices, space: SearchSpace = SearchSpace(), block: int = 4096):
        self.tables = load_tables(list(choices["hardware"]), list(choices["model"]),
                                  tuple(choices.get("engine", ("current",))))
        self.fp8_index = list(choices.get("precision", ("bf16", "fp8"))).index("fp8")
        self.space, self.block = space, block

    def _block(self, pts):
        point, demand, price = point_inputs(pts, self.tables, self.fp8_index)
        with np.errstate(all="ignore"):
            out = evaluate_point(point, demand, price, self.space)
        res = {RENAME.get(k, k): v for k, v in out.items()}
        for name in ("feasible", "reason", "best_arch"):
            res[name] = res[name].astype(np.int8)
        return res

    def __call__(self, pts):
        n = next(iter(pts.values())).shape[0]
        parts = [self._block({k: v[a:a + self.block] for k, v in pts.items()}) for a in range(0, n, self.block)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _selfcheck():  # python benchmarks/numpy_reference.py: one scenario, printed
    pts = dict(hardware=np.array([1]), model=np.array([0]), input_len=np.array([2048.0]),
               output_len=np.array([256.0]), ttft=np.array([2.0]), tpot=np.array([0.05]))
    out = Kernel({"hardware": ("a100-80gb-sxm", "h100-80gb-sxm"), "model": ("llama-3.1-70b",)})(pts)
    for k in ("cost_per_mtok", "ttft_achieved", "tpot_achieved", "goodput", "tp_prefill", "tp_decode", "chunk"):
        print(f"{k:16s}", " ".join(f"{x:12.6g}" for x in out[k][0]))
    assert math.isfinite(float(out["cost_per_mtok"][0, 0]))


if __name__ == "__main__":
    _selfcheck()

"""Queueing tails in closed form (MODEL.md section 5; derivations in docs/model.md).

Prefill queues are M/G/1 per instance (Poisson splitting across instances). The waiting time W is taken as an
atom at zero of mass 1 - rho plus an exponential tail,

    P(W > t) ~= rho * exp(-theta t),   lambda (E[exp(theta S)] - 1) = theta   (Cramer-Lundberg),

whose mean case is Pollaczek-Khinchine, E[W] = lambda E[S^2] / (2 (1 - rho)). Service-time distributions are
represented by a fixed Gauss-Hermite quadrature of lognormal lengths, so every expectation is a weighted sum.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

N_NODES = 5
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(N_NODES)
_GH_W = _GH_W / _GH_W.sum()
_NEWTON_STEPS = 5  # from the heavy-traffic upper bound, Newton on the convex h has converged by then
_MAX_EXPONENT = 60.0
BURST_FLOOR = 1e-6


def _log_sigma(cv):
    """sigma of the lognormal with this CV, sqrt(log(1 + cv^2)), written as cv sqrt(log1p(u) / u) (u = cv^2) so
    that its derivative is finite (1) at cv = 0, where the direct form's is 0 x inf = NaN. Below u = 1e-5 the
    ratio is its series 1 - u/2 + u^2/3 (error < u^3/4), whose derivative does not underflow."""
    cv = jnp.asarray(cv)
    u = cv**2
    big = u > 1e-5
    u_safe = jnp.where(big, u, 1.0)
    ratio = jnp.where(big, jnp.log1p(u_safe) / u_safe, 1.0 - u / 2.0 + u**2 / 3.0)
    return cv * jnp.sqrt(ratio)


def length_nodes(mean, cv):
    """Quadrature nodes (trailing axis of size N_NODES) and weights of a lognormal length with this mean and CV.
    cv = 0 puts every node exactly on the mean (deterministic lengths)."""
    mean = jnp.asarray(mean)
    sigma = _log_sigma(cv)
    x = jnp.asarray(_GH_X, dtype=mean.dtype)
    nodes = mean[..., None] * jnp.exp(sigma[..., None] * x - 0.5 * sigma[..., None] ** 2)
    return nodes, jnp.asarray(_GH_W, dtype=mean.dtype)


def lognormal_quantile(mean, cv, q):
    """q-quantile of a lognormal length; exactly the mean when cv = 0."""
    sigma = _log_sigma(cv)
    return mean * jnp.exp(sigma * ndtri(q) - 0.5 * sigma**2)


def expect(values, weights):
    return jnp.sum(values * weights, axis=-1)


def cornish_fisher(mean, var, skew, q, mean_mode, floor):
    """q-quantile of a nearly normal quantity from its first three moments (first-order Cornish-Fisher), never
    below `floor` (the quantity's least possible value: for TPOT, a decode step with a batch of one). A low
    quantile of a skewed quantity can fall below it, or below 0, in the first-order expansion."""
    z = ndtri(q)
    quant = mean + jnp.sqrt(jnp.maximum(var, 0.0)) * (z + (z**2 - 1.0) * skew / 6.0)
    return jnp.where(mean_mode, mean, jnp.maximum(quant, jnp.minimum(floor, mean)))


def decay_rate(lam, service, weights):
    """theta solving lambda (E[exp(theta S)] - 1) = theta, for rho = lambda E[S] < 1 (else 0).
    Newton on h(x) = log rho + log E[expm1(x s)] - log x with x = theta E[S], s = S / E[S]."""
    es = expect(service, weights)
    rho = lam * es
    s = service / es[..., None]
    m2 = expect(s**2, weights)
    x_max = _MAX_EXPONENT / jnp.max(s, axis=-1)
    rho_c = jnp.clip(rho, 1e-12, 1.0 - 1e-12)
    x = jnp.clip(2.0 * (1.0 - rho_c) / (rho_c * m2), 1e-9, x_max)  # heavy-traffic value: an upper bound

    def step(x, _):
        em1 = jnp.expm1(jnp.minimum(x[..., None] * s, _MAX_EXPONENT))
        m1 = expect(em1, weights)
        h = jnp.log(rho_c) + jnp.log(m1) - jnp.log(x)
        dh = expect(s * (em1 + 1.0), weights) / m1 - 1.0 / x
        return jnp.clip(x - h / dh, 1e-9, x_max), None

    x, _ = jax.lax.scan(step, x, None, length=_NEWTON_STEPS)
    return jnp.where(rho < 1.0, x / es, 0.0)


def mgf(theta, values, weights):
    return expect(jnp.exp(jnp.minimum(theta[..., None] * values, _MAX_EXPONENT)), weights)


def sojourn(lam, service, weights, q, mean_mode, own_quantile, extra_mean=0.0, extra_mgf=None,
            extra_quantile=0.0, arrival_ca2=1.0):
    """p_q (or mean) of W + S_own + X: queue wait of an M/G/1 (G/G/1 with arrival SCV ca2) with service
    nodes `service`, plus the request's own service and an independent extra delay X (given by its mean,
    its MGF as a function of theta, and its q-quantile). `own_quantile` is the q-quantile of the own service."""
    es = expect(service, weights)
    es2 = expect(service**2, weights)
    rho = lam * es
    cs2 = es2 / es**2 - 1.0
    # Kingman's G/G/1 factor; floored so that a deterministic queue (ca2 = cs2 = 0, no waiting) keeps a finite theta
    burst = jnp.maximum((arrival_ca2 + cs2) / (1.0 + cs2), BURST_FLOOR)
    wait_mean = lam * es2 / (2.0 * (1.0 - rho)) * burst
    theta = decay_rate(lam, service, weights) / burst
    x_mgf = 1.0 if extra_mgf is None else extra_mgf(theta)
    tail = jnp.log(rho * mgf(theta, service, weights) * x_mgf / (1.0 - q)) / theta
    quant = jnp.maximum(tail, own_quantile + extra_quantile)
    value = jnp.where(mean_mode, wait_mean + es + extra_mean, quant)
    return jnp.where(rho < 1.0, value, jnp.inf)


def uniform_mgf(theta, width):
    """E[exp(theta R)] for R uniform on [0, width] (residual of an iteration in progress)."""
    x = theta * width
    return jnp.where(x > 1e-8, jnp.expm1(jnp.minimum(x, _MAX_EXPONENT)) / jnp.where(x > 1e-8, x, 1.0), 1.0)


def erlang_c(servers, offered):
    """Probability of waiting in M/M/c (c integer-valued array, offered load a = lambda/mu < c)."""
    c_max = 64
    k = jnp.arange(c_max, dtype=jnp.result_type(offered))
    terms = jnp.where(k < servers[..., None], offered[..., None] ** k / jnp.exp(jax.scipy.special.gammaln(k + 1)), 0.0)
    top = offered**servers / jnp.exp(jax.scipy.special.gammaln(servers + 1)) * servers / (servers - offered)
    return top / (jnp.sum(terms, axis=-1) + top)

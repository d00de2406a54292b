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

from ..tracing import scan

N_NODES = 5
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(N_NODES)
_GH_W = _GH_W / _GH_W.sum()
_NEWTON_STEPS = 5  # from the heavy-traffic upper bound, Newton on the convex h has converged by then
_MAX_EXPONENT = 60.0
BURST_FLOOR = 1e-6


# Cephes ndtri (the rational approximations jax.scipy.special.ndtri uses), numerators P and denominators Q,
# highest power first: central region p > exp(-2), then tails with z = sqrt(-2 log p) below and above 8.
_NDTRI_P0 = (-5.99633501014107895267E1, 9.80010754185999661536E1, -5.66762857469070293439E1,
             1.39312609387279679503E1, -1.23916583867381258016E0)
_NDTRI_Q0 = (1.0, 1.95448858338141759834E0, 4.67627912898881538453E0, 8.63602421390890590575E1,
             -2.25462687854119370527E2, 2.00260212380060660359E2, -8.20372256168333339912E1,
             1.59056225126211695515E1, -1.18331621121330003142E0)
_NDTRI_P1 = (4.05544892305962419923E0, 3.15251094599893866154E1, 5.71628192246421288162E1,
             4.40805073893200834700E1, 1.46849561928858024014E1, 2.18663306850790267539E0,
             -1.40256079171354495875E-1, -3.50424626827848203418E-2, -8.57456785154685413611E-4)
_NDTRI_Q1 = (1.0, 1.57799883256466749731E1, 4.53907635128879210584E1, 4.13172038254672030440E1,
             1.50425385692907503408E1, 2.50464946208309415979E0, -1.42182922854787788574E-1,
             -3.80806407691578277194E-2, -9.33259480895457427372E-4)
_NDTRI_P2 = (3.23774891776946035970E0, 6.91522889068984211695E0, 3.93881025292474443415E0,
             1.33303460815807542389E0, 2.01485389549179081538E-1, 1.23716634817820021358E-2,
             3.01581553508235416007E-4, 2.65806974686737550832E-6, 6.23974539184983293730E-9)
_NDTRI_Q2 = (1.0, 6.02427039364742014255E0, 3.67983563856160859403E0, 1.37702099489081330271E0,
             2.16236993594496635890E-1, 1.34204006088543189037E-2, 3.28014464682127739104E-4,
             2.89247864745380683936E-6, 6.79019408009981274425E-9)


def ndtri(p):
    """Standard normal quantile, the same arithmetic as jax.scipy.special.ndtri (Cephes) but with the polynomials
    written out: jax evaluates them with jnp.polyval, a scan, and every scan under vmap is traced again at each
    batching level. The model calls this in every latency evaluation, inside the rate solvers' loops."""
    def horner(coeffs, x):
        y = jnp.full_like(x, coeffs[0])
        for c in coeffs[1:]:
            y = y * x + c
        return y

    p = jnp.asarray(p)
    dt = p.dtype.type
    mcp = jnp.where(p > dt(-np.expm1(-2.0)), dt(1.0) - p, p)
    mcp = jnp.where(mcp == dt(0.0), dt(0.5), mcp)  # any value that keeps the unused branches finite
    w = mcp - dt(0.5)
    ww = w * w
    x_big = (w + w * ww * (horner(_NDTRI_P0, ww) / horner(_NDTRI_Q0, ww))) * -dt(np.sqrt(2.0 * np.pi))
    z = jnp.sqrt(dt(-2.0) * jnp.log(mcp))
    first = z - jnp.log(z) / z
    iz = 1 / z
    x_small = first - horner(_NDTRI_P2, iz) / horner(_NDTRI_Q2, iz) / z
    x_mid = first - horner(_NDTRI_P1, iz) / horner(_NDTRI_Q1, iz) / z
    x = jnp.where(mcp > dt(np.exp(-2.0)), x_big, jnp.where(z >= dt(8.0), x_small, x_mid))
    x = jnp.where(p > dt(1.0 - np.exp(-2.0)), x, -x)
    return jnp.where(p == dt(0.0), -jnp.inf, jnp.where(p == dt(1.0), jnp.inf, x)).astype(p.dtype)


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


def length_nodes(mean, cv, n: int = N_NODES):
    """Quadrature nodes (trailing axis of size n, N_NODES in the model) and weights of a lognormal length with
    this mean and CV (Gauss-Hermite in the log). cv = 0 puts every node exactly on the mean (deterministic lengths)."""
    mean = jnp.asarray(mean)
    sigma = _log_sigma(cv)
    gh_x, gh_w = (_GH_X, _GH_W) if n == N_NODES else _gauss_hermite(n)
    x = jnp.asarray(gh_x, dtype=mean.dtype)
    nodes = mean[..., None] * jnp.exp(sigma[..., None] * x - 0.5 * sigma[..., None] ** 2)
    return nodes, jnp.asarray(gh_w, dtype=mean.dtype)


def _gauss_hermite(n: int):
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / w.sum()


def lognormal_quantile(mean, cv, z):
    """Quantile of a lognormal length at standard normal quantile z = ndtri(q); exactly the mean when cv = 0."""
    sigma = _log_sigma(cv)
    return mean * jnp.exp(sigma * z - 0.5 * sigma**2)


def expect(values, weights):
    """The quadrature expectation: sum over the trailing (node) axis of values x weights."""
    return jnp.sum(values * weights, axis=-1)


def cornish_fisher(mean, var, skew, z, mean_mode, floor):
    """Quantile (z = ndtri(q)) of a nearly normal quantity from its first three moments (first-order Cornish-Fisher), never
    below `floor` (the quantity's least possible value: for TPOT, a decode step with a batch of one). A low
    quantile of a skewed quantity can fall below it, or below 0, in the first-order expansion."""
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

    x, _ = scan(step, x, _NEWTON_STEPS)
    return jnp.where(rho < 1.0, x / es, 0.0)


def mgf(theta, values, weights):
    """E[exp(theta X)] of a quantity given at the quadrature nodes (exponent capped at _MAX_EXPONENT)."""
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
    # the log of each factor, not of their product: each MGF is at most e^60, but the product of two overflows
    # float32 (3.4e38) when theta is large (deterministic arrivals: the burst factor's floor)
    tail = (jnp.log(rho) + jnp.log(mgf(theta, service, weights)) + jnp.log(x_mgf) - jnp.log1p(-q)) / theta
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

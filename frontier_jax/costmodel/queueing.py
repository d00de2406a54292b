"""Queueing tails in closed form (MODEL.md section 5; derivations in docs/model.md).

Prefill queues are M/G/1 per instance (Poisson splitting across instances). The waiting time W is taken as an
atom at zero of mass 1 - rho plus an exponential tail,

    P(W > t) ~= rho * exp(-theta t),   lambda (E[exp(theta S)] - 1) = theta   (Cramer-Lundberg),

whose mean case is Pollaczek-Khinchine, E[W] = lambda E[S^2] / (2 (1 - rho)). Service-time distributions are
represented by a fixed Gauss-Hermite quadrature of lognormal lengths, so every expectation is a weighted sum.
"""
from __future__ import annotations

import enum
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.special
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


def safe_sqrt(x):
    """sqrt(x) for x >= 0 with derivative 0 at x = 0 (no spread, e.g. a large pool's share or deterministic
    lengths): the plain square root's infinite derivative there turns 0 tangents into NaN."""
    pos = x > 0.0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def cornish_fisher(mean, var, skew, z, mean_mode, floor):
    """Quantile (z = ndtri(q)) of a nearly normal quantity from its first three moments (first-order Cornish-Fisher), never
    below `floor` (the quantity's least possible value: for TPOT, a decode step with a batch of one). A low
    quantile of a skewed quantity can fall below it, or below 0, in the first-order expansion."""
    quant = mean + safe_sqrt(var) * (z + (z**2 - 1.0) * skew / 6.0)
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


def log_mgf(theta, values, weights):
    """log E[exp(theta X)] at the quadrature nodes, as a log-sum-exp (no overflow however large theta X). The shift
    by the largest term carries no derivative (as in jax.nn.logsumexp): differentiated, a shift by an infinite term (an
    unused branch's theta) made the compiled gradient NaN through 0 x inf, though the eager one was finite."""
    z = theta[..., None] * values + jnp.log(weights)
    top = jax.lax.stop_gradient(jnp.max(z, axis=-1))
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    return top + jnp.log(jnp.sum(jnp.exp(z - top[..., None]), axis=-1))


def log_uniform_mgf(theta, width):
    """log E[exp(theta R)] for R uniform on [0, width]: log(expm1(x) / x), x = theta width, stable for large x."""
    x = theta * width
    small = x < 1e-6
    xs = jnp.where(small, 1.0, x)
    big = xs + jnp.log1p(-jnp.exp(-xs)) - jnp.log(xs)
    return jnp.where(small, 0.5 * x, big)


def log_mixture_mgf(p, log_m):
    """log(p M + 1 - p): the MGF of a delay present with probability p (log M its own log-MGF)."""
    p = jnp.clip(p, 0.0, 1.0)
    return jnp.logaddexp(jnp.log(jnp.where(p > 0.0, p, 1.0)) + log_m + jnp.where(p > 0.0, 0.0, -jnp.inf),
                         jnp.log1p(-jnp.where(p < 1.0, p, 0.0)) + jnp.where(p < 1.0, 0.0, -jnp.inf))


def _excess_log(r):
    """r - 1 - log r >= 0, accurately: log1p near r = 1 (no cancellation), log far from it (log1p(r - 1) would
    round r - 1 to -1 for a tiny r in float32, and its derivative would be infinite)."""
    r = jnp.maximum(r, jnp.finfo(jnp.result_type(r, float)).tiny)
    near = jnp.abs(r - 1.0) < 0.5
    d = jnp.where(near, r - 1.0, 0.0)
    return jnp.maximum(jnp.where(near, d - jnp.log1p(d), r - 1.0 - jnp.log(jnp.where(near, 1.0, r))), 0.0)


def upper_gamma_ratio(s, x):
    """Q(s, x) = Gamma(s, x) / Gamma(s), the regularised upper incomplete gamma function, by Temme's uniform
    asymptotic expansion to two terms (DLMF 8.12.8-8.12.9): Q = erfc(eta sqrt(s/2)) / 2 + R, with lambda = x / s,
    eta = sign(lambda - 1) sqrt(2 (lambda - 1 - log lambda)), R = exp(-s eta^2/2) / sqrt(2 pi s) (c0 + c1 / s).
    Elementwise and smooth (a fixed number of operations, unlike jax.scipy's iterative gammaincc, ~40x dearer); for
    s >= 2 the Erlang C built on it is within 2e-4 relative of the exact one (tests/test_queueing.py)."""
    lam = x / s
    d = lam - 1.0
    eta = jnp.sign(d) * jnp.sqrt(2.0 * _excess_log(lam))
    small = jnp.abs(eta) < 0.3
    e_s, d_s = jnp.where(small, 0.5, eta), jnp.where(small, 0.5, d)
    c0 = jnp.where(small, -1.0 / 3.0 + eta / 12.0 - 2.0 * eta**2 / 135.0 + eta**3 / 864.0 + eta**4 / 2835.0,
                   1.0 / d_s - 1.0 / e_s)
    c1 = jnp.where(small, -1.0 / 540.0 - eta / 288.0 + eta**2 / 378.0 - eta**3 / 2592.0,
                   1.0 / e_s**3 - 1.0 / d_s**3 - 1.0 / d_s**2 - 1.0 / (12.0 * d_s))
    r = jnp.exp(-0.5 * s * eta**2) / jnp.sqrt(2.0 * jnp.pi * s) * (c0 + c1 / s)
    return 0.5 * jax.scipy.special.erfc(eta * jnp.sqrt(0.5 * s)) + r


def erlang_c(servers, offered):
    """Erlang's C, the probability that an arrival waits in M/M/c, for a real number of servers c >= 1 and offered
    load a = lambda E[S] < c. Erlang's B by its continuous extension (Jagerman 1974),
    B(c, a) = a^c e^-a / Gamma(c + 1, a), then C = c B / (c - a (1 - B)); c = 1 gives a. Smooth in c and a.
    log B is written with rho = a / c and Stirling's series, -c (rho - 1 - log rho) - log(2 pi c) / 2 - (the
    series' remainder) - log Q(c + 1, a): no difference of the ~c log c sized terms, so it holds in float32 for
    millions of servers."""
    c = jnp.maximum(jnp.asarray(servers), 1.0)
    a = jnp.maximum(jnp.asarray(offered), 1e-300)
    small = c < 10.0  # lgamma(c + 1) - Stirling: directly where both are small, else the series
    c_s = jnp.where(small, c, 10.0)
    direct = jax.scipy.special.gammaln(c_s + 1.0) - (c_s * jnp.log(c_s) - c_s + 0.5 * jnp.log(2.0 * jnp.pi * c_s))
    remainder = jnp.where(small, direct, 1.0 / (12.0 * c) - 1.0 / (360.0 * c**3) + 1.0 / (1260.0 * c**5))
    log_b = (-c * _excess_log(a / c) - 0.5 * jnp.log(2.0 * jnp.pi * c) - remainder
             - jnp.log(upper_gamma_ratio(c + 1.0, a)))
    b = jnp.minimum(jnp.exp(log_b), 1.0)
    return jnp.clip(c * b / (c - a * (1.0 - b)), 0.0, 1.0)


class Dispatch(enum.IntEnum):
    """How a pool of instances shares its arrivals (the `dispatch` input)."""

    RANDOM = 0   # each instance its own queue, arrivals split at random (c independent M/G/1)
    CENTRAL = 1  # one FCFS queue, the next free instance takes the head (M/G/c; DistServe's, Splitwise's scheduler)
    JSQ = 2      # join the shortest queue / least outstanding requests (production routers)


DISPATCHES = tuple(d.name.lower() for d in Dispatch)


class Tail(NamedTuple):
    """What a pool's waiting time looks like at a per-instance load: P(W > t) ~ prefactor exp(-theta t)."""

    rho: jax.Array        # utilisation of one instance
    theta: jax.Array      # decay rate of the waiting-time tail, 1/s
    log_prefactor: jax.Array  # log of the prefactor (P(wait) times the Cramer-Lundberg constant)
    p_wait: jax.Array     # probability that an arrival waits (Erlang C; rho for one server)
    wait_mean: jax.Array  # s
    jsq_extra: jax.Array  # s: JSQ's wait behind one instance's job instead of the first of c to finish


def pool_tail(lam, service, weights, servers=1.0, dispatch=Dispatch.RANDOM, arrival_ca2=1.0, q=0.99):
    """The waiting-time tail of a pool of `servers` instances (real, >= 1; inf: the large-deployment limit, where
    pooled dispatch waits no more) each fed lam per second, with service times at the quadrature nodes.

    One server (or random dispatch): the M/G/1 tail with the exact Cramer-Lundberg constant,
    P(W > t) ~ K exp(-theta t), lam (E[exp(theta S)] - 1) = theta, K = (1 - rho) / (lam E[S exp(theta S)] - 1).
    A central queue over c servers: the decay rate of the fast single server (service S / c at rate c lam; exact for
    M/M/c and M/D/c) and the prefactor C(c, a) K_fast / rho (exact for M/M/c; K_fast for c = 1). JSQ: the central
    queue plus the wait behind one busy instance's job (1 - 1/c) E[S_e] where an arrival would wait. Arrival
    burstiness (G/G, arrival SCV ca2) scales the decay rate and the mean wait by Kingman's factor."""
    es = expect(service, weights)
    es2 = expect(service**2, weights)
    rho = lam * es
    cs2 = es2 / es**2 - 1.0
    burst = jnp.maximum((arrival_ca2 + cs2) / (1.0 + cs2), BURST_FLOOR)
    pooled = dispatch != Dispatch.RANDOM
    infinite = pooled & ~jnp.isfinite(servers)
    c = jnp.where(pooled & jnp.isfinite(servers), jnp.maximum(servers, 1.0), 1.0)
    fast = service / c[..., None]
    theta0 = decay_rate(lam * c, fast, weights)
    k_fast = (1.0 - rho) / (lam * c * expect(fast * jnp.exp(jnp.minimum(theta0[..., None] * fast, _MAX_EXPONENT)),
                                             weights) - 1.0)
    rho_safe = jnp.maximum(rho, 1e-300)
    p_wait = _p_wait(rho, c)
    log_pref = jnp.log(jnp.where(c > 1.0, p_wait / rho_safe, 1.0)) + jnp.log(jnp.clip(k_fast, 1e-300, None))
    frac = jnp.where(dispatch == Dispatch.JSQ, 1.0 - 1.0 / c, 0.0)
    ramp = -jnp.expm1(-(p_wait / (1.0 - q)) ** 2)
    jsq_extra = frac * es2 / (2.0 * es) * ramp
    wait_mean = pool_wait_mean(lam, es, es2, servers, dispatch, arrival_ca2)
    zero = jnp.zeros_like(rho)
    return Tail(rho, jnp.where(infinite, jnp.inf, theta0 / burst), jnp.where(infinite, -jnp.inf, log_pref),
                jnp.where(infinite, zero, p_wait), jnp.where(infinite, zero, wait_mean),
                jnp.where(infinite, zero, jsq_extra))


def _p_wait(rho, c):
    return jnp.where(c > 1.0, erlang_c(c, c * rho), rho)


def pool_wait_mean(lam, es, es2, servers=1.0, dispatch=Dispatch.RANDOM, arrival_ca2=1.0):
    """Mean wait in a pool (pool_tail's model) from the first two service moments: Pollaczek-Khinchine for one
    server; C(c, a) E[S] (1 + cs^2) / (2 c (1 - rho)) for a central queue (Lee-Longton); JSQ adds
    (1 - 1/c) C(c, a) E[S^2] / (2 E[S]); Kingman's factor for bursty arrivals; 0 in the large-deployment limit."""
    rho = lam * es
    cs2 = es2 / es**2 - 1.0
    burst = jnp.maximum((arrival_ca2 + cs2) / (1.0 + cs2), BURST_FLOOR)
    pooled = dispatch != Dispatch.RANDOM
    c = jnp.where(pooled & jnp.isfinite(servers), jnp.maximum(servers, 1.0), 1.0)
    p_wait = _p_wait(rho, c)
    mean = p_wait / jnp.maximum(rho, 1e-300) * lam * es2 / (2.0 * c * (1.0 - rho)) * burst
    frac = jnp.where(dispatch == Dispatch.JSQ, 1.0 - 1.0 / c, 0.0)
    mean = mean + frac * es2 / (2.0 * es) * p_wait
    return jnp.where(pooled & ~jnp.isfinite(servers), 0.0, mean)


def sojourn(lam, service, weights, q, mean_mode, own_quantile, extra_mean=0.0, extra_log_mgf=None,
            extra_quantile=0.0, arrival_ca2=1.0, servers=1.0, dispatch=Dispatch.RANDOM):
    """p_q (or mean) of W + S_own + X: the wait of a pool (pool_tail), the request's own service (q-quantile
    `own_quantile`) and an independent extra delay X (its mean, its log-MGF as a function of theta, its q-quantile).

    P(W + S + X > t) ~ prefactor E[exp(theta S)] E[exp(theta X)] exp(-theta t), the convolution of the exponential
    tail, with S and X capped at their q-quantiles inside the MGFs: where the wait is short next to the service
    (a small P(wait), a fast pooled queue) the uncapped MGF is ruled by the longest quadrature node and the tail
    would count that node's length as waiting. Never below own_quantile + extra_quantile."""
    t = pool_tail(lam, service, weights, servers, dispatch, arrival_ca2, q)
    es = expect(service, weights)
    finite = jnp.isfinite(t.theta)
    theta = jnp.where(finite, t.theta, 1.0)
    log_pref = jnp.where(finite, t.log_prefactor, 0.0)  # finite in the unused branch: no 0 x inf in the tangents
    # the cap: none for one server (the exact M/G/1 asymptote), the own quantile in a large pool; geometric between
    top = jnp.max(service, axis=-1)
    c = jnp.where((dispatch != Dispatch.RANDOM) & jnp.isfinite(servers), jnp.maximum(servers, 1.0), 1.0)
    cap = jnp.exp(jnp.log(jnp.minimum(own_quantile, top)) * (1.0 - 1.0 / c) + jnp.log(top) / c)
    capped = jnp.minimum(service, cap[..., None])
    log_x = 0.0 if extra_log_mgf is None else jnp.minimum(extra_log_mgf(theta), theta * extra_quantile)
    tail = (log_pref + log_mgf(theta, capped, weights) + log_x - jnp.log1p(-q)) / theta
    floor = own_quantile + extra_quantile
    quant = jnp.maximum(jnp.where(finite, tail, -jnp.inf), floor) + t.jsq_extra
    value = jnp.where(mean_mode, t.wait_mean + es + extra_mean, quant)
    return jnp.where(t.rho < 1.0, value, jnp.inf)


def wait_quantile(lam, service, weights, q, mean_mode, arrival_ca2=1.0):
    """p_q (or mean) of the wait alone of an M/G/1 queue (e.g. a KV link before its transfer starts). The
    asymptote log(K / (1 - q)) / theta overstates it at light load, where P(W > 0) = rho: the p_q wait is 0 while
    rho <= 1 - q and grows from 0 beyond (M/D/1: about D (1 - (1 - q) / rho)); so the asymptote is scaled by
    max(0, 1 - (1 - q) / rho), which is exact in the limit and costs under 10 % against M/D/1 at rho = 0.1."""
    t = pool_tail(lam, service, weights, 1.0, Dispatch.RANDOM, arrival_ca2, q)
    ramp = jnp.maximum(1.0 - (1.0 - q) / jnp.maximum(t.p_wait, 1e-300), 0.0)
    quant = jnp.maximum((t.log_prefactor - jnp.log1p(-q)) / t.theta, 0.0) * ramp
    return jnp.where(t.rho < 1.0, jnp.where(mean_mode, t.wait_mean, quant), jnp.inf)

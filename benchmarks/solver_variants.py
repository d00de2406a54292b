"""Rate-solver experiment (docs/performance.md, "Tried and rejected"): the operating-point solver with another
step count or a saturated violation, on 2,560 random points, saved for comparison.

    python benchmarks/solver_variants.py base 30 /tmp/base_30.npz      # the model as it is
    python benchmarks/solver_variants.py base 40 /tmp/base_40.npz      # 40 Illinois steps instead of 30
    python benchmarks/solver_variants.py sat 20 /tmp/sat_20.npz        # Illinois on f / (1 + |f|), 20 steps
    python benchmarks/solver_variants.py compare /tmp/base_30.npz /tmp/base_40.npz
    python benchmarks/solver_variants.py steps current log     # Illinois steps each rate solve needs (below)
    python benchmarks/solver_variants.py steps clip log        # the same with the secant step clipped, not rejected
    python benchmarks/solver_variants.py steps clip logit      # ... searching in logit(rate / upper)

Each run is a fresh process (the patch must be in place before the kernel is traced); 1-2 min, most of it compiling.
`steps` instruments a copy of the Illinois loop of `operating_point._bisect` (it records the bracket width and the kind of
every step, which the model's solver does not expose, and swaps the step rule); keep the two in step.
`steps` runs 60 Illinois steps on 768 random points (28,416 rate solves, every configuration of every
architecture) and prints how many steps the bracket needs to shrink below 1e-6, 1e-9 and 1e-12 in the search
variable, and how often a step was a secant step, a bisection because an end value was infinite, or a secant step
outside the middle 90 % of the bracket (bisected by the current rule, clipped by `clip`) (~5 min).
"""
import sys
import time
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
from frontier_jax.costmodel import operating_point as op
import frontier_jax as fj

TOLS = (1e-6, 1e-9, 1e-12)
USAGE = "usage: solver_variants.py base|sat STEPS OUT.npz | compare A.npz B.npz | steps current|clip log|logit"


def random_inputs(rng, n):
    """n random points: log-uniform lengths, KV bandwidth and contract, deterministic or CV-1 lengths."""
    def logu(lo, hi):
        return np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    return dict(input_len=logu(64, 32768), output_len=logu(16, 4096), kv_bandwidth=logu(1e9, 4e11),
                ttft=logu(0.3, 8), tpot=logu(0.015, 0.2), input_cv=rng.choice([0.0, 1.0], n),
                output_cv=rng.choice([0.0, 1.0], n))


def steps_experiment(rule, variable, max_steps=60, n=128):
    """Per rate solve: the step at which the bracket width falls below each of TOLS, and the kinds of step taken."""
    rec = []

    def instrumented(fn, upper_fn, args):
        hi = upper_fn(args)
        if variable == "log":
            x_lo, x_hi, rate = jnp.log(hi * op.RANGE), jnp.log(hi), jnp.exp
        else:  # logit(rate / hi), top at 1 - 1e-12 of the upper bound
            x_lo, x_hi = jnp.log(op.RANGE / (1 - op.RANGE)), jnp.log((1 - 1e-12) / 1e-12) + 0.0 * hi
            rate = lambda t: hi * jax.nn.sigmoid(t)  # noqa: E731
        f_lo, f_hi = fn(rate(x_lo), args), fn(rate(x_hi), args)

        def step(carry, k):
            a, fa, b, fb, side, conv, kinds = carry
            finite = jnp.isfinite(fa) & jnp.isfinite(fb) & (fb > fa)
            t = jnp.where(finite, fa / jnp.where(finite, fa - fb, 1.0), 0.5)
            inside = (t > 0.05) & (t < 0.95)
            kinds = kinds + jnp.stack([~finite, finite & ~inside, finite & inside]).astype(jnp.int32) * (k < 30)
            t = jnp.where(inside, t, 0.5) if rule == "current" else jnp.where(finite, jnp.clip(t, 1e-3, 1 - 1e-3), 0.5)
            x = a + t * (b - a)
            fx = fn(rate(x), args)
            good = fx <= 0.0
            fa_new = jnp.where(good, fx, jnp.where(side == -1, 0.5 * fa, fa))
            fb_new = jnp.where(good, jnp.where(side == 1, 0.5 * fb, fb), fx)
            a, b = jnp.where(good, x, a), jnp.where(good, b, x)
            conv = jnp.stack([jnp.where((c < 0) & (b - a < tol), k + 1, c) for c, tol in zip(conv, TOLS)])
            return (a, fa_new, b, fb_new, jnp.where(good, 1, -1).astype(jnp.int32), conv, kinds), None

        init = (x_lo, f_lo, x_hi, f_hi, jnp.zeros((), jnp.int32), jnp.full((3,), -1, jnp.int32),
                jnp.zeros((3,), jnp.int32))
        (a, _, _, _, _, conv, kinds), _ = jax.lax.scan(step, init, jnp.arange(max_steps, dtype=jnp.int32))
        solvable = (f_lo <= 0.0) & jnp.isfinite(hi) & (hi > 0.0)
        jax.debug.callback(lambda *z: rec.append([np.asarray(v) for v in z]), conv, kinds, solvable)
        return rate(a)

    op._bisect = instrumented
    rng = np.random.default_rng(0)
    for hw in ["a100-80gb-sxm", "h100-80gb-sxm", "h200-141gb-sxm"]:
        for m in ["llama-3.1-70b", "llama-3.1-8b"]:
            fj.evaluate(hardware=hw, model=m, **random_inputs(rng, n))
    ok = np.concatenate([r[2].reshape(-1) for r in rec])
    conv, kinds = (np.concatenate([r[i].reshape(-1, 3) for r in rec])[ok] for i in (0, 1))
    conv = np.where(conv < 0, max_steps + 1, conv)  # not converged within max_steps
    print(f"rule {rule}, variable {variable}: {ok.size} rate solves, {ok.sum()} with a feasible lower end")
    for j, tol in enumerate(TOLS):
        q = np.quantile(conv[:, j], [0.5, 0.9, 0.99, 0.999])
        print(f"  width < {tol:.0e}: steps p50 {q[0]:.0f}, p90 {q[1]:.0f}, p99 {q[2]:.0f}, p99.9 {q[3]:.0f}; "
              f"not within 20 steps {(conv[:, j] > 20).mean():.2%}, 30 steps {(conv[:, j] > 30).mean():.2%}")
    outside = "bisection (secant step outside)" if rule == "current" else "secant step clipped to [1e-3, 1 - 1e-3]"
    print(f"  first 30 steps, mean per solve: bisection (infinite end) {kinds[:, 0].mean():.1f}, {outside} "
          f"{kinds[:, 1].mean():.1f}, secant inside [0.05, 0.95] {kinds[:, 2].mean():.1f}")


args = sys.argv[1:]
if not ((len(args) == 3 and args[0] in ("base", "sat", "compare") and (args[0] == "compare" or args[1].isdigit()))
        or (len(args) == 3 and args[0] == "steps" and args[1] in ("current", "clip") and args[2] in ("log", "logit"))):
    raise SystemExit(USAGE)
if sys.argv[1] == "compare":
    a, b = np.load(sys.argv[2]), np.load(sys.argv[3])
    for k in a.files:
        x, y = a[k], b[k]
        m = np.isfinite(x) & np.isfinite(y) & (x != 0)
        rel = np.abs(y[m] - x[m]) / np.abs(x[m])
        print(f"{k:14s} same NaN pattern {np.array_equal(np.isnan(x), np.isnan(y))}, {m.sum()} values: max rel "
              f"{rel.max(initial=0):.2e}, p99 {np.quantile(rel, 0.99) if rel.size else 0:.2e}, >1e-9: {(rel > 1e-9).sum()}")
    raise SystemExit(0)
if sys.argv[1] == "steps":
    steps_experiment(sys.argv[2], sys.argv[3])
    raise SystemExit(0)
variant, steps, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
op.BISECTION_STEPS = steps
orig = op._bisect


def saturated(fn, upper_fn, args):
    """The same solver (Illinois, then Newton polish) on g = f / (1 + |f|): g = +-1 where f = +-inf, same roots."""
    def g(rate, a):
        f = fn(rate, a)
        return jnp.where(jnp.isinf(f), jnp.sign(f), f / (1.0 + jnp.abs(f)))
    return orig(g, upper_fn, args)


if variant == "sat":
    op._bisect = saturated

rng = np.random.default_rng(0)
n = 256
hws = ["a100-80gb-sxm", "a100-80gb-pcie", "h100-80gb-sxm", "h200-141gb-sxm", "a40-48gb"]
mods = ["llama-3.1-70b", "llama-3.1-8b"]
res = {}
tt = 0.0
for hw in hws:
    for m in mods:
        t0 = time.perf_counter()
        ds = fj.evaluate(hardware=hw, model=m, **random_inputs(rng, n))
        tt += time.perf_counter() - t0
        for v in ["cost_per_mtok", "goodput", "ttft_achieved", "tpot_achieved", "feasible", "advantage"]:
            res.setdefault(v, []).append(np.asarray(ds[v].values, dtype=float))
# time again, warm
t0 = time.perf_counter()
rng = np.random.default_rng(1)
for hw in hws[:2]:
    kw = dict(input_len=np.exp(rng.uniform(np.log(64), np.log(32768), n)), output_len=300.0 + np.zeros(n))
    fj.evaluate(hardware=hw, model=mods[0], **kw)
warm = (time.perf_counter() - t0) / (2 * n)
np.savez(out, **{k: np.concatenate(v) for k, v in res.items()})
print(f"{variant} steps={steps}: first pass {tt:.1f} s, warm {warm*1e6:.0f} us/point")

"""The report helpers behind docs/model.md section 10's verdict comparison and TTFT evidence, on synthetic inputs
whose answers are known by construction."""
import numpy as np
import pandas as pd
import xarray as xr

from frontier_jax.calibration import ttft_evidence, verdicts


def test_winners_counts_each_architecture_per_gpu():
    best = np.array([[0, 1, 1, 2], [2, 2, 2, -1]], np.int8)  # 2 GPUs x 4 cells
    ds = xr.Dataset({"best_arch": (("hardware", "cell"), best)}, coords={"hardware": ["a", "b"]})
    w = verdicts.winners(ds).set_index("hardware")
    assert w.loc["a"].tolist() == [0.25, 0.5, 0.25, 0.0]
    assert w.loc["b"].tolist() == [0.0, 0.0, 0.75, 0.25]


def test_breakeven_table_takes_the_median_of_the_roots_found():
    root = np.full((1, 1, 1, 3), np.nan)
    root[0, 0, 0, :2] = [2e9, 4e9]  # two contracts with a root, one without
    ds = xr.Dataset({"breakeven_kv_bandwidth": (("hardware", "input_len", "output_len", "contract"), root)},
                    coords={"hardware": ["g"], "input_len": [512], "output_len": [256]})
    row = verdicts.breakeven_table(ds).iloc[0]
    assert row.found == "2/3" and row.median_gb_s == 3.0


def test_harness_recovers_a_planted_clustering_term():
    """Measured TTFT built as the prediction plus kappa (N - 1) / 2 prefills with kappa = 0.1 (two groups): the
    fit finds kappa on its grid and leaves no error, in fit or leaving a group out."""
    rng = np.random.default_rng(0)
    n = rng.choice([4.0, 8.0, 16.0, 64.0], 40)
    pred, prefill = rng.uniform(50, 500, 40), rng.uniform(20, 200, 40)
    d = pd.DataFrame(dict(concurrency=n, ttft_pred=pred, prefill=prefill, ttft_ms=pred + 0.05 * (n - 1) * prefill,
                          group=np.repeat(["x", "y"], 20)))
    kappa, in_fit, logo = ttft_evidence.harness(d, "linear")
    assert abs(kappa - 0.1) < 1e-9
    assert in_fit < 1e-12 and logo.max() < 1e-12
    kappa_log, in_fit_log, _ = ttft_evidence.harness(d, "log2")
    assert in_fit_log > 1e-3  # the wrong form cannot fit it exactly

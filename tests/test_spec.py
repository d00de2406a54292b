import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frontier_jax.errors import FrontierError
from frontier_jax.costmodel.kernel import INPUTS as DEFAULT_REGISTRY
from frontier_jax.costmodel.kernel import load_sweep_spec
from frontier_jax.runner import InputSpec, load_spec, make_point_fn
from frontier_jax.runner.grid import decode_points, layout, point_arrays

HW = ["a100-80gb-sxm", "h100-80gb-sxm", "h200-141gb-sxm"]
REGISTRY = {**DEFAULT_REGISTRY,
            "hardware": InputSpec("hardware", "categorical", "1", "GPU type", choices_fn=lambda: list(HW)),
            "model": InputSpec("model", "categorical", "1", "model", choices_fn=lambda: ["llama-70b", "llama-8b"])}

EXAMPLE = """
[sweep]
name = "example"
percentile = 0.99
[fixed]
ttft = 2.0
tpot = 0.05
[axes]
hardware = { values = ["a100-80gb-sxm", "h100-80gb-sxm"] }
input_len = { logspace = [128, 32768, 64] }     # [start, stop, num], inclusive, geometric
output_len = { linspace = [16, 4096, 64] }
kv_bandwidth = { values = [1e9, 1e10] }
"""


def test_default_registry_has_required_inputs():
    need = ("hardware model engine precision input_len output_len ttft tpot percentile rate kv_bandwidth slo_scale "
            "io_ratio total_len input_cv output_cv arrival_ca2 total_gpus price_scale hbm_bandwidth_scale "
            "flops_scale cache_hit").split()
    assert set(need) <= set(DEFAULT_REGISTRY)
    assert DEFAULT_REGISTRY["total_gpus"].kind == "integer"
    assert DEFAULT_REGISTRY["engine"].choices_fn() == ["current", "vllm-2023", "current-kernels", "vllm-2023-kernels"]


def test_registry_is_the_runners_only_vocabulary():
    """The runner knows no cost-model input: a spec is validated against the registry it is given."""
    own = {"x": InputSpec("x", "continuous", "m", "a length", lower=0.0, lower_open=True)}
    spec = load_spec({"axes": {"x": [1.0, 2.0, 3.0]}}, own)
    assert spec.axis_names == ("x",) and spec.axes[0].units == "m"
    with pytest.raises(FrontierError, match="ttft"):
        load_spec({"fixed": {"ttft": 1.0}}, own)
    with pytest.raises(TypeError):
        load_spec({"fixed": {"ttft": 1.0}})  # the registry is required
    assert load_sweep_spec({"fixed": {"ttft": 1.0}}) == load_spec({"fixed": {"ttft": 1.0}}, DEFAULT_REGISTRY)


def test_example_spec(tmp_path):
    spec = load_spec(EXAMPLE, REGISTRY)
    assert spec.name == "example" and spec.title == "example"
    assert spec.axis_names == ("hardware", "input_len", "output_len", "kv_bandwidth")
    assert spec.shape == (2, 64, 64, 2) and spec.size == 2 * 64 * 64 * 2
    il = np.array(spec.axes[1].values)
    assert il[0] == 128 and il[-1] == 32768
    np.testing.assert_allclose(il[1:] / il[:-1], (32768 / 128) ** (1 / 63))
    np.testing.assert_allclose(np.diff(spec.axes[2].values), (4096 - 16) / 63)
    assert {f.name: f.value for f in spec.fixed} == {"percentile": 0.99, "ttft": 2.0, "tpot": 0.05}
    assert spec.choices["hardware"] == tuple(HW)
    assert json.loads(spec.to_json())["axes"]["input_len"] == {"logspace": [128, 32768, 64]}
    assert spec.source == EXAMPLE
    # the same spec from a file and from a dict
    p = tmp_path / "s.toml"
    p.write_text(EXAMPLE)
    assert load_spec(p, REGISTRY) == spec == load_spec(str(p), REGISTRY)
    assert load_spec(json.loads(spec.to_json()), REGISTRY) == spec


def test_integer_and_default_categoricals():
    spec = load_sweep_spec({"axes": {"total_gpus": {"linspace": [2, 8, 4]}, "precision": ["fp8", "bf16"]},
                            "fixed": {"engine": "current"}})
    assert spec.axes[0].values == (2, 4, 6, 8) and all(isinstance(v, int) for v in spec.axes[0].values)
    pts = make_point_fn(spec)(jnp.arange(spec.size))
    assert pts["precision"].dtype == jnp.int32
    np.testing.assert_array_equal(pts["precision"], [1, 0] * 4)  # indices into ("bf16", "fp8")
    np.testing.assert_array_equal(pts["total_gpus"], np.repeat([2.0, 4, 6, 8], 2))
    np.testing.assert_array_equal(pts["engine"], np.zeros(8))


def test_point_fn_matches_meshgrid():
    spec = load_spec(EXAMPLE, REGISTRY)
    idx = jnp.arange(spec.size)
    pts = make_point_fn(spec)(idx)
    grids = np.meshgrid(*[np.arange(n) for n in spec.shape], indexing="ij")
    hw = np.array([HW.index(v) for v in spec.axes[0].values])
    np.testing.assert_array_equal(pts["hardware"], hw[grids[0]].ravel())
    for k, a in enumerate(spec.axes[1:], start=1):
        np.testing.assert_array_equal(pts[a.name], np.array(a.values)[grids[k]].ravel())
    np.testing.assert_array_equal(pts["ttft"], np.full(spec.size, 2.0))
    assert pts["ttft"].dtype == jnp.float64 and pts["ttft"].shape == (spec.size,)


def test_axis_values_are_data_not_constants():
    traces = []

    @jax.jit
    def f(idx, arrays):
        traces.append(1)
        return decode_points(lay, arrays, idx)

    a = load_sweep_spec({"axes": {"ttft": {"linspace": [1, 2, 5]}, "rate": [1.0, 2.0]}})
    b = load_sweep_spec({"axes": {"ttft": {"logspace": [3, 7, 5]}, "rate": [5.0, 6.0]}})
    lay = layout(a)
    assert layout(b) == lay
    ra = f(jnp.arange(10), point_arrays(a))
    rb = f(jnp.arange(10), point_arrays(b))
    assert len(traces) == 1
    assert float(ra["ttft"][2]) == 1.25 and float(rb["rate"][1]) == 6.0


def test_derived_io_ratio():
    spec = load_sweep_spec({"fixed": {"total_len": 1000.0}, "axes": {"io_ratio": [0.25, 1.0, 4.0]}})
    assert spec.derived and "input_len" in spec.input_names
    pts = make_point_fn(spec)(jnp.arange(3))
    np.testing.assert_allclose(pts["input_len"], [200.0, 500.0, 800.0])
    np.testing.assert_allclose(pts["output_len"], [800.0, 500.0, 200.0])
    np.testing.assert_allclose(pts["input_len"] / pts["output_len"], [0.25, 1.0, 4.0])


def test_only_fixed_inputs_gives_one_point():
    spec = load_sweep_spec({"fixed": {"ttft": 1.0}})
    assert spec.shape == () and spec.size == 1


@pytest.mark.parametrize("text, match", [
    ("[axes\nttft = 1", r"invalid TOML .*line 1"),
    ("[sweep]\nname = 'x'\n", "no \\[axes\\] and no \\[fixed\\]"),
    ("[axes]\nttfx = [1.0]", "did you mean 'ttft'"),
    ("[fixed]\ntpott = 1.0", "did you mean 'tpot'"),
    ("[fixd]\nttft = 1.0", "did you mean 'fixed'"),
    ("[sweep]\nnmae = 'x'\n[fixed]\nttft = 1.0", "did you mean 'name'"),
    ("[fixed]\nttft = 1.0\n[axes]\nttft = [1.0, 2.0]", "both \\[fixed\\] and \\[axes\\]"),
    ("[sweep]\npercentile = 0.9\n[fixed]\npercentile = 0.9", "percentile is given in \\[sweep\\] and again"),
    ("[axes]\nttft = { values = [] }", "empty values list"),
    ("[axes]\nttft = { linspace = [1, 2, 0] }", "num is 0"),
    ("[axes]\nttft = { linspace = [1, 2, 2.5] }", "num must be an integer"),
    ("[axes]\nttft = { linspace = [1, 2] }", "takes \\[start, stop, num\\]"),
    ("[axes]\nrate = { logspace = [0, 10, 3] }", "logspace bounds must be > 0"),
    ("[axes]\ninput_cv = { logspace = [-1, 10, 3] }", "logspace bounds must be > 0"),
    ("[axes]\nttft = { linspace = [5, 1, 3] }", "start 5 > stop 1"),
    ("[axes]\nttft = { linspace = [1, 1, 3] }", "repeats the value"),
    ("[axes]\nttft = { range = [1, 2, 3] }", "unknown form 'range'"),
    ("[axes]\nttft = { values = [1.0], linspace = [1, 2, 3] }", "must be one of"),
    ("[axes]\nttft = [1.0, -2.0]", "out of range; need 0 < ttft"),
    ("[fixed]\ncache_hit = 1.0", "out of range; need 0 <= cache_hit < 1"),
    ("[axes]\nttft = [1.0, nan]", "not finite"),
    ("[fixed]\nrate = inf", "not finite"),
    ("[axes]\nhardware = ['h100-80gb-sxn']", "unknown hardware 'h100-80gb-sxn'; did you mean 'h100-80gb-sxm'"),
    ("[fixed]\nprecision = 'fp4'", "unknown precision 'fp4'"),
    ("[fixed]\nttft = '2.0'", "expected a number, got '2.0'"),
    ("[fixed]\nttft = true", "expected a number"),
    ("[fixed]\nhardware = 3", "expected a name"),
    ("[axes]\nhardware = { linspace = [1, 2, 3] }", "categorical"),
    ("[sweep]\npercentile = 1.0\n[fixed]\nttft = 1.0", "need 0 < percentile < 1"),
    ("[fixed]\npercentile = 0.0", "need 0 < percentile < 1"),
    ("[fixed]\ntotal_gpus = 2.5", "whole number"),
    ("[axes]\ntotal_gpus = { logspace = [1, 10, 4] }", "non-integer values"),
    ("[fixed]\ntotal_gpus = 0", "out of range"),
    ("[axes]\nio_ratio = [1.0, 2.0]", "io_ratio and total_len go together; add 'total_len'"),
    ("[fixed]\ntotal_len = 100.0\ninput_len = 10.0\n[axes]\nio_ratio = [1.0]", "'input_len' is derived"),
    ("[bogus]\nx = 1", "unknown section"),
])
def test_spec_errors(text, match):
    with pytest.raises(FrontierError, match=match) as e:
        load_spec(text, REGISTRY)
    assert "\n" not in str(e.value)


def test_missing_file():
    with pytest.raises(FrontierError, match="not found"):
        load_spec("/nonexistent/spec.toml", REGISTRY)

"""The catalogue: every shipped GPU and model loads, every number has a source, KV bytes agree with the packaged
models.csv, and unknown names, user folders and malformed files behave as documented."""
from __future__ import annotations

import csv
import math
import os
import shutil

import jax.numpy as jnp
import pytest

from frontier_jax import resources
from frontier_jax.costmodel import catalog
from frontier_jax.costmodel.types import HARDWARE_FIELDS, MODEL_FIELDS, Hardware, Model
from frontier_jax.errors import FrontierError

GPUS = ["a100-80gb-pcie", "a100-80gb-sxm", "a40-48gb", "h100-80gb-sxm", "h200-141gb-sxm"]
MODELS = ["bloom-176b", "falcon-180b", "llama-2-13b", "llama-2-70b", "llama-2-7b", "llama-3.1-70b", "llama-3.1-8b",
          "mistral-7b", "opt-13b", "opt-175b", "opt-66b", "qwen3-32b", "yi-34b"]


def _csv(name: str) -> dict[str, dict[str, str]]:
    text = resources.data_file(name).read_text()
    return {row[next(iter(row))]: row for row in csv.DictReader(text.splitlines())}


@pytest.fixture(autouse=True)
def _no_user_path(monkeypatch, tmp_path_factory):
    # No $FRONTIER_JAX_PATH, and a working directory without hardware/ or models/ (it is searched too).
    monkeypatch.delenv(resources.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


def test_lists_are_sorted_and_complete():
    assert catalog.list_hardware() == GPUS
    assert catalog.list_models() == MODELS


@pytest.mark.parametrize("name", GPUS)
def test_hardware_loads_with_sources(name):
    hw = catalog.load_hardware(name)
    assert isinstance(hw, Hardware)
    info = catalog.hardware_info(name)
    for field in HARDWARE_FIELDS:
        leaf = getattr(hw, field)
        assert jnp.ndim(leaf) == 0 and math.isfinite(float(leaf)) and float(leaf) > 0
        assert float(leaf) == float(info[field]["value"])
    assert float(hw.price) == info["price"]["value"] == info["price"]["low"] <= info["price"]["high"]
    assert info["price"]["date"]
    numeric = [k for k, v in info.items() if isinstance(v, dict) and "value" in v]
    assert set(HARDWARE_FIELDS) <= set(numeric)
    for field in numeric:
        assert info[field]["source"].strip() and info[field]["units"].strip(), field
    if float(hw.fp8_flops) == float(hw.bf16_flops):  # no FP8 tensor cores: the source must say so
        assert "fp8" in info["fp8_flops"]["source"].lower()


@pytest.mark.parametrize("name", GPUS)
def test_hardware_agrees_with_packaged_csv(name):
    row, hw = _csv("hardware.csv")[name], catalog.load_hardware(name)
    assert float(hw.bf16_flops) == pytest.approx(float(row["bf16_dense_tflops"]) * 1e12)
    assert float(hw.hbm_bytes) == pytest.approx(float(row["hbm_gb"]) * 1e9)
    assert float(hw.hbm_bandwidth) == pytest.approx(float(row["hbm_gb_per_s"]) * 1e9)
    assert float(hw.nvlink_bandwidth) == pytest.approx(float(row["nvlink_gb_per_s_per_direction"].split()[0]) * 1e9)
    assert float(hw.nic_bandwidth) == pytest.approx(float(row["nic_gb_per_s_per_gpu_typical"]) * 1e9)
    assert float(hw.power) == pytest.approx(float(row["tdp_w"]))
    if row["price_usd_per_gpu_hour_low"]:
        info = catalog.hardware_info(name)["price"]
        assert info["low"] == pytest.approx(float(row["price_usd_per_gpu_hour_low"]))
        assert info["high"] == pytest.approx(float(row["price_usd_per_gpu_hour_high"]))


@pytest.mark.parametrize("name", MODELS)
def test_model_loads_and_matches_csv(name):
    m, info, row = catalog.load_model(name), catalog.model_info(name), _csv("models.csv")[name]
    assert isinstance(m, Model)
    assert info["source"].strip()
    for field in MODEL_FIELDS:
        assert jnp.ndim(getattr(m, field)) == 0
        expected = float(row["params_b"]) * 1e9 if field == "params" else float(row[field])
        assert float(getattr(m, field)) == pytest.approx(expected)
    derived = 2 * info["layers"] * info["kv_heads"] * info["head_dim"] * 2
    assert derived == info["kv_bytes_per_token_bf16"] == int(row["kv_bytes_per_token_bf16"])


def test_mistral_sliding_window():
    assert catalog.model_info("mistral-7b")["sliding_window"] == 4096
    assert "sliding_window" not in catalog.model_info("llama-2-7b")


def test_unknown_name_lists_known():
    with pytest.raises(FrontierError) as e:
        catalog.load_hardware("h100")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("unknown GPU 'h100'; known: a100-80gb-pcie, a100-80gb-sxm")
    assert "hardware/NAME.toml" in msg
    with pytest.raises(FrontierError, match=r"unknown model 'gpt-5'; known: bloom-176b.*models/NAME.toml"):
        catalog.load_model("gpt-5")


def test_case_insensitive_and_passthrough():
    hw = catalog.load_hardware("H100-80GB-SXM")
    assert float(hw.bf16_flops) == 989e12
    assert catalog.load_hardware(hw) is hw
    m = catalog.load_model("llama-2-70b")
    assert catalog.load_model(m) is m


def test_user_folder_is_found_and_shadows(tmp_path, monkeypatch):
    (tmp_path / "hardware").mkdir()
    src = (resources.shipped_dir("hardware") / "h100-80gb-sxm.toml").read_text()
    (tmp_path / "hardware" / "my-gpu.toml").write_text(src.replace('name = "h100-80gb-sxm"', 'name = "my-gpu"'))
    (tmp_path / "hardware" / "a40-48gb.toml").write_text(
        src.replace('name = "h100-80gb-sxm"', 'name = "a40-48gb"').replace("value = 700", "value = 123"))
    (tmp_path / "models").mkdir()
    shutil.copy(resources.shipped_dir("models") / "opt-13b.toml", tmp_path / "models" / "opt-13b.toml")
    empty = tmp_path / "does-not-exist"
    monkeypatch.setenv(resources.ENV_VAR, f"{empty}{os.pathsep}{tmp_path}")
    assert "my-gpu" in catalog.list_hardware()
    assert float(catalog.load_hardware("my-gpu").hbm_bandwidth) == 3350e9
    assert float(catalog.load_hardware("a40-48gb").power) == 123  # user file wins over the shipped one
    assert catalog.list_models() == MODELS


def test_working_directory_is_searched_after_the_path(tmp_path, monkeypatch):
    src = (resources.shipped_dir("hardware") / "h100-80gb-sxm.toml").read_text()
    cwd, env = tmp_path / "cwd", tmp_path / "env"
    for root, power in ((cwd, 111), (env, 222)):
        (root / "hardware").mkdir(parents=True)
        (root / "hardware" / "a40-48gb.toml").write_text(
            src.replace('name = "h100-80gb-sxm"', 'name = "a40-48gb"').replace("value = 700", f"value = {power}"))
    (cwd / "hardware" / "cwd-gpu.toml").write_text(src.replace('name = "h100-80gb-sxm"', 'name = "cwd-gpu"'))
    monkeypatch.chdir(cwd)
    assert "cwd-gpu" in catalog.list_hardware()
    assert float(catalog.load_hardware("a40-48gb").power) == 111  # the working directory's file wins over shipped
    monkeypatch.setenv(resources.ENV_VAR, str(env))
    assert float(catalog.load_hardware("a40-48gb").power) == 222  # $FRONTIER_JAX_PATH comes first
    assert catalog.list_models() == MODELS


def _bad(tmp_path, monkeypatch, text: str, name: str = "bad-gpu") -> str:
    (tmp_path / "hardware").mkdir(exist_ok=True)
    (tmp_path / "hardware" / f"{name}.toml").write_text(text)
    monkeypatch.setenv(resources.ENV_VAR, str(tmp_path))
    with pytest.raises(FrontierError) as e:
        catalog.load_hardware(name)
    assert f"{name}.toml" in str(e.value) and "\n" not in str(e.value)
    return str(e.value)


def test_malformed_and_invalid_files(tmp_path, monkeypatch):
    good = (resources.shipped_dir("hardware") / "h100-80gb-sxm.toml").read_text().replace(
        'name = "h100-80gb-sxm"', 'name = "bad-gpu"')
    assert "malformed TOML" in _bad(tmp_path, monkeypatch, "name = [unclosed")
    assert "'name'" in _bad(tmp_path, monkeypatch, good.replace('name = "bad-gpu"', 'name = "other"'))
    assert "missing field 'power'" in _bad(tmp_path, monkeypatch, good.split("[power]")[0])
    assert "'hbm_bandwidth.value'" in _bad(tmp_path, monkeypatch, good.replace("value = 3350e9", "value = -1.0"))
    assert "'hbm_bandwidth.value'" in _bad(tmp_path, monkeypatch, good.replace("value = 3350e9", "value = inf"))
    assert "'bf16_flops.units'" in _bad(tmp_path, monkeypatch, good.replace('"FLOP/s"', '"TFLOP/s"', 1))
    no_src = good.replace('source = "NVIDIA H100 SXM datasheet: 3.35 TB/s HBM3 (hardware.csv)"', 'source = ""')
    assert "'hbm_bandwidth.source'" in _bad(tmp_path, monkeypatch, no_src)
    assert "'price'" in _bad(tmp_path, monkeypatch, good.replace("value = 2.40", "value = 9.0"))


def test_model_kv_check_rejects_inconsistent_file(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    text = (resources.shipped_dir("models") / "llama-2-70b.toml").read_text()
    (tmp_path / "models" / "odd.toml").write_text(
        text.replace('name = "llama-2-70b"', 'name = "odd"').replace("kv_heads = 8", "kv_heads = 16"))
    monkeypatch.setenv(resources.ENV_VAR, str(tmp_path))
    with pytest.raises(FrontierError, match=r"odd\.toml: field 'kv_bytes_per_token_bf16'"):
        catalog.load_model("odd")


def test_stacked_leaves_are_1d():
    hw = catalog.stacked_hardware(GPUS)
    assert isinstance(hw, Hardware)
    for leaf in hw:
        assert leaf.shape == (len(GPUS),) and leaf.dtype == jnp.float64
    assert float(hw.hbm_bytes[GPUS.index("h200-141gb-sxm")]) == 141e9
    picked = Hardware(*(leaf[jnp.array([2, 0])] for leaf in hw))  # integer indexing of the categorical axis
    assert float(picked.bf16_flops[0]) == 149.7e12
    ms = catalog.stacked_models(["opt-13b", catalog.load_model("llama-3.1-70b")])
    assert all(leaf.shape == (2,) for leaf in ms)
    assert float(ms.kv_heads[1]) == 8
    with pytest.raises(FrontierError):
        catalog.stacked_hardware([])
    with pytest.raises(FrontierError):
        catalog.stacked_hardware([hw])  # already stacked: leaves are not scalars

"""The catalogue: GPUs and models defined by TOML files, and serving engines by their calibrated efficiency; found
by name, validated, and turned into pytrees.

Search order (frontier_jax.resources): each directory named in $FRONTIER_JAX_PATH (its `hardware/` and `models/`
subfolders), the working directory's `hardware/` and `models/`, then the shipped ones. The first NAME.toml found
wins, so a user's file shadows a shipped one of the same name. Names match case-insensitively. Dropping a file in is
the whole of adding a GPU or model: no code changes. Every mistake (unknown name, malformed file, missing or bad
field) raises FrontierError with one line that names the file and the field.

Engines: the roofline's efficiency terms per serving-engine generation, fitted by frontier_jax.calibration on
measured latencies and stored in frontier_jax/data/calibration.json.
"""
from __future__ import annotations

import hashlib
import json
import math
import tomllib
from pathlib import Path
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from ..errors import FrontierError
from ..resources import data_file, search_dirs
from .types import HARDWARE_FIELDS, MODEL_FIELDS, Efficiency, Hardware, KernelEngine, Model

CALIBRATION_FILE = data_file("calibration.json")
ENGINES = ("current", "vllm-2023", "current-kernels", "vllm-2023-kernels")
"""Serving-engine generations. "-kernels": iterations composed from measured kernels (types.KernelEngine, issue 18);
the others: the roofline with calibrated efficiencies (types.Efficiency)."""
PRECISIONS = ("bf16", "fp8")

# SI units only: a file in TFLOP/s or GB is rejected rather than silently mis-scaled.
HARDWARE_UNITS: dict[str, str] = {
    "bf16_flops": "FLOP/s", "fp8_flops": "FLOP/s", "hbm_bytes": "bytes", "hbm_bandwidth": "bytes/s",
    "nvlink_bandwidth": "bytes/s", "nic_bandwidth": "bytes/s", "gpus_per_node": "GPUs",
    "price": "USD/GPU-hour", "power": "W",
}
# Catalogue numbers outside this range are a units mistake or unrepresentable (a denormal price gives a cost of 0).
MIN_VALUE, MAX_VALUE = 1e-12, 1e20
MODEL_INT_FIELDS = ("layers", "hidden", "q_heads", "kv_heads", "head_dim", "ffn", "vocab")
_WHAT = {"hardware": "GPU", "models": "model"}


# ---------------------------------------------------------------- finding files

def _files(folder: str) -> dict[str, Path]:
    """lower-case name -> first NAME.toml on the search path."""
    found: dict[str, Path] = {}
    for d in search_dirs(folder):
        for p in sorted(d.glob("*.toml")) if d.is_dir() else []:
            found.setdefault(p.stem.lower(), p)
    return found


def _find(folder: str, name: object) -> Path:
    files = _files(folder)
    if isinstance(name, str) and name.strip().lower() in files:
        return files[name.strip().lower()]
    known = ", ".join(sorted(p.stem for p in files.values())) or "(none)"
    raise FrontierError(f"unknown {_WHAT[folder]} {name!r}; known: {known} (add {folder}/NAME.toml to define one)")


def list_hardware(valid_only: bool = True) -> list[str]:
    """Names of the GPUs on the search path whose file passes validation (every file with valid_only=False). A bad
    file does not hide or break the others; `problem("hardware", name)` says what is wrong with it."""
    names = sorted(p.stem for p in _files("hardware").values())
    return [n for n in names if problem("hardware", n) is None] if valid_only else names


def list_models(valid_only: bool = True) -> list[str]:
    """Names of the models on the search path whose file passes validation (every file with valid_only=False)."""
    names = sorted(p.stem for p in _files("models").values())
    return [n for n in names if problem("models", n) is None] if valid_only else names


def problem(folder: str, name: str) -> str | None:
    """Why the catalogue file of `name` is unusable (the FrontierError text naming the file), or None if it is fine
    or there is no such file."""
    if not isinstance(name, str) or name.strip().lower() not in _files(folder):
        return None
    try:
        (hardware_info if folder == "hardware" else model_info)(name)
    except FrontierError as e:
        return str(e)
    return None


# read by runner/spec.py when a spec names a value not in the choices: a file that exists but is invalid
list_hardware.explain = lambda name: problem("hardware", name)  # type: ignore[attr-defined]
list_models.explain = lambda name: problem("models", name)  # type: ignore[attr-defined]


def digest(hardware: Sequence[str] = (), models: Sequence[str] = ()) -> str:
    """SHA-256 prefix of the resolved catalogue files of the named GPUs and models (their bytes, wherever they were
    found on the search path): what a resumed sweep must still see."""
    h = hashlib.sha256()
    for folder, names in (("hardware", hardware), ("models", models)):
        files = _files(folder)
        for n in sorted({str(x).strip().lower() for x in names}):
            p = files.get(n)
            h.update(f"{folder}/{n}:".encode())
            try:
                h.update(p.read_bytes() if p is not None else b"<missing>")
            except OSError:
                h.update(b"<unreadable>")
    return h.hexdigest()[:16]


def calibration_digest() -> str:
    """SHA-256 prefix of data/calibration.json and the kernel fits (kernel_fit.json and its residual grids)."""
    h = hashlib.sha256()
    for f in (CALIBRATION_FILE, data_file("kernel_fit.json"), data_file("kernel_fit_residuals.npz")):
        try:
            h.update(f.read_bytes())
        except OSError:
            h.update(b"<missing>")
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- reading and validating

def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise FrontierError(f"{path}: malformed TOML: {e}; fix the file or move it out of the search path") from None
    except UnicodeDecodeError as e:
        raise FrontierError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise FrontierError(f"{path}: cannot read: {e.strerror or e}") from None
    name = data.get("name")
    if not isinstance(name, str) or name.strip().lower() != path.stem.lower():
        raise FrontierError(f"{path}: field 'name' must equal the file name {path.stem!r}, got {name!r}")
    return data


def _positive(path: Path, field: str, x: object, integer: bool = False) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise FrontierError(f"{path}: field '{field}' must be a number, got {x!r}")
    v = float(x)
    if not (math.isfinite(v) and v > 0):
        raise FrontierError(f"{path}: field '{field}' must be positive and finite, got {x!r}")
    if not MIN_VALUE <= v <= MAX_VALUE:
        raise FrontierError(f"{path}: field '{field}' = {x!r} is outside {MIN_VALUE:g} to {MAX_VALUE:g}, where the "
                            "model computes reliably; check its units")
    if integer and not v.is_integer():
        raise FrontierError(f"{path}: field '{field}' must be a whole number, got {x!r}")
    return v


def _text(path: Path, field: str, x: object) -> str:
    if not isinstance(x, str) or not x.strip():
        raise FrontierError(f"{path}: field '{field}' must be a non-empty string, got {x!r}")
    return x


def _check_hardware(path: Path, data: dict[str, Any]) -> None:
    for field in HARDWARE_FIELDS:
        if not isinstance(data.get(field), dict):
            raise FrontierError(f"{path}: missing field '{field}' (a table with value, units, source)")
        if "value" not in data[field]:
            raise FrontierError(f"{path}: field '{field}' has no 'value'; add value = ... to its table")
    for field, table in data.items():  # every numeric table, required or extra, carries units and a source
        if not (isinstance(table, dict) and "value" in table):
            continue
        value = _positive(path, f"{field}.value", table["value"], integer=field == "gpus_per_node")
        units = _text(path, f"{field}.units", table.get("units"))
        if field in HARDWARE_UNITS and units != HARDWARE_UNITS[field]:
            raise FrontierError(f"{path}: field '{field}.units' is {units!r}; expected {HARDWARE_UNITS[field]!r} (SI)")
        _text(path, f"{field}.source", table.get("source"))
        if field == "price":
            low = _positive(path, "price.low", table.get("low", value))
            high = _positive(path, "price.high", table.get("high", value))
            if not low <= value <= high:
                raise FrontierError(f"{path}: field 'price' needs low <= value <= high, got {low}, {value}, {high}")


def _check_model(path: Path, data: dict[str, Any]) -> None:
    for field in MODEL_FIELDS:
        if field not in data:
            raise FrontierError(f"{path}: missing field '{field}'")
        _positive(path, field, data[field], integer=field in MODEL_INT_FIELDS)
    _text(path, "source", data.get("source"))
    if data["q_heads"] % data["kv_heads"]:
        raise FrontierError(f"{path}: field 'q_heads' ({data['q_heads']}) is not a multiple of 'kv_heads'")
    if "sliding_window" in data:
        _positive(path, "sliding_window", data["sliding_window"], integer=True)
    if "kv_bytes_per_token_bf16" in data:
        given = _positive(path, "kv_bytes_per_token_bf16", data["kv_bytes_per_token_bf16"], integer=True)
        derived = kv_bytes_per_token_bf16(data)
        if given != derived:
            raise FrontierError(f"{path}: field 'kv_bytes_per_token_bf16' is {given:.0f} but "
                                f"2*layers*kv_heads*head_dim*2 = {derived:.0f}")


def kv_bytes_per_token_bf16(info: dict[str, Any]) -> float:
    """K and V, every layer, every KV head, 2 bytes per BF16 element."""
    return float(2 * info["layers"] * info["kv_heads"] * info["head_dim"] * 2)


def hardware_info(name: str) -> dict[str, Any]:
    """The whole parsed, validated TOML of one GPU (a fresh dict each call)."""
    path = _find("hardware", name)
    data = _read(path)
    _check_hardware(path, data)
    return data


def model_info(name: str) -> dict[str, Any]:
    """The whole parsed, validated TOML of one model (a fresh dict each call)."""
    path = _find("models", name)
    data = _read(path)
    _check_model(path, data)
    return data


# ---------------------------------------------------------------- pytrees

def load_hardware(name_or_obj: str | Hardware) -> Hardware:
    """A Hardware pytree of scalar leaves (price = price.value); a Hardware passes through unchanged."""
    if isinstance(name_or_obj, Hardware):
        return name_or_obj
    info = hardware_info(name_or_obj)  # type: ignore[arg-type]
    fields = {f: jnp.asarray(float(info[f]["value"])) for f in HARDWARE_FIELDS}
    return Hardware(**fields, kernel_gpu=jnp.asarray(float(kernel_index(name_or_obj, info))))  # type: ignore[arg-type]


def kernel_index(name: str, info: dict[str, Any] | None = None) -> int:
    """Index into costmodel.kernels.GPUS of the kernel tables a GPU uses: its own, or the closest tabled GPU's."""
    from .kernels import GPUS, closest_tabled
    if name in GPUS:
        return GPUS.index(name)
    info = info or hardware_info(name)
    return int(closest_tabled(float(info["bf16_flops"]["value"]), float(info["hbm_bandwidth"]["value"]), xp=np))


def kernel_path(name: str) -> str:
    """Which latency path a GPU takes: its own measured kernel tables, or the closest tabled GPU's fits."""
    from .kernels import GPUS
    proxy = GPUS[kernel_index(name)]
    return ("its own measured kernel tables" if proxy == name else
            f"no kernel tables: its spec-sheet peaks with the fitted kernel efficiencies of {proxy}")


def load_model(name_or_obj: str | Model) -> Model:
    """A Model pytree of scalar leaves; a Model passes through unchanged."""
    if isinstance(name_or_obj, Model):
        return name_or_obj
    info = model_info(name_or_obj)  # type: ignore[arg-type]
    return Model(*(jnp.asarray(float(info[f])) for f in MODEL_FIELDS))


def _stack(trees: Sequence[Hardware] | Sequence[Model], what: str) -> Any:
    dtype = jnp.result_type(float)
    for t in trees:
        if any(jnp.ndim(x) != 0 for x in t):
            raise FrontierError(f"stacking {what}s needs scalar leaves; got a {what} whose leaves are arrays")
    return type(trees[0])(*(jnp.stack([jnp.asarray(x, dtype=dtype) for x in leaves]) for leaves in zip(*trees)))


def stacked_hardware(names: Sequence[str | Hardware] | str) -> Hardware:
    """One Hardware whose leaves are 1-D arrays, entry i from names[i]: index a GPU sweep axis with integers."""
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise FrontierError("stacked_hardware needs at least one GPU name")
    return _stack([load_hardware(n) for n in names], "GPU")


def stacked_models(names: Sequence[str | Model] | str) -> Model:
    """One Model whose leaves are 1-D arrays, entry i from names[i]: index a model sweep axis with integers."""
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise FrontierError("stacked_models needs at least one model name")
    return _stack([load_model(n) for n in names], "model")


# ---------------------------------------------------------------- engines (calibrated efficiency)

# Starting point of the fit (and the values used if no calibration file exists): mid-range of the 2023-era
# efficiencies quoted in MODEL.md section 3 (20-65 % MFU in prefill, 11-62 % of HBM bandwidth in decode).
PRIOR = Efficiency(0.5, 0.1, 0.6, 0.1, 1e-4, 1e-3, 1e-5)


def _calibration() -> dict:
    if not CALIBRATION_FILE.exists():
        return {}
    return json.loads(CALIBRATION_FILE.read_text())


# Starting point of the kernel engines' fit: 1 ms per iteration, 10 us per layer, 10 activation passes per layer.
KERNEL_PRIOR = KernelEngine(1e-3, 1e-5, 10.0)


def engine_form(engine: str) -> type:
    """The engine's pytree type: KernelEngine (measured kernels) or Efficiency (roofline)."""
    return KernelEngine if engine.endswith("-kernels") else Efficiency


def calibration_record(engine: str) -> dict:
    """The fitted parameters plus the fit report (errors, data used) of an engine generation."""
    if engine not in ENGINES:
        raise FrontierError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    prior = KERNEL_PRIOR if engine_form(engine) is KernelEngine else PRIOR
    return _calibration().get(engine, {"params": prior._asdict(), "report": {"status": "prior (not fitted)"}})


def load_efficiency(engine: str = "current") -> Efficiency | KernelEngine:
    """The calibrated terms of an engine generation (scalar leaves): an Efficiency or a KernelEngine."""
    rec, form = calibration_record(engine), engine_form(engine)
    return form(**{k: jnp.asarray(float(rec["params"][k])) for k in form._fields})


def stacked_efficiency(engines=("current", "vllm-2023"), used=None) -> Efficiency | KernelEngine:
    """One engine pytree whose leaves are 1-D arrays, entry i from engines[i]. The engines `used` (default: all)
    must share a latency form (each form is its own compiled program); entries of the other form, never indexed,
    hold that form's prior."""
    used = list(engines) if used is None else list(used)
    forms = {engine_form(e) for e in used}
    if len(forms) > 1:
        kern = [e for e in used if engine_form(e) is KernelEngine]
        raise FrontierError(f"engines {', '.join(used)} mix two latency forms (measured kernels: {', '.join(kern)});"
                            " sweep the -kernels engines in a separate run")
    form = forms.pop()
    prior = KERNEL_PRIOR if form is KernelEngine else PRIOR
    effs = [load_efficiency(e) if engine_form(e) is form else form(*map(jnp.asarray, prior)) for e in engines]
    return form(*(jnp.stack(xs) for xs in zip(*effs)))


def precision_flag(precision: str, what: str = "precision") -> float:
    """1.0 for FP8, 0.0 for BF16 (`what` names the input in the error)."""
    if precision not in PRECISIONS:
        raise FrontierError(f"unknown {what} {precision!r}; known: {', '.join(PRECISIONS)}")
    return 1.0 if precision == "fp8" else 0.0


def kv_precision_flag(precision: str, kv_precision: str | None = None) -> float:
    """The KV cache's FP8 flag: `kv_precision`'s, or the weights' `precision`'s where it is None."""
    return precision_flag(precision) if kv_precision is None else precision_flag(kv_precision, "kv_precision")

"""Bad input through the CLI and the Python API (issue 7, part 1).

Every case in CASES is one user mistake. Through the CLI it must print exactly one line on stderr naming the
problem and the fix, exit with status 2, print no traceback and leave no new file behind (no output, no .partial)
while leaving files that were already there untouched. Every case runs `frontier_jax.cli.main(argv)` in-process
(cheap, and with the model's compile entry points patched to fail, so each mistake is caught before any JAX
compilation); the cases marked `sub` also run as a real subprocess (`python -m frontier_jax.cli ...`), which checks
the process exit status and the whole of stderr. Through the Python API (load_sweep_spec / make_kernel / run_sweep,
evaluate, catalog, merge_parts) the same mistake must raise FrontierError with the same message.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from frontier_jax import cli
from frontier_jax.api import evaluate
from frontier_jax.costmodel import catalog
from frontier_jax.costmodel.kernel import EXTRA_COORDS, load_sweep_spec, make_kernel, outputs_meta
from frontier_jax.errors import FrontierError
from frontier_jax.runner import merge_parts, run_sweep

DIR = object()  # marker: create a directory at this path

BASE_FIXED = '''model = "llama-3.1-70b"
hardware = "h100-80gb-sxm"
'''


def spec(fixed: str = 'ttft = 2.0\ntpot = 0.05\n', axes: str = 'input_len = [512.0, 2048.0]\noutput_len = [128.0]\n',
         head: str = "", base: str = BASE_FIXED) -> str:
    return f"{head}[fixed]\n{base}{fixed}[axes]\n{axes}"


OK_SPEC = spec()
EVAL = ["eval", "--hardware", "h100-80gb-sxm", "--model", "llama-3.1-70b", "--isl", "2048", "--osl", "256",
        "--ttft", "2", "--tpot", "0.05"]


def ev(**changes) -> list[str]:
    """The EVAL command line with options replaced or added (None removes one)."""
    args = list(EVAL)
    for k, v in changes.items():
        flag = "--" + k.replace("_", "-")
        if flag in args:
            i = args.index(flag)
            del args[i:i + 2]
        if v is not None:
            args += [flag, str(v)]
    return args


@dataclass
class Case:
    id: str
    argv: list[str]
    expect: str                       # regex the one error line must match (the problem and the fix)
    files: dict = field(default_factory=dict)   # relative path -> str | bytes | DIR, created before the run
    skip_if: object = None            # callable(case_dir) -> reason or None
    sub: bool = False                 # also run as a real subprocess


def sweep_case(id, text, expect, *extra, files=None, **kw):
    files = {"spec.toml": text, **(files or {})}
    return Case(id, ["sweep", "spec.toml", "-o", "out.nc", "--quiet", *extra], expect, files, **kw)


def _read_only_skip(case_dir: Path):
    ro = case_dir / "ro"
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):
        return "running as root: a mode-0555 directory is still writable, so there is no mistake to report"
    return None


CASES = [
    # ---- names
    sweep_case("unknown_gpu", spec(axes='hardware = ["h100-sxm"]\ninput_len = [512.0]\noutput_len = [64.0]\n',
                                   base='model = "llama-3.1-70b"\n'),
               r"unknown hardware 'h100-sxm'; did you mean 'h100-80gb-sxm'\?", sub=True),
    sweep_case("unknown_model", spec(base='model = "llama-70b"\nhardware = "h100-80gb-sxm"\n'),
               r"\[fixed\] model: unknown model 'llama-70b'; (did you mean|known names)"),
    sweep_case("misspelled_axis", spec(axes='input_length = [512.0]\noutput_len = [64.0]\n'),
               r"unknown input 'input_length'; did you mean 'input_len'\?", sub=True),
    sweep_case("unknown_section", "[axis]\ninput_len = [1.0]\n", r"unknown section \[axis\].*did you mean 'axes'"),
    sweep_case("categorical_number", spec(axes='hardware = [1]\ninput_len = [512.0]\noutput_len = [64.0]\n',
                                          base='model = "llama-3.1-70b"\n'),
               r"axis 'hardware': expected a name \(string\), got 1; quote it"),
    sweep_case("number_as_string", spec(fixed='ttft = "2.0"\ntpot = 0.05\n'),
               r"\[fixed\] ttft: expected a number, got '2.0'; write it without quotes"),
    # ---- ranges and values
    sweep_case("empty_values", spec(axes='input_len = { values = [] }\noutput_len = [64.0]\n'),
               r"axis 'input_len' has an empty values list; give at least one value"),
    sweep_case("reversed_range", spec(axes='input_len = { logspace = [16384, 128, 8] }\noutput_len = [64.0]\n'),
               r"start 16384 > stop 128; swap them", sub=True),
    sweep_case("logspace_from_zero", spec(axes='input_len = { logspace = [0, 128, 8] }\noutput_len = [64.0]\n'),
               r"logspace bounds must be > 0"),
    sweep_case("num_not_integer", spec(axes='input_len = { linspace = [1, 128, 2.5] }\noutput_len = [64.0]\n'),
               r"num must be an integer, got 2.5"),
    sweep_case("negative_length", spec(axes='input_len = [512.0, -512.0]\noutput_len = [64.0]\n'),
               r"axis 'input_len': value -512 is out of range; need 0 < input_len"),
    sweep_case("zero_length", spec(axes='input_len = [512.0]\noutput_len = [0.0]\n'),
               r"axis 'output_len': value 0 is out of range; need 0 < output_len"),
    sweep_case("nan_value", spec(fixed="ttft = nan\ntpot = 0.05\n"), r"\[fixed\] ttft: nan is not finite", sub=True),
    sweep_case("inf_value", spec(axes='input_len = [512.0]\noutput_len = [64.0]\nkv_bandwidth = [1e9, inf]\n'),
               r"axis 'kv_bandwidth': inf is not finite; give a finite number"),
    sweep_case("overflow_to_inf", spec(axes='input_len = [1e400]\noutput_len = [64.0]\n'), r"inf is not finite"),
    sweep_case("percentile_one", spec(head="[sweep]\npercentile = 1.0\n"), r"need 0 < percentile < 1"),
    sweep_case("percentile_zero", spec(fixed="ttft = 2.0\ntpot = 0.05\npercentile = 0.0\n"),
               r"need 0 < percentile < 1"),
    sweep_case("percentile_as_percent", spec(fixed="ttft = 2.0\ntpot = 0.05\npercentile = 99\n"),
               r"value 99 is out of range; need 0 < percentile < 1"),
    sweep_case("ttft_in_ms", spec(fixed="ttft = 2000\ntpot = 0.05\n"),
               r"value 2000 is out of range; need 0 < ttft <= 600; ttft is in seconds \(2000 ms is 2.0\)", sub=True),
    sweep_case("tpot_in_ms", spec(fixed="ttft = 2.0\ntpot = 50\n"),
               r"tpot is in seconds \(50 ms is 0.05\)"),
    sweep_case("integer_fraction", spec(fixed="ttft = 2.0\ntpot = 0.05\nrate = 1.0\n",
                                        axes='input_len = [512.0]\noutput_len = [64.0]\ntotal_gpus = [8, 2.5]\n'),
               r"total_gpus must be a whole number, got 2.5"),
    sweep_case("cache_hit_one", spec(fixed="ttft = 2.0\ntpot = 0.05\ncache_hit = 1.0\n"), r"need 0 <= cache_hit < 1"),
    # ---- structure
    sweep_case("malformed_toml", "[axes\ninput_len = [1.0]\n", r"invalid TOML in spec.toml: .*line 1.*fix the syntax",
               sub=True),
    sweep_case("duplicate_axis", spec(axes='input_len = [512.0]\ninput_len = [1024.0]\noutput_len = [64.0]\n'),
               r"invalid TOML in spec.toml: Cannot overwrite a value \(at line \d+", sub=True),
    sweep_case("fixed_and_axis", spec(axes='ttft = [1.0, 2.0]\ninput_len = [512.0]\noutput_len = [64.0]\n'),
               r"input 'ttft' is in both \[fixed\] and \[axes\]; keep one"),
    sweep_case("missing_tpot", spec(fixed="ttft = 2.0\n"), r"the spec needs 'tpot' in \[fixed\] or \[axes\]"),
    sweep_case("total_gpus_without_rate", spec(fixed="ttft = 2.0\ntpot = 0.05\ntotal_gpus = 8\n"),
               r"total_gpus caps an integral deployment: add rate"),
    sweep_case("io_ratio_alone", spec(axes='io_ratio = [1.0, 8.0]\n'),
               r"io_ratio and total_len go together; add 'total_len'"),
    sweep_case("empty_spec", "", r"spec has no \[axes\] and no \[fixed\] inputs; add an \[axes\] table", sub=True),
    Case("spec_not_found", ["sweep", "nowhere.toml", "-o", "out.nc"], r"spec file 'nowhere.toml' not found", sub=True),
    Case("spec_is_directory", ["sweep", "specs", "-o", "out.nc"], r"spec path 'specs' is a directory",
         files={"specs": DIR}),
    sweep_case("spec_not_utf8", b"\xff\xfe[fixed]\x00", r"spec file 'spec.toml' is not UTF-8 text", sub=True),
    # ---- output paths and run options
    Case("output_dir_missing", ["sweep", "spec.toml", "-o", "nodir/out.nc"],
         r"output directory '.*nodir' does not exist; create it first", {"spec.toml": OK_SPEC}, sub=True),
    Case("output_is_directory", ["sweep", "spec.toml", "-o", "outdir/", "--overwrite"],
         r"output 'outdir/' is a directory; give a file path", {"spec.toml": OK_SPEC, "outdir": DIR}),
    Case("output_read_only_dir", ["sweep", "spec.toml", "-o", "ro/out.nc"], r"is not writable; choose another path",
         {"spec.toml": OK_SPEC, "ro": DIR}, skip_if=_read_only_skip),
    Case("output_in_system_dir", ["sweep", "spec.toml", "-o", "/proc/frontier_bad_input.nc"],
         r"output directory '/proc' is not writable", {"spec.toml": OK_SPEC},
         skip_if=lambda d: None if os.path.isdir("/proc") else "no /proc on this system", sub=True),
    sweep_case("output_exists", OK_SPEC, r"output 'out.nc' already exists; pass --overwrite",
               files={"out.nc": "an earlier result\n"}, sub=True),
    sweep_case("leftover_partial", OK_SPEC, r"an interrupted sweep left 'out.nc.partial'; pass --resume",
               files={"out.nc.partial": "half a sweep\n"}),
    sweep_case("resume_foreign_partial", OK_SPEC, r"cannot resume from 'out.nc.partial' .*start over with --overwrite",
               "--resume",
               files={"out.nc.partial": "not a netCDF file\n"}, sub=True),
    sweep_case("chunk_zero", OK_SPEC, r"--chunk 0; it must be a positive number of points", "--chunk", "0"),
    # ---- eval
    Case("eval_unknown_gpu", ev(hardware="h100"), r"unknown GPU 'h100'; known: .*h100-80gb-sxm"),
    Case("eval_unknown_model", ev(model="gpt-4"), r"unknown model 'gpt-4'; known: .*llama-3.1-70b", sub=True),
    Case("eval_negative_isl", ev(isl=-5), r"input_len must be > 0 \(got -5.0\)"),
    Case("eval_zero_osl", ev(osl=0), r"output_len must be > 0 \(got 0.0\)"),
    Case("eval_nan_ttft", ev(ttft="nan"), r"ttft must be finite \(got nan\); remove NaN/inf"),
    Case("eval_inf_tpot", ev(tpot="inf"), r"tpot must be finite \(got inf\)"),
    Case("eval_percentile_above_1", ev(percentile=1.5), r"percentile must be < 1.0 \(got 1.5\)"),
    Case("eval_percentile_zero", ev(percentile=0), r"percentile must be > 0.0 \(got 0.0\)"),
    Case("eval_percentile_word", ev(percentile="p99"), r"percentile must be a number in \(0, 1\) or 'mean'", sub=True),
    Case("eval_ttft_in_ms", ev(ttft=2000), r"ttft = 2000 s is above the 600 s limit; ttft is in seconds"),
    Case("eval_tpot_in_ms", ev(tpot=50), r"tpot = 50 s is above the 10 s limit; tpot is in seconds", sub=True),
    Case("eval_unknown_engine", ev(engine="vllm"), r"unknown engine 'vllm'; known: current, vllm-2023"),
    Case("eval_unknown_precision", ev(precision="int4"), r"unknown precision 'int4'; known: bf16, fp8"),
    Case("eval_unknown_kv_precision", ev(precision="fp8", kv_precision="fp4"),
         r"unknown kv_precision 'fp4'; known: bf16, fp8"),
    sweep_case("unknown_kv_precision", spec(fixed='ttft = 2.0\ntpot = 0.05\nkv_precision = "int8"\n'),
               r"\[fixed\] kv_precision: unknown kv_precision 'int8'"),
    Case("eval_total_gpus_without_rate", ev(total_gpus=8), r"total_gpus caps an integral deployment: give rate"),
    Case("eval_negative_kv_bandwidth", ev(kv_bandwidth=-1e9), r"kv_bandwidth must be > 0"),
    # ---- other subcommands
    Case("hardware_show_unknown", ["hardware", "show", "b200"], r"unknown GPU 'b200'; known: "),
    Case("models_show_without_name", ["models", "show"], r"`frontier models show` needs a NAME"),
    Case("merge_missing_part", ["merge", "nope.part0of2.nc", "-o", "m.nc"], r"'nope.part0of2.nc' is not a sweep part"),
]
assert len({c.id for c in CASES}) == len(CASES)


def _make(case_dir: Path, files: dict) -> None:
    case_dir.mkdir(parents=True)
    for rel, content in files.items():
        p = case_dir / rel
        if content is DIR:
            p.mkdir()
        elif isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)


def _snapshot(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class Compiled(AssertionError):
    pass


@pytest.fixture
def no_compile(monkeypatch):
    """Fail loudly if the cost model is compiled (sweep chunk program or evaluate's kernel)."""
    evaluate_mod = sys.modules["frontier_jax.api"]
    engine_mod = sys.modules["frontier_jax.runner.run"]

    def boom(*a, **k):
        raise Compiled("the mistake was not caught before JAX compilation")

    monkeypatch.setattr(engine_mod, "_executable", boom)
    monkeypatch.setattr(evaluate_mod, "_kernel", boom)


def _api_call(argv: list[str]):
    """Call the Python API the way the CLI subcommand would, with the same (already parsed) arguments."""
    a = cli.build_parser().parse_args(argv)
    if a.command == "sweep":
        s = load_sweep_spec(a.spec)
        run_sweep(s, make_kernel(s), outputs_meta(), a.output or f"{s.name}.nc", extra_coords=EXTRA_COORDS,
                  chunk=a.chunk, resume=a.resume, overwrite=a.overwrite, progress=False)
    elif a.command == "eval":
        pct = a.percentile
        try:
            pct = float(pct)
        except ValueError:
            pass
        evaluate(hardware=a.hardware, model=a.model, input_len=a.isl, output_len=a.osl, ttft=a.ttft, tpot=a.tpot,
                 percentile=pct, rate=a.rate, kv_bandwidth=a.kv_bandwidth, total_gpus=a.total_gpus, engine=a.engine,
                 precision=a.precision, kv_precision=a.kv_precision)
    elif a.command in ("hardware", "models"):
        if not a.name:
            raise FrontierError(f"`frontier {a.command} show` needs a NAME; see `frontier {a.command} list`")
        (catalog.hardware_info if a.command == "hardware" else catalog.model_info)(a.name)
    elif a.command == "merge":
        merge_parts(a.parts, a.output, overwrite=a.overwrite)
    else:
        raise AssertionError(a.command)


def _check_line(err: str, case: Case) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("frontier: error: "), lines[0]
    assert re.search(case.expect, lines[0]), f"{lines[0]!r} does not match {case.expect!r}"
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_and_api(case, tmp_path, monkeypatch, capsys, no_compile):
    """cli.main: exit 2, one line, nothing written, no compilation; the API: FrontierError, same message."""
    d = tmp_path / "case"
    _make(d, case.files)
    reason = case.skip_if(d) if case.skip_if else None
    if reason:
        pytest.skip(reason)
    before = _snapshot(d)
    monkeypatch.chdir(d)
    capsys.readouterr()
    rc = cli.main(list(case.argv))
    out, err = capsys.readouterr()
    assert rc == 2, (rc, err)
    line = _check_line(err, case)
    assert out == ""
    assert _snapshot(d) == before, "the command created, removed or changed files"

    with pytest.raises(FrontierError) as exc:
        _api_call(case.argv)
    assert line == f"frontier: error: {exc.value.cli_message}", "the CLI and the API word the mistake differently"
    assert "=True" not in line, "a Python keyword in CLI output"
    assert _snapshot(d) == before


SUB_CASES = [c for c in CASES if c.sub]


def _run_cli(argv: list[str], case_dir: Path):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "frontier_jax.cli", *argv], cwd=case_dir, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """Run the subprocess cases, four at a time: id -> (CompletedProcess, case dir, snapshot before)."""
    root = tmp_path_factory.mktemp("bad_input_cli")
    prepared = {}
    for case in SUB_CASES:
        d = root / case.id
        _make(d, case.files)
        prepared[case.id] = (case, d, _snapshot(d))
    with cf.ThreadPoolExecutor(max_workers=4) as pool:
        futures = {cid: pool.submit(_run_cli, case.argv, d) for cid, (case, d, _) in prepared.items()}
        return {cid: (futures[cid].result(), d, before) for cid, (case, d, before) in prepared.items()}


@pytest.mark.parametrize("case", SUB_CASES, ids=[c.id for c in SUB_CASES])
def test_cli_subprocess(case, cli_runs):
    res, d, before = cli_runs[case.id]
    _check_line(res.stderr, case)
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert res.stdout == ""
    assert _snapshot(d) == before, "the command created, removed or changed files"


# ---------------------------------------------------------------- API-only mistakes (no CLI spelling)

N2 = np.array([512.0, 1024.0])
API_CASES = [
    ("evaluate_mismatched_arrays", lambda: evaluate(input_len=N2, output_len=np.array([1.0, 2.0, 3.0])),
     r"array inputs do not broadcast together"),
    ("evaluate_2d_array", lambda: evaluate(input_len=np.ones((2, 2)) * 512), r"takes scalars or 1-D arrays"),
    ("evaluate_string_length", lambda: evaluate(input_len="2048"), r"input_len must be a number"),
    ("evaluate_none_length", lambda: evaluate(output_len=None), r"output_len must be a number"),
    ("evaluate_nan_in_array", lambda: evaluate(input_len=np.array([512.0, np.nan])), r"input_len must be finite"),
    ("evaluate_ttft_ms_in_array", lambda: evaluate(ttft=np.array([2.0, 2000.0])), r"ttft = 2000 s is above"),
    ("evaluate_percentile_near_1", lambda: evaluate(percentile=0.9999999), r"too close to 1"),
    ("evaluate_cache_hit_1", lambda: evaluate(cache_hit=1.0), r"cache_hit must be < 1.0"),
    ("evaluate_negative_price", lambda: evaluate(price=-2.0), r"price must be > 0"),
    ("evaluate_tp_zero", lambda: evaluate(tp=0), r"tp must be > 0"),
    ("closed_loop_unknown_kv_precision",
     lambda: __import__("frontier_jax").closed_loop("h100-80gb-sxm", "llama-3.1-70b", 1024, 128, 8, 2,
                                                      precision="fp8", kv_precision="fp4"),
     r"unknown kv_precision 'fp4'; known: bf16, fp8"),
    ("evaluate_tp_fraction", lambda: evaluate(tp=1.5), r"tp must be a whole number"),
    ("evaluate_pins_without_rate", lambda: evaluate(n_prefill=2), r"give rate= too"),
    ("load_spec_wrong_type", lambda: load_sweep_spec(42), r"spec must be a path, a TOML string or a dict"),
    ("load_spec_dict_bad_axis", lambda: load_sweep_spec({"axes": {"input_len": {"range": [1, 2, 3]}}}),
     r"unknown form 'range'; known names: linspace, logspace, values"),
    ("load_spec_dict_repeat", lambda: load_sweep_spec({"axes": {"input_len": [1.0, 1.0]}}), r"repeats the value 1.0"),
    ("load_spec_string_bad", lambda: load_sweep_spec("[fixed]\nttft = -1\n"), r"value -1 is out of range"),
]


@pytest.mark.parametrize("call,expect", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_only_mistakes(call, expect, no_compile):
    with pytest.raises(FrontierError) as err:
        call()
    assert "\n" not in str(err.value)
    assert re.search(expect, str(err.value)), str(err.value)


def test_run_sweep_out_path_errors_leave_nothing(tmp_path, no_compile):
    s = load_sweep_spec(OK_SPEC)
    k = make_kernel(s)
    (tmp_path / "exists.nc").write_text("keep me")
    for out, expect in [(tmp_path / "missing" / "o.nc", "does not exist"), (tmp_path / "exists.nc", "already exists"),
                        (tmp_path, "is a directory")]:
        with pytest.raises(FrontierError, match=expect):
            run_sweep(s, k, outputs_meta(), out, extra_coords=EXTRA_COORDS, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.nc"]
    assert (tmp_path / "exists.nc").read_text() == "keep me"


def test_unparseable_option_is_argparse_error_without_traceback(tmp_path):
    """argparse's own errors (a word where a number belongs) exit 2 with its usage line plus one error line."""
    res = subprocess.run([sys.executable, "-m", "frontier_jax.cli", *ev(isl="lots")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == "frontier eval: error: argument --isl: invalid float value: 'lots'"
    assert list(tmp_path.iterdir()) == []

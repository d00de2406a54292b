"""The wheel works: built from this checkout, installed into a fresh virtual environment, run from an empty folder.

The top-level `hardware/`, `models/` and `sweeps/` folders are mapped into the wheel as
`frontier_jax/_shipped/...` by setup.py; `frontier_jax/data/*` is ordinary package data. These tests build the wheel
(and an sdist, and a wheel from that sdist), check what they hold, install the wheel with `--no-deps --no-index`
into a venv that borrows jax & co. from this environment (`--system-site-packages`), and run the `frontier`
command of that venv where no checkout is in reach: `hardware list`, `models list`, `eval --json` and the default
sweep (which compiles a JAX program: about 30 s of the module's ~45 s on 2 cores).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SHIPPED_KINDS = ("hardware", "models", "sweeps")
# What a build must not see: VCS and tool folders, build outputs, caches, results.
_IGNORE = shutil.ignore_patterns(".*", "__pycache__", "*.egg-info", "build", "dist", "_shipped", "*.nc", "out",
                                 "reproduce_out")


def _run(cmd, *, cwd, env=None, timeout=300) -> subprocess.CompletedProcess:
    """Run cmd; on failure, fail the test with its output."""
    p = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {p.returncode} in {cwd}\n"
                    f"--- stdout\n{p.stdout[-4000:]}\n--- stderr\n{p.stderr[-4000:]}")
    return p


def _pip_wheel(src: Path, out: Path) -> Path:
    """Build one wheel from the source tree src into out, with this environment's setuptools (no download)."""
    from importlib.metadata import version
    major = int(version("setuptools").split(".")[0])
    if major < 77:  # pyproject.toml's build-system floor (SPDX license string)
        pytest.fail(f"setuptools {version('setuptools')} is too old to build the wheel; "
                    "`python3 -m pip install -e '.[test]'` brings setuptools>=77")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "--disable-pip-version-check", "-q", "-w", out, src.resolve()], cwd=src)  # a path, never a bare name
    wheels = sorted(out.glob("frontier_jax-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _expected_shipped() -> set[str]:
    """Wheel paths of the checkout's top-level catalogue, as mapped by setup.py."""
    return {f"frontier_jax/_shipped/{kind}/{p.name}" for kind in SHIPPED_KINDS
            for p in (REPO / kind).glob("*.toml")}


def _expected_data() -> set[str]:
    """Wheel paths of every file of frontier_jax/data."""
    return {f"frontier_jax/data/{p.relative_to(REPO / 'frontier_jax' / 'data').as_posix()}"
            for p in (REPO / "frontier_jax" / "data").rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory) -> Path:
    """The checkout's files, copied: pip builds in the source tree (build/, *.egg-info), so building from a copy
    leaves the repository untouched, cannot pick up a stale build/lib, and lets runs in parallel not collide."""
    src = tmp_path_factory.mktemp("src") / "frontier-jax"
    shutil.copytree(REPO, src, ignore=_IGNORE)
    return src


@pytest.fixture(scope="module")
def wheel(source_copy, tmp_path_factory) -> Path:
    """The wheel built from the copy of the checkout."""
    return _pip_wheel(source_copy, tmp_path_factory.mktemp("dist"))


def test_wheel_contents(wheel):
    """The wheel holds the package, its data, the mapped catalogue and the metadata; nothing else at its root."""
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = z.read(f"{dist_info}/METADATA").decode()
        entry_points = z.read(f"{dist_info}/entry_points.txt").decode()
    shipped = {n for n in names if n.startswith("frontier_jax/_shipped/")}
    assert shipped == _expected_shipped()
    assert {"frontier_jax/_shipped/hardware/h100-80gb-sxm.toml", "frontier_jax/_shipped/models/llama-3.1-8b.toml",
            "frontier_jax/_shipped/sweeps/default.toml"} <= shipped
    data = _expected_data()
    assert {"frontier_jax/data/calibration.json", "frontier_jax/data/published_claims.csv",
            "frontier_jax/data/README.md"} <= data
    assert data <= names, sorted(data - names)
    # every module, __init__.py-less folders included (frontier_jax/calibration is a namespace package)
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "frontier_jax").rglob("*.py")
               if "__pycache__" not in p.parts and "_shipped" not in p.parts}
    assert {"frontier_jax/__init__.py", "frontier_jax/resources.py", "frontier_jax/calibration/fit.py"} <= modules
    assert modules <= names, sorted(modules - names)
    # only the package: no top-level catalogue folders, tests or docs at the wheel's root
    assert {n.split("/")[0] for n in names} == {"frontier_jax", dist_info}
    assert "Requires-Python: >=3.11" in metadata
    for dist in ("jax", "jaxlib", "optax", "numpy", "xarray", "netcdf4", "pandas", "matplotlib", "tqdm"):
        assert f"Requires-Dist: {dist}" in metadata, dist
    assert "frontier = frontier_jax.cli:main" in entry_points
    assert not (REPO / "frontier_jax" / "_shipped").exists(), "the build must not write into the source tree"


def test_sdist_carries_the_catalogue(source_copy, tmp_path):
    """The sdist (PEP 517 build_sdist, straight from the setuptools backend) holds hardware/, models/, sweeps/ and
    setup.py, and a wheel built from it ships the same catalogue."""
    sdist_dir = tmp_path / "sdist"
    sdist_dir.mkdir()
    _run([sys.executable, "-c", "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))",
          sdist_dir], cwd=source_copy)
    (sdist,) = sdist_dir.glob("frontier_jax-*.tar.gz")
    with tarfile.open(sdist) as t:
        # the "data" filter exists from Python 3.11.4 (and 3.12) on
        t.extractall(tmp_path / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        members = {m.name.split("/", 1)[1] for m in t.getmembers() if "/" in m.name and m.isfile()}
    expected = {f"{kind}/{p.name}" for kind in SHIPPED_KINDS for p in (REPO / kind).glob("*.toml")}
    assert expected <= members, sorted(expected - members)
    assert {"setup.py", "pyproject.toml", "README.md", "MANIFEST.in"} <= members
    assert not any(m.startswith("frontier_jax/_shipped/") for m in members)
    (root,) = (tmp_path / "unpacked").iterdir()
    with zipfile.ZipFile(_pip_wheel(root, tmp_path / "dist")) as z:
        names = set(z.namelist())
    assert {n for n in names if n.startswith("frontier_jax/_shipped/")} == _expected_shipped()
    assert _expected_data() <= names


def test_installed_wheel_runs_outside_the_checkout(wheel, tmp_path):
    """Installed into a fresh venv, the wheel's own `frontier` lists, evaluates and sweeps from an empty folder."""
    venv = tmp_path / "venv"
    # --system-site-packages: jax, numpy, xarray... come from this environment. --without-pip: this environment's
    # pip (visible through the system site-packages) installs into the venv when run by the venv's python, which
    # saves the ~5 s of ensurepip.
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], cwd=tmp_path)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    frontier = bindir / ("frontier.exe" if os.name == "nt" else "frontier")

    empty = tmp_path / "empty"  # no hardware/, models/ or sweeps/ here: only the shipped copies can answer
    empty.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH", "VIRTUAL_ENV",
                        "FRONTIER_JAX_PATH", "MPLCONFIGDIR"} and not k.startswith("PIP_")}
    env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "cache"), FRONTIER_JAX_CACHE="off",
               PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PATH=os.pathsep.join([str(bindir), env.get("PATH", "")]))

    # --ignore-installed: this environment may hold frontier-jax already (the editable install of the checkout);
    # pip must neither call that "already satisfied" nor try to uninstall it from outside the venv.
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", wheel],
         cwd=empty, env=env)
    assert frontier.exists()

    # The editable install of the checkout in the system site-packages adds a finder to sys.meta_path (after the
    # path-based finder) and a path hook; the venv's site-packages precedes the system one on sys.path, so the
    # venv's copy must win. Checked, not assumed: the package, its shipped catalogue and its data are the venv's.
    probe = ("import json, frontier_jax; from frontier_jax import resources; print(json.dumps("
             "[frontier_jax.__file__] + [str(resources.shipped_dir(k)) for k in resources.SHIPPED_KINDS] "
             "+ [str(resources.data_file('calibration.json'))]))")
    paths = [Path(p).resolve() for p in json.loads(_run([python, "-c", probe], cwd=empty, env=env).stdout)]
    for p in paths:
        assert p.is_relative_to(venv.resolve()), f"{p} is not inside the venv {venv}"
        assert not p.is_relative_to(REPO), p
        assert p.exists(), p

    out = _run([frontier, "hardware", "list"], cwd=empty, env=env).stdout
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert {"a100-80gb-sxm", "h100-80gb-sxm", "h200-141gb-sxm"} <= listed, out

    out = _run([frontier, "models", "list"], cwd=empty, env=env).stdout
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert {p.stem for p in (REPO / "models").glob("*.toml")} <= listed, out

    out = _run([frontier, "eval", "--hardware", "h100-80gb-sxm", "--model", "llama-3.1-8b", "--isl", "2048",
                "--osl", "256", "--ttft", "1", "--tpot", "0.05", "--json"], cwd=empty, env=env).stdout
    result = json.loads(out)
    costs = {arch: r["cost_per_mtok"] for arch, r in result.items() if isinstance(r, dict) and "cost_per_mtok" in r}
    assert costs, out
    assert any(math.isfinite(c) and c > 0 for c in costs.values()), costs

    out = _run([frontier], cwd=empty, env=env, timeout=600).stdout  # the default sweep (shipped sweeps/default.toml)
    nc = empty / "default.nc"
    assert nc.is_file(), f"no default.nc in {empty}: {sorted(p.name for p in empty.iterdir())}\n{out}"
    import xarray as xr
    with xr.open_dataset(nc) as ds:
        assert "best_arch" in ds
        assert ds["best_arch"].size > 0

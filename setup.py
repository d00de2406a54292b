"""Build hook: ship the top-level `hardware/`, `models/` and `sweeps/` folders inside the wheel.

All metadata lives in pyproject.toml; this file only adds a `build_py` step. The three folders stay at the
repository's top level (the user's layout) and are copied at build time into the build tree as
`frontier_jax/_shipped/{hardware,models,sweeps}/*.toml`, where `frontier_jax.resources.shipped_dir` finds them in
an installed wheel. Editable installs copy nothing: there `shipped_dir` falls back to the checkout's folders, and the
source tree never gets a `frontier_jax/_shipped` folder.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED_KINDS = ("hardware", "models", "sweeps")  # as frontier_jax.resources.SHIPPED_KINDS
SHIPPED_PATTERN = "*.toml"


def shipped_files() -> list[tuple[Path, Path]]:
    """(source, path relative to the build root) for every file mapped into frontier_jax/_shipped."""
    pairs = []
    for kind in SHIPPED_KINDS:
        src_dir = ROOT / kind
        if not src_dir.is_dir():
            raise FileNotFoundError(f"{src_dir} is missing: the wheel must ship the {kind} catalogue")
        files = sorted(p for p in src_dir.glob(SHIPPED_PATTERN) if p.is_file())
        if not files:
            raise FileNotFoundError(f"no {SHIPPED_PATTERN} in {src_dir}: the wheel must ship the {kind} catalogue")
        pairs += [(p, Path("frontier_jax", "_shipped", kind, p.name)) for p in files]
    return pairs


class BuildPyWithShipped(build_py):
    """build_py, then copy hardware/, models/ and sweeps/ into <build_lib>/frontier_jax/_shipped/."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # editable install: the checkout's top-level folders are read in place
        shipped = Path(self.build_lib, "frontier_jax", "_shipped")
        if shipped.is_dir():
            shutil.rmtree(shipped)  # a file removed from the checkout must not linger in a reused build/ folder
        for src, rel in shipped_files():
            dst = Path(self.build_lib) / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        """The package's outputs plus the copied catalogue files (what `install --record` lists)."""
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            outputs += [str(Path(self.build_lib) / rel) for _, rel in shipped_files()]
        return outputs


setup(cmdclass={"build_py": BuildPyWithShipped})

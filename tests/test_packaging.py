"""The wheel: what it installs, under which names, with which declared dependencies.

The wheel is built once per module from a copy of the sources (an in-tree build would reuse a
stale ``build/`` folder), with the installed setuptools and no network.
"""

from __future__ import annotations

import ast
import email
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "teacherstudent", "cli", "benchmarks", "analysis"]
OWN = {"teacherstudent", "teacherstudent_cli", "teacherstudent_benchmarks", "teacherstudent_analysis", "conftest"}
OWN |= {p.stem for p in (ROOT / "tests").glob("test_*.py")}  # a test module may reuse another's checks (test_extensions.py)
IMPORT_NAMES = {"sklearn": "scikit-learn", "typer": "typer", "PIL": "pillow"}  # import name -> distribution


def _req_name(req: str) -> str:
    for sep in "<>=!~;[ ":
        req = req.split(sep)[0]
    return req.strip().lower()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif path.exists():
            shutil.copy2(path, src / name)
    dist = tmp_path_factory.mktemp("dist")
    res = subprocess.run([sys.executable, "-c", f"from setuptools import build_meta as b; print(b.build_wheel({str(dist)!r}))"],
                         cwd=src, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return dist / res.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def names(wheel) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


def _dist_info(wheel: Path, names: list[str], file: str) -> str:
    [path] = [n for n in names if n.endswith(f".dist-info/{file}")]
    with zipfile.ZipFile(wheel) as z:
        return z.read(path).decode()


def test_wheel_installs_the_project_names_only(names):
    for path in ["teacherstudent/__init__.py", "teacherstudent/runtime.py", "teacherstudent_cli/main.py",
                 "teacherstudent_cli/probe.py", "teacherstudent_benchmarks/suite.py", "teacherstudent_analysis/__init__.py"]:
        assert path in names, path
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"teacherstudent", "teacherstudent_cli", "teacherstudent_benchmarks", "teacherstudent_analysis"}, tops


def test_every_module_of_the_library_is_in_the_wheel(names):
    """The package list in pyproject.toml is written by hand: a new subpackage must be added there."""
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "teacherstudent").rglob("*.py")}
    missing = source - set(names)
    assert not missing, f"not in the wheel (add the subpackage to [tool.setuptools] packages): {sorted(missing)}"
    for folder, package in [("cli", "teacherstudent_cli"), ("benchmarks", "teacherstudent_benchmarks"),
                            ("analysis/figures", "teacherstudent_analysis/figures")]:
        for p in (ROOT / folder).glob("*.py"):
            assert f"{package}/{p.name}" in names, p


def test_named_experiments_ship_with_their_configs(names):
    experiments = sorted(p.stem for p in (ROOT / "analysis").glob("*.toml"))
    assert experiments, "no named experiments in analysis/"
    for name in experiments:
        assert f"teacherstudent_analysis/{name}.py" in names and f"teacherstudent_analysis/{name}.toml" in names, name


def test_metadata_entry_point_and_dependencies(wheel, names):
    meta = email.message_from_string(_dist_info(wheel, names, "METADATA"))
    assert meta["Requires-Python"] == ">=3.11"
    assert meta["License-Expression"] == "MIT"
    assert meta["Version"] == PYPROJECT["project"]["version"]
    requires = {_req_name(r) for r in meta.get_all("Requires-Dist")}
    assert {"torch", "numpy", "pandas", "matplotlib", "seaborn", "typer", "rich"} <= requires
    assert any(r.startswith("hypothesis") and "extra == \"test\"" in r for r in meta.get_all("Requires-Dist"))
    entry = _dist_info(wheel, names, "entry_points.txt")
    assert "teacherstudent = teacherstudent_cli.main:main" in entry


def _imports(paths) -> set[str]:
    out = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                out.add(node.module.split(".")[0])
    return out - set(sys.stdlib_module_names) - OWN - {"__future__"}


def test_every_imported_package_is_declared():
    project = PYPROJECT["project"]
    declared = {_req_name(r) for r in project["dependencies"]}
    shipped = [p for d in ("teacherstudent", "cli", "benchmarks", "analysis") for p in (ROOT / d).rglob("*.py")]
    undeclared = {IMPORT_NAMES.get(m, m).lower() for m in _imports(shipped)} - declared
    assert not undeclared, f"imported by the package but not in [project] dependencies: {sorted(undeclared)}"
    test_deps = declared | {_req_name(r) for r in project["optional-dependencies"]["test"]}
    undeclared = {IMPORT_NAMES.get(m, m).lower() for m in _imports((ROOT / "tests").glob("*.py"))} - test_deps
    assert not undeclared, f"imported by the tests but not declared (add to the test extra): {sorted(undeclared)}"


def test_installed_wheel_finds_its_named_experiments(wheel, tmp_path):
    """Outside any checkout, default_root() is the installed teacherstudent_analysis package."""
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(target)  # what an installer puts in site-packages (no scripts in this wheel's data)
    code = ("import teacherstudent.experiments as e, teacherstudent_cli.main\n"
            f"assert e.__file__.startswith({str(target)!r}), e.__file__\n"
            "root = e.default_root()\n"
            f"assert str(root).startswith({str(target)!r}), root\n"
            "names = e.list_experiments()\n"
            "assert 'strength_decay' in names and names['strength_decay'], names\n"
            "print(root)\n")
    env = {**os.environ, "PYTHONPATH": str(target)}
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("teacherstudent_analysis")

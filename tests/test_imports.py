"""The package's import graph: every module imports on its own, no cycles, config is its own layer.

The graph is built with ``ast`` from the top-level imports of every module, those under
``if TYPE_CHECKING:`` included (a type a module names is a dependency too); imports inside
functions are not edges (they run when called: ``config/registries.py`` reaches the
registries that way).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import teacherstudent

PACKAGE = Path(teacherstudent.__file__).parent


def modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    out = []
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            out += [n for n in node.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        elif isinstance(node, ast.Try):
            out += [n for n in node.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
    return out


def import_graph() -> dict[str, set[str]]:
    """``{module: the package modules it imports at its top level}``."""
    mods = modules()
    graph = {}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        deps = set()
        for node in _top_level_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in mods}
                continue
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            for a in node.names:  # `from pkg import sub` imports the submodule; `from mod import name`, mod
                deps.add(f"{src}.{a.name}" if f"{src}.{a.name}" in mods else src)
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_imports_it_should():
    g = import_graph()
    assert "teacherstudent.config.loading" in g["teacherstudent.config"]
    assert "teacherstudent.config.experiment" in g["teacherstudent.config.loading"]
    assert "teacherstudent.probes.report" in g["teacherstudent.probes.lottery"]  # `from . import report`
    assert "teacherstudent.probes" not in g["teacherstudent.probes.lottery"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_config_imports_no_implementation_module():
    """The config package is a layer of its own: at its top level it imports only itself and
    the dependency-free helpers (errors, the registry's error, where presets live)."""
    allowed = {"teacherstudent.errors", "teacherstudent.registry", "teacherstudent.preset"}
    g = import_graph()
    for name, deps in g.items():
        if name == "teacherstudent.config" or name.startswith("teacherstudent.config."):
            bad = {d for d in deps if not d.startswith("teacherstudent.config") and d not in allowed}
            assert not bad, f"{name} imports {sorted(bad)}"
    for helper in allowed:
        assert g[helper] <= allowed, f"{helper} imports {sorted(g[helper] - allowed)}"


def test_every_module_imports_alone_and_config_pulls_in_nothing():
    """One interpreter: each module imported with every teacherstudent module removed from
    ``sys.modules`` first, as if it were the first import (third-party modules stay loaded)."""
    names = sorted(modules())
    code = f"""
import importlib, sys
failed = []
for name in {names!r}:
    for m in [m for m in sys.modules if m == "teacherstudent" or m.startswith(("teacherstudent.", "teacherstudent_"))]:
        del sys.modules[m]
    try:
        importlib.import_module(name)
    except Exception as err:
        failed.append(f"{{name}}: {{type(err).__name__}}: {{err}}")
    if name == "teacherstudent.config":
        loaded = sorted(m for m in sys.modules if m.startswith("teacherstudent.") and not m.startswith("teacherstudent.config"))
        if loaded != ["teacherstudent.errors", "teacherstudent.preset", "teacherstudent.registry"]:
            failed.append(f"importing teacherstudent.config loaded {{loaded}}")
        cfg = importlib.import_module(name).load_config(overrides=["training.optimizer=adam"])  # the registries load here
        if "teacherstudent.train" not in sys.modules or cfg.training.optimizer != "adam":
            failed.append("validating a config did not consult teacherstudent.train")
print("\\n".join(failed))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "", res.stdout

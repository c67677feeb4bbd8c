"""The layers of ARCHITECTURE.md as a checked contract: imports point downwards only, packages of
one layer do not import each other, and no two modules import each other through any chain.

The import graph is read from the source (``ast``), imports inside functions and under
``TYPE_CHECKING`` included: a lazy import is still a dependency. The synthetic packages below
prove the check fails on an upward import, a sideways import and a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GEOSEG = Path(__file__).resolve().parents[1] / "geoseg"

#: Top to bottom; ``|`` separates packages of one layer that must not import each other. A module
#: belongs to the longest prefix listed (``geoseg.methods.training`` before ``geoseg.methods``);
#: ``geoseg`` alone is the lazy facade ``geoseg/__init__.py``.
LAYERS = (
    "geoseg | geoseg.cli",
    "geoseg.run",
    "geoseg.methods.training",
    "geoseg.methods | geoseg.vector | geoseg.accuracy",
    "geoseg.samples",
    "geoseg.io",
    "geoseg._kernels",
    "geoseg.geo | geoseg.legend | geoseg.errors | geoseg.options | geoseg.heap | geoseg.progress",
)


def module_names(package: Path) -> dict[str, Path]:
    """Dotted name of every module under ``package`` (a package is its ``__init__``)."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def import_graph(package: Path) -> dict[str, set[str]]:
    """``module -> modules of the same package it imports`` (``from pkg import sub`` names ``pkg.sub``)."""
    modules = module_names(package)
    root = package.name
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if is_pkg else name.split(".")[:-1]
                    here = here[: len(here) - node.level + 1]
                    base = ".".join(here + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                while t and t not in modules:  # ``import geoseg.io.scene.x``: the module it lives in
                    t = t.rpartition(".")[0]
                if t and t != name and (t == root or t.startswith(root + ".")):
                    graph[name].add(t)
    return graph


def layer_of(module: str, layers: tuple[str, ...]) -> tuple[int, str] | None:
    """(layer index from the top, the package of that layer) of the longest matching prefix."""
    best: tuple[int, str] | None = None
    for i, layer in enumerate(layers):
        for pkg in (p.strip() for p in layer.split("|")):
            root_only = "." not in pkg and module == pkg
            if (root_only or ("." in pkg and (module == pkg or module.startswith(pkg + ".")))) and (
                best is None or len(pkg) > len(best[1])
            ):
                best = (i, pkg)
    return best


def layer_violations(graph: dict[str, set[str]], layers: tuple[str, ...]) -> list[str]:
    """Imports that go up a layer or sideways to another package of the same layer; modules in no layer."""
    problems = []
    for src in sorted(graph):
        a = layer_of(src, layers)
        if a is None:
            problems.append(f"{src} is in no layer")
            continue
        for dst in sorted(graph[src]):
            b = layer_of(dst, layers)
            if b is None or b[1] == a[1] or b[0] > a[0]:
                continue
            how = "upward" if b[0] < a[0] else "sideways"
            problems.append(f"{src} -> {dst} ({how})")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def without_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph without edges into a package's ``__init__`` from its own modules: importing
    ``geoseg.io.scene`` runs ``geoseg/io/__init__.py`` first, which is no cycle of ours to fix."""
    return {src: {d for d in dsts if not src.startswith(d + ".")} for src, dsts in graph.items()}


def test_geoseg_imports_follow_the_layers() -> None:
    graph = import_graph(GEOSEG)
    assert len(graph) > 80 and sum(map(len, graph.values())) > 200  # the walk found the package
    assert layer_violations(graph, LAYERS) == []


def test_geoseg_has_no_import_cycle() -> None:
    assert cycles(without_package_inits(import_graph(GEOSEG))) == []


def test_architecture_names_every_module() -> None:
    """ARCHITECTURE.md names every module (by file name, e.g. ``storage.py``, or dotted, ``io.storage``)."""
    text = (GEOSEG.parent / "ARCHITECTURE.md").read_text()
    unnamed = [
        name for name, path in module_names(GEOSEG).items()
        if path.name != "__init__.py" and path.name not in text and name.removeprefix("geoseg.") not in text
    ]
    assert unnamed == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


SYNTHETIC_LAYERS = ("pkg.run", "pkg.methods | pkg.vector", "pkg.io")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"methods/fit.py": "def f():\n    from pkg.run.jobs import Job\n"}, ["pkg.methods.fit -> pkg.run.jobs (upward)"]),
        ({"methods/fit.py": "from ..run import jobs\n"}, ["pkg.methods.fit -> pkg.run.jobs (upward)"]),
        ({"methods/fit.py": "import pkg.vector.gpkg.x as g\n"}, ["pkg.methods.fit -> pkg.vector.gpkg (sideways)"]),
        ({"io/read.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.methods import fit\n"},
         ["pkg.io.read -> pkg.methods.fit (upward)"]),
        ({"cli.py": ""}, ["pkg.cli is in no layer"]),
        ({"run/go.py": "from pkg.methods.fit import f\nfrom pkg.io import read\n"}, []),  # downwards: fine
    ],
)
def test_layer_check_fails_on_a_bad_import(tmp_path: Path, files: dict[str, str], expected: list[str]) -> None:
    base = {"__init__.py": "", "run/__init__.py": "", "run/jobs.py": "", "run/go.py": "",
            "methods/__init__.py": "", "methods/fit.py": "f = 1\n", "vector/__init__.py": "",
            "vector/gpkg.py": "", "io/__init__.py": "", "io/read.py": ""}
    graph = import_graph(_package(tmp_path, {**base, **files}))
    problems = [p for p in layer_violations(graph, SYNTHETIC_LAYERS) if p != "pkg is in no layer"]
    assert problems == expected


def test_cycle_check_finds_a_cycle_through_a_lazy_import(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "", "io/__init__.py": "from pkg.io import a\n",
        "io/a.py": "from pkg.io.b import g\n",
        "io/b.py": "def g():\n    from pkg.io import c\n",
        "io/c.py": "import pkg.io.a\n",
        "io/d.py": "from pkg.io import a\n",
    })
    graph = without_package_inits(import_graph(root))
    assert cycles(graph) == [["pkg.io.a", "pkg.io.b", "pkg.io.c"]]
    assert cycles({k: v - {"pkg.io.a"} if k == "pkg.io.c" else v for k, v in graph.items()}) == []

#!/usr/bin/env python
"""Import cycles of the project's own packages (synth, classifiers): between packages and between files.

    python tools/import_graph.py            # report cycles; exit status 1 if there are any
    python tools/import_graph.py --graph    # also print the package dependency graph

Every ``import`` and ``from ... import`` of every module counts, wherever it stands: at module
level, inside a function or method (the lazy imports that keep ``synth --help`` fast), under
``try``.  Only imports under ``if TYPE_CHECKING:`` are left out (they never run).  Names
resolved at run time by :func:`synth.utils.lazy.lazy_exports` (``importlib`` with a computed
name) are not imports this script can see.

``from a.b import c`` is an edge to module ``a.b.c`` when that is a module of the project,
else to ``a.b`` (``c`` is a name defined there).  Importing ``a.b.c`` also runs ``a/__init__``
and ``a/b/__init__``; those implicit edges are not counted, or every package that re-exports
its submodules would be a cycle.

Two reports:

* **package cycles**: modules are grouped by package, ``synth.<subpackage>`` (``synth.data``,
  ``synth.training`` ...; a top-level module such as ``synth.conditions`` or ``synth.cli`` is
  its own group) and ``classifiers`` as a whole; a cycle is a strongly connected component of
  more than one group.  Each is listed with the imports that make it up.
* **file cycles**: strongly connected components of more than one module.

``LAYERS`` below is the intended order of the groups, lowest first (read off the imports
and the README's layout section): a group may import from its own layer and the layers
below.  ``--layers`` also reports imports that go upwards; they are warnings, and change the
exit status only with ``--strict-layers``.

Standard library only (ast, pathlib, argparse), so it runs before the project is installed.
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("synth", "classifiers")
# Packages whose subpackages (and top-level modules) are separate groups in the package report.
SPLIT = ("synth",)

# The intended layers, lowest first (the imports as they are, and the README's layout section).
# training sits above synthesis and quality: its monitor renders grids with the synthesis engine
# and scores G_ema with the quality judges while it trains.  cli_errors is the shared error
# formatting every subpackage's cli.py uses.  A group missing here is not checked by --layers.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("synth", "synth.errors"),
    ("synth.utils",),
    ("synth.conditions", "synth.cli_errors"),
    ("synth.data",),
    ("synth.networks", "classifiers"),
    ("synth.synthesis",),
    ("synth.quality",),
    ("synth.training",),
    ("synth.ablation",),
    ("synth.cli", "synth.__main__"),
)


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported module
    line: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line} -> {self.target}"


# ----------------------------------------------------------------------------------------
# modules and their imports


def find_modules(root: Path, packages: Sequence[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of ``packages`` under ``root`` (folders
    without ``__init__.py`` are not packages and are skipped, with everything below them)."""
    modules: dict[str, Path] = {}
    for pkg in packages:
        top = root / pkg
        if not (top / "__init__.py").is_file():
            raise SystemExit(f"import_graph: {top} is not a package (no __init__.py)")
        stack = [top]
        while stack:
            d = stack.pop()
            parts = d.relative_to(root).parts
            for p in sorted(d.iterdir()):
                if p.is_dir() and (p / "__init__.py").is_file():
                    stack.append(p)
                elif p.is_file() and p.suffix == ".py":
                    name = ".".join(parts if p.stem == "__init__" else (*parts, p.stem))
                    modules[name] = p
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree`` at any depth, except the body of ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` or its longest prefix that is a module of the project."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        cand = ".".join(parts[:n])
        if cand in modules:
            return cand
    return None


def module_imports(name: str, path: Path, modules: dict[str, Path]) -> list[Edge]:
    """The project modules that module ``name`` (file ``path``) imports."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as e:
        raise SystemExit(f"import_graph: {path}: cannot parse ({e.msg}, line {e.lineno})") from None
    is_pkg = path.stem == "__init__"
    edges: list[Edge] = []
    for node in _import_nodes(tree):
        targets: list[str | None] = []
        if isinstance(node, ast.Import):
            targets = [_known(a.name, modules) for a in node.names]
        else:
            if node.level:
                base_parts = name.split(".") if is_pkg else name.split(".")[:-1]
                if node.level > 1:
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for a in node.names:
                sub = f"{base}.{a.name}"
                targets.append(sub if sub in modules else _known(base, modules))
        for t in targets:
            if t is not None and t != name:
                edges.append(Edge(name, t, node.lineno))
    return edges


def build_graph(root: Path, packages: Sequence[str]) -> tuple[dict[str, Path], list[Edge]]:
    modules = find_modules(root, packages)
    edges = [e for name, path in modules.items() for e in module_imports(name, path, modules)]
    return modules, edges


def group_of(module: str, split: Sequence[str] = SPLIT) -> str:
    """The package group of a module: ``synth.data.atlas.faces`` -> ``synth.data``,
    ``synth.cli`` -> ``synth.cli``, ``synth`` -> ``synth``, ``classifiers.cv`` -> ``classifiers``."""
    parts = module.split(".")
    if parts[0] in split:
        return ".".join(parts[:2])
    return parts[0]


# ----------------------------------------------------------------------------------------
# cycles


def strongly_connected(nodes: Iterable[str], succ: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted, only those of > 1 node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(succ.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(succ.get(w, ())))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def shortest_cycle(component: Sequence[str], succ: dict[str, set[str]]) -> list[str]:
    """One shortest cycle through the first node of ``component`` (breadth-first), for the report."""
    members = set(component)
    start = component[0]
    prev: dict[str, str] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(succ.get(v, ())):
                if w not in members:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [*reversed(path), start]
                if w not in seen:
                    seen.add(w)
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return [start]


@dataclass
class Report:
    modules: dict[str, Path]
    edges: list[Edge]
    package_cycles: list[list[str]]
    file_cycles: list[list[str]]
    package_succ: dict[str, set[str]]
    file_succ: dict[str, set[str]]

    @property
    def has_cycles(self) -> bool:
        return bool(self.package_cycles or self.file_cycles)


def analyse(root: Path, packages: Sequence[str] = PACKAGES, split: Sequence[str] = SPLIT) -> Report:
    modules, edges = build_graph(root, packages)
    file_succ: dict[str, set[str]] = defaultdict(set)
    pkg_succ: dict[str, set[str]] = defaultdict(set)
    for e in edges:
        file_succ[e.source].add(e.target)
        a, b = group_of(e.source, split), group_of(e.target, split)
        if a != b:
            pkg_succ[a].add(b)
    groups = {group_of(m, split) for m in modules}
    return Report(modules, edges, strongly_connected(groups, pkg_succ), strongly_connected(modules, file_succ),
                  dict(pkg_succ), dict(file_succ))


def layer_violations(report: Report, layers: Sequence[Sequence[str]] = LAYERS,
                     split: Sequence[str] = SPLIT) -> list[Edge]:
    """Imports from a group to a group of a higher layer (groups missing from ``layers`` are not checked)."""
    rank = {g: i for i, layer in enumerate(layers) for g in layer}
    out = []
    for e in set(report.edges):
        a, b = group_of(e.source, split), group_of(e.target, split)
        if a in rank and b in rank and rank[b] > rank[a]:
            out.append(e)
    return sorted(out, key=lambda e: (e.source, e.line, e.target))


# ----------------------------------------------------------------------------------------
# report


def format_report(report: Report, split: Sequence[str] = SPLIT, graph: bool = False) -> list[str]:
    lines = [f"{len(report.modules)} modules, {len(report.edges)} imports "
             f"({len({(e.source, e.target) for e in report.edges})} distinct module edges)"]
    if graph:
        lines.append("package graph:")
        for g in sorted(report.package_succ):
            lines.append(f"  {g} -> {', '.join(sorted(report.package_succ[g]))}")
    edges = sorted(set(report.edges), key=lambda e: (e.source, e.line, e.target))
    by_package = {e: (group_of(e.source, split), group_of(e.target, split)) for e in edges}
    for kind, comps, succ, ends in (
        ("package", report.package_cycles, report.package_succ, lambda e: by_package[e]),
        ("file", report.file_cycles, report.file_succ, lambda e: (e.source, e.target)),
    ):
        if not comps:
            lines.append(f"{kind} cycles: none")
        for comp in comps:
            members = set(comp)
            lines.append(f"{kind} cycle: {' -> '.join(shortest_cycle(comp, succ))}  (component of {len(comp)}: "
                         f"{', '.join(comp)})")
            for e in edges:  # the imports that make the cycle, with their lines
                a, b = ends(e)
                if a != b and a in members and b in members:
                    lines.append(f"    {e}" if kind == "file" else f"    {a} -> {b}: {e}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="import_graph.py",
        description="Report import cycles between the project's packages (synth.<subpackage>, classifiers) and "
                    "between its files, counting module-level and function-level imports. Exit status 1 if there "
                    "is any cycle (or, with --strict-layers, an import against LAYERS).",
    )
    ap.add_argument("--root", type=Path, default=ROOT, help="repository root holding the packages [default: %(default)s]")
    ap.add_argument("--package", action="append", dest="packages", metavar="NAME",
                    help=f"a top-level package to analyse; repeat for several [default: {', '.join(PACKAGES)}]")
    ap.add_argument("--split", action="append", metavar="NAME",
                    help=f"a package whose subpackages are separate groups [default: {', '.join(SPLIT)}]")
    ap.add_argument("--graph", action="store_true", help="also print the package dependency graph")
    ap.add_argument("--layers", action="store_true", help="also list imports that go up the declared LAYERS")
    ap.add_argument("--strict-layers", action="store_true", help="like --layers, and exit 1 on any such import")
    args = ap.parse_args(argv)
    packages = tuple(args.packages or PACKAGES)
    split = tuple(args.split if args.split is not None else [p for p in SPLIT if p in packages])
    report = analyse(args.root.resolve(), packages, split)
    for line in format_report(report, split, graph=args.graph):
        print(line)
    bad_layers = False
    if args.layers or args.strict_layers:
        ups = layer_violations(report, split=split)
        print(f"imports against the layer order: {len(ups) or 'none'}")
        for e in ups:
            print(f"    {group_of(e.source, split)} -> {group_of(e.target, split)}: {e}")
        bad_layers = bool(ups) and args.strict_layers
    return 1 if report.has_cycles or bad_layers else 0


if __name__ == "__main__":
    sys.exit(main())

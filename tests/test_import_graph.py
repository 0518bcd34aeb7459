"""tools/import_graph.py: the project's import graph has no cycles, and a cycle is found when there is one."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "import_graph.py"

# File cycles the repository has today, each sorted.  Remove an entry once its cycle is gone
# (the test fails until then, so the list cannot go stale); never add one to make a new
# cycle pass.
KNOWN_FILE_CYCLES: list[list[str]] = []


def _tool():
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_help():
    r = _run("--help")
    assert r.returncode == 0 and "cycle" in r.stdout and "--root" in r.stdout


def test_repository_has_no_import_cycles():
    g = _tool()
    report = g.analyse(ROOT)
    assert {"synth.data.dataset", "synth.ablation.runner", "classifiers.train"} <= set(report.modules)
    lines = "\n".join(g.format_report(report))
    assert report.package_cycles == [], lines
    new = [c for c in report.file_cycles if c not in KNOWN_FILE_CYCLES]
    gone = [c for c in KNOWN_FILE_CYCLES if c not in report.file_cycles]
    assert not new, f"new import cycle between files:\n{lines}"
    assert not gone, f"fixed cycle(s) {gone}: remove them from KNOWN_FILE_CYCLES"
    ups = g.layer_violations(report)
    assert not ups, "imports against import_graph.LAYERS:\n" + "\n".join(map(str, ups))


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


FIXTURE = {
    "pkg/__init__.py": "",
    "pkg/low/__init__.py": "",
    "pkg/low/a.py": "import os\n\n\ndef late():\n    from pkg.high import b  # function-level: counts too\n\n    return b\n",
    "pkg/high/__init__.py": "from .b import VALUE  # noqa: F401\n",
    "pkg/high/b.py": "from ..low import a  # relative, module-level\n\nVALUE = 1\n",
    "pkg/high/c.py": "import pkg.low.a\nfrom pkg.high import b\n",
    "pkg/notapackage/x.py": "import pkg.high.c\n",  # no __init__.py: not part of the project
}


def test_a_cycle_in_a_fixture_package_is_found(tmp_path):
    _write(tmp_path, FIXTURE)
    r = _run("--root", str(tmp_path), "--package", "pkg", "--split", "pkg")
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    assert "package cycle: pkg.high -> pkg.low -> pkg.high" in out
    assert "file cycle: pkg.high.b -> pkg.low.a -> pkg.high.b" in out
    assert "pkg.low.a:5 -> pkg.high.b" in out and "pkg.high.b:1 -> pkg.low.a" in out
    assert "pkg.notapackage" not in out
    # pkg.high.c imports both but nothing imports it: not part of the cycle
    assert "pkg.high.c" not in out.split("file cycle:")[1]


def test_no_cycle_once_the_late_import_is_type_only(tmp_path):
    files = dict(FIXTURE)
    files["pkg/low/a.py"] = ("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from pkg.high import b  # never runs\n")
    _write(tmp_path, files)
    r = _run("--root", str(tmp_path), "--package", "pkg", "--split", "pkg", "--graph")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "package cycles: none" in r.stdout and "file cycles: none" in r.stdout
    assert "pkg.high -> pkg.low" in r.stdout

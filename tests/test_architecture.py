"""Architecture rules over the source tree: pure (no Ceph, no VM), and nothing of
the packages under test is imported (their files are parsed with ast).

- no import cycle among the modules of tcmu_rbd, targetcli_ext and tcmu_rbd_lab
  (module-level and function-level imports, absolute and relative);
- the gateway packages (tcmu_rbd, targetcli_ext) never import the lab or the tests;
- no file over MAX_LINES lines in tcmu_rbd/, targetcli_ext/, lab/, native/, tests/,
  scripts/ (files git ignores, such as build output, do not count);
- every Python module opens with a docstring, every C file in native/ with a comment;
- the main distribution's packages (pyproject.toml's find include) leave the lab out.

The checkers are plain functions of a root directory, so each is also run on a
small synthetic tree (tmp_path) to show it catches what it is meant to.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import setuptools

REPO = Path(__file__).resolve().parents[1]
#: package name -> its directory, relative to the root
PACKAGES = {"tcmu_rbd": "tcmu_rbd", "targetcli_ext": "targetcli_ext",
            "tcmu_rbd_lab": "lab/tcmu_rbd_lab"}
GATEWAY = ("tcmu_rbd", "targetcli_ext")
LAB = "tcmu_rbd_lab"
SIZE_CHECKED_DIRS = ("tcmu_rbd", "targetcli_ext", "lab", "native", "tests", "scripts")
MAX_LINES = 600


# --- the tree ------------------------------------------------------------------------

def source_files(root: Path, dirs=SIZE_CHECKED_DIRS) -> list[Path]:
    """The files under ``dirs`` that belong to the source: git's view (tracked and
    untracked, ignored ones left out) where the root is a checkout, else a walk
    that skips caches, egg-info and binary files."""
    r = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                        "--exclude-standard", "--", *dirs], capture_output=True)
    if r.returncode == 0 and r.stdout:
        paths = {root / p.decode() for p in r.stdout.split(b"\0") if p}
    else:
        paths = set()
        for d in dirs:
            for dirpath, dirnames, filenames in os.walk(root / d):
                dirnames[:] = [n for n in dirnames if n != "__pycache__"
                               and not n.endswith(".egg-info") and not n.startswith(".")]
                paths.update(Path(dirpath) / f for f in filenames)
    return sorted(p for p in paths if p.is_file() and not _binary(p))


def _binary(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\0" in f.read(8192)


def modules(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py of the packages."""
    out = {}
    for pkg, rel in packages.items():
        base = root / rel
        for path in sorted(base.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = [pkg, *path.relative_to(base).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


# --- imports -----------------------------------------------------------------------

@dataclass(frozen=True)
class Import:
    target: str  # dotted name as written, relative imports resolved
    line: int
    in_function: bool


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self, package: str):
        self.package = package  # what a one-dot relative import is relative to
        self.found: list[Import] = []
        self._depth = 0

    def _nested(self, node):
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _nested

    def _add(self, target: str, node) -> None:
        self.found.append(Import(target, node.lineno, self._depth > 0))

    def visit_Import(self, node):
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node):
        if node.level:
            up = self.package.split(".")
            if node.level - 1 >= len(up):
                return  # beyond the top package: Python refuses it anyway
            base = ".".join(up[:len(up) - (node.level - 1)])
            base = f"{base}.{node.module}" if node.module else base
        else:
            base = node.module or ""
        for alias in node.names:
            # "from a import b": b may be a module (a.b) or a name in a
            self._add(f"{base}.{alias.name}" if alias.name != "*" else base, node)

    def visit_Call(self, node):
        # importlib.import_module("x") / __import__("x") with a literal name
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
        if name in ("import_module", "__import__") and node.args and \
                isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            self._add(node.args[0].value, node)
        self.generic_visit(node)


def imports_of(name: str, path: Path) -> list[Import]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    v = _ImportVisitor(package)
    v.visit(ast.parse(path.read_text(), str(path)))
    return v.found


def resolve(target: str, known) -> str | None:
    """The module an import target names: the longest known prefix of it."""
    parts = target.split(".")
    for n in range(len(parts), 0, -1):
        cand = ".".join(parts[:n])
        if cand in known:
            return cand
    return None


def extension_modules(root: Path, packages=PACKAGES) -> set[str]:
    """Compiled modules built into the packages (tcmu_rbd._native): leaves of the
    graph, so that ``from tcmu_rbd import _native`` is not taken for the package."""
    out = set()
    for pkg, rel in packages.items():
        base = root / rel
        for path in base.rglob("*.so"):
            parts = path.relative_to(base).parts
            out.add(".".join([pkg, *parts[:-1], parts[-1].split(".")[0]]))
    return out


#: graph[a][b] = the imports in a that load b
Graph = dict[str, dict[str, list[Import]]]


def import_graph(root: Path, packages=PACKAGES) -> tuple[Graph, dict[str, Path]]:
    mods = modules(root, packages)
    leaves = extension_modules(root, packages)
    graph: Graph = {m: {} for m in mods}
    for name, path in mods.items():
        for imp in imports_of(name, path):
            dest = resolve(imp.target, mods.keys() | leaves)
            if dest is not None and dest != name and dest not in leaves:
                graph[name].setdefault(dest, []).append(imp)
    return graph, mods


def find_cycles(graph: Graph) -> list[list[str]]:
    """One shortest cycle per strongly connected component of more than one
    module, as [m0, m1, ..., m0], starting from the component's first module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:  # Tarjan's algorithm without recursion
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = set()
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        comp.add(m)
                        if m == node:
                            break
                    if len(comp) > 1:
                        components.append(comp)
    cycles = []
    for comp in sorted(components, key=min):
        first = min(comp)
        # breadth-first from first back to first, inside the component
        paths = {first: [first]}
        queue = [first]
        found = None
        while queue and found is None:
            node = queue.pop(0)
            for child in sorted(graph[node]):
                if child == first:
                    found = paths[node] + [first]
                    break
                if child in comp and child not in paths:
                    paths[child] = paths[node] + [child]
                    queue.append(child)
        cycles.append(found)
    return cycles


def describe_cycle(cycle: list[str], graph: Graph, mods: dict[str, Path], root: Path) -> str:
    lines = ["import cycle: " + " -> ".join(cycle)]
    for a, b in zip(cycle, cycle[1:]):
        imp = graph[a][b][0]
        where = "in a function" if imp.in_function else "at module level"
        lines.append(f"    {mods[a].relative_to(root)}:{imp.line} imports {imp.target} "
                     f"({where})")
    return "\n".join(lines)


def cycle_report(root: Path, packages=PACKAGES) -> list[str]:
    graph, mods = import_graph(root, packages)
    return [describe_cycle(c, graph, mods, root) for c in find_cycles(graph)]


def forbidden_imports(root: Path, packages=PACKAGES, gateway=GATEWAY) -> list[str]:
    """Imports of the lab or of the tests from the gateway packages, as
    "<file>:<line> imports <target>"."""
    test_modules = {p.stem for p in (root / "tests").rglob("*.py")} | {"tests"}
    forbidden = {LAB} | test_modules
    out = []
    for name, path in modules(root, packages).items():
        if name.split(".")[0] not in gateway:
            continue
        for imp in imports_of(name, path):
            if imp.target.split(".")[0] in forbidden:
                out.append(f"{path.relative_to(root)}:{imp.line} imports {imp.target}")
    return out


# --- files -------------------------------------------------------------------------

def oversized_files(root: Path, limit: int = MAX_LINES, dirs=SIZE_CHECKED_DIRS) -> list[str]:
    out = []
    for path in source_files(root, dirs):
        n = len(path.read_text(errors="replace").splitlines())
        if n > limit:
            out.append(f"{path.relative_to(root)}: {n} lines (limit {limit})")
    return out


def files_without_opening_text(root: Path, dirs=SIZE_CHECKED_DIRS) -> list[str]:
    """Python modules without a module docstring, C files in native/ that do not
    open with a comment."""
    out = []
    for path in source_files(root, dirs):
        rel = path.relative_to(root)
        if path.suffix == ".py":
            try:
                doc = ast.get_docstring(ast.parse(path.read_text(), str(path)))
            except SyntaxError as e:
                out.append(f"{rel}: does not parse ({e.msg}, line {e.lineno})")
                continue
            if not (doc or "").strip():
                out.append(f"{rel}: no module docstring (say what belongs here and what not)")
        elif path.suffix in (".c", ".h") and rel.parts[0] == "native":
            if not path.read_text(errors="replace").lstrip().startswith(("/*", "//")):
                out.append(f"{rel}: does not open with a comment")
    return out


# --- distributions -----------------------------------------------------------------

def distribution_packages(project_dir: Path) -> tuple[list[str], list[str]]:
    """(packages setuptools finds from pyproject.toml's [tool.setuptools.packages.find],
    the include patterns)."""
    conf = tomllib.loads((project_dir / "pyproject.toml").read_text())
    find = conf["tool"]["setuptools"]["packages"]["find"]
    include = find.get("include", ["*"])
    found = []
    for where in find.get("where", ["."]):
        found += setuptools.find_packages(where=str(project_dir / where), include=include,
                                          exclude=find.get("exclude", ()))
    return sorted(found), include


def lab_leaks(root: Path) -> list[str]:
    """What would put the lab (or the tests) into the main distribution."""
    found, include = distribution_packages(root)
    out = [f"pyproject.toml's packages include {p}" for p in found
           if p.split(".")[0] in (LAB, "tests", "lab")]
    lab_found, _ = distribution_packages(root / "lab")
    for pattern in include:
        for p in lab_found:
            if fnmatch.fnmatchcase(p, pattern):
                out.append(f"pyproject.toml's include pattern {pattern!r} matches the lab's "
                           f"package {p}")
    return out


# === the rules, on this repository =================================================

def test_no_import_cycles():
    cycles = cycle_report(REPO)
    assert not cycles, "\n".join(cycles)


def test_gateway_never_imports_the_lab_or_the_tests():
    bad = forbidden_imports(REPO)
    assert not bad, "the gateway packages must not import the lab or the tests:\n" + \
        "\n".join(bad)


def test_no_file_over_the_line_limit():
    big = oversized_files(REPO)
    assert not big, "split these files:\n" + "\n".join(big)


def test_every_module_and_c_file_opens_with_a_docstring_or_comment():
    bare = files_without_opening_text(REPO)
    assert not bare, "\n".join(bare)


def test_main_distribution_leaves_the_lab_out():
    found, _ = distribution_packages(REPO)
    assert "tcmu_rbd" in found and "targetcli_ext" in found, found
    assert not lab_leaks(REPO), "\n".join(lab_leaks(REPO))
    lab_found, _ = distribution_packages(REPO / "lab")
    assert lab_found and all(p.split(".")[0] == LAB for p in lab_found), lab_found


# === the checkers, on synthetic trees ==============================================

def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


SYNTH = {"a": "a", "b": "src/b"}


def test_cycle_checker_finds_a_planted_cycle(tmp_path):
    root = _tree(tmp_path, {
        "a/__init__.py": '"""a"""\nfrom .x import f\n',
        # the cycle: x -(function-level, relative)-> y -(absolute)-> z -(relative)-> x
        "a/x.py": '"""x"""\ndef f():\n    from . import y\n    return y\n',
        "a/y.py": '"""y"""\nimport a.z\n',
        "a/z.py": '"""z"""\nfrom .x import f\n',
        # not in it: w only imports x; sub.m climbs two levels to a.w
        "a/w.py": '"""w"""\nfrom a.x import f\nimport os\n',
        "a/sub/__init__.py": '"""sub"""\n',
        "a/sub/m.py": '"""m"""\nfrom .. import w\n',
        "src/b/p.py": '"""p"""\nfrom a import sub\nfrom a.sub import m\n',
    })
    graph, mods = import_graph(root, SYNTH)
    assert set(mods) == {"a", "a.x", "a.y", "a.z", "a.w", "a.sub", "a.sub.m", "b.p"}
    assert set(graph["a.sub.m"]) == {"a.w"} and set(graph["b.p"]) == {"a.sub", "a.sub.m"}
    assert find_cycles(graph) == [["a.x", "a.y", "a.z", "a.x"]]
    [report] = cycle_report(root, SYNTH)
    assert report.splitlines() == [
        "import cycle: a.x -> a.y -> a.z -> a.x",
        "    a/x.py:3 imports a.y (in a function)",
        "    a/y.py:2 imports a.z (at module level)",
        "    a/z.py:2 imports a.x.f (at module level)",
    ]
    # break it: no cycle left
    (root / "a/z.py").write_text('"""z"""\nimport os\n')
    assert cycle_report(root, SYNTH) == []


def test_cycle_checker_sees_a_package_importing_back_from_its_module(tmp_path):
    # a/__init__ imports x, x imports a name from a: x runs with a half-initialised a
    root = _tree(tmp_path, {"a/__init__.py": "from .x import f\nVALUE = 1\n",
                            "a/x.py": "from a import VALUE\ndef f(): pass\n"})
    assert find_cycles(import_graph(root, {"a": "a"})[0]) == [["a", "a.x", "a"]]
    # a compiled module of the package is not the package
    _tree(tmp_path, {"a/x.py": "from a import _ext\ndef f(): pass\n",
                     "a/_ext.cpython-311-x86_64-linux-gnu.so": ""})
    graph = import_graph(root, {"a": "a"})[0]
    assert graph["a.x"] == {} and find_cycles(graph) == []


def test_gateway_checker_catches_lab_and_test_imports(tmp_path):
    root = _tree(tmp_path, {
        "tcmu_rbd/__init__.py": '"""g"""\n',
        "tcmu_rbd/ok.py": '"""ok"""\nfrom tcmu_rbd import x\nimport tcmu_rbd_labels\n',
        "tcmu_rbd/bad.py": ('"""bad"""\nimport importlib\n'
                            'def f():\n    from tcmu_rbd_lab.ceph import CephCluster\n'
                            '    return importlib.import_module("tcmu_rbd_lab.vm")\n'),
        "targetcli_ext/t.py": '"""t"""\nfrom scsi_util import P\n',
        "lab/tcmu_rbd_lab/__init__.py": '"""lab"""\nimport tcmu_rbd\n',
        "tests/scsi_util.py": '"""helpers"""\n',
    })
    assert forbidden_imports(root) == [
        "tcmu_rbd/bad.py:4 imports tcmu_rbd_lab.ceph.CephCluster",
        "tcmu_rbd/bad.py:5 imports tcmu_rbd_lab.vm",
        "targetcli_ext/t.py:2 imports scsi_util.P",
    ]


def test_size_and_docstring_checkers(tmp_path):
    root = _tree(tmp_path, {
        "tcmu_rbd/__init__.py": '"""pkg"""\n',
        "tcmu_rbd/big.py": '"""big"""\n' + "x = 1\n" * 600,
        "tcmu_rbd/fits.py": '"""fits"""\n' + "x = 1\n" * 599,
        "tcmu_rbd/bare.py": "# a comment is not a docstring\nx = 1\n",
        "tests/broken.py": "def (:\n",
        "native/ok.c": "/* what this file is */\nint x;\n",
        "native/bare.h": "#pragma once\n",
        "scripts/run": "#!/bin/sh\n" + "true\n" * 700,
        "tcmu_rbd/__pycache__/big.cpython-311.pyc": "x\n" * 700,
        "docs/long.md": "x\n" * 700,  # not a checked directory
    })
    (root / "native" / "blob.so").write_bytes(b"\0" * 10 + b"\n" * 700)
    assert oversized_files(root) == ["scripts/run: 701 lines (limit 600)",
                                     "tcmu_rbd/big.py: 601 lines (limit 600)"]
    assert files_without_opening_text(root) == [
        "native/bare.h: does not open with a comment",
        "tcmu_rbd/bare.py: no module docstring (say what belongs here and what not)",
        "tests/broken.py: does not parse (invalid syntax, line 1)",
    ]


def test_distribution_checker_catches_a_greedy_include(tmp_path):
    pyproject = ('[tool.setuptools.packages.find]\ninclude = {include}\n')
    root = _tree(tmp_path, {
        "pyproject.toml": pyproject.format(include='["tcmu_rbd", "tcmu_rbd.*"]'),
        "tcmu_rbd/__init__.py": "", "tcmu_rbd/scsi/__init__.py": "",
        "lab/pyproject.toml": pyproject.format(include='["tcmu_rbd_lab*"]'),
        "lab/tcmu_rbd_lab/__init__.py": "", "lab/tcmu_rbd_lab/bench/__init__.py": "",
    })
    assert distribution_packages(root)[0] == ["tcmu_rbd", "tcmu_rbd.scsi"]
    assert lab_leaks(root) == []
    (root / "pyproject.toml").write_text(pyproject.format(include='["tcmu_rbd*"]'))
    assert lab_leaks(root) == [
        "pyproject.toml's include pattern 'tcmu_rbd*' matches the lab's package tcmu_rbd_lab",
        "pyproject.toml's include pattern 'tcmu_rbd*' matches the lab's package "
        "tcmu_rbd_lab.bench",
    ]
    (root / "pyproject.toml").write_text(
        '[tool.setuptools.packages.find]\nwhere = [".", "lab"]\ninclude = ["tcmu_rbd*"]\n')
    assert "pyproject.toml's packages include tcmu_rbd_lab" in lab_leaks(root)

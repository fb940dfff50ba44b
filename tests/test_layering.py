"""The parts of reqrep depend on each other one way only (docs/architecture.md).

C: a module is a .c file with its .h; module A uses module B when a file of A includes
B's header. Python: a module uses another when it imports it (anywhere in the file). Both
graphs must be free of cycles; a failure prints the cycle.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "reqrep"
C_DIRS = [ROOT / "csrc", *(p for p in SRC.iterdir() if p.is_dir() and any(p.glob("*.c")))]
_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle in `graph` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def c_graph(dirs: Iterable[Path]) -> dict[str, set[str]]:
    """Module -> modules whose headers it includes (a module is a file name without suffix)."""
    graph: dict[str, set[str]] = {}
    for d in dirs:
        for f in [*d.glob("*.c"), *d.glob("*.h")]:
            mod = f"{d.name}/{f.stem}"
            deps = graph.setdefault(mod, set())
            for inc in _INCLUDE.findall(f.read_text()):
                target = next((x for x in dirs if (x / inc).exists()), None)
                if target is not None and Path(inc).stem != f.stem:
                    deps.add(f"{target.name}/{Path(inc).stem}")
    return graph


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def py_graph() -> dict[str, set[str]]:
    """reqrep module -> reqrep modules it imports (the package's __init__ included)."""
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        deps = graph.setdefault(mod, set())
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join([*pkg, base] if base else pkg)
                # `from pkg import submodule` uses the submodule; any other name, pkg
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                         for a in node.names]
            for name in names:
                # the longest reqrep module the name starts with
                while name and name not in files:
                    name = name.rpartition(".")[0]
                if name and name != mod:
                    deps.add(name)
    return graph


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_c_includes_point_one_way() -> None:
    graph = c_graph(C_DIRS)
    assert len(graph) > 5
    cycle = find_cycle(graph)
    assert cycle is None, "include cycle: " + " -> ".join(cycle or [])


def test_python_imports_point_one_way() -> None:
    graph = py_graph()
    assert "reqrep._format" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])

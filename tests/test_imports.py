"""The import graph: no circle anywhere, and the layers point one way (kg ← encoders ← pipeline).

Every import counts, at module level or inside a function, except those under `if TYPE_CHECKING:`
(annotations only, never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kg", "encoders", "pipeline")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name.split(".")[0] in PACKAGES}


def graph() -> nx.DiGraph:
    modules = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for name, path in modules.items():
        for target in imports(path):
            # `from kg.link import linker` names a module; `from kg.link.linker import Linker` a name in one
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name and not name.startswith(target + "."):
                g.add_edge(name, target)
    return g


def test_no_import_circle() -> None:
    g = graph()
    # a package's __init__ that re-exports its own modules lazily is no circle: leave packages out
    g.remove_nodes_from([n for n in list(g) if (ROOT / n.replace(".", "/") / "__init__.py").exists()])
    cycles = list(nx.simple_cycles(g))
    assert not cycles, "import circles: " + "; ".join(" -> ".join([*c, c[0]]) for c in cycles[:5])


def test_layers_point_one_way() -> None:
    allowed = {"kg": {"kg"}, "encoders": {"kg", "encoders"}, "pipeline": {"kg", "encoders", "pipeline"}}
    wrong = [f"{a} imports {b}" for a, b in graph().edges if b.split(".")[0] not in allowed[a.split(".")[0]]]
    assert not wrong, wrong

"""The package layout is the architecture: each layer imports only the layers below it, and nothing imports in a
circle. Read from the source (every import statement, also those inside functions), so it fails the day someone
adds an upward import, not when it happens to be executed.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from backend.settings import PROJECT_ROOT

# Lowest first. A module may import its own layer and the ones before it.
LAYERS = ["base", "core", "models", "data", "jobs", "serving", "training"]
BASE = {"errors", "settings", "logs", "supervisor", "__init__", "__main__"}
ENTRY_POINTS = {
    "backend.__main__"
}  # `python -m backend` is the CLI's alias: it imports the front end on purpose


def modules() -> dict[str, Path]:
    out = {}
    for path in (PROJECT_ROOT / "backend").rglob("*.py"):
        name = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")
        out[name] = path
    return out


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and parts[1] in BASE):
        return "base"
    return parts[1]


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for target in [node.module] + [f"{node.module}.{a.name}" for a in node.names]:
                    if target in mods and target != name:
                        found[name].add(target)
            elif isinstance(node, ast.Import):
                found[name].update(a.name for a in node.names if a.name in mods and a.name != name)
    return found


def test_every_backend_module_is_in_a_layer():
    assert {layer(m) for m in modules()} <= set(LAYERS)


def test_no_layer_imports_a_layer_above_it():
    mods = modules()
    upward = [
        f"{m} imports {d}"
        for m, deps in imports(mods).items()
        for d in deps
        if m not in ENTRY_POINTS and LAYERS.index(layer(d)) > LAYERS.index(layer(m))
    ]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(sorted(upward))


def test_no_module_imports_in_a_circle():
    graph = {m: {d for d in deps if d in imports_at_top(m)} for m, deps in imports(modules()).items()}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(m: str, path: list[str]) -> None:
        seen[m] = 1
        for d in graph.get(m, ()):
            if seen.get(d) == 1:
                circles.append(" -> ".join(path[path.index(d) :] + [d]))
            elif d not in seen:
                visit(d, path + [d])
        seen[m] = 2

    for m in graph:
        if m not in seen:
            visit(m, [m])
    assert not circles, "modules that import each other at load time:\n" + "\n".join(circles)


def imports_at_top(module: str) -> set[str]:
    """The backend modules ``module`` imports when it is loaded (not those imported inside functions)."""
    mods = modules()
    tree = ast.parse(mods[module].read_text(encoding="utf-8"))
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.update(
                t for t in [node.module] + [f"{node.module}.{a.name}" for a in node.names] if t in mods
            )
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in mods)
    return out

"""The package's imports, read from the source: no loop anywhere (imports inside functions and
under TYPE_CHECKING included), imports only point down the layers of docs/architecture.md, and
models/ reads bottom to top."""

from __future__ import annotations

import ast
from pathlib import Path

import vlmscope

ROOT = Path(vlmscope.__file__).resolve().parent

# docs/architecture.md, "Layers": imports only point down this list
LAYERS = [
    {"errors", "files", "interrupts", "limits", "display", "tokentext", "specs", "sites", "tokenmap", "inputs"},
    {"models"},
    {"capture"},
    {"scope"},
    {"methods", "extraction", "probes"},
    {"viz", "report"},
    {"commands", "cli"},
]
# models/, bottom to top: a module imports only from its own level or below
MODELS = [
    {"tiny_parts"},
    {"adapter"},
    {"qwen2_vl", "qwen2_5_vl", "qwen3_vl"},
    {"registry"},
    {"loading", "tiny"},
]


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (path, package)
    return out


def _imports() -> list[tuple[str, str, bool]]:
    """(importer, imported, inside a function) for every import of a vlmscope module by another."""
    modules = _modules()
    edges = []
    for name, (path, package) in modules.items():
        here = name if package else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text(), str(path))
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        lazy = {id(n) for f in functions for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
            else:
                continue
            edges += [(name, t, id(node) in lazy) for t in targets if t in modules and t != name]
    return edges


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop of `graph`, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return path[path.index(w) :] + [w]
            if w not in state and (found := visit(w)):
                return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_no_import_loop_anywhere():
    graph: dict[str, set[str]] = {}
    for a, b, _ in _imports():
        graph.setdefault(a, set()).add(b)
    loop = _cycle(graph)
    assert loop is None, " -> ".join(loop or [])


def _level(levels: list[set[str]], name: str) -> int | None:
    return next((i for i, names in enumerate(levels) if name in names), None)


def test_imports_point_down_the_layers():
    up = []
    for a, b, lazy in _imports():
        la, lb = (_level(LAYERS, m.split(".")[1]) if "." in m else None for m in (a, b))
        if la is None or lb is None or lb <= la:
            continue
        # the one exception: a result draws itself with viz/ when asked (imported on use)
        if lazy and a.split(".")[1] == "methods" and b.split(".")[1] == "viz":
            continue
        up.append(f"{a} -> {b}")
    assert not up, up


def test_models_read_bottom_to_top():
    names = {m.rsplit(".", 1)[1] for m in _modules() if m.startswith("vlmscope.models.")}
    assert names == set().union(*MODELS), "every module of models/ has its level here"
    wrong = []
    for a, b, _ in _imports():
        if a.startswith("vlmscope.models.") and b.startswith("vlmscope.models."):
            la, lb = _level(MODELS, a.rsplit(".", 1)[1]), _level(MODELS, b.rsplit(".", 1)[1])
            if la is None or lb is None or lb > la:
                wrong.append(f"{a} -> {b}")
    assert not wrong, wrong

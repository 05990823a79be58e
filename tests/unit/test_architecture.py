"""The shape of coord's source, checked from its syntax trees: no import cycle among its modules (function-level
imports included: a cycle hidden in a function is still a cycle), and outside the Typer command functions of
cli.py no function longer than 60 lines or taking more than 6 parameters."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SOURCE / "coord"
MAX_LINES = 60
MAX_PARAMETERS = 6


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(tree: ast.Module, known: set[str]) -> set[str]:
    """The coord modules `tree` imports, anywhere in it (`from coord import x` names module x when x is one)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "coord")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "coord":
                continue
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & known
            found.update(submodules or {node.module})
    return found & known


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_among_coord_modules() -> None:
    trees = modules()
    graph = {name: imports_of(tree, set(trees)) - {name} for name, tree in trees.items()}
    assert "coord.retention" in graph and "coord.backup.run" in graph  # the walk sees the modules
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def is_typer_command(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Decorated with `@app.command(...)` or `@app.callback(...)` (any Typer object's)."""
    for decorator in node.decorator_list:
        call = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(call, ast.Attribute) and call.attr in ("command", "callback"):
            return True
    return False


def parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    arguments = node.args
    named = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
    count = len(named) + (arguments.vararg is not None) + (arguments.kwarg is not None)
    return count - (1 if named and named[0].arg in ("self", "cls") else 0)


def oversized_functions() -> list[str]:
    found: list[str] = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if name == "coord.cli" and is_typer_command(node):
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            parameters = parameter_count(node)
            if lines > MAX_LINES or parameters > MAX_PARAMETERS:
                found.append(f"{name}.{node.name}: {lines} lines, {parameters} parameters")
    return sorted(found)


def test_no_function_is_longer_than_60_lines_or_takes_more_than_6_parameters() -> None:
    oversized = oversized_functions()
    assert not oversized, "split these (or group their parameters):\n" + "\n".join(oversized)

"""The shape of the code, checked: no import circle (function-level imports included), the
building blocks never import a command, and no function in train/ longer than a screen."""

import ast
import importlib
import tomllib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "train"
# The commands, in one place: pyproject's [project.scripts] (module:function).
SCRIPTS = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]["scripts"]
# Modules with a command (doctor and summary are building blocks with one too), and train.api
# (the commands' door for notebooks and scripts); everything else is a building block.
COMMANDS = {"__main__", "app", "api"} | {
    t.split(":")[0].removeprefix("train.") for t in SCRIPTS.values()
} - {
    "doctor",
    "summary",
}
MAX_LINES = 60


def _trees() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text()) for p in PACKAGE.glob("*.py")}


def _imports(tree: ast.Module) -> set[str]:
    """The train modules a module imports, anywhere in it."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "train":
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("train."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("train.")}
    return out


def _graph() -> dict[str, set[str]]:
    trees = _trees()
    return {name: _imports(tree) & trees.keys() for name, tree in trees.items()}


def _cycle_from(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path start -> ... -> start, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in graph[node]:
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_the_checks_see_a_circle():
    assert _cycle_from({"a": {"b"}, "b": {"c"}, "c": {"a"}}, "a") == ["a", "b", "c", "a"]
    assert _cycle_from({"a": {"b"}, "b": set()}, "a") is None


def test_no_import_circle():
    graph = _graph()
    assert len(graph) > 20
    circles = [" -> ".join(c) for m in sorted(graph) if (c := _cycle_from(graph, m))]
    assert not circles, circles


def test_building_blocks_never_import_commands():
    graph = _graph()
    wrong = {m: sorted(deps & COMMANDS) for m, deps in graph.items()
             if m not in COMMANDS and deps & COMMANDS}  # fmt: skip
    assert not wrong, wrong


def test_every_command_is_a_script_taking_no_arguments():
    """A module run as python -m train.<name> is also pyproject's console script train-<name>."""
    import inspect

    runnable = {
        p.stem for p in PACKAGE.glob("*.py") if 'if __name__ == "__main__"' in p.read_text()
    }
    listed = {t.split(":")[0].removeprefix("train.") for t in SCRIPTS.values()}
    assert runnable == listed  # (train: train.__main__, which sets up signals, then train.app)
    for target in SCRIPTS.values():
        module, name = target.split(":")
        function = getattr(importlib.import_module(module), name)
        assert not [p for p in inspect.signature(function).parameters.values()
                    if p.default is inspect.Parameter.empty]  # fmt: skip


def test_functions_fit_on_a_screen():
    long = []
    for name, tree in _trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"train/{name}.py:{node.lineno} {node.name}: {lines} lines")
    assert not long, long

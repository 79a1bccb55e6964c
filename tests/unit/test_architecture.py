"""The shape of the code, checked: train/ is the commands at its top (one module each, named as
users type them) over rooms of building blocks, each room importing only the rooms below it; no
import circle (function-level imports included); no building block imports a command; no
module keeps state in a global; only train/run opens a run's files; no function longer than a
screen."""

import ast
import importlib
import tomllib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "train"
PYPROJECT = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
# The commands, in one place: pyproject's [project.scripts] (module:function).
SCRIPTS = PYPROJECT["project"]["scripts"]
COMMANDS = {"train.__main__", "train.app", "train.api"} | {
    t.split(":")[0] for t in SCRIPTS.values()
}
# Beside the commands at the top: what every room uses (errors), and the two halves of the
# commands' own work no room should hold: a config made a Run (build), a run's model loaded
# back (trained).
SHARED = {"train", "train.errors", "train.build", "train.trained"}
# The rooms, lowest first: each imports only rooms before it (and train.errors).
ROOMS = ["system", "run", "data", "models", "config", "loggers", "fit"]
MAX_LINES = 60


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _trees(package: Path = PACKAGE) -> dict[str, ast.Module]:
    return {_name(p): ast.parse(p.read_text()) for p in sorted(package.rglob("*.py"))}


def _imports(tree: ast.Module, known) -> set[str]:
    """The train modules a module imports, anywhere in it (`from train.run import files` is
    train.run.files; `from train.data import Data`, the package train.data)."""
    out = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and (node.module == "train" or node.module.startswith("train."))
        ):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                out.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("train.")}
    return out & set(known)


def _graph(trees=None) -> dict[str, set[str]]:
    trees = trees if trees is not None else _trees()
    return {name: _imports(tree, trees) - {name} for name, tree in trees.items()}


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else None


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
    assert len(graph) > 40
    circles = [" -> ".join(c) for m in sorted(graph) if (c := _cycle_from(graph, m))]
    assert not circles, circles


def test_the_top_of_train_is_its_commands():
    """A newcomer reads train/ as: the commands people run, then the rooms."""
    top = {m for m in _trees() if _room(m) is None}
    assert top - COMMANDS - SHARED == set()
    rooms = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert sorted(ROOMS) == rooms
    packaged = set(PYPROJECT["tool"]["setuptools"]["packages"])  # (an install ships each room)
    assert {f"train.{r}" for r in rooms} | {"train"} <= packaged


def test_each_room_imports_only_the_rooms_below_it():
    wrong = []
    for module, deps in _graph().items():
        room = _room(module)
        if room is None:
            continue
        below = set(ROOMS[: ROOMS.index(room) + 1])
        wrong += [f"{module} -> {d}" for d in deps if d != "train.errors"
                  and (_room(d) is None or _room(d) not in below)]  # fmt: skip
    assert not wrong, wrong


def test_building_blocks_never_import_commands():
    graph = _graph()
    wrong = {m: sorted(deps & COMMANDS) for m, deps in graph.items()
             if m not in COMMANDS and deps & COMMANDS}  # fmt: skip
    assert not wrong, wrong


def test_every_command_is_a_script_taking_no_arguments():
    """A module run as python -m train.<name> is also pyproject's console script train-<name>."""
    import inspect

    runnable = {m for m, tree in _trees().items() if 'if __name__ == "__main__"' in ast.unparse(
        tree) or "__name__ == '__main__'" in ast.unparse(tree)}  # fmt: skip
    listed = {t.split(":")[0] for t in SCRIPTS.values()}
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
                    long.append(f"{name}:{node.lineno} {node.name}: {lines} lines")
    assert not long, long


# --- no state in module globals ------------------------------------------------------------

MUTATORS = {"append", "extend", "insert", "add", "update", "pop", "popitem", "clear",
            "setdefault", "remove", "discard"}  # fmt: skip


def _global_state(tree: ast.Module) -> list[str]:
    """Where a module keeps state between calls: `global` statements, and module-level names
    bound to a list, dict or set that its code changes."""
    found = [f"global {', '.join(n.names)}" for n in ast.walk(tree) if isinstance(n, ast.Global)]
    containers = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) and node.value else []  # fmt: skip
        value = getattr(node, "value", None)
        mutable = (
            isinstance(
                value, ast.List | ast.Dict | ast.Set | ast.ListComp | ast.DictComp | ast.SetComp
            )
            or isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id in ("list", "dict", "set", "defaultdict")
        )
        containers |= {t.id for t in targets if isinstance(t, ast.Name) and mutable}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(
                node.func.value, ast.Name) and node.func.value.id in containers and \
                node.func.attr in MUTATORS:  # fmt: skip
            found.append(f"{node.func.value.id}.{node.func.attr}(...)")
        changed = node.targets if isinstance(node, ast.Assign | ast.Delete) else \
            [node.target] if isinstance(node, ast.AugAssign) else []  # fmt: skip
        found += [f"{t.value.id}[...] =" for t in changed if isinstance(t, ast.Subscript)
                  and isinstance(t.value, ast.Name) and t.value.id in containers]  # fmt: skip
    return found


def test_the_state_check_sees_state():
    planted = ast.parse("_seen = {}\nKEEP = (1, 2)\ndef f(k):\n    _seen[k] = 1\n"
                        "def g():\n    global n\n    n = 1\nnotes = []\ndef h():\n"
                        "    notes.append(1)\n")  # fmt: skip
    assert _global_state(planted) == ["global n", "_seen[...] =", "notes.append(...)"]
    assert _global_state(ast.parse("A = {'x': 1}\ndef f():\n    return A['x']\n")) == []


def test_no_module_keeps_state_in_a_global():
    """One invocation's state lives in an object it makes (train.run.claims.Claims, a Lock, a
    Run): two runs in one process (a notebook, a study's trials, the tests) share nothing."""
    found = {m: s for m, tree in _trees().items() if (s := _global_state(tree))}
    assert not found, found


# --- only train/run opens a run's files -------------------------------------------------------

# Modules outside train/run that open files, and the files they open: never a run dir's.
OPENS_OTHER_FILES = {
    "train.errors": "/dev/null, for a closed stdout",
    "train.fit.callbacks": "/proc: when the process started",
    "train.system.device": "/sys/fs/cgroup: the CPU quota",
    "train.system.health": "/proc/driver/nvidia: the driver's version",
    "train.models.vision": "pretrained weights under paths.torch_home",
    "train.models.usercode": "the user's own code file (its SHA-256)",
    "train.data.sets": "the user's data files (their SHA-256)",
    "train.data.tables": "the user's CSV files",
    "train.data.images": "the user's image files",
    "train.data.folder": "the user's image folder and its cache's listing",
    "train.data.cache": "the data dir's decoded cache",
    "train.evaluate": "out=<a file of the user's>, instead of the run dir",
    "train.export": "out=<a file of the user's>, instead of the run dir",
    "train.predict": "out=<a file of the user's>",
    "train.tune": "a study's own folder (summary.json), beside its trials' run dirs",
    "train.loggers.tracking": "a sweep's parent run (its dir's mlflow.json), and copies of a "
    "run's files (RunDir.contents) in a temporary folder, for MLflow to upload",
}
OPENING = {"open", "read_text", "write_text", "read_bytes", "write_bytes"}


def _opens(tree: ast.Module) -> list[str]:
    """The calls in a module that open a file (and imports of train.run.files, the writer)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id == "open" or isinstance(
                    f, ast.Attribute) and f.attr in OPENING:  # fmt: skip
                found.append(ast.unparse(f))
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and (
                    f.value.id, f.attr) in {("torch", "save"), ("torch", "load"),
                                            ("json", "load"), ("pd", "read_csv")}:  # fmt: skip
                found.append(ast.unparse(f))
        elif isinstance(node, ast.ImportFrom) and (
            node.module == "train.run.files"
            or node.module == "train.run"
            and "files" in {a.name for a in node.names}
        ):
            found.append("train.run.files")
    return found


def test_the_open_check_sees_opening():
    planted = ast.parse(
        "from train.run import files\nimport torch\ndef f(p):\n"
        "    torch.save({}, p / 'x.pt')\n    return (p / 'm.json').read_text()\n"
    )
    assert _opens(planted) == ["train.run.files", "torch.save", "(p / 'm.json').read_text"]


def test_only_train_run_opens_a_runs_files():
    """A run dir is read and written through train.run.rundir.RunDir (paths, the lock, the
    no-follow atomic writer, the typed files); what else opens files opens others
    (OPENS_OTHER_FILES). tests/test_outputs.py watches a real run's opens too."""
    trees = _trees()
    found = {m: o for m, tree in trees.items() if _room(m) != "run"
             and m not in OPENS_OTHER_FILES and (o := _opens(tree))}  # fmt: skip
    assert not found, found
    stale = {m for m in OPENS_OTHER_FILES if not _opens(trees[m])}
    assert not stale, f"no longer open files, drop them from the list: {stale}"

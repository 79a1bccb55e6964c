"""Your own nn.Module and Dataset, from a Python file you name: `model=custom model.code=net.py
model.name=Net`, `data=custom data.code=data.py data.name=build`; or a model object from a
notebook (`train.api.train(..., model=Net)`).

A user file runs only by its user's consent: when this command line (or this call) names it.
A stored config (run.json, a checkpoint) naming one never brings it in by itself: resume,
evaluate, predict, export and reproduce import it only when the path is given again (`code=`),
and only if its SHA-256 is the one recorded. Errors in the file (an import error, a forward
that fails or returns the wrong shape) are one paragraph naming its file and line.
"""

import hashlib
import importlib.util
import inspect
import logging
import sys
import traceback
from pathlib import Path

from train.errors import UserError

log = logging.getLogger("train")
MODEL, DATA, OBJECT = (f"train.models.usercode.{name}" for name in ("model", "data", "in_process"))
TARGETS = (MODEL, DATA, OBJECT)  # what a stored config may name only with consent
KEYS = {MODEL: "model.code", DATA: "data.code"}


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def origin(path, name: str) -> dict:
    """What the run records of a user file: where it was, what it is (its SHA-256)."""
    return {"file": str(Path(path).resolve()), "name": name, "sha256": sha256(path)}


def attribute(path, name: str, key: str):
    """`name` from the Python file at `path` (imported on its own, never from sys.path)."""
    file = Path(path).expanduser()
    if not file.is_file():
        from train.system.container import not_found

        raise UserError(not_found(key, path))
    module_name = f"_user_{hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # (pickling its classes: DataLoader workers, dataclasses)
    with said(file, f"importing {file.name}"):
        spec.loader.exec_module(module)
    if not hasattr(module, name):
        found = sorted(n for n, v in vars(module).items() if not n.startswith("_")
                       and (inspect.isclass(v) or inspect.isfunction(v)))  # fmt: skip
        raise UserError(f"{key}={path} has no {name!r}; it defines {found}. Name one with "
                        f"{key.rsplit('.', 1)[0]}.name=<name>.")  # fmt: skip
    return getattr(module, name)


def source_of(cls) -> Path | None:
    """The file a class was written in; None for a notebook cell's or an interpreter's (its
    module's file, if any, does not hold it: a kernel's or pytest's __main__)."""
    try:
        file = inspect.getsourcefile(cls)
        inspect.getsourcelines(cls)  # (found in that file, not only named by its module)
    except (OSError, TypeError):
        return None
    return Path(file) if file and Path(file).is_file() else None


class said:
    """An error raised in a user's code, as one paragraph naming the file and line (and the
    step: importing, building, the forward pass). `file` None: code with no file of its own
    (a notebook cell's), named by the innermost frame outside torch and this package."""

    def __init__(self, file: Path | None, doing: str):
        self.file, self.doing = (Path(file).resolve() if file else None), doing

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if error is None or isinstance(error, UserError | KeyboardInterrupt):
            return False
        frames = [f for f in traceback.extract_tb(tb) if self._yours(f.filename)]
        file = self.file or (Path(frames[-1].filename) if frames else "your code")
        where = f"{file}, line {frames[-1].lineno}" if frames else str(file)
        code = f" ({frames[-1].line.strip()})" if frames and frames[-1].line else ""
        message = " ".join(str(error).split())[:500]
        raise UserError(f"your code failed {self.doing}: {where}{code}: {type(error).__name__}: "
                        f"{message}") from None  # fmt: skip

    def _yours(self, filename: str) -> bool:
        if self.file is not None:
            return Path(filename).resolve() == self.file
        theirs = (str(Path(__file__).resolve().parents[1]), "site-packages", "<frozen")  # (train/)
        return not any(t in filename for t in theirs)


def model(in_shape, num_outputs: int, code: str, name: str, args: dict | None = None):
    """Your nn.Module class `name` from `code`, built as ours are: Net(in_shape, num_outputs,
    **args)."""
    cls = attribute(code, name, "model.code")
    module = build_object(cls, in_shape, num_outputs, args, Path(code))
    module.train_origin = origin(code, name)  # (recorded in run.json and every checkpoint)
    return module


def build_object(cls, in_shape, num_outputs: int, args: dict | None, file: Path | None):
    """`cls(in_shape, num_outputs, **args)`, refused in one paragraph if it cannot take them."""
    from torch import nn

    where = file or source_of(cls) or "your notebook or script"
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise UserError(f"{getattr(cls, '__name__', cls)!r} in {where} is not an nn.Module class.")
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if not takes_any and not {"in_shape", "num_outputs"} <= set(params):
        raise UserError(
            f"{cls.__name__} in {where} takes ({', '.join(params)}); a model for train takes "
            "in_shape (one example's shape, e.g. (1, 28, 28)) and num_outputs (one per class, "
            "1 for two classes, one per target), as ours do: def __init__(self, in_shape, "
            "num_outputs, **your_args). Your own arguments go in model.args={hidden: 64}."
        )
    with said(file or source_of(cls), f"building {cls.__name__}"):
        return cls(in_shape=tuple(in_shape), num_outputs=num_outputs, **dict(args or {}))


def in_process(in_shape, num_outputs: int, name: str, args: dict | None = None):
    """A model object from a notebook or script (train.api): there is nothing to build from
    a config, so a stored run's config alone cannot rebuild it (api.load takes the class)."""
    raise UserError(
        f"this run's model is {name}, an object from the notebook or script that trained it; "
        f"it is not in any file train can import. Load it with the class: "
        f"train.api.load(run, model={name.rsplit('.', 1)[-1]})."
    )


def check_forward(module, x, num_outputs: int, file: Path | None, name: str) -> None:
    """One batch of one example through a user's model (eval mode, no gradients): its errors
    and a wrong output shape said before training starts."""
    import torch

    file = file or source_of(type(module))
    where = file or "your notebook or script"
    was = module.training
    module.eval()
    with torch.no_grad(), said(file, f"in {name}.forward on one example shaped "
                                     f"{tuple(x.shape[1:])}"):  # fmt: skip
        out = module(x)
    module.train(was)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(x), num_outputs):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(
            f"{name}.forward in {where} returns {got} for a batch of {len(x)}; this data needs "
            f"({len(x)}, {num_outputs}): one output per class ({num_outputs} here; 1 for two "
            "classes, a logit), or one per regression target. Raw scores: the loss applies the "
            "softmax or sigmoid."
        )


def data(code: str, name: str, args: dict | None, reader: str | None, num_workers: int,
         **common):  # fmt: skip
    """Your data: `name(**args)` from `code`, returning a torch Dataset of (input, target)
    pairs (split here by val_fraction and test_fraction, seeded by split_seed), or a tuple or
    dict of train, val and test Datasets; a dict may also say num_classes (else counted from
    the labels) or class_names. Integer targets are classes, float ones a regression."""
    from train.data import FolderSplit, sets

    file = Path(code)
    build = attribute(code, name, "data.code")
    with said(file, f"in {name}()"):
        made = build(**dict(args or {}))
    train, val, test, info = _splits(made, file, name)
    if reader is not None:
        attribute(code, reader, "data.code")  # (predict reads files with it: said now if absent)
    x, y = _example(train, file, name)
    task, classes, outputs = _task(train, y, info, file, name)
    if val is None and test is None:
        rows = sets.split_rows(len(train), common["val_fraction"], common["test_fraction"],
                            common["split_seed"])  # fmt: skip
        train, val, test = (_subset(train, r) if len(r) else None for r in rows)
    common = {**common, "normalize": False}
    split = [None if s is None else FolderSplit(s, num_workers) for s in (train, val, test)]
    out = sets._finish(*split, task, classes, scale=1.0, **common)
    out.regression_outputs = outputs
    out.origin = origin(code, name)
    out.fingerprint = sets.fingerprint(sha256(code), repr(sorted((args or {}).items())))
    log.info("your data (%s.%s): inputs %s, %s", file.name, name, tuple(x.shape),
             f"{len(classes)} classes" if classes else f"{outputs} target(s)")  # fmt: skip
    return out


def _splits(made, file: Path, name: str):
    """train, val, test (None where not given) and the extra facts a dict gave."""
    from torch.utils.data import Dataset

    info = {}
    if isinstance(made, dict):
        info = {k: v for k, v in made.items() if k not in ("train", "val", "test")}
        made = (made.get("train"), made.get("val"), made.get("test"))
    parts = list(made) if isinstance(made, tuple | list) else [made, None, None]
    parts += [None] * (3 - len(parts))
    if (
        len(parts) != 3
        or not isinstance(parts[0], Dataset)
        or not all(p is None or isinstance(p, Dataset) for p in parts)
    ):
        raise UserError(
            f"{name}() in {file} returned {type(made).__name__}; it must return a torch "
            "Dataset of (input, target) pairs, or (train, val, test) Datasets (val and test "
            "may be None), or a dict with train, val, test and optionally num_classes."
        )
    return (*parts, info)


def _subset(dataset, rows):
    from torch.utils.data import Subset

    return Subset(dataset, rows.tolist())


def _example(dataset, file: Path, name: str):
    import torch

    with said(file, f"reading the first example of {name}()'s Dataset"):
        item = dataset[0]
    if not (isinstance(item, tuple | list) and len(item) == 2
            and isinstance(item[0], torch.Tensor)):  # fmt: skip
        raise UserError(f"{name}()'s Dataset in {file} yields {type(item).__name__}; it must "
                        "yield (input tensor, target) pairs.")  # fmt: skip
    return item[0], torch.as_tensor(item[1])


def _task(dataset, y, info: dict, file: Path, name: str):
    """classification (integer targets) with its class names, or regression with its outputs."""
    import torch

    if y.is_floating_point():
        return "regression", None, max(1, y.numel())
    classes = info.get("class_names") or getattr(dataset, "classes", None)
    if info.get("num_classes") is None and classes is None:
        log.info("counting the classes of %s()'s labels (num_classes in its dict says it)", name)
        with said(file, f"reading {name}()'s labels"):
            top = max(int(torch.as_tensor(dataset[i][1])) for i in range(len(dataset)))
        classes = [str(i) for i in range(top + 1)]
    if classes is None:
        classes = [str(i) for i in range(int(info["num_classes"]))]
    return "classification", [str(c) for c in classes], None


class Consent:
    """The user files a command line named (`code=...`): a stored config's user code runs
    only as one of these, and only if its SHA-256 is the recorded one."""

    def __init__(self, paths=()):
        self.paths = [str(p) for p in ([paths] if isinstance(paths, str | Path) else paths)]
        for p in self.paths:
            if not Path(p).is_file():
                from train.system.container import not_found

                raise UserError(not_found("code", p))
        self.hashes = {p: sha256(p) for p in self.paths}

    def file_for(self, what: str, recorded: dict | None) -> str:
        """The given file that is the recorded one (`recorded`: its origin); refused, in one
        paragraph naming the recorded file and both hashes, otherwise."""
        if recorded is None:
            raise UserError(f"this run's {what} is user code, but its checkpoint records no "
                            "file or SHA-256 for it: it was not written by train; refusing to "
                            "run it.")  # fmt: skip
        was, digest = recorded["file"], recorded["sha256"]
        if not self.paths:
            raise UserError(
                f"this run's {what} is your code, {was} (SHA-256 {digest}), and a run's record "
                f"never runs code by itself: name the file to run it, code={was} (the same "
                "file, unchanged; or a copy of it elsewhere)."
            )
        for path, have in self.hashes.items():
            if have == digest:
                return path
        named = "; ".join(f"{p} has {h}" for p, h in self.hashes.items())
        raise UserError(
            f"this run's {what} was {was} with SHA-256 {digest}; {named}. A changed file is "
            "another model: give the file the run was trained with (or start a new run)."
        )


def unchanged(recorded: dict | None, now: dict | None, what: str) -> None:
    """A resumed run's user file is the one it was trained with (same SHA-256), or refused."""
    if recorded is None or now is None or "sha256" not in (recorded or {}):
        return
    if recorded["sha256"] != now["sha256"]:
        raise UserError(
            f"the run being resumed trained {what} {recorded['file']} with SHA-256 "
            f"{recorded['sha256']}; {now['file']} now has {now['sha256']}. A changed file is "
            "another model: resume with the file it was trained with, or start a new run."
        )

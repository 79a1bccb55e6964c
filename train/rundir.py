"""Where a run writes: a fresh directory for every new run, never one that already exists.

Hydra resolves `hydra.run.dir` once per job and then creates it with `exist_ok=True`, so the
choice is made here, by an OmegaConf resolver that creates the directory atomically (`mkdir`
fails if another run took the name) or, when resuming, returns the run being continued.
"""

import itertools
import shutil
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

from train.errors import UserError

# Hydra may resolve the same interpolation more than once in a process: answer it the same way.
_chosen: dict[tuple, str] = {}
_created: list[Path] = []  # fresh run dirs made by this process


def register_resolvers() -> None:
    """Make `${train.run_dir:...}` and `${train.config_subdir:...}` usable in conf/."""
    OmegaConf.register_new_resolver("train.run_dir", run_dir, replace=True)
    OmegaConf.register_new_resolver("train.config_subdir", config_subdir, replace=True)


def run_dir(runs_dir: str, name: str, resume: str | None) -> str:
    """The run's directory: the resumed run's, or a new `<runs_dir>/<name>/<timestamp>`."""
    key = ("run_dir", runs_dir, name, resume)
    if key not in _chosen:
        if resume is not None:
            _chosen[key] = str(resumed_run_dir(resume))
        else:
            _chosen[key] = str(_fresh(Path(runs_dir) / name))
    return _chosen[key]


def forget() -> None:
    """Forget the answers given so far: for code that composes several runs in one process."""
    _chosen.clear()


def config_subdir(resume: str | None) -> str:
    """Where Hydra saves this invocation's config: `.hydra`, or a new one beside it on resume."""
    if resume is None:
        return ".hydra"
    key = ("config_subdir", resume)
    if key not in _chosen:
        hydra_dir = resumed_run_dir(resume) / ".hydra"
        n = next(n for n in itertools.count(1) if not (hydra_dir / f"resume-{n}").exists())
        _chosen[key] = f".hydra/resume-{n}"
    return _chosen[key]


def resumed_run_dir(resume: str) -> Path:
    """The run directory that `resume=` (a run dir or a checkpoint inside one) refers to."""
    path = Path(resume)
    if path.is_file():
        return path.parent.parent if path.parent.name == "checkpoints" else path.parent
    if path.is_dir():
        return path
    raise UserError(
        f"resume={resume} points at nothing: no such run directory or checkpoint file. Give a "
        "run directory (e.g. runs/digits_mlp/2026-01-31_12-00-00) or a checkpoint inside one "
        "(.../checkpoints/last.pt)."
    )


def resume_checkpoint(resume: str) -> Path:
    """The checkpoint file that `resume=` refers to (a run dir means its `checkpoints/last.pt`)."""
    path = Path(resume)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise UserError(
            f"resume={resume} has no checkpoint to continue from: {path} does not exist. A run "
            "writes checkpoints/last.pt at the end of every epoch; give a run that finished one."
        )
    return path


def discard_unstarted() -> None:
    """Remove run dirs this process created for runs that failed before training started
    (no checkpoint, no event file): bad input must leave nothing behind."""
    for path in _created:
        started = (path / "checkpoints").exists() or any(path.glob("events.out.tfevents.*"))
        if path.is_dir() and not started:
            shutil.rmtree(path, ignore_errors=True)
    _created.clear()


def _fresh(parent: Path) -> Path:
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for n in itertools.count():
            path = parent / (stamp if n == 0 else f"{stamp}-{n}")
            try:
                path.mkdir()
                _created.append(path)
                return path
            except FileExistsError:
                continue
    except OSError as e:
        raise UserError(
            f"cannot create a run directory under {parent}: {e.strerror or e}. The runs dir must "
            "be a writable directory; choose another with paths.runs_dir=<dir> (in Docker, check "
            "that ./runs on the host is writable by the UID the container runs as)."
        ) from None
    raise AssertionError("unreachable")

"""What one invocation of a command claims under the runs dir: a fresh directory for every new
run (never one that already exists), the resumed run's, the locks on them, and which ones it
made (removed again if their run never starts). One `Claims` per invocation, made by the
command (train.app, train.api, train.tune, a test) and handed to whatever needs it; no state
outlives it.

Hydra resolves `hydra.run.dir` once per job and then creates it with `exist_ok=True`, so the
choice is made here, by OmegaConf resolvers bound to the invocation's Claims: they make the
directory atomically (`mkdir` fails if another run took the name) or, when resuming, return
the run being continued, and answer the same way each time Hydra asks again. Under torchrun,
rank 0 makes that choice and the other ranks take its answer; they write no config copy and
no log file of their own.
"""

import contextlib
import hashlib
import itertools
import os
import re
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from train.run import elastic, files
from train.run.resume import resumed_run_dir
from train.run.resume import source as resume_source
from train.run.rundir import RunDir, check_name, claim
from train.system import distributed


class Claims:
    """One invocation's run dirs: chosen, made and locked (see the module's docstring)."""

    def __init__(self):
        self.chosen: dict[tuple, object] = {}  # Hydra may ask more than once: the same answer
        self.created: list[Path] = []  # fresh run dirs made here
        self.made: list[Path] = []  # folders made for them (runs/<name>), deepest first
        self.held: dict[Path, object] = {}  # run dir -> its Lock
        self.notes: list[str] = []  # what resume=auto saw, logged once logging is set up

    def __getstate__(self) -> dict:
        """A sweep's jobs in other processes (joblib's, a SLURM node's) get the task function
        with its Claims: a fresh one there, since dirs and locks are this process's."""
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
        self.register()  # (that process never ran the command: Hydra resolves through it)

    def register(self) -> "Claims":
        """Answer `${train.run_dir:...}` and the other `${train.*:...}` in conf/ from here."""
        resolvers = {"train.run_dir": self.run_dir, "train.config_subdir": self.config_subdir,
                     "train.log_file": log_file, "train.job_dir": job_dir}  # fmt: skip
        for name, resolver in resolvers.items():
            OmegaConf.register_new_resolver(name, resolver, replace=True)
        # Cached in the config, which Hydra copies into every job's (joblib's processes
        # included): a sweep claims one directory, once.
        OmegaConf.register_new_resolver("train.sweep_dir", self.sweep_dir, replace=True,
                                        use_cache=True)  # fmt: skip
        return self

    def run_dir(self, runs_dir: str, name: str, resume: str | None, _root_=None) -> str:
        """The run's directory: the resumed run's, or a new `<runs_dir>/<name>/<timestamp>`;
        locked (by rank 0 under torchrun) for as long as it trains there."""
        key = ("run_dir", runs_dir, name, resume)
        if key not in self.chosen:
            check_name(name)
            source = self.source(runs_dir, name, resume, _root_)
            if source is not None:
                run = resume_dir(source)
                if distributed.ranks().main:
                    self.lock(run)
                self.chosen[key] = str(run)
            else:
                self.chosen[key] = distributed.agreed(  # (torchrun: remembered for restarts)
                    lambda: str(elastic.remember(runs_dir, self._fresh(Path(runs_dir) / name)))
                )
        return self.chosen[key]

    def sweep_dir(self, runs_dir: str) -> str:
        """A new `<runs_dir>/multirun/<timestamp>` for a sweep, claimed with an atomic mkdir:
        two sweeps started in the same second get two directories, never one shared."""
        key = ("sweep_dir", runs_dir)
        if key not in self.chosen:
            self.chosen[key] = str(claim(Path(runs_dir) / "multirun"))
        return self.chosen[key]

    def config_subdir(self, runs_dir: str, name: str, resume: str | None,
                      _root_=None) -> str | None:  # fmt: skip
        """Where Hydra saves this invocation's config: `.hydra`, or a new one beside it on
        resume (None, no copy, on torchrun's ranks other than 0)."""
        if not distributed.ranks().main:
            return None
        source = self.source(runs_dir, name, resume, _root_)
        if source is None:
            return ".hydra"
        key = ("config_subdir", runs_dir, name, resume)
        if key not in self.chosen:
            hydra_dir = resume_dir(source) / ".hydra"
            n = next(n for n in itertools.count(1) if not (hydra_dir / f"resume-{n}").exists())
            self.chosen[key] = f".hydra/resume-{n}"
        return self.chosen[key]

    def source(self, runs_dir: str, name: str, resume: str | None, root=None) -> Path | None:
        """The checkpoint this run continues from, or None for a new run
        (train.run.resume.source, asked once)."""
        key = ("source", runs_dir, name, resume)
        if key not in self.chosen:
            self.chosen[key] = resume_source(runs_dir, name, resume, root, self.notes)
        return self.chosen[key]

    def lock(self, run: Path) -> None:
        """Hold `run`'s lock (train.run.rundir.Lock) until `release`; held already: nothing."""
        run = run.resolve()
        if run not in self.held:
            self.held[run] = RunDir(run).lock()

    def release(self) -> None:
        """Let go of every run dir lock held here (in-process runs, one after another)."""
        for lock in self.held.values():
            lock.release()
        self.held.clear()

    def discard_unstarted(self) -> None:
        """Remove the run dirs made here for runs that failed before training started (no
        checkpoint, no event file): bad input must leave nothing behind."""
        for path in self.created:
            started = (path / "checkpoints").exists() or any(path.glob("events.out.tfevents.*"))
            if path.is_dir() and not started:
                shutil.rmtree(path, ignore_errors=True)
        for folder in self.made:  # (only if empty: another run may have started in it since)
            with contextlib.suppress(OSError):
                folder.rmdir()
        self.created.clear()
        self.made.clear()

    def _fresh(self, parent: Path) -> Path:
        """A new run dir, claimed atomically, locked and remembered (removed if the run never
        starts)."""
        made = [p for p in (parent, *parent.parents) if not p.exists()]  # (deepest first)
        path = claim(parent)
        self.created.append(path)
        self.made.extend(made)
        self.lock(path)
        return path


def resume_dir(source: Path) -> Path:
    """The run dir a resumed checkpoint belongs to."""
    return resumed_run_dir(str(source))


def job_dir(num: int, sweep_dir: str, overrides, name: str) -> str:
    """A sweep job's directory: its number and the values of what the sweep varies (0_optim=sgd,
    1_optim=adam), read from the sweep's multirun.yaml; `<num>_<name>` when nothing varies."""
    swept = swept_keys(Path(sweep_dir) / "multirun.yaml")
    label = ",".join(o for o in overrides if o.split("=", 1)[0] in swept) or name
    label = re.sub(r"[^\w.=,+-]", "-", label.replace(" ", "")).lstrip(".") or "job"
    if len(label) > 48:  # a file name stays readable: its start, and a hash for the rest
        label = f"{label[:40]}-{hashlib.sha1(label.encode()).hexdigest()[:7]}"
    return f"{num}_{label}"


def swept_keys(master: Path) -> set[str]:
    """The keys a sweep varies: its command line's sweep overrides (a,b / range(...)) and
    its sweep preset's params."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        cfg = OmegaConf.load(master)
    except OSError:
        return set()
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    given = [*OmegaConf.select(cfg, "hydra.overrides.task", default=[]),
             *(f"{k}={v}" for k, v in params.items())]  # fmt: skip
    parsed = OverridesParser.create().parse_overrides(given)
    return {o.get_key_element() for o in parsed if o.is_sweep_override()}


def log_file(output_dir: str) -> str:
    """train.log in the run dir (never through a link: refused); nowhere for torchrun's ranks
    other than 0."""
    if not distributed.ranks().main:
        return os.devnull
    log = RunDir(output_dir).log
    files.refuse_link(log, "its log")
    return str(log)

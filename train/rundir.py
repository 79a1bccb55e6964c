"""Where a run writes: a fresh directory for every new run, never one that already exists.

Hydra resolves `hydra.run.dir` once per job and then creates it with `exist_ok=True`, so the
choice is made here, by an OmegaConf resolver that creates the directory atomically (`mkdir`
fails if another run took the name) or, when resuming, returns the run being continued.
Under torchrun, rank 0 makes that choice and the other ranks take its answer; they write no
config copy and no log file of their own.
"""

import contextlib
import itertools
import os
import re
import shutil
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

from train import distributed, elastic
from train.errors import UserError
from train.resume import (  # (what resume= may change, names)
    LOOSE,
    LOOSE_TRAINER,
    resume_checkpoint,
    resumed_run_dir,
)

# Hydra may resolve the same interpolation more than once in a process: answer it the same way.
_chosen: dict[tuple, str] = {}
_created: list[Path] = []  # fresh run dirs made by this process
_made: list[Path] = []  # folders made for them (runs/<name>), deepest first


def register_resolvers() -> None:
    """Make `${train.run_dir:...}`, `${train.config_subdir:...}` and `${train.log_file:...}`
    usable in conf/."""
    OmegaConf.register_new_resolver("train.run_dir", run_dir, replace=True)
    OmegaConf.register_new_resolver("train.config_subdir", config_subdir, replace=True)
    OmegaConf.register_new_resolver("train.log_file", log_file, replace=True)
    # Cached in the config, which Hydra copies into every job's (joblib's processes included):
    # a sweep claims one directory, once.
    OmegaConf.register_new_resolver("train.sweep_dir", sweep_dir, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("train.job_dir", job_dir, replace=True)


def run_dir(runs_dir: str, name: str, resume: str | None, _root_=None) -> str:
    """The run's directory: the resumed run's, or a new `<runs_dir>/<name>/<timestamp>`;
    locked by this process (rank 0 under torchrun) for as long as it trains there."""
    key = ("run_dir", runs_dir, name, resume)
    if key not in _chosen:
        check_name(name)
        source = resume_source(runs_dir, name, resume, _root_)
        if source is not None:
            run = resumed_run_dir(str(source))
            if distributed.ranks().main:
                lock(run)
            _chosen[key] = str(run)
        else:
            _chosen[key] = distributed.agreed(  # (torchrun: remembered for its restarts)
                lambda: str(elastic.remember(runs_dir, _fresh(Path(runs_dir) / name)))
            )
    return _chosen[key]


# A run's name is one folder under the runs dir: letters and digits (any script), _ - . = , +
NAME = re.compile(r"[\w=,+-][\w.=,+-]*")
NAME_CHARS = "letters and digits (any script), _ - . = , and +, not starting with a dot"


def check_name(name: str) -> None:
    """Refuse a `name` that is not one safe folder name (`../x` would leave the runs dir)."""
    if NAME.fullmatch(str(name)) and len(str(name)) <= 128:
        return
    bad = sorted({c for c in str(name) if not re.fullmatch(r"[\w.=,+-]", c)})
    why = (f"it holds {', '.join(map(repr, bad))}" if bad else
           "it starts with a dot" if str(name).startswith(".") else
           "it is empty" if not str(name) else "it is longer than 128 characters")  # fmt: skip
    raise UserError(
        f"name={name!r} is not a run name: {why}. A name is one folder under paths.runs_dir, "
        f"made of {NAME_CHARS} (e.g. name=digits_cnn). To write a run somewhere else, set "
        "paths.runs_dir=<dir> (or hydra.run.dir=<dir>, which is then your choice)."
    )


def sweep_dir(runs_dir: str) -> str:
    """A new `<runs_dir>/multirun/<timestamp>` for a sweep, claimed with an atomic mkdir: two
    sweeps started in the same second get two directories, never one shared."""
    key = ("sweep_dir", runs_dir)
    if key not in _chosen:
        _chosen[key] = str(_claim(Path(runs_dir) / "multirun"))
    return _chosen[key]


def job_dir(num: int, sweep_dir: str, overrides, name: str) -> str:
    """A sweep job's directory: its number and the values of what the sweep varies (0_optim=sgd,
    1_optim=adam), read from the sweep's multirun.yaml; `<num>_<name>` when nothing varies."""
    import hashlib

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
    from train import files

    if not distributed.ranks().main:
        return os.devnull
    files.refuse_link(Path(output_dir) / "train.log", "its log")
    return str(Path(output_dir) / "train.log")


def config_subdir(runs_dir: str, name: str, resume: str | None, _root_=None) -> str | None:
    """Where Hydra saves this invocation's config: `.hydra`, or a new one beside it on resume
    (None, no copy, on torchrun's ranks other than 0)."""
    if not distributed.ranks().main:
        return None
    source = resume_source(runs_dir, name, resume, _root_)
    if source is None:
        return ".hydra"
    key = ("config_subdir", runs_dir, name, resume)
    if key not in _chosen:
        hydra_dir = resumed_run_dir(str(source)) / ".hydra"
        n = next(n for n in itertools.count(1) if not (hydra_dir / f"resume-{n}").exists())
        _chosen[key] = f".hydra/resume-{n}"
    return _chosen[key]


def resume_source(runs_dir: str, name: str, resume: str | None, root=None) -> Path | None:
    """The checkpoint this run continues from, or None for a new run.

    `resume=auto` picks the newest run under `<runs_dir>/<name>` whose checkpoint holds the same
    config (ignoring how long to train and where), from its newest checkpoint that loads:
    last.pt, or best.pt when last.pt is damaged. A run that already trained `max_epochs` is
    not continued: a new one starts.
    """
    if resume is None:
        return None
    if resume != "auto":
        return resume_checkpoint(resume)
    key = ("auto", runs_dir, name)
    if key not in _chosen:
        wanted, max_epochs = _fingerprint_of(root), root.trainer.max_epochs
        _chosen[key] = _find_auto(Path(runs_dir) / name, wanted, max_epochs)
    return _chosen[key]


def forget() -> None:
    """Forget the answers given so far: for code that composes several runs in one process."""
    _chosen.clear()
    notes.clear()


# What resume=auto saw (skipped checkpoints, the choice), logged once logging is set up.
notes: list[str] = []


def _fingerprint_of(root) -> dict:
    keys = [k for k in root if k not in LOOSE and k != "hydra"]
    plain = {k: OmegaConf.to_container(root[k], resolve=True, enum_to_str=True)
             if OmegaConf.is_config(root[k]) else root[k] for k in keys}  # fmt: skip
    return _fingerprint(plain)


def _fingerprint(config: dict) -> dict:
    out = {k: v for k, v in config.items() if k not in LOOSE}
    out["trainer"] = {k: v for k, v in out["trainer"].items() if k not in LOOSE_TRAINER}
    return out


def _find_auto(parent: Path, wanted: dict, max_epochs: int) -> Path | None:
    from train import checkpoint  # torch: only when resume=auto asks for it

    any_seed = wanted.get("seed") is None  # seed=null: a run's drawn seed still matches
    runs = sorted((p for p in parent.glob("*") if (p / "checkpoints").is_dir()), reverse=True)
    skipped = False
    for run in runs:
        for name in ("last.pt", "best.pt"):
            path = run / "checkpoints" / name
            if not path.is_file():
                continue
            try:
                blob = checkpoint.Checkpoint.read(path)
            except UserError as e:
                notes.append(f"resume=auto: skipped a checkpoint it cannot use: {e.message}")
                skipped = True
                continue
            have = _fingerprint(blob.config)
            if any_seed:
                have["seed"] = None
            if have != wanted:
                break  # another config: look at the next run
            if (run / "metrics.json").is_file() and blob.state["epoch"] >= max_epochs:
                notes.append(f"resume=auto: the newest run of this config, {run}, has trained "
                             f"{max_epochs} epoch(s) already; starting anew")  # fmt: skip
                return None
            notes.append(f"resume=auto: continuing {run} from {path}")
            return path
    usable = " that this version can use" if skipped else ""
    notes.append(f"resume=auto: no run of this config under {parent}{usable} to continue; "
                 "starting anew")  # fmt: skip
    return None


# Run dirs whose lock this process holds: released when it exits (or by `release`).
_held: dict[Path, object] = {}


def lock(run: Path) -> None:
    """Hold `run`'s lock: flock on `run/.lock`, which the OS releases when the process dies
    however it dies. Another live process holding it: refused, naming its pid. Then the
    leftovers of interrupted saves in the run are removed (no one else writes there)."""
    import fcntl

    from train import files
    from train.checkpoint import clean_stale

    run = run.resolve()
    if run in _held:
        return
    files.refuse_links_in(run)  # (before anything is written into it)
    refuse_foreign(run)
    try:
        fd = files.open_for(run / ".lock", os.O_RDWR | os.O_CREAT, "its lock")
        f = os.fdopen(fd, "r+")  # held open until the process exits
    except OSError as e:
        raise UserError(
            f"{run} cannot be written ({e.strerror or e}), so the run cannot continue there: "
            "make it writable by this user, or copy it somewhere writable and resume the copy."
        ) from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise UserError(
            f"{run} is being trained by another process (pid {holder}); two at once would write "
            "over each other's checkpoints, records and TensorBoard steps. Wait for it to end "
            "(or stop it), then resume."
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _held[run] = f
    for directory in (run, run / "checkpoints"):
        if directory.is_dir():
            clean_stale(directory)


def refuse_foreign(run: Path) -> None:
    """Root writing into a run dir another user owns would leave root's files in it (that
    user could no longer resume, clean or delete their run): refused, naming the owner."""
    if os.geteuid() != 0:
        return
    owner = run.stat().st_uid
    if owner != 0:
        raise UserError(
            f"{run} belongs to user {_user(owner)}, and this process runs as root: what it "
            f"wrote there would belong to root, and {_user(owner)} could no longer resume or "
            f"delete the run. Run as that user (e.g. sudo -u '#{owner}' ..., or in Docker "
            "with UID/GID in .env: make .env), or copy the run dir and resume the copy."
        )


def _user(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def release() -> None:
    """Let go of every run dir lock this process holds (in-process runs, one after another)."""
    for f in _held.values():
        f.close()
    _held.clear()


def discard_unstarted() -> None:
    """Remove run dirs this process created for runs that failed before training started
    (no checkpoint, no event file): bad input must leave nothing behind."""
    for path in _created:
        started = (path / "checkpoints").exists() or any(path.glob("events.out.tfevents.*"))
        if path.is_dir() and not started:
            shutil.rmtree(path, ignore_errors=True)
    for folder in _made:  # (only if empty: another run may have started in it since)
        with contextlib.suppress(OSError):
            folder.rmdir()
    _created.clear()
    _made.clear()


def _fresh(parent: Path) -> Path:
    """A new run dir, claimed atomically, locked and remembered (removed if the run never
    starts)."""
    made = [p for p in (parent, *parent.parents) if not p.exists()]  # (deepest first)
    path = _claim(parent)
    _created.append(path)
    _made.extend(made)
    lock(path)
    return path


def _claim(parent: Path) -> Path:
    """A new `<parent>/<timestamp>` (or `-1`, `-2`, ...): mkdir fails if another took it."""
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for n in itertools.count():
            path = parent / (stamp if n == 0 else f"{stamp}-{n}")
            try:
                path.mkdir()
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

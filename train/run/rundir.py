"""A run's directory, `RunDir`: where each of its files is, its lock, and the one door through
which train reads and writes them (typed, atomically, never through a symbolic link).

    runs/<name>/<time>/
        .lock                 held (flock) by the process training there
        run.json, run-N.json  what made the run, one record per invocation (train.run.record)
        checkpoints/          last.pt, best.pt (train.run.checkpoint), exported models
        metrics.json          the best weights' scores (train.run.metrics)
        train.log, summary.txt, evaluation-<split>.json, tune.json
        .hydra/               Hydra's copies of the config; events.out.tfevents.* TensorBoard's
"""

import itertools
import os
import re
from datetime import datetime
from pathlib import Path

from train.errors import UserError
from train.run import files

# A run's name is one folder under the runs dir: letters and digits (any script), _ - . = , +
NAME = re.compile(r"[\w=,+-][\w.=,+-]*")
NAME_CHARS = "letters and digits (any script), _ - . = , and +, not starting with a dot"


class RunDir:
    """One run's directory (it need not exist yet: a new run's is made by `claim`)."""

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    def checkpoint(self, name: str) -> Path:
        """checkpoints/<name>.pt (last, best)."""
        return self.path / "checkpoints" / f"{name}.pt"

    def has_checkpoints(self) -> bool:
        return (self.path / "checkpoints").is_dir()

    def finished(self) -> bool:
        """Whether the run was scored at its end (it has metrics.json)."""
        return (self.path / "metrics.json").is_file()

    # --- reading: each typed file by its one reader ----------------------------------------

    def read_checkpoint(self, name: str):
        """checkpoints/<name>.pt, verified and typed (train.run.checkpoint.Checkpoint)."""
        from train.run.checkpoint import Checkpoint

        return Checkpoint.read(self.checkpoint(name))

    def records(self) -> list:
        """run.json, run-1.json, ... in the order they were written (RunRecords)."""
        from train.run.record import RunRecord

        paths = sorted(self.path.glob("run*.json"), key=lambda p: (len(p.name), p.name))
        if not paths:
            raise UserError(
                f"{self.path} has no run.json: give a run directory made by python -m train."
            )
        return [RunRecord.read(p) for p in paths]

    def read(self, name: str) -> str:
        """A text file of the run's own (metrics.csv), as it is."""
        return (self.path / name).read_text()

    def contents(self, *names: str) -> dict[str, bytes]:
        """The named files of the run that exist, each whole (what a logger uploads)."""
        return {name: (self.path / name).read_bytes() for name in names
                if (self.path / name).is_file()}  # fmt: skip

    def metrics(self):
        """metrics.json, typed (train.run.metrics.Metrics)."""
        from train.run.metrics import Metrics

        return Metrics.read(self.path / "metrics.json")

    # --- writing: atomically, never through a link (train.run.files) -----------------------

    def write(self, name: str, data: bytes | str, what: str = "its own file", sync: bool = True,
              numbered: bool = False) -> Path:  # fmt: skip
        """`data` as the whole of the file `name` (a path inside the run dir); `numbered`: in
        name-1.ext, name-2.ext, ... if it exists. The path written."""
        path = files.unused_path(self.path / name) if numbered else self.path / name
        files.write(path, data, what, sync)
        return path

    def write_json(self, name: str, obj, numbered: bool = False) -> Path:
        """`obj` as JSON in `name`; `numbered`: in name-1.json, name-2.json, ... if it exists."""
        path = files.unused_path(self.path / name) if numbered else self.path / name
        files.write_json(path, obj)
        return path

    def add_record(self, record) -> Path:
        """This invocation's RunRecord: run.json, or run-N.json beside an earlier one."""
        return self.write_json("run.json", record.to_dict(), numbered=True)

    def write_metrics(self, metrics) -> None:
        files.write_json(self.path / "metrics.json", metrics.to_dict())

    def save_checkpoint(self, name: str, payload: dict) -> None:
        """checkpoints/<name>.pt, checksummed and replaced atomically."""
        from train.run import checkpoint

        checkpoint.save(self.checkpoint(name), payload)

    def log_handler(self):
        """A logging handler appending to train.log (never through a link)."""
        return files.LogFile(self.log)

    def refuse_links(self) -> None:
        """Refused in one paragraph when a link sits where train writes (before writing)."""
        files.refuse_links_in(self.path)

    def writable(self, what: str, fix: str, folder: str = "") -> None:
        """Refused, before any work, when `what` cannot be saved in the run dir (or `folder`)."""
        files.writable(self.path / folder, what, fix)

    # --- the lock ---------------------------------------------------------------------------

    def lock(self) -> "Lock":
        """Hold this run's lock (see `Lock`)."""
        return Lock(self.path.resolve())


class Lock:
    """A run dir's lock: flock on `.lock`, which the OS releases when the process dies however
    it dies. Another live process holding it: refused, naming its pid. Then the leftovers of
    interrupted saves in the run are removed (no one else writes there)."""

    def __init__(self, run: Path):
        import fcntl

        from train.run.checkpoint import clean_stale

        self.run, self.file = run, None
        files.refuse_links_in(run)  # (before anything is written into it)
        refuse_foreign(run)
        try:
            fd = files.open_for(run / ".lock", os.O_RDWR | os.O_CREAT, "its lock")
            f = os.fdopen(fd, "r+")  # held open until released, or the process exits
        except OSError as e:
            raise UserError(
                f"{run} cannot be written ({e.strerror or e}), so the run cannot continue "
                "there: make it writable by this user, or copy it somewhere writable and "
                "resume the copy."
            ) from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise UserError(
                f"{run} is being trained by another process (pid {holder}); two at once would "
                "write over each other's checkpoints, records and TensorBoard steps. Wait for "
                "it to end (or stop it), then resume."
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self.file = f
        for directory in (run, run / "checkpoints"):
            if directory.is_dir():
                clean_stale(directory)

    def release(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


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


def claim(parent: Path) -> Path:
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

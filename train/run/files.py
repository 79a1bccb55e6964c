"""Every file train writes, through one door that never follows a symbolic link.

A run dir (and a data dir's caches) is untrusted input: a link planted where one of our files
goes (`ln -s ~/precious RUN/.lock`) must not make us truncate, append to or replace its
target. So files are created with O_EXCL | O_NOFOLLOW, opened for appending or locking with
O_NOFOLLOW, and replaced atomically (a temporary file beside the target, fsynced, renamed
over it); a link where a file of ours should be is refused in one paragraph, naming it.
"""

import errno
import itertools
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from train.errors import UserError

NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def temp_name(path: Path) -> Path:
    """Where `path` is written before it is renamed into place: `.<name>.tmp-<pid>`, so a
    later run can tell a dead writer's leftovers (`checkpoint.clean_stale`)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def refuse_link(path: Path, what: str = "its own file") -> None:
    """A symbolic link at `path` (or at the folder it is in) is refused, naming it."""
    for p in (path, path.parent):
        if p.is_symlink():
            raise UserError(
                f"{p} is a symbolic link (to {os.readlink(p)}) where train keeps {what}. train "
                "never writes through a link in a run or data dir, so nothing was written; a "
                "link there was not made by train and may have been planted. Remove it (or "
                "copy the run to a directory of your own) and run again."
            )


def refuse_links_in(run: Path) -> None:
    """Refuse a run dir holding any symbolic link where train writes (the dir itself, its
    files, checkpoints/ and .hydra/), before anything is written into it."""
    found = [p for p in _where_we_write(run) if p.is_symlink()]
    if found:
        refuse_link(found[0], "files of its own" if found[0].is_dir() else "its own file")


def _where_we_write(run: Path) -> Iterator[Path]:
    for p in run.iterdir():
        yield p
        if p.name in ("checkpoints", ".hydra") and p.is_dir() and not p.is_symlink():
            yield from p.rglob("*")


def create(path: Path) -> BinaryIO:
    """A new file at `path`, opened for writing; never a link's target, never an old file."""
    return open(path, "xb", opener=lambda p, flags: os.open(p, flags | NOFOLLOW, 0o644))


def open_for(path: Path, flags: int, what: str):
    """`path` opened with `flags` (O_APPEND, O_RDWR, ...) and O_NOFOLLOW: a file descriptor.
    A link there is refused (one paragraph), never followed."""
    refuse_link(path, what)
    try:
        return os.open(path, flags | NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:  # a link appeared after the check
            refuse_link(path, what)
        raise


@contextmanager
def replacing(path: Path, what: str = "its own file", sync: bool = True) -> Iterator[BinaryIO]:
    """A new file object that becomes `path` (atomically: a reader sees the old file or the
    new one) when the block ends without an error; on an error it is removed, and `path` is
    untouched. `sync`: fsync the file and its folder (checkpoints, records: durable)."""
    refuse_link(path, what)
    tmp = temp_name(path)
    if tmp.is_symlink():
        refuse_link(tmp, what)
    tmp.unlink(missing_ok=True)  # (a dead writer's with this pid)
    try:
        with create(tmp) as f:
            yield f
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync:
        fsync_dir(path.parent)


def write(path: Path, data: bytes | str, what: str = "its own file", sync: bool = True) -> None:
    """`data` as the whole of `path`, replaced atomically (see `replacing`)."""
    with replacing(path, what, sync) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def fsync_dir(directory: Path) -> None:
    """The folder's entries on disk: a rename survives a power cut."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LogFile(logging.FileHandler):
    """logging's FileHandler (Hydra's job log, train.log), opening its file without following
    a link: a planted `train.log -> ~/.bashrc` is refused, not appended to."""

    def _open(self):
        fd = open_for(Path(self.baseFilename), os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                      "its log")  # fmt: skip
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def write_json(path: Path, obj) -> None:
    """Write atomically, so a reader never sees half a file (never through a link)."""
    write(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def writable(directory: Path, what: str, fix: str) -> None:
    """Refuse, before any work, to save `what` into a directory this process cannot write."""
    if not os.access(directory, os.W_OK):
        why = "a read-only file system or no permission" if directory.is_dir() else "missing"
        raise UserError(f"{directory} is not writable ({why}), so {what} cannot be saved there; "
                        f"{fix}")  # fmt: skip


def unused_path(path: Path) -> Path:
    """`path`, or `name-1.ext`, `name-2.ext`, ...: the first that does not exist yet."""
    numbered = (path.with_name(f"{path.stem}-{n}{path.suffix}") for n in itertools.count(1))
    return next(p for p in itertools.chain([path], numbered) if not p.exists())

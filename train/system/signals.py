"""Graceful stop: SIGTERM (docker stop, a scheduler's preemption) or SIGINT (Ctrl-C) asks the
loop to finish the current step and write a checkpoint that resume continues from exactly.
A second signal stops at once. Before the loop (and after it) a signal ends the process at
once, with one line and 143/130.

This module imports nothing heavy: `python -m train` installs its handlers first, before
torch, numpy or Hydra load, so a signal during those imports is handled like any other."""

import os
import signal
import sys
from contextlib import contextmanager
from types import FrameType

# A signal this soon after the first is the same request, relayed twice: Ctrl-C in a terminal
# reaches both the docker CLI and its compose plugin, and each passes it to the container.
SAME_REQUEST_S = 1.0


def stop_signals() -> tuple[int, ...]:
    """The signals that stop a run gracefully, in the order one wins over another across
    ranks: SIGTERM, SIGINT, and in a job submitit started (hydra/launcher=slurm or local) its
    warning before the time limit, which submitit asks SLURM for: SIGUSR2 unless
    SUBMITIT_PREEMPT_SIGNAL (submitit's own variable) names another."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return signal.SIGTERM, signal.SIGINT
    warning = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))
    return tuple(dict.fromkeys((signal.SIGTERM, signal.SIGINT, warning)))


BEFORE = "before training started; nothing was trained."
AFTER = "after training finished; its checkpoints and metrics.json are complete."


def until_training(discard=None) -> None:
    """Until the loop takes over, SIGTERM/SIGINT end the process at once with 143/130 and one
    line, after `discard()` (removing the run dir made for a run that never started). At once,
    wherever the signal lands: an exception raised inside an import (torch's takes seconds)
    would leave a half-imported module that the cleanup then trips over."""
    _exit_on_signal(BEFORE, discard)


def after_training() -> None:
    """Once training and scoring are done, where `until_training` was in force (a command,
    not a notebook's process): a signal ends the process at once, saying so."""
    if getattr(signal.getsignal(signal.SIGTERM), "exits", False):
        _exit_on_signal(AFTER)


def _exit_on_signal(said: str, discard=None) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        line = f"error: stopped by {signal.Signals(signum).name} {said}\n"
        for stream in (sys.stdout, sys.stderr):
            try:  # (a print here could land inside another print: os.write cannot)
                stream.flush()
            except (OSError, RuntimeError, ValueError):
                pass
        if discard is not None:
            try:
                discard()
            except Exception:  # noqa: BLE001 - the exit must happen whatever the cleanup meets
                pass
        os.write(2, line.encode())
        os._exit(128 + signum)

    handle.exits = True  # (what after_training looks for)
    for sig in stop_signals():
        signal.signal(sig, handle)


@contextmanager
def raising():
    """While entered, SIGTERM/SIGINT raise a UserError (exit 143/130) where they land, for
    waits that say what goes on without this process (a sweep's submitted jobs)."""

    def handle(signum: int, frame: FrameType | None) -> None:
        from train.errors import UserError

        raise UserError(f"stopped by {signal.Signals(signum).name}", code=128 + signum)

    previous = {sig: signal.signal(sig, handle) for sig in stop_signals()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class StopRequest:
    """While entered, the first SIGTERM/SIGINT sets `signum` instead of killing the process."""

    def __init__(self):
        self.signum: int | None = None
        self.agreed = False  # every rank knows of the signal: stop at this step
        self._first = 0.0  # when the first signal reached the process (time.monotonic)
        self._arrivals: Arrivals | None = None
        self._previous: dict = {}

    def __bool__(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 143 for SIGTERM, 130 for SIGINT

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    def agree(self, signum: int | None) -> None:
        """The ranks agreed on `signum` (None: no rank received one): stop as if it had
        arrived here, and say so in `agreed` (a signal this rank caught alone may reach the
        others a step later)."""
        if signum is not None:
            self.agreed = True
            if self.signum is None:
                self.signum = signum

    def __enter__(self) -> "StopRequest":
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self  # (only the main thread takes signals: a script's worker thread)
        for sig in stop_signals():
            self._previous[sig] = signal.signal(sig, self._handle)
        self._arrivals = Arrivals.watch()
        return self

    def __exit__(self, *exc) -> None:
        if self._arrivals is not None:
            self._arrivals.close()
            self._arrivals = None
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        import time

        now = time.monotonic()
        arrived = self._arrivals.since_last() if self._arrivals is not None else []
        if self.signum is None:
            self.signum, self._first = signum, min(arrived, default=now)
            return
        # (a copy's arrival, or the first's recorded late: then the handler's own time)
        latest = max((t for t in arrived if t > self._first), default=now)
        if latest - self._first >= SAME_REQUEST_S:
            signal.signal(signum, signal.SIG_DFL)  # asked twice: stop now
            signal.raise_signal(signum)


class Arrivals:
    """When signals reached the process, as its C-level handler saw them: Python runs a
    handler only once the main thread is back in the interpreter, and a step's long torch op or
    a checkpoint's fsync would make a relayed copy, a moment after the first, look like a
    second request. A thread reads the wakeup fd, to which that C handler writes at once."""

    def __init__(self, read: int, write: int):
        import threading

        self._read, self._write = read, write
        self._times: list[float] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._run, name="signal-arrivals", daemon=True).start()

    @classmethod
    def watch(cls) -> "Arrivals | None":
        """Start watching, unless the process already has a wakeup fd (an asyncio loop's)."""
        read, write = os.pipe()
        os.set_blocking(write, False)
        previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        if previous != -1:
            signal.set_wakeup_fd(previous)  # (not ours to take: put it back)
            os.close(read)
            os.close(write)
            return None
        return cls(read, write)

    def since_last(self) -> list[float]:
        """The arrival times recorded since the last call."""
        with self._lock:
            times, self._times = self._times, []
        return times

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        os.close(self._write)  # (the reader sees the end of the pipe and stops)

    def _run(self) -> None:
        import time

        while data := os.read(self._read, 64):
            now = time.monotonic()
            with self._lock:
                self._times += [now for signum in data if signum in stop_signals()]
        os.close(self._read)

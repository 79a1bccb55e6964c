"""Graceful stop: SIGTERM (docker stop, a scheduler's preemption) or SIGINT (Ctrl-C) asks the
loop to finish the current step and write a checkpoint that resume continues from exactly.
A second signal stops at once."""

import signal
from types import FrameType

SIGNALS = [signal.SIGTERM, signal.SIGINT]  # in the order one wins over another across ranks


def stop_also_on(signum: int) -> None:
    """Stop gracefully on `signum` too (a SLURM job's warning before its time limit)."""
    if signum not in SIGNALS:
        SIGNALS.append(signum)


def until_training() -> None:
    """Until the loop takes over, SIGTERM/SIGINT end the process at once with 143/130 and one
    line; the entrypoint removes the run dir made for a run that never started."""

    def handle(signum: int, frame: FrameType | None) -> None:
        from train.errors import UserError

        raise UserError(f"stopped by {signal.Signals(signum).name} before training started; "
                        "nothing was trained.", code=128 + signum)  # fmt: skip

    for sig in SIGNALS:
        signal.signal(sig, handle)


class StopRequest:
    """While entered, the first SIGTERM/SIGINT sets `signum` instead of killing the process."""

    def __init__(self):
        self.signum: int | None = None
        self.agreed = False  # every rank knows of the signal: stop at this step
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
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # asked twice: stop now
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        self.signum = signum

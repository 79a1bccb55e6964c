"""The loop's side concerns, one small callback each (see `loop.Callback`).

What decides when training ends runs on every rank, deciding alike from what the ranks agreed
on: `SignalStop`, `EarlyStopping`, `NonFiniteGuard`. What reports or saves runs on rank 0
only (the other ranks train and agree, and say only what goes wrong): `Console`, `Curves`,
`Checkpoints`, `Timing`."""

import logging
import math
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from train.errors import UserError
from train.fit.loop import Callback, Epoch, State, StopTraining
from train.system.signals import StopRequest

EXIT_NONFINITE = 3

log = logging.getLogger("train")


def states(callbacks: list[Callback]) -> dict:
    """What the callbacks carry into a checkpoint, by name (a copy: plain values)."""
    return {cb.name: cb.state_dict() for cb in callbacks if cb.name}


def restore(callbacks: list[Callback], saved: dict, source) -> None:
    """Continue each named callback from the `states` saved in checkpoint `source` (one it
    lacks starts fresh); an entry that does not fit is one paragraph naming it."""
    for cb in callbacks:
        if cb.name and cb.name in saved:
            try:
                cb.load_state_dict(saved[cb.name])
            except (KeyError, TypeError, ValueError) as e:
                raise UserError(
                    f"checkpoint {source}: its callbacks entry {cb.name!r} is malformed "
                    f"({saved[cb.name]!r}; {type(e).__name__} {e}), expected what "
                    f"{type(cb).__name__} saves, e.g. {cb.state_dict()!r}. The file was not "
                    "written by train, or was edited; resume from another checkpoint."
                ) from None


class SignalStop(Callback):
    """SIGTERM, SIGINT or a scheduler's warning (signals.stop_signals): training ends after the
    step at which the ranks agree on it (the loop reads it with every step's loss), so each
    rank stops at the same step and rank 0's last.pt resumes it exactly."""

    def __init__(self, request: StopRequest):
        self.request = request

    def should_stop(self, state: State, epoch: Epoch | None = None) -> bool:
        return self.request.agreed


class EarlyStopping(Callback):
    """Ends training once the monitored value has not improved for `patience` epochs (None:
    never; the count goes on all the same). A resume counts on, under its own patience: a
    larger one, or None, trains a run that stopped early further."""

    name = "early_stopping"

    def __init__(self, patience: int | None, monitor: str):
        self.patience, self.monitor = patience, monitor
        self.bad_epochs = 0  # epochs since the monitored value was last the best
        self.already = False  # stopped before this process trained

    @property
    def stopped(self) -> bool:
        """Not improved for `patience` epochs (0: for one, as 1): stopped early."""
        return self.patience is not None and self.bad_epochs >= max(self.patience, 1)

    def should_stop(self, state: State, epoch: Epoch | None = None) -> bool:
        if epoch is not None and not self.stopped:
            self.bad_epochs = 0 if epoch.improved else self.bad_epochs + 1
        return self.stopped

    def on_fit_end(self, state: State) -> None:
        if self.stopped:
            n = self.bad_epochs
            log.info("early stopping%s: %s has not improved for %d epoch%s (trainer.patience=%d)%s",
                     " had already ended this run" if self.already else "", self.monitor, n,
                     "" if n == 1 else "s", self.patience,
                     "; a larger trainer.patience, or null, trains it on" if self.already
                     else "")  # fmt: skip

    def state_dict(self) -> dict:
        return {"bad_epochs": self.bad_epochs}

    def load_state_dict(self, saved: dict) -> None:
        self.bad_epochs = int(saved["bad_epochs"])
        self.already = self.stopped


class NonFiniteGuard(Callback):
    """A NaN or infinite loss (the ranks' mean: NaN if any rank's is) ends training before the
    weights change with it: exit 3, last.pt holding the run just before that step. With `skip`
    (trainer.on_nonfinite=skip) the batch is skipped and counted instead, unless most of an
    epoch's batches are: that is not training, and ends the run after that epoch."""

    name = "nonfinite"

    def __init__(self, skip: bool):
        self.skip, self.skipped = skip, 0  # batches skipped in the whole run
        self.epoch_skipped, self.epoch_seen = 0, 0  # in the current epoch (resumed too)

    def on_loss(self, state: State, loss: float) -> bool:
        if math.isfinite(loss):
            self.epoch_seen += 1
            return True
        if not self.skip:
            raise StopTraining(UserError(
                f"the loss became {loss} at step {state.step + 1} (epoch {state.epoch + 1}, "
                f"batch {state.batch_in_epoch + 1}); the run stopped before updating the "
                "weights with it, and checkpoints/last.pt holds the run just before that step. "
                "A new run with a lower optim.lr, with trainer.grad_clip set, or skipping such "
                "batches (trainer.on_nonfinite=skip) avoids it.", code=EXIT_NONFINITE))  # fmt: skip
        self.skipped += 1
        self.epoch_skipped += 1
        self.epoch_seen += 1
        return False

    def should_stop(self, state: State, epoch: Epoch | None = None) -> bool:
        if epoch is None:
            return False
        skipped, seen = self.epoch_skipped, self.epoch_seen
        self.epoch_skipped = self.epoch_seen = 0
        if skipped * 2 > seen:
            raise StopTraining(UserError(
                f"trainer.on_nonfinite=skip skipped {skipped} of {seen} batches in epoch "
                f"{epoch.number} for a NaN or infinite loss: the run is not learning. "
                "checkpoints/last.pt holds the run so far; a new run with a lower optim.lr or "
                "with trainer.grad_clip set avoids it.",
                code=EXIT_NONFINITE))  # fmt: skip
        return False

    def state_dict(self) -> dict:
        return {"skipped": self.skipped, "epoch_skipped": self.epoch_skipped,
                "epoch_seen": self.epoch_seen}  # fmt: skip

    def load_state_dict(self, saved: dict) -> None:
        self.skipped = int(saved["skipped"])
        self.epoch_skipped, self.epoch_seen = int(saved["epoch_skipped"]), int(saved["epoch_seen"])


class Console(Callback):
    """The epoch lines, at most every `every_s` seconds when epochs are fast; the last epoch
    always, and the best one at the end if its line was skipped."""

    def __init__(self, max_epochs: int, every_s: float):
        self.max_epochs, self.every_s, self.last = max_epochs, every_s, float("-inf")
        self.best: Epoch | None = None  # the best epoch, when its line was not printed

    def on_epoch_end(self, state: State, epoch: Epoch) -> None:
        now = time.monotonic()
        printed = epoch.final or now - self.last >= self.every_s
        if printed:
            log.info("%s", self.line(epoch))
            self.last = now
        if epoch.improved:
            self.best = None if printed else epoch  # (formatted only if it is printed)

    def on_fit_end(self, state: State) -> None:
        if self.best is not None:
            log.info("best: %s", self.line(self.best))

    def line(self, e: Epoch) -> str:
        parts = " | ".join(f"{split} " + " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
                           for split, metrics in e.results.items())  # fmt: skip
        share = 100 * e.val_seconds / max(e.seconds, 1e-9)
        val = f", validation {share:.0f}% of the epoch" if "val" in e.results else ""
        return (f"epoch {e.number}/{self.max_epochs} | {parts} | lr {e.lr:.3g} | {e.seconds:.2f}s, "
                f"{e.speed:,.0f} samples/s{val}")  # fmt: skip


class Curves(Callback):
    """The run's curves, to every logger (train.loggers): the step loss every `every_n_steps`
    steps, and each epoch's scalars at once. The ones a user looks for come first: train/ and
    val/; what tells how the run goes (the step loss, lr, speed, epoch time) in vitals/, which
    TensorBoard sorts after them (and before viz/, the pictures)."""

    def __init__(self, loggers, every_n_steps: int, loss_scale: float):
        self.loggers, self.every, self.scale = loggers, every_n_steps, loss_scale

    def on_step_end(self, state: State, loss: float) -> None:
        if state.step % self.every == 0:
            self.loggers.scalars({"vitals/loss_step": loss * self.scale}, state.step)

    def on_epoch_end(self, state: State, e: Epoch) -> None:
        values = {f"{split}/{k}": v for split, metrics in e.results.items()
                  for k, v in metrics.items()}  # fmt: skip
        share = e.val_seconds / max(e.seconds, 1e-9)
        values.update({"vitals/lr": e.lr, "vitals/samples_per_s": e.speed,
                       "vitals/epoch_seconds": e.seconds,
                       "vitals/validation_share": share})  # fmt: skip
        self.loggers.scalars(values, state.step, e.number)


class Checkpoints(Callback):
    """When last.pt and best.pt are written (trainer.checkpoint_every_s): at an epoch's end
    once that many seconds have passed since the last write (0: every epoch), and always at
    the end of training, on a stop mid-epoch (a signal, max_steps) and before a stop for a
    non-finite loss: a kill -9 loses at most that much training. Meanwhile the best weights
    wait in memory. best.pt is written before last.pt, and the loggers are flushed before
    either: whatever a checkpoint holds, its scalars are written too.

    `payload(state, copy)` makes a checkpoint's contents, `write(name, payload)` writes one."""

    def __init__(self, payload: Callable, write: Callable, every_s: float, flush: Callable):
        self.payload, self.write, self.every_s, self.flush = payload, write, every_s, flush
        self.best: dict | None = None  # a better epoch's payload, not written yet
        self.since = time.monotonic()
        self.step: int | None = None  # of the last write

    def on_epoch_end(self, state: State, epoch: Epoch) -> None:
        if epoch.final or time.monotonic() - self.since >= self.every_s:
            self.now(state, epoch.improved)
        elif epoch.improved:
            self.best = self.payload(state, copy=True)

    def on_stop(self, state: State) -> None:
        self.now(state)

    def on_fit_end(self, state: State) -> None:
        if self.best is not None or self.step != state.step:  # (a signal or max_steps
            self.now(state)  # between two epochs)

    def now(self, state: State, improved: bool = False) -> None:
        """Write what is pending: best.pt (this state's, if it `improved`), then last.pt."""
        self.flush()
        if improved or self.best is not None:
            self.write("best", self.payload(state) if improved else self.best)
            self.best = None
        self.write("last", self.payload(state))
        self.since, self.step = time.monotonic(), state.step


@dataclass
class Timing(Callback):
    """Where this invocation's time went (metrics.json "timing"). Start-up is process start (or
    `started`, a perf_counter reading: when train.api was called, in a notebook's long-lived
    kernel) to the end of the first optimizer step; epochs are timed from then on, so the
    first epoch's figure excludes start-up, as the benchmark requires."""

    first_step_s: float | None = None
    epochs: list[dict] = field(default_factory=list)
    loop_s: float | None = None  # the end of the first step to the end of training
    loop_start: float | None = None  # (perf_counter at the end of the first step)
    started: float | None = None  # (perf_counter when the run was asked for; None: the process)

    def on_step_end(self, state: State, loss: float) -> None:
        if self.first_step_s is None:  # start-up ends here; timing starts now
            self.loop_start = time.perf_counter()
            self.first_step_s = process_seconds() if self.started is None else \
                self.loop_start - self.started  # fmt: skip
            log.info("first optimizer step done %.1fs after start", self.first_step_s)

    def on_epoch_end(self, state: State, e: Epoch) -> None:
        self.epochs.append({"epoch": e.number, "samples": e.samples, "seconds": e.seconds,
                            "val_seconds": e.val_seconds})  # fmt: skip

    def on_fit_end(self, state: State) -> None:
        if self.loop_start is not None:
            self.loop_s = time.perf_counter() - self.loop_start

    def to_dict(self, device) -> dict:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # (Linux: KiB)
        out = {"first_step_s": self.first_step_s, "loop_s": self.loop_s, "epochs": self.epochs,
               "peak_rss_mb": rss}  # fmt: skip
        if device.type == "cuda":
            out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        return out


def process_seconds() -> float:
    """Seconds since this process started (Linux: from /proc; elsewhere: since train loaded)."""
    try:
        started = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - started / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return time.perf_counter() - _LOADED


_LOADED = time.perf_counter()

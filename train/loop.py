"""The training loop: epochs of steps, with the side concerns (logging, checkpoints, early
stopping, step limits) as small named pieces around the step rather than inside it."""

import logging
import math
import os
import resource
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from train import board, distributed
from train.batches import Batches, epoch_order
from train.errors import UserError
from train.progress import track
from train.signals import StopRequest
from train.task import Meter, Task

EXIT_NONFINITE = 3

log = logging.getLogger("train")


@dataclass
class Settings:
    """The loop's knobs, as plain values (from `cfg.trainer`)."""

    max_epochs: int
    max_steps: int | None
    log_every_n_steps: int
    monitor: str
    monitor_mode: str
    patience: int | None
    grad_clip: float | None
    progress: str
    skip_nonfinite: bool = False  # skip batches whose loss is NaN/inf instead of stopping
    print_every_s: float = 0.0  # an epoch line at most this often (the last one always)


class Checkpoints:
    """When last.pt and best.pt are written (trainer.checkpoint_every_s): at an epoch's end
    once that many seconds have passed since the last write (0: every epoch), and always at
    the end of training, on a stop mid-epoch (a signal, max_steps) and before a stop for a
    non-finite loss: a kill -9 loses at most that much training. Meanwhile the best weights
    wait in memory. best.pt is written before last.pt, and the TensorBoard writer is flushed
    before either: whatever a checkpoint holds, its scalars are on disk too."""

    def __init__(self, payload, write, every_s: float, writer):
        self.payload, self.write, self.every_s, self.writer = payload, write, every_s, writer
        self.best: dict | None = None  # a better epoch's payload, not written yet
        self.since = time.monotonic()
        self.step: int | None = None  # of the last write

    def epoch_end(self, state: "State", improved: bool, final: bool) -> None:
        if final or time.monotonic() - self.since >= self.every_s:
            self.now(state, improved)
        elif improved:
            self.best = self.payload(state, copy=True)

    def now(self, state: "State", improved: bool = False) -> None:
        """Write what is pending: best.pt (this state's, if it `improved`), then last.pt."""
        self.writer.flush()
        if improved or self.best is not None:
            self.write("best", self.payload(state) if improved else self.best)
            self.best = None
        self.write("last", self.payload(state))
        self.since, self.step = time.monotonic(), state.step

    def pending(self, state: "State") -> bool:
        return self.best is not None or self.step != state.step


class EpochLines:
    """The console's epoch lines, at most every `every_s` seconds when epochs are fast; the
    last epoch always, and the best one at the end if its line was skipped."""

    def __init__(self, every_s: float):
        self.every_s, self.last = every_s, float("-inf")
        self.best = None  # the best epoch's line (a function), when it was not printed

    def epoch(self, line, improved: bool, final: bool) -> None:
        """`line()` formats the epoch's line: called only when it is printed."""
        now = time.monotonic()
        printed = final or now - self.last >= self.every_s
        if printed:
            log.info("%s", line())
            self.last = now
        if improved:
            self.best = None if printed else line

    def end(self) -> None:
        if self.best is not None:
            log.info("best: %s", self.best())


class NonFiniteLoss(Exception):
    """The loss of a batch was NaN or infinite; nothing was stepped with it."""


@dataclass
class State:
    """Where training stands; saved in every checkpoint so resume continues exactly."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps so far
    batch_in_epoch: int = 0  # batches of the current epoch already done (mid-epoch stop)
    best: float | None = None  # best monitored value so far
    best_step: int | None = None
    bad_epochs: int = 0  # epochs since `best` improved (early stopping)
    stopped_early: bool = False
    skipped: int = 0  # batches skipped for a non-finite loss (trainer.on_nonfinite=skip)
    meter: dict | None = None  # the unfinished epoch's metric sums (mid-epoch stop)
    history: list[float] = field(default_factory=list)  # the monitored value, epoch by epoch

    def to_dict(self) -> dict:
        """A copy, as plain values (a checkpoint's "state"); cheaper than dataclasses.asdict,
        which deep-copies the whole history at every save."""
        out = dict(vars(self))
        out["history"] = list(self.history)
        return out


@dataclass
class Timing:
    """Where this invocation's time went (metrics.json "timing"; TensorBoard's
    train/samples_per_s, train/epoch_seconds, train/validation_share).

    Start-up is process start to the end of the first optimizer step; epochs are timed from
    then on, so the first epoch's figure excludes start-up, as the benchmark requires.
    """

    first_step_s: float | None = None
    epochs: list[dict] = field(default_factory=list)
    loop_s: float | None = None  # the end of the first step to the end of the last epoch
    loop_start: float | None = None  # (perf_counter at the end of the first step)

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


def train_steps(
    model: nn.Module,
    batches: Iterable,
    optimizer,
    task: Task,
    meter: Meter,
    *,
    autocast: Callable[[], AbstractContextManager],
    scaler,
    grad_clip: float | None,
    skip_nonfinite: bool,
    after_step: Callable[[float], bool],
    on_skip: Callable[[], None],
    read_loss: Callable[[torch.Tensor], float] = torch.Tensor.item,
) -> int:
    """Train on `batches` until they run out or `after_step(loss)` says stop; the batches used.

    A NaN/inf loss raises NonFiniteLoss before any weight changes (or, with `skip_nonfinite`,
    the batch is skipped): one device sync per step (`read_loss`: `.item()`, or the ranks'
    mean), free on the CPU.
    """
    model.train()
    used = 0
    for x, y in batches:
        used += 1
        optimizer.zero_grad(set_to_none=True)  # first, as in the canonical loop: the freed
        # gradients' memory can serve this forward pass
        with autocast():
            out = model(x)
            loss = task.loss(out, y)
        value = read_loss(loss)  # (a device sync; cheaper than a torch.isfinite kernel and one)
        if not math.isfinite(value):
            if not skip_nonfinite:
                raise NonFiniteLoss(value, used)
            on_skip()
            continue
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        # The loss as read: no kernel. Under torchrun it is the ranks' mean; the ranks train
        # equal shares, so the meters' sums over ranks still total every example's loss.
        meter.update(task, out, y, value)
        if after_step(value):
            break
    return used


@torch.inference_mode()
def evaluate(
    model: nn.Module, batches: Batches, task: Task, autocast: Callable[[], AbstractContextManager]
) -> Meter:
    """One pass over `batches` without gradients; the filled meter."""
    model.eval()
    meter = task.meter(batches.device)
    for x, y in batches:
        with autocast():
            out = model(x)
            meter.update(task, out, y, task.loss(out, y))
    return meter


def fit(
    model,
    optimizer,
    scheduler,
    scaler,
    task: Task,
    train: Batches,
    val: Batches | None,
    s: Settings,
    state: State,
    seed: int,
    *,
    autocast,
    writer,
    checkpoints: Checkpoints,
    stop=None,
    timing: Timing | None = None,
    evaluator: nn.Module | None = None,
) -> State:
    """Train to max_epochs, max_steps, early stop or `stop` turning true (a signal);
    `checkpoints` decides when last.pt and best.pt are written (at the end, always).

    Under torchrun every rank runs this with its own shard (`train` knows it); the ranks agree
    on each step's loss and on stopping, and sum their metrics before anything is decided.
    `evaluator` is the model for validation (default `model`; the plain module under DDP).
    """
    monitor_split = "val" if val is not None else "train"
    timing = timing if timing is not None else Timing()
    stop = stop if stop is not None else StopRequest()
    evaluator = evaluator if evaluator is not None else model
    ranks = distributed.ranks()

    lines = EpochLines(s.print_every_s)
    stopping = [False]  # a signal, as the ranks agreed on it: all of them stop at one step

    def agree(signum: int | None) -> None:
        if signum is not None:
            stopping[0] = True
            stop.adopt(signum)

    def read_loss(loss: torch.Tensor) -> float:
        value, signum = distributed.step_consensus(loss, stop.signum)
        agree(signum)
        return value

    def halt() -> bool:  # (never `stop` itself: a signal may reach one rank a step early)
        return _limit(s, state) or stopping[0]

    def halt_between_steps() -> bool:
        agree(distributed.any_signal(stop.signum))
        return halt()

    while state.epoch < s.max_epochs and not state.stopped_early and not halt_between_steps():
        start, skipped_before = state.batch_in_epoch, state.skipped
        clock = [time.perf_counter(), 0]  # when this epoch's timing began, samples before it
        meter = task.meter(train.device)
        if state.meter is not None and ranks.main:  # (saved summed over ranks)
            meter.load_state_dict(state.meter)
        order = epoch_order(len(train.split), seed, state.epoch)
        desc = f"epoch {state.epoch + 1}/{s.max_epochs}"
        batches = track(train.ordered(order, start), len(train) - start, desc, s.progress)

        def after_step(loss: float, meter=meter, clock=clock) -> bool:
            state.step += 1
            if timing.first_step_s is None:  # start-up ends here; timing starts now
                timing.first_step_s = process_seconds()
                log.info("first optimizer step done %.1fs after start", timing.first_step_s)
                clock[:] = time.perf_counter(), meter.n
                timing.loop_start = clock[0]
            if state.step % s.log_every_n_steps == 0:
                writer.add_scalar("train/loss_step", loss * task.loss_scale, state.step)
            return halt()

        def on_skip() -> None:
            state.skipped += 1

        try:
            done = train_steps(model, batches, optimizer, task, meter, autocast=autocast,
                               scaler=scaler, grad_clip=s.grad_clip,
                               skip_nonfinite=s.skip_nonfinite, after_step=after_step,
                               on_skip=on_skip, read_loss=read_loss)  # fmt: skip
        except NonFiniteLoss as e:
            state.batch_in_epoch = start + e.args[1] - 1  # the batches before the bad one
            _keep_mid_epoch(state, meter, checkpoints)
            raise UserError(
                f"the loss became {e.args[0]} at step {state.step + 1} (epoch {state.epoch + 1}, "
                f"batch {start + e.args[1]}); the run stopped before updating the weights with "
                "it, and checkpoints/last.pt holds the run just before that step. Lower "
                "optim.lr, set trainer.grad_clip, or skip such batches with "
                "trainer.on_nonfinite=skip.",
                code=EXIT_NONFINITE,
            ) from None
        state.batch_in_epoch = start + done
        samples = (meter.n - clock[1]) * ranks.world  # (every rank trains equal shards)
        if state.skipped - skipped_before > 0:
            _check_skipping(state.skipped - skipped_before, done, state, meter, checkpoints)
        if state.batch_in_epoch < len(train):  # stopped mid-epoch: keep the sums, resume exactly
            _keep_mid_epoch(state, meter, checkpoints)
            log.info("stopped at step %d, batch %d of epoch %d; checkpoints/last.pt resumes it",
                     state.step, state.batch_in_epoch, state.epoch + 1)  # fmt: skip
            break
        meter.all_reduce()
        state.epoch, state.batch_in_epoch, state.meter = state.epoch + 1, 0, None
        if scheduler is not None:
            scheduler.step()
        results = {"train": meter.compute()}  # (reading the metrics waits for the device)
        val_start = time.perf_counter()
        if val is not None:
            checked = evaluate(evaluator, val, task, autocast)
            checked.all_reduce()  # (each rank scored its part of the split)
            results["val"] = checked.compute()
            if not math.isfinite(results["val"]["loss"]):
                log.warning("epoch %d: the validation loss is %s (the model's outputs overflow "
                            "on some validation examples)", state.epoch,
                            results["val"]["loss"])  # fmt: skip
        val_s = time.perf_counter() - val_start
        improved = _watch(results[monitor_split][s.monitor], s, state)
        seconds = time.perf_counter() - clock[0]  # training and validation
        timing.epochs.append({"epoch": state.epoch, "samples": samples,
                              "seconds": seconds, "val_seconds": val_s})  # fmt: skip
        final = state.epoch >= s.max_epochs or state.stopped_early or halt()
        line = _report(writer, results, optimizer, state, s, timing.epochs[-1])
        lines.epoch(line, improved, final)
        checkpoints.epoch_end(state, improved, final)
    if checkpoints.pending(state):  # (a signal or max_steps between two epochs)
        checkpoints.now(state)
    lines.end()
    if timing.loop_start is not None:
        timing.loop_s = time.perf_counter() - timing.loop_start
    return state


def _keep_mid_epoch(state: State, meter: Meter, checkpoints: Checkpoints) -> None:
    """Save a stop inside an epoch: its metric sums (over the ranks) go into last.pt, so a
    resume continues the epoch exactly."""
    meter.all_reduce()
    state.meter = meter.state_dict()
    checkpoints.now(state)


def _check_skipping(skipped: int, batches: int, state: State, meter, checkpoints) -> None:
    """trainer.on_nonfinite=skip that skips most of an epoch is not training: stop, saying so,
    rather than finish at chance level with exit 0 (what was trained is saved first)."""
    if batches and skipped * 2 > batches:
        state.batch_in_epoch = batches
        _keep_mid_epoch(state, meter, checkpoints)
        raise UserError(
            f"trainer.on_nonfinite=skip skipped {skipped} of {batches} batches in epoch "
            f"{state.epoch + 1} for a NaN or infinite loss: the run is not learning. Lower "
            "optim.lr or set trainer.grad_clip; checkpoints/last.pt holds the run so far.",
            code=EXIT_NONFINITE,
        )


def _limit(s: Settings, state: State) -> bool:
    return s.max_steps is not None and state.step >= s.max_steps


def _watch(value: float, s: Settings, state: State) -> bool:
    """Track the best monitored value and early stopping; True when this one is the best."""
    state.history.append(value)
    better = state.best is None or (
        value < state.best if s.monitor_mode == "min" else value > state.best
    )
    if better and math.isfinite(value):  # (a NaN or inf never becomes the best)
        state.best, state.best_step, state.bad_epochs = value, state.step, 0
        return True
    state.bad_epochs += 1
    if s.patience is not None and state.bad_epochs >= s.patience:
        state.stopped_early = True
        log.info("early stopping: %s has not improved for %d epochs", s.monitor, state.bad_epochs)
    return False


def _report(writer, results, optimizer, state: State, s: Settings, times: dict):
    """The epoch's scalars into TensorBoard (every epoch; the writer flushes by time and
    before each checkpoint); its console line, as a function formatting it on demand."""
    lr = optimizer.param_groups[0]["lr"]
    train_s = times["seconds"] - times["val_seconds"]
    speed = times["samples"] / max(train_s, 1e-9)  # validation excluded
    val_share = times["val_seconds"] / max(times["seconds"], 1e-9)
    values = {f"{split}/{k}": v for split, metrics in results.items() for k, v in metrics.items()}
    # Everything of the training split's in its group: TensorBoard then opens on the train and
    # val curves (groups sort by name: an "lr" or "perf" group came before them).
    values.update({"train/lr": lr, "train/samples_per_s": speed,
                   "train/epoch_seconds": times["seconds"],
                   "train/validation_share": val_share})  # fmt: skip
    board.scalars(writer, values, state.step)
    epoch, seconds = state.epoch, times["seconds"]

    def line() -> str:
        parts = " | ".join(f"{split} " + " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
                           for split, metrics in results.items())  # fmt: skip
        return (
            f"epoch {epoch}/{s.max_epochs} | {parts} | lr {lr:.3g} | {seconds:.2f}s, "
            f"{speed:.0f} samples/s, validation {100 * val_share:.0f}% of the epoch"
        )

    return line

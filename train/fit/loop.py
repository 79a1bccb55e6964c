"""The training loop: `fit` runs epochs of `train_steps` and validation, and keeps what every
epoch is judged by (the step, the monitored best, max_steps, the ranks' agreement on each
step's loss and on a signal). Everything else attaches as a `Callback` (train.callbacks):
what reports or saves (the console, TensorBoard, checkpoints, timing) and what decides to end
training (early stopping, a signal, the non-finite-loss guard, a tuner's pruning)."""

import logging
import math
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch
from torch import nn

from train.data.batches import Batches, epoch_order
from train.fit.progress import track
from train.fit.task import Meter, Task
from train.system import distributed
from train.system.signals import StopRequest

log = logging.getLogger("train")


@dataclass
class Settings:
    """The trainer's knobs, as plain values (from `cfg.trainer`): the loop's and its callbacks'."""

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


class StopTraining(Exception):
    """Raised by a callback to end training at once with `error`: what was trained is saved
    first (checkpoints/last.pt), then `error` is raised."""

    def __init__(self, error: Exception):
        super().__init__(error)
        self.error = error


@dataclass
class State:
    """Where training stands; saved in every checkpoint so resume continues exactly (the
    callbacks' own resume state beside it, see `Callback.state_dict`)."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps so far
    batch_in_epoch: int = 0  # batches of the current epoch already done (mid-epoch stop)
    best: float | None = None  # best monitored value so far
    best_step: int | None = None
    meter: dict | None = None  # the unfinished epoch's metric sums (mid-epoch stop)
    history: list[float] = field(default_factory=list)  # the monitored value, epoch by epoch

    def to_dict(self) -> dict:
        """A copy, as plain values (a checkpoint's "state"); cheaper than dataclasses.asdict,
        which deep-copies the whole history at every save."""
        out = dict(vars(self))
        out["history"] = list(self.history)
        return out


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
    read_loss: Callable[[torch.Tensor], float],
    keep: Callable[[float], bool],
    after_step: Callable[[float], bool],
) -> None:
    """Train on `batches` until they run out or `after_step(loss)` says stop.

    `read_loss` reads a batch's loss (one device sync per step: `.item()`, or the ranks'
    mean; free on the CPU); `keep(loss)` says whether to step with it, before any weight
    changes (False skips the batch: a NaN loss).
    """
    model.train()
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)  # first, as in the canonical loop: the freed
        # gradients' memory can serve this forward pass
        with autocast():
            out = model(x)
            loss = task.loss(out, y)
        value = read_loss(loss)  # (a device sync; cheaper than a torch.isfinite kernel and one)
        if not keep(value):
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


@torch.inference_mode()
def measure(
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


@dataclass
class Loop:
    """What `fit` trains, as plain objects (built by `train.build`; nothing here reads cfg)."""

    model: nn.Module  # what steps call: the module, or its DDP / compiled wrapper
    evaluator: nn.Module  # what validation calls (the plain module under DDP)
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    scaler: torch.amp.GradScaler
    autocast: Callable[[], AbstractContextManager]
    task: Task
    train: Batches
    val: Batches | None
    settings: Settings
    seed: int
    stop: StopRequest = field(default_factory=StopRequest)  # agreed on with each step's loss


@dataclass
class Epoch:
    """An epoch as it ended: what the callbacks report and save."""

    number: int  # epochs completed, this one included
    results: dict[str, dict[str, float]]  # split -> metric -> value
    improved: bool  # the monitored value is the best so far
    final: bool  # training ends after this epoch (decided after `should_stop`)
    lr: float
    samples: int  # trained this epoch, over all ranks
    seconds: float  # training and validation
    val_seconds: float

    @property
    def speed(self) -> float:
        """Samples per second of training (validation excluded)."""
        return self.samples / max(self.seconds - self.val_seconds, 1e-9)


class Callback:
    """A concern beside the steps (reporting, saving, deciding to end training): every hook is
    optional. A callback may skip a batch or end training sooner; it never changes how a step
    computes. One that decides (`on_loss`, `should_stop`) runs on every rank and decides from
    what the ranks agreed on, so they all stop at the same step. One that carries resume
    state has a `name`; every checkpoint keeps its `state_dict()` under that name."""

    name = ""  # its key in a checkpoint's "callbacks" ("": it carries no resume state)

    def on_loss(self, state: State, loss: float) -> bool:
        """A batch's loss as the ranks agree on it, before its step: False skips the batch
        (no weight changes); raising StopTraining ends training before the step."""
        return True

    def on_step_end(self, state: State, loss: float) -> None:
        """After an optimizer step (`state.step` counts it); `loss` as the ranks agree on it."""

    def should_stop(self, state: State, epoch: Epoch | None = None) -> bool:
        """Asked after every step and before every epoch, and with the `epoch` when one ends
        (before `on_epoch_end`, whose `epoch.final` it decides): True ends training there."""
        return False

    def on_epoch_end(self, state: State, epoch: Epoch) -> None:
        """After an epoch and its validation."""

    def on_stop(self, state: State) -> None:
        """Training stops inside an epoch (a signal, max_steps, a StopTraining): what must be
        written, write now (`state.meter` holds the epoch's sums)."""

    def on_fit_end(self, state: State) -> None:
        """Training is over, however it ended (not after an exception)."""

    def state_dict(self) -> dict:
        """What a resumed run needs to continue as if never stopped (plain values)."""
        return {}

    def load_state_dict(self, saved: dict) -> None:
        """Continue from a checkpoint's `state_dict()`."""


def fit(loop: Loop, state: State, callbacks: list[Callback] = ()) -> State:
    """Train to max_epochs or max_steps, or until a callback ends it (a signal, early stopping,
    a non-finite loss); the callbacks report and save around the steps.

    Under torchrun every rank runs this with its own shard (`loop.train` knows it); the ranks
    agree on each step's loss and on a signal, and sum their metrics before anything is decided.
    """
    halt, clock = _Halt(loop, state, callbacks), _Clock(state.step)
    if state.epoch >= loop.settings.max_epochs:  # (a resume of a finished run)
        log.info("nothing to train: the run has trained %d epochs, trainer.max_epochs=%d; a "
                 "larger trainer.max_epochs continues it", state.epoch,
                 loop.settings.max_epochs)  # fmt: skip
    try:
        while state.epoch < loop.settings.max_epochs and not halt.between_epochs():
            epoch = _train_epoch(loop, state, halt, clock, callbacks)
            if epoch is None:  # stopped mid-epoch
                break
            _close_epoch(loop.settings, state, epoch, halt, callbacks)
    except StopTraining as e:  # (asked between epochs; inside one, _train_epoch saves)
        for cb in callbacks:
            cb.on_stop(state)
        raise e.error from None
    for cb in callbacks:
        cb.on_fit_end(state)
    return state


class _Halt:
    """Whether to stop now: max_steps, or any callback's say. A signal counts as the ranks
    agreed on it (with a step's loss, or between epochs), never as it reached this rank: it
    may reach one rank a step early, and all of them must stop at the same step."""

    def __init__(self, loop: Loop, state: State, callbacks):
        self.stop, self.s, self.state = loop.stop, loop.settings, state
        self.asks = _hooks(callbacks, "should_stop")

    def __call__(self, epoch: Epoch | None = None) -> bool:
        stop, error = _limit(self.s, self.state), None
        for ask in self.asks:  # each one asked, even after a yes: some count epochs
            try:
                stop = ask(self.state, epoch) or stop
            except StopTraining as e:
                error = error or e
        if error is not None:
            raise error
        return stop

    def read_loss(self, loss: torch.Tensor) -> float:
        value, signum = distributed.step_consensus(loss, self.stop.signum)
        self.stop.agree(signum)
        return value

    def between_epochs(self) -> bool:
        self.stop.agree(distributed.any_signal(self.stop.signum))
        return self()


class _Clock:
    """An epoch's seconds and samples, from the end of this process's first step on (start-up
    is not an epoch's time)."""

    def __init__(self, first_step: int):
        self.first_step = first_step + 1
        self.start, self.n0 = time.perf_counter(), 0

    def epoch_start(self) -> None:
        self.start, self.n0 = time.perf_counter(), 0

    def step(self, state: State, meter: Meter) -> None:
        if state.step == self.first_step:
            self.start, self.n0 = time.perf_counter(), meter.n


def _train_epoch(loop: Loop, state: State, halt: _Halt, clock: _Clock, callbacks) -> Epoch | None:
    """One epoch's steps (from `state.batch_in_epoch` on), then its validation; None when
    training stopped inside it (what it did is saved through `on_stop`)."""
    s, ranks = loop.settings, distributed.ranks()
    start = state.batch_in_epoch
    clock.epoch_start()
    meter = loop.task.meter(loop.train.device)
    if state.meter is not None and ranks.main:  # (saved summed over ranks)
        meter.load_state_dict(state.meter)
    order = epoch_order(len(loop.train.split), loop.seed, state.epoch)
    desc = f"epoch {state.epoch + 1}/{s.max_epochs}"
    batches = track(loop.train.ordered(order, start, state.epoch), len(loop.train) - start, desc,
                    s.progress)  # fmt: skip
    checks, steps_end = _hooks(callbacks, "on_loss"), _hooks(callbacks, "on_step_end")

    def keep(loss: float) -> bool:
        if all([check(state, loss) for check in checks]):  # (each one asked)
            return True
        state.batch_in_epoch += 1  # skipped: done with
        return False

    def after_step(loss: float) -> bool:
        state.step += 1
        state.batch_in_epoch += 1
        clock.step(state, meter)
        for step_end in steps_end:
            step_end(state, loss)
        return halt()

    try:
        train_steps(loop.model, batches, loop.optimizer, loop.task, meter, autocast=loop.autocast,
                    scaler=loop.scaler, grad_clip=s.grad_clip, read_loss=halt.read_loss,
                    keep=keep, after_step=after_step)  # fmt: skip
    except StopTraining as e:
        _keep_mid_epoch(state, meter, callbacks)
        raise e.error from None
    samples = (meter.n - clock.n0) * ranks.world  # (every rank trains equal shards)
    if state.batch_in_epoch < len(loop.train):  # stopped mid-epoch: keep the sums, resume exactly
        _keep_mid_epoch(state, meter, callbacks)
        log.info("stopped at step %d, batch %d of epoch %d; checkpoints/last.pt resumes it",
                 state.step, state.batch_in_epoch, state.epoch + 1)  # fmt: skip
        return None
    return _end_epoch(loop, state, meter, samples, clock.start)


def _end_epoch(loop: Loop, state: State, meter: Meter, samples: int, start: float) -> Epoch:
    """The epoch's metrics over all ranks, the scheduler's step, validation and the monitor."""
    s = loop.settings
    meter.all_reduce()
    state.epoch, state.batch_in_epoch, state.meter = state.epoch + 1, 0, None
    if loop.scheduler is not None:
        loop.scheduler.step()
    results = {"train": meter.compute()}  # (reading the metrics waits for the device)
    val_start = time.perf_counter()
    if loop.val is not None:
        checked = measure(loop.evaluator, loop.val, loop.task, loop.autocast)
        checked.all_reduce()  # (each rank scored its part of the split)
        results["val"] = checked.compute()
        if not math.isfinite(results["val"]["loss"]):
            log.warning("epoch %d: the validation loss is %s (the model's outputs overflow on "
                        "some validation examples)", state.epoch,
                        results["val"]["loss"])  # fmt: skip
    val_s = time.perf_counter() - val_start
    improved = _watch(results["val" if loop.val is not None else "train"][s.monitor], s, state)
    return Epoch(number=state.epoch, results=results, improved=improved, final=False,
                 lr=loop.optimizer.param_groups[0]["lr"], samples=samples,
                 seconds=time.perf_counter() - start, val_seconds=val_s)  # fmt: skip


def _close_epoch(s: Settings, state: State, epoch: Epoch, halt: _Halt, callbacks) -> None:
    """Decide whether training ends with `epoch`, then report it. A StopTraining raised on the
    epoch ends training after the epoch is reported and saved."""
    error = None
    try:
        stop = halt(epoch)
    except StopTraining as e:
        stop, error = True, e.error
    epoch.final = stop or state.epoch >= s.max_epochs
    for cb in callbacks:
        cb.on_epoch_end(state, epoch)
    if error is not None:
        raise error


def _hooks(callbacks, name: str) -> list[Callable]:
    """The callbacks' `name` hooks, of those that define one: per step, a call to a hook that
    does nothing costs as much as a small callback's work."""
    return [getattr(cb, name) for cb in callbacks
            if getattr(type(cb), name) is not getattr(Callback, name)]  # fmt: skip


def _keep_mid_epoch(state: State, meter: Meter, callbacks) -> None:
    """Save a stop inside an epoch: its metric sums (over the ranks) go into last.pt, so a
    resume continues the epoch exactly."""
    meter.all_reduce()
    state.meter = meter.state_dict()
    for cb in callbacks:
        cb.on_stop(state)


def _limit(s: Settings, state: State) -> bool:
    return s.max_steps is not None and state.step >= s.max_steps


def _watch(value: float, s: Settings, state: State) -> bool:
    """Track the best monitored value; True when this one is the best so far."""
    state.history.append(value)
    better = state.best is None or (
        value < state.best if s.monitor_mode == "min" else value > state.best
    )
    if better and math.isfinite(value):  # (a NaN or inf never becomes the best)
        state.best, state.best_step = value, state.step
        return True
    return False

"""The training loop: `fit` runs epochs of `train_steps` and validation, and owns what decides
how the model trains (the step, the monitored best and early stopping, max_steps, a signal as
the ranks agree on it, non-finite losses). What only reports or saves (the console, TensorBoard,
checkpoints, timing) attaches as a `Callback` (train.callbacks)."""

import logging
import math
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch
from torch import nn

from train import distributed
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
    stop: StopRequest = field(default_factory=StopRequest)


@dataclass
class Epoch:
    """An epoch as it ended: what the callbacks report and save."""

    number: int  # epochs completed, this one included
    results: dict[str, dict[str, float]]  # split -> metric -> value
    improved: bool  # the monitored value is the best so far
    final: bool  # training ends after this epoch
    lr: float
    samples: int  # trained this epoch, over all ranks
    seconds: float  # training and validation
    val_seconds: float

    @property
    def speed(self) -> float:
        """Samples per second of training (validation excluded)."""
        return self.samples / max(self.seconds - self.val_seconds, 1e-9)


class Callback:
    """A side concern of the loop (console, TensorBoard, checkpoints, timing...): every hook
    is optional, and none changes how the model trains."""

    def on_step_end(self, state: State, loss: float) -> None:
        """After an optimizer step (`state.step` counts it); `loss` as the ranks agree on it."""

    def on_epoch_end(self, state: State, epoch: Epoch) -> None:
        """After an epoch and its validation."""

    def on_stop(self, state: State) -> None:
        """Training stops inside an epoch (a signal, max_steps, a non-finite loss): what must
        be written, write now (`state.meter` holds the epoch's sums)."""

    def on_fit_end(self, state: State) -> None:
        """Training is over, however it ended (not after an exception)."""

    def should_stop(self, state: State) -> bool:
        """Asked after every epoch: True ends training there, as an early stop does (a
        tuner's pruning). It ends training sooner; it never changes a step."""
        return False


def fit(loop: Loop, state: State, callbacks: list[Callback] = ()) -> State:
    """Train to max_epochs, max_steps, an early stop or a signal (`loop.stop`); the callbacks
    report and save around the steps.

    Under torchrun every rank runs this with its own shard (`loop.train` knows it); the ranks
    agree on each step's loss and on stopping, and sum their metrics before anything is decided.
    """
    s, halt = loop.settings, _Halt(loop.stop, loop.settings, state)
    clock = _Clock(state.step)
    while state.epoch < s.max_epochs and not state.stopped_early and not halt.between_steps():
        epoch = _train_epoch(loop, state, halt, clock, callbacks)
        if epoch is None:  # stopped mid-epoch
            break
        for cb in callbacks:
            cb.on_epoch_end(state, epoch)
        if any(cb.should_stop(state) for cb in callbacks):
            break
    for cb in callbacks:
        cb.on_fit_end(state)
    return state


class _Halt:
    """Whether to stop now: max_steps, or a signal as the ranks agreed on it (all of them stop
    at one step; never `stop` itself: a signal may reach one rank a step early)."""

    def __init__(self, stop: StopRequest, s: Settings, state: State):
        self.stop, self.s, self.state, self.agreed = stop, s, state, False

    def __call__(self) -> bool:
        return _limit(self.s, self.state) or self.agreed

    def read_loss(self, loss: torch.Tensor) -> float:
        value, signum = distributed.step_consensus(loss, self.stop.signum)
        self._agree(signum)
        return value

    def between_steps(self) -> bool:
        self._agree(distributed.any_signal(self.stop.signum))
        return self()

    def _agree(self, signum: int | None) -> None:
        if signum is not None:
            self.agreed = True
            self.stop.adopt(signum)


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
    start, skipped_before = state.batch_in_epoch, state.skipped
    clock.epoch_start()
    meter = loop.task.meter(loop.train.device)
    if state.meter is not None and ranks.main:  # (saved summed over ranks)
        meter.load_state_dict(state.meter)
    order = epoch_order(len(loop.train.split), loop.seed, state.epoch)
    desc = f"epoch {state.epoch + 1}/{s.max_epochs}"
    batches = track(loop.train.ordered(order, start), len(loop.train) - start, desc, s.progress)

    def after_step(loss: float) -> bool:
        state.step += 1
        clock.step(state, meter)
        for cb in callbacks:
            cb.on_step_end(state, loss)
        return halt()

    def on_skip() -> None:
        state.skipped += 1

    try:
        done = train_steps(loop.model, batches, loop.optimizer, loop.task, meter,
                           autocast=loop.autocast, scaler=loop.scaler, grad_clip=s.grad_clip,
                           skip_nonfinite=s.skip_nonfinite, after_step=after_step,
                           on_skip=on_skip, read_loss=halt.read_loss)  # fmt: skip
    except NonFiniteLoss as e:
        state.batch_in_epoch = start + e.args[1] - 1  # the batches before the bad one
        _keep_mid_epoch(state, meter, callbacks)
        raise _nonfinite(e.args[0], state, start + e.args[1]) from None
    state.batch_in_epoch = start + done
    samples = (meter.n - clock.n0) * ranks.world  # (every rank trains equal shards)
    if state.skipped - skipped_before > 0:
        _check_skipping(state.skipped - skipped_before, done, state, meter, callbacks)
    if state.batch_in_epoch < len(loop.train):  # stopped mid-epoch: keep the sums, resume exactly
        _keep_mid_epoch(state, meter, callbacks)
        log.info("stopped at step %d, batch %d of epoch %d; checkpoints/last.pt resumes it",
                 state.step, state.batch_in_epoch, state.epoch + 1)  # fmt: skip
        return None
    return _end_epoch(loop, state, meter, samples, clock.start, halt)


def _end_epoch(loop: Loop, state: State, meter: Meter, samples: int, start: float, halt) -> Epoch:
    """The epoch's metrics over all ranks, the scheduler's step, validation and the monitor."""
    s = loop.settings
    meter.all_reduce()
    state.epoch, state.batch_in_epoch, state.meter = state.epoch + 1, 0, None
    if loop.scheduler is not None:
        loop.scheduler.step()
    results = {"train": meter.compute()}  # (reading the metrics waits for the device)
    val_start = time.perf_counter()
    if loop.val is not None:
        checked = evaluate(loop.evaluator, loop.val, loop.task, loop.autocast)
        checked.all_reduce()  # (each rank scored its part of the split)
        results["val"] = checked.compute()
        if not math.isfinite(results["val"]["loss"]):
            log.warning("epoch %d: the validation loss is %s (the model's outputs overflow on "
                        "some validation examples)", state.epoch,
                        results["val"]["loss"])  # fmt: skip
    val_s = time.perf_counter() - val_start
    improved = _watch(results["val" if loop.val is not None else "train"][s.monitor], s, state)
    final = state.epoch >= s.max_epochs or state.stopped_early or halt()
    return Epoch(number=state.epoch, results=results, improved=improved, final=final,
                 lr=loop.optimizer.param_groups[0]["lr"], samples=samples,
                 seconds=time.perf_counter() - start, val_seconds=val_s)  # fmt: skip


def _nonfinite(value: float, state: State, batch: int) -> UserError:
    return UserError(
        f"the loss became {value} at step {state.step + 1} (epoch {state.epoch + 1}, batch "
        f"{batch}); the run stopped before updating the weights with it, and "
        "checkpoints/last.pt holds the run just before that step. Lower optim.lr, set "
        "trainer.grad_clip, or skip such batches with trainer.on_nonfinite=skip.",
        code=EXIT_NONFINITE,
    )


def _keep_mid_epoch(state: State, meter: Meter, callbacks) -> None:
    """Save a stop inside an epoch: its metric sums (over the ranks) go into last.pt, so a
    resume continues the epoch exactly."""
    meter.all_reduce()
    state.meter = meter.state_dict()
    for cb in callbacks:
        cb.on_stop(state)


def _check_skipping(skipped: int, batches: int, state: State, meter, callbacks) -> None:
    """trainer.on_nonfinite=skip that skips most of an epoch is not training: stop, saying so,
    rather than finish at chance level with exit 0 (what was trained is saved first)."""
    if batches and skipped * 2 > batches:
        state.batch_in_epoch = batches
        _keep_mid_epoch(state, meter, callbacks)
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

"""The loop and its callbacks in-process, with no config and no files: which hooks fire when,
what stops it, and that callbacks never change what is trained."""

import contextlib

import pytest
import torch

from train import callbacks
from train.batches import Batches, Normalizer
from train.data import synthetic
from train.errors import UserError
from train.loop import Callback, Loop, Settings, State, fit
from train.task import Task

CPU = torch.device("cpu")


def _loop(max_epochs=3, lr=0.05) -> Loop:
    torch.manual_seed(0)
    data = synthetic(200, [6], 3, 0, batch_size=32, eval_batch_size=64, val_fraction=0.2,
                     test_fraction=0.0, split_seed=0, normalize=True)  # fmt: skip
    model = torch.nn.Linear(6, 3)
    norm = Normalizer(data, CPU)
    s = Settings(max_epochs=max_epochs, max_steps=None, log_every_n_steps=1, monitor="loss",
                 monitor_mode="min", patience=None, grad_clip=None, progress="none")  # fmt: skip
    return Loop(model=model, evaluator=model, optimizer=torch.optim.SGD(model.parameters(), lr),
                scheduler=None, scaler=torch.amp.GradScaler("cuda", enabled=False),
                autocast=contextlib.nullcontext, task=Task.of(data),
                train=Batches(data.train, 32, norm, CPU), val=Batches(data.val, 64, norm, CPU),
                settings=s, seed=0)  # fmt: skip


class Record(Callback):
    def __init__(self):
        self.calls = []

    def on_step_end(self, state, loss):
        self.calls.append(("step", state.step))

    def on_epoch_end(self, state, epoch):
        self.calls.append(("epoch", epoch.number, epoch.final, epoch.improved))

    def on_stop(self, state):
        self.calls.append(("stop", state.step))

    def on_fit_end(self, state):
        self.calls.append(("end", state.step))


def test_hooks_fire_in_order_and_the_last_epoch_is_final():
    loop, rec = _loop(max_epochs=2), Record()
    state = fit(loop, State(), [rec])
    steps = len(loop.train)  # 160 training rows in batches of 32
    assert steps == 5 and state.step == 2 * steps and state.epoch == 2
    assert rec.calls[:steps] == [("step", i) for i in range(1, steps + 1)]
    assert rec.calls[steps][:3] == ("epoch", 1, False)
    assert rec.calls[-2][:3] == ("epoch", 2, True) and rec.calls[-1] == ("end", 10)


def test_callbacks_do_not_change_what_is_trained(tmp_path):
    bare = _loop()
    fit(bare, State())
    loop = _loop()
    saved = []
    cbs = [callbacks.Console(3, 0), callbacks.Timing(), Record(),
           callbacks.Checkpoints(lambda st, copy=False: st.step, lambda n, p: saved.append((n, p)),
                                 0, lambda: None)]  # fmt: skip
    fit(loop, State(), cbs)
    for a, b in zip(bare.model.parameters(), loop.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert ("last", 15) in saved and [n for n, _ in saved].count("last") == 3


def test_max_steps_stops_mid_epoch_and_saves_through_on_stop():
    loop, rec = _loop(max_epochs=5), Record()
    loop.settings.max_steps = 7
    state = fit(loop, State(), [rec])
    assert state.step == 7 and state.batch_in_epoch == 2 and state.meter is not None
    assert ("stop", 7) in rec.calls and rec.calls[-1] == ("end", 7)


def test_a_signal_stops_at_the_next_step_the_ranks_can_agree_on():
    """A signal is agreed on with a step's loss: one set after step 3's loss was read ends
    training after step 4 (every rank stops at the same step)."""
    loop, rec = _loop(max_epochs=5), Record()

    class Signal(Callback):
        def on_step_end(self, state, loss):
            if state.step == 3:
                loop.stop.signum = 15  # as the handler sets it

    state = fit(loop, State(), [Signal(), rec])
    assert state.step == 4 and ("stop", 4) in rec.calls and loop.stop.name == "SIGTERM"


def test_checkpoints_on_a_clock_keep_the_best_in_memory_and_write_it_at_the_end():
    loop, saved = _loop(max_epochs=4), []
    ckpt = callbacks.Checkpoints(lambda st, copy=False: (st.step, st.best),
                                 lambda n, p: saved.append((n, p)), 3600, lambda: None)  # fmt: skip
    state = fit(loop, State(), [ckpt])
    assert [n for n, _ in saved] == ["best", "last"]  # one write, at the end
    assert saved[0][1][0] == state.best_step and saved[1][1][0] == state.step


class Poisoned(torch.nn.Linear):
    """NaN outputs from its `at`-th forward pass on."""

    def __init__(self, at: int):
        super().__init__(6, 3)
        self.at, self.calls = at, 0

    def forward(self, x):
        self.calls += 1
        out = super().forward(x)
        return out * float("nan") if self.calls >= self.at else out


def test_a_nonfinite_loss_stops_before_the_step_and_saves_first():
    loop, rec = _loop(), Record()
    loop.model = loop.evaluator = Poisoned(at=3)
    loop.optimizer = torch.optim.SGD(loop.model.parameters(), 0.05)
    with pytest.raises(UserError, match="the loss became nan at step 3") as e:
        fit(loop, State(), [rec])
    assert e.value.code == 3 and rec.calls == [("step", 1), ("step", 2), ("stop", 2)]


def test_the_console_prints_the_last_epoch_and_an_unprinted_best(caplog):
    loop = _loop(max_epochs=3)
    with caplog.at_level("INFO", logger="train"):
        fit(loop, State(), [callbacks.Console(3, every_s=3600)])
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("epoch 1/3")  # the first one: nothing printed yet
    assert lines[1].startswith("epoch 3/3") and len(lines) == 2  # epoch 2 skipped, 3 the best


def test_a_callback_may_end_training_after_an_epoch_and_everything_is_saved():
    """should_stop (a tuner's pruning): training ends there, as an early stop does."""
    loop, saved = _loop(max_epochs=10), []

    class Prune(Callback):
        def should_stop(self, state):
            return state.epoch >= 2

    ckpt = callbacks.Checkpoints(lambda st, copy=False: st.step,
                                 lambda n, p: saved.append((n, p)), 3600, lambda: None)  # fmt: skip
    state = fit(loop, State(), [Prune(), ckpt])
    assert state.epoch == 2 and ("last", state.step) in saved

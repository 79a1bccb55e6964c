"""The loop and its callbacks in-process, with no config and no files: which hooks fire when,
what stops it, and that callbacks never change what is trained."""

import contextlib

import pytest
import torch

from train.data.batches import Batches, Normalizer
from train.data.sets import synthetic
from train.errors import UserError
from train.fit import callbacks
from train.fit.loop import Callback, Epoch, Loop, Settings, State, StopTraining, fit
from train.fit.task import Task

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

    state = fit(loop, State(), [Signal(), callbacks.SignalStop(loop.stop), rec])
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


def _poisoned(at: int, **kw) -> Loop:
    loop = _loop(**kw)
    loop.model = loop.evaluator = Poisoned(at)
    loop.optimizer = torch.optim.SGD(loop.model.parameters(), 0.05)
    return loop


def test_a_nonfinite_loss_stops_before_the_step_and_saves_first():
    loop, rec, guard = _poisoned(at=3), Record(), callbacks.NonFiniteGuard(skip=False)
    before = [p.detach().clone() for p in loop.model.parameters()]
    with pytest.raises(UserError, match=r"the loss became nan at step 3 \(epoch 1, batch 3\)") as e:
        fit(loop, State(), [guard, rec])
    assert e.value.code == 3 and rec.calls == [("step", 1), ("step", 2), ("stop", 2)]
    assert guard.state_dict()["epoch_seen"] == 2  # the batches done, as last.pt's state says
    assert all(torch.isfinite(p).all() for p in loop.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, loop.model.parameters(), strict=True))


def test_a_stop_asked_between_epochs_saves_first():
    loop, saved = _loop(max_epochs=5), []

    class Quit(Callback):
        def should_stop(self, state, epoch=None):
            if epoch is None and state.epoch == 1 and state.batch_in_epoch == 0:
                raise StopTraining(UserError("enough"))
            return False

    ckpt = callbacks.Checkpoints(lambda st, copy=False: st.epoch,
                                 lambda n, p: saved.append((n, p)), 3600, lambda: None)  # fmt: skip
    with pytest.raises(UserError, match="enough"):
        fit(loop, State(), [Quit(), ckpt])
    assert ("last", 1) in saved  # (the clock alone would not have written epoch 1)


def test_skipped_batches_are_counted_and_a_mostly_skipped_epoch_ends_the_run_saved():
    """on_nonfinite=skip: a bad batch changes nothing and is counted; an epoch whose batches
    were mostly skipped is reported and saved, then the run stops with exit 3."""
    loop, rec, saved = _poisoned(at=3, max_epochs=5), Record(), []
    guard = callbacks.NonFiniteGuard(skip=True)
    ckpt = callbacks.Checkpoints(lambda st, copy=False: (st.epoch, st.batch_in_epoch),
                                 lambda n, p: saved.append((n, p)), 3600, lambda: None)  # fmt: skip
    with pytest.raises(UserError, match="skipped 3 of 5 batches in epoch 1") as e:
        fit(loop, State(), [guard, rec, ckpt])
    assert e.value.code == 3 and guard.skipped == 3
    assert [c for c in rec.calls if c[0] == "step"] == [("step", 1), ("step", 2)]
    assert rec.calls[-1][:3] == ("epoch", 1, True) and saved[-1] == ("last", (1, 0))


def test_the_guard_carries_an_unfinished_epoch_into_a_resume():
    guard = callbacks.NonFiniteGuard(skip=True)
    for loss in (1.0, float("nan"), 1.0):
        guard.on_loss(State(), loss)
    resumed = callbacks.NonFiniteGuard(skip=True)
    resumed.load_state_dict(guard.state_dict())
    assert resumed.on_loss(State(), float("inf")) is False
    assert resumed.should_stop(State(), _epoch(improved=True)) is False  # 2 of 4: not most
    assert resumed.skipped == 2 and resumed.state_dict()["epoch_seen"] == 0
    lost = callbacks.NonFiniteGuard(skip=True)  # without the saved count: 1 of 1, most
    lost.on_loss(State(), float("inf"))
    with pytest.raises(StopTraining, match="skipped 1 of 1 batches"):
        lost.should_stop(State(), _epoch(improved=True))


def _epoch(improved: bool, number: int = 1):
    return Epoch(number=number, results={}, improved=improved, final=False, lr=0.1, samples=1,
                 seconds=1.0, val_seconds=0.0)  # fmt: skip


def test_early_stopping_ends_the_epoch_after_patience_epochs_without_a_better_value():
    loop, rec = _loop(max_epochs=10, lr=0.0), Record()  # lr 0: only epoch 1 is ever the best
    early = callbacks.EarlyStopping(patience=2, monitor="loss")
    state = fit(loop, State(), [early, rec])
    epochs = [c for c in rec.calls if c[0] == "epoch"]
    assert state.epoch == 3 and early.stopped and early.bad_epochs == 2
    assert [e[2:] for e in epochs] == [(False, True), (False, False), (True, False)]


def test_patience_0_stops_at_the_first_epoch_without_a_better_value():
    early = callbacks.EarlyStopping(patience=0, monitor="loss")
    assert early.should_stop(State(), _epoch(improved=True)) is False
    assert early.should_stop(State(), _epoch(improved=False)) is True


def test_early_stopping_counts_on_from_a_checkpoint_under_the_resumed_runs_patience(caplog):
    """The same patience: a stopped run stays stopped, and says so; a larger one, or none,
    trains it on."""
    early = callbacks.EarlyStopping(patience=3, monitor="loss")
    for improved in (True, False, False):
        assert early.should_stop(State(), _epoch(improved)) is False
    resumed = callbacks.EarlyStopping(patience=3, monitor="loss")
    resumed.load_state_dict(early.state_dict())
    assert resumed.should_stop(State(), _epoch(improved=False)) is True
    same = callbacks.EarlyStopping(patience=3, monitor="loss")
    same.load_state_dict(resumed.state_dict())
    with caplog.at_level("INFO", logger="train"):
        assert fit(_loop(max_epochs=10), State(), [same]).step == 0
    assert (
        "early stopping had already ended this run: loss has not improved for 3 epochs "
        "(trainer.patience=3); a larger trainer.patience, or null, trains it on"
    ) in caplog.text
    for patience in (5, None):
        more = callbacks.EarlyStopping(patience=patience, monitor="loss")
        more.load_state_dict(resumed.state_dict())
        assert fit(_loop(max_epochs=2), State(), [more]).epoch == 2


def test_a_malformed_saved_state_is_one_paragraph_naming_the_entry():
    early = callbacks.EarlyStopping(patience=3, monitor="loss")
    with pytest.raises(UserError, match=r"ckpt.pt: its callbacks entry 'early_stopping' is "
                       r"malformed \(\{'count': 1\}; KeyError 'bad_epochs'\), expected what "
                       r"EarlyStopping saves, e.g. \{'bad_epochs': 0\}"):  # fmt: skip
        callbacks.restore([early], {"early_stopping": {"count": 1}}, "ckpt.pt")


def test_callback_states_go_by_name_and_a_missing_one_starts_fresh():
    early, guard = callbacks.EarlyStopping(2, "loss"), callbacks.NonFiniteGuard(skip=True)
    early.bad_epochs, guard.skipped = 1, 4
    saved = callbacks.states([early, guard, callbacks.Timing()])
    assert set(saved) == {"early_stopping", "nonfinite"}
    fresh = [callbacks.EarlyStopping(2, "loss"), callbacks.NonFiniteGuard(skip=True)]
    callbacks.restore(fresh, {"early_stopping": saved["early_stopping"]}, "last.pt")
    assert fresh[0].bad_epochs == 1 and fresh[1].skipped == 0


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
        def should_stop(self, state, epoch=None):
            return state.epoch >= 2

    ckpt = callbacks.Checkpoints(lambda st, copy=False: st.step,
                                 lambda n, p: saved.append((n, p)), 3600, lambda: None)  # fmt: skip
    state = fit(loop, State(), [Prune(), ckpt])
    assert state.epoch == 2 and ("last", state.step) in saved

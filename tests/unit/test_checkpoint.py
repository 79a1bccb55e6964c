"""The checkpoint's one reader: this format, the format before it (upgraded), and anything
else refused in one line."""

import pytest
import torch

from train.errors import UserError
from train.fit import callbacks
from train.fit.loop import State
from train.run import checkpoint
from train.run.checkpoint import Checkpoint


def _blob(**changes) -> dict:
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), 0.1)
    state = State(epoch=4, step=40, best=0.5, best_step=20, history=[0.9, 0.5, 0.6, 0.7])
    early, guard = callbacks.EarlyStopping(5, "loss"), callbacks.NonFiniteGuard(skip=True)
    early.bad_epochs, guard.skipped = 2, 3
    blob = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": None,
            "scaler": {}, "state": state.to_dict(), "callbacks": callbacks.states([early, guard]),
            "rng": checkpoint.rng_state(), "config": {"seed": 0}, "data": {}, "choices": {},
            "torch": str(torch.__version__), "format": Checkpoint.FORMAT}  # fmt: skip
    blob.update(changes)
    return blob


def test_this_format_round_trips_the_callbacks_state(tmp_path):
    checkpoint.save(tmp_path / "last.pt", _blob())
    got = Checkpoint.read(tmp_path / "last.pt")
    assert got.format == 3 and got.state["step"] == 40
    assert got.callbacks["early_stopping"] == {"bad_epochs": 2}
    assert got.callbacks["nonfinite"]["skipped"] == 3


def test_a_format_1_checkpoint_is_read_with_its_callbacks_state_moved_out_of_the_loop_state(
    tmp_path,
):
    """Format 1 (before the callbacks carried their own state): the loop's state held early
    stopping's count and the skipped batches; no "format" key in the oldest files."""
    old = _blob()
    del old["callbacks"], old["format"]
    old["state"] = {**old["state"], "bad_epochs": 2, "stopped_early": True, "skipped": 3}
    checkpoint.save(tmp_path / "old.pt", old)
    got = Checkpoint.read(tmp_path / "old.pt")
    assert State(**got.state).step == 40  # (the loop's State takes it as it is)
    fresh = [callbacks.EarlyStopping(2, "loss"), callbacks.NonFiniteGuard(skip=True)]
    callbacks.restore(fresh, got.callbacks, tmp_path / "old.pt")
    assert fresh[0].bad_epochs == 2 and fresh[0].stopped and fresh[1].skipped == 3


def test_another_format_is_refused_naming_what_is_read(tmp_path):
    checkpoint.save(tmp_path / "new.pt", _blob(format=4))
    with pytest.raises(
        UserError,
        match=r"new.pt is a checkpoint of format 4; this version of train reads "
        r"formats 1 to 3",
    ):
        Checkpoint.read(tmp_path / "new.pt")


def test_a_format_2_checkpoint_names_its_models_as_this_version_does(tmp_path):
    """Format 2 was written before train/ was regrouped into rooms: its config names
    train.models.MLP, which this version calls train.models.course.MLP (and a user's code
    train.usercode.model: train.models.usercode.model, which resume checks for consent)."""
    config = {"seed": 0, "model": {"_target_": "train.models.MLP", "hidden": [8]},
              "data": {"_target_": "train.usercode.data", "code": "ds.py"}}  # fmt: skip
    checkpoint.save(tmp_path / "old.pt", _blob(format=2, config=config))
    got = Checkpoint.read(tmp_path / "old.pt")
    assert got.config["model"] == {"_target_": "train.models.course.MLP", "hidden": [8]}
    assert got.config["data"]["_target_"] == "train.models.usercode.data"
    from train.config import targets

    assert got.config["model"]["_target_"] in targets.MODELS


def test_a_callbacks_entry_of_anything_but_numbers_is_refused(tmp_path):
    checkpoint.save(tmp_path / "odd.pt", _blob(callbacks={"early_stopping": [1], "x": {"a": "b"}}))
    with pytest.raises(UserError, match="its callbacks entries 'early_stopping', 'x' are not"):
        Checkpoint.read(tmp_path / "odd.pt")


def test_a_format_2_checkpoint_without_the_callbacks_state_is_incomplete(tmp_path):
    blob = _blob()
    del blob["callbacks"]
    checkpoint.save(tmp_path / "cut.pt", blob)
    with pytest.raises(UserError, match="is incomplete: it has no callbacks"):
        Checkpoint.read(tmp_path / "cut.pt")

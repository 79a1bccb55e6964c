"""The loggers a run reports to, together: a local one's failure is the run's (as any write in
the run dir), a remote one's is said once and the run goes on without it."""

import logging

import pytest

from train.loggers import FAILED, FINISHED, Logger, Loggers
from train.loggers.tracking import _file_name, flat


class Recorder(Logger):
    def __init__(self, name: str, remote: bool = False, fail_on: str = ""):
        self.name, self.remote, self.fail_on, self.calls = name, remote, fail_on, []

    def scalars(self, values, step, epoch=None):
        self._call("scalars", step)

    def flush(self):
        self._call("flush")

    def finish(self, status, files=None):
        self.calls.append(("finish", status))

    def _call(self, what, *args):
        if what == self.fail_on:
            raise ConnectionError("the server went away")
        self.calls.append((what, *args))


def test_every_logger_hears_every_call():
    a, b = Recorder("a"), Recorder("b", remote=True)
    loggers = Loggers([a, b])
    loggers.scalars({"x": 1.0}, 3)
    loggers.flush()
    loggers.finish(FINISHED)
    assert a.calls == b.calls == [("scalars", 3), ("flush",), ("finish", FINISHED)]


def test_a_remote_loggers_failure_is_said_once_and_the_run_goes_on(caplog):
    local, remote = Recorder("tensorboard"), Recorder("mlflow", remote=True, fail_on="flush")
    loggers = Loggers([local, remote])
    with caplog.at_level(logging.WARNING, logger="train"):
        loggers.scalars({"x": 1.0}, 1)
        loggers.flush()
        loggers.scalars({"x": 2.0}, 2)
        loggers.flush()
        loggers.finish(FINISHED)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "mlflow stopped working (ConnectionError: the server went away)" \
        in said[0] and "TensorBoard's events" in said[0]  # fmt: skip
    assert remote.calls == [("scalars", 1), ("finish", FAILED)]  # (ended, then left out)
    assert local.calls == [("scalars", 1), ("flush",), ("scalars", 2), ("flush",),
                           ("finish", FINISHED)]  # fmt: skip
    assert loggers.names == ["tensorboard"]


def test_a_local_loggers_failure_is_the_runs():
    loggers = Loggers([Recorder("tensorboard", fail_on="flush")])
    with pytest.raises(ConnectionError):
        loggers.flush()


def test_params_are_the_config_flattened_and_artifacts_have_plain_names():
    config = {"optim": {"lr": 0.001, "betas": [0.9, 0.999]}, "seed": 7, "sched": None,
              "model": {"_target_": "train.models.course.MLP", "_partial_": True}}  # fmt: skip
    assert flat(config) == {
        "optim.lr": "0.001",
        "optim.betas": "[0.9, 0.999]",
        "seed": "7",
        "sched": "None",
        "model._target_": "train.models.course.MLP",
    }
    assert _file_name("viz/samples (predicted,true)") == "viz/samples_predicted_true"
    assert _file_name("viz/confusion matrix") == "viz/confusion_matrix"

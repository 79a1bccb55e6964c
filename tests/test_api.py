"""train.api, as a notebook uses it: the same run as the command line (bit for bit), twice in
one process without doubled lines, a model class or object from a cell, an interrupt that
saves a checkpoint resume continues, bad input as one paragraph."""

import json
import os
import signal

import pytest
import torch
from compare import assert_same, outcome
from runs import run_dirs
from torch import nn

from train import api
from train.fit import loop

QUICK = ["data=digits", "trainer.max_epochs=2", "trainer.progress=lines"]


class MLP(nn.Module):
    """What a learner writes in a cell: a class taking the data's shape and outputs."""

    def __init__(self, in_shape, num_outputs, hidden=32):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_shape[-1] * in_shape[-2], hidden),
                                 nn.ReLU(), nn.Linear(hidden, num_outputs))  # fmt: skip

    def forward(self, x):
        return self.net(x)


def test_a_run_from_python_is_a_run_and_two_in_one_process_print_once_each(tmp_path, capsys):
    first = api.train(*QUICK, f"paths.runs_dir={tmp_path}")
    said = capsys.readouterr().out
    second = api.train(*QUICK, "seed=1", f"paths.runs_dir={tmp_path}")
    again = capsys.readouterr().out
    assert first.run_dir != second.run_dir and first.best.is_file() and second.last.is_file()
    assert first.metrics.splits["test"]["accuracy"] > 0.8 and first.metrics.seed == 42
    for out, result in ((said, first), (again, second)):
        assert out.count(f"run dir: {result.run_dir}") == 1 and out.count("final test:") == 1
    assert "[INFO]" in (first.run_dir / "train.log").read_text()
    net = first.model()
    assert not net.training and sum(p.numel() for p in net.parameters()) > 1000
    rows = api.evaluate(first.run_dir)
    assert rows["metrics"]["accuracy"] == pytest.approx(first.metrics.splits["test"]["accuracy"])


def test_the_api_and_the_command_line_train_the_same_weights(tmp_path, cli, data_dir):
    via_cli = cli(*QUICK)
    assert via_cli.returncode == 0, via_cli.stderr
    result = api.train(*QUICK, f"paths.runs_dir={tmp_path / 'api'}", f"paths.data_dir={data_dir}")
    (cli_run,) = run_dirs(tmp_path / "runs")
    assert_same(outcome(cli_run), outcome(result.run_dir))


def test_a_model_class_or_object_from_a_cell_trains_and_reloads_with_its_class(tmp_path):
    result = api.train(*QUICK, f"paths.runs_dir={tmp_path}", model=MLP)
    record = json.loads((result.run_dir / "run.json").read_text())
    assert record["origin"]["model"]["class"].endswith("test_api.MLP")
    assert record["config"]["model"]["_target_"] == "train.models.usercode.in_process"
    net = api.load(result.run_dir, model=MLP).model
    assert isinstance(net, MLP)
    with pytest.raises(api.TrainError, match=r"an object from the notebook .* model=MLP"):
        api.load(result.run_dir)
    torch.manual_seed(0)
    obj = MLP((1, 8, 8), 10)
    start = {k: v.clone() for k, v in obj.state_dict().items()}
    trained = api.train(*QUICK, f"paths.runs_dir={tmp_path}", model=obj)
    assert trained.metrics.splits["val"]["accuracy"] > 0.5
    assert not all(torch.equal(start[k], v) for k, v in obj.state_dict().items())  # (it trained)


def test_an_interrupt_saves_and_resume_continues_to_the_end(tmp_path):
    class InterruptAtStep(loop.Callback):
        def on_step_end(self, state, loss):
            if state.step == 30:
                os.kill(os.getpid(), signal.SIGINT)  # what a kernel's "interrupt" sends

    args = [*QUICK, f"paths.runs_dir={tmp_path}", "trainer.checkpoint_every_s=0"]
    with pytest.raises(KeyboardInterrupt, match="resume= continues"):
        api.train(*args, callbacks=[InterruptAtStep()])
    (run,) = run_dirs(tmp_path)
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["state"]["step"] == 31
    resumed = api.train(f"resume={run}", f"paths.runs_dir={tmp_path}")
    assert resumed.run_dir == run and resumed.metrics.epochs == 2
    straight = api.train(*args, f"paths.runs_dir={tmp_path / 'straight'}")
    assert_same(outcome(straight.run_dir), outcome(run))


def test_bad_input_is_the_paragraph_as_an_exception(tmp_path):
    with pytest.raises(api.TrainError, match="unknown key 'modle'") as e:
        api.train("modle=cnn", f"paths.runs_dir={tmp_path}")
    assert e.value.code == 2
    with pytest.raises(api.TrainError, match="'tpu' is not a device"):
        api.train("data=digits", "trainer.device=tpu", f"paths.runs_dir={tmp_path}")


CELL = """
from torch import nn


class CellNet(nn.Module):
    def __init__(self, in_shape, num_outputs):
        super().__init__()
        self.fc = nn.Linear(in_shape[-1] * in_shape[-2], num_outputs)

    def forward(self, x):
        return self.fc(x.flatten(1))


class Broken(CellNet):
    def forward(self, x):
        return self.fc(x)
"""


def test_a_class_written_in_a_notebook_cell_trains_and_its_errors_name_the_cell(tmp_path):
    """A cell's class has no source file (inspect.getsourcefile raises): it trains, and an
    error in it names the cell's frame, as Jupyter numbers it."""
    cell = {"__name__": "__main__"}
    exec(compile(CELL, "/tmp/ipykernel_4242/2171369301.py", "exec"), cell)  # what a kernel does
    result = api.train(*QUICK, f"paths.runs_dir={tmp_path}", model=cell["CellNet"])
    assert isinstance(result.model(), cell["CellNet"])  # (the class it was given, remembered)
    with pytest.raises(api.TrainError, match=r"in Broken.forward .*2171369301.py, line 16"):
        api.train(*QUICK, f"paths.runs_dir={tmp_path}", model=cell["Broken"])
    with pytest.raises(api.TrainError, match=r"model=mlp both say which model"):
        api.train(*QUICK, "model=mlp", f"paths.runs_dir={tmp_path}", model=cell["CellNet"])
    assert [p.name for p in tmp_path.iterdir()] == ["digits_object"]  # (refused: nothing left)
    assert len(list((tmp_path / "digits_object").iterdir())) == 1


def test_missing_torchvision_data_names_the_option_that_fetches_it(tmp_path):
    with pytest.raises(api.TrainError) as e:
        api.train("data=fashion_mnist", "data.download=false", f"paths.data_dir={tmp_path}",
                  f"paths.runs_dir={tmp_path / 'runs'}")  # fmt: skip
    assert "make data DATA=fashion_mnist" in str(e.value) and "download=True" not in str(e.value)
    assert not (tmp_path / "runs").exists()

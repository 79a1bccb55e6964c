"""Your own nn.Module and Dataset, from files in a folder of yours: trained, evaluated,
predicted with, exported and resumed; a changed file refused with both hashes; a record or
checkpoint that names code never runs it by itself (a file that leaves a marker proves it);
errors in your file named by file and line."""

import json
import textwrap
from pathlib import Path

import pytest
import torch
from compare import assert_same, outcome

from train.errors import UserError
from train.evaluate import evaluate_run
from train.export import export_run
from train.models import usercode
from train.predict import predict_run
from train.run import checkpoint

NET = '''
import math
from torch import nn


class Net(nn.Module):
    """The course's MLP, as a learner writes it."""

    def __init__(self, in_shape, num_outputs, hidden=32):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), hidden),
                                    nn.ReLU(), nn.Linear(hidden, num_outputs))

    def forward(self, x):
        return self.layers(x)
'''
DATA = '''
import torch
from torch.utils.data import TensorDataset


def build(n=400):
    """Two interleaved half moons (scikit-learn's), as a Dataset of (x, label)."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n, noise=0.15, random_state=0)
    return TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y))


def read(path):
    return torch.tensor([float(v) for v in open(path).read().split(",")])
'''


@pytest.fixture
def mine(tmp_path) -> Path:
    """A user's code folder: net.py and data.py, and a marker their import would leave."""
    code = tmp_path / "mycode"
    code.mkdir()
    (code / "net.py").write_text(NET)
    (code / "data.py").write_text(DATA)
    return code


def args_for(code: Path, *more) -> list[str]:
    return ["data=custom", f"data.code={code / 'data.py'}", "model=custom",
            f"model.code={code / 'net.py'}", "model.args={hidden: 16}", "optim.lr=0.01",
            "trainer.checkpoint_every_s=0", *more]  # fmt: skip


def test_your_model_and_dataset_train_evaluate_predict_export_and_resume(mine, tmp_path,
                                                                         train_run):  # fmt: skip
    run = train_run(*args_for(mine, "trainer.max_epochs=15"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.8
    record = json.loads((run / "run.json").read_text())
    assert record["origin"]["model"]["sha256"] == usercode.sha256(mine / "net.py")
    assert record["origin"]["data"]["file"] == str(mine / "data.py")
    code = [str(mine / "net.py"), str(mine / "data.py")]
    saved = evaluate_run(run, "best", "test", "cpu", code=code)
    assert saved["metrics"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    inputs = tmp_path / "points"
    inputs.mkdir()
    (inputs / "a.txt").write_text("-1.0,0.3")
    (inputs / "b.txt").write_text("1.9,0.1")
    rows = predict_run(run, str(inputs), code=code)
    assert [r[1] for r in rows] == ["0", "1"]
    assert export_run(run, "onnx", code=code).is_file()
    half = train_run(*args_for(mine, "trainer.max_epochs=15", "trainer.max_steps=100"),
                     runs_dir=tmp_path / "half")  # fmt: skip
    resumed = train_run(*args_for(mine, "trainer.max_epochs=15", f"resume={half}"),
                        runs_dir=tmp_path / "half")  # fmt: skip
    assert_same(outcome(run), outcome(resumed))


def test_a_changed_file_is_refused_naming_both_hashes(mine, train_run):
    run = train_run(*args_for(mine))
    before = usercode.sha256(mine / "net.py")
    (mine / "net.py").write_text(NET.replace("hidden=32", "hidden=33"))  # one byte
    after = usercode.sha256(mine / "net.py")
    code = [str(mine / "net.py"), str(mine / "data.py")]
    with pytest.raises(UserError) as e:
        evaluate_run(run, "best", "test", "cpu", code=code)
    assert before in e.value.message and after in e.value.message
    with pytest.raises(UserError) as e:  # resume=auto and the same path: build checks too
        train_run(*args_for(mine, f"resume={run}", "trainer.max_epochs=2"),
                  runs_dir=run.parent.parent)  # fmt: skip
    assert before in e.value.message and after in e.value.message


def test_resume_and_reproduce_run_your_code_only_when_you_name_it_again(mine, tmp_path, cli):
    out = cli(*args_for(mine, "trainer.max_epochs=2"))
    assert out.returncode == 0, out.stderr
    (run,) = {p.parent.parent for p in (tmp_path / "runs").rglob("checkpoints/last.pt")}
    out = cli(f"resume={run}", "trainer.max_epochs=3")
    assert out.returncode == 2 and "never runs code by itself" in out.stderr
    assert f"model.code={mine / 'net.py'}" in out.stderr
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    for name in ("net.py", "data.py"):  # (a copy, elsewhere: the same SHA-256 is the same code)
        (copy / name).write_text((mine / name).read_text())
    out = cli(f"resume={run}", "trainer.max_epochs=3", f"model.code={copy / 'net.py'}",
              f"data.code={copy / 'data.py'}")  # fmt: skip
    assert out.returncode == 0, out.stderr
    out = cli(str(run), module="train.reproduce")
    assert out.returncode == 2 and "never runs code by itself" in out.stderr
    out = cli(str(run), f"code={copy / 'net.py'}", f"code={copy / 'data.py'}",
              module="train.reproduce")  # fmt: skip
    assert out.returncode == 0 and "match" in out.stdout, out.stdout + out.stderr


MARKER = """
import pathlib
pathlib.Path({marker!r}).write_text("the code ran")
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, num_outputs):
        super().__init__()
        self.fc = nn.Linear(64, num_outputs)

    def forward(self, x):
        return self.fc(x.flatten(1))
"""


def test_a_checkpoint_naming_code_never_runs_it_by_itself(tmp_path, train_run, cli):
    """A run dir from elsewhere whose checkpoint names user code (a valid checksum: an
    attacker who knows the format): evaluate, predict, export and resume refuse it and the
    file never runs."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.py"
    evil.write_text(MARKER.format(marker=str(marker)))
    run = train_run("data=digits", "model=mlp", "model.hidden=[8]")
    for name in ("best.pt", "last.pt"):
        path = run / "checkpoints" / name
        blob = checkpoint.load(path)
        blob["config"]["model"] = {"_target_": "train.models.usercode.model", "code": str(evil),
                                   "name": "Net", "args": None}  # fmt: skip
        blob["origin"] = {"model": usercode.origin(evil, "Net"), "data": None}
        checkpoint.save(path, blob)
    for use in (lambda: evaluate_run(run, "best", "test", "cpu"),
                lambda: predict_run(run, str(tmp_path)),
                lambda: export_run(run, "onnx")):  # fmt: skip
        with pytest.raises(UserError, match="never runs code by itself"):
            use()
    out = cli(f"resume={run}", "trainer.max_epochs=2")
    assert out.returncode == 2, out.stderr
    assert not marker.exists(), "the checkpoint's code ran"


@pytest.mark.parametrize("code, said", [
    ("from torch import nn\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_outputs):"
     "\n        super().__init__()\n        self.fc = nn.Linar(3, 4)\n",
     r"your code failed building Net: .*net.py, line 5 \(self.fc = nn.Linar\(3, 4\)\): "
     r"AttributeError"),
    ("import nothere\n", r"failed importing net.py: .*net.py, line 1 .*ModuleNotFoundError"),
    ("from torch import nn\nclass Net(nn.Module):\n    def __init__(self, width):\n"
     "        super().__init__()\n", r"Net in .*net.py takes \(width\); a model for train takes "
                                      r"in_shape"),
    ("import math\nfrom torch import nn\nclass Net(nn.Module):\n"
     "    def __init__(self, in_shape, num_outputs):\n        super().__init__()\n"
     "        self.fc = nn.Linear(math.prod(in_shape), 3)\n"
     "    def forward(self, x):\n        return self.fc(x.flatten(1))\n",
     r"Net.forward in .*net.py returns \(1, 3\) for a batch of 1; this data needs \(1, 10\)"),
    ("from torch import nn\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_outputs):"
     "\n        super().__init__()\n        self.fc = nn.Linear(7, num_outputs)\n"
     "    def forward(self, x):\n        return self.fc(x)\n",
     r"in Net.forward on one example shaped \(1, 8, 8\): .*net.py, line 7 \(return self.fc\(x\)\)"),
])  # fmt: skip
def test_errors_in_your_code_name_your_file_and_line(tmp_path, train_run, code, said):
    (tmp_path / "net.py").write_text(code)
    with pytest.raises(UserError, match=said):
        train_run("data=digits", "model=custom", f"model.code={tmp_path / 'net.py'}")
    assert not list((tmp_path / "runs").rglob("checkpoints")), "training started"


def test_what_a_dataset_function_must_return_is_said(tmp_path, train_run):
    (tmp_path / "data.py").write_text("def build():\n    return [1, 2, 3]\n")
    with pytest.raises(UserError, match="must return a torch Dataset of"):
        train_run("data=custom", f"data.code={tmp_path / 'data.py'}", "data.reader=null")
    (tmp_path / "data.py").write_text(
        textwrap.dedent("""
        import torch
        from torch.utils.data import TensorDataset
        def build():
            return {"train": TensorDataset(torch.randn(50, 3), torch.randn(50, 2)),
                    "val": TensorDataset(torch.randn(10, 3), torch.randn(10, 2)), "test": None}
    """)
    )
    run = train_run("data=custom", f"data.code={tmp_path / 'data.py'}", "data.reader=null",
                    "model=linear")  # fmt: skip
    blob = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert blob["data"]["task"] == "regression" and blob["data"]["num_outputs"] == 2

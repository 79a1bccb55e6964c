"""No lost work, nothing unsafe loaded: each guarantee with a test that injects the fault."""

import ast
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from compare import assert_same, outcome
from hydra.errors import ConfigCompositionException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runs import the_run

from train.errors import UserError
from train.fit.task import Task
from train.run import checkpoint

ROOT = Path(__file__).resolve().parent.parent
SLOW_EPOCHS = ["trainer.checkpoint_every_s=0",  # (the test waits for the first epoch's last.pt)
               "data=synthetic", "data.num_samples=1500", "model=cnn", "model.channels=[8,16]",
               "data.batch_size=32", "trainer.max_epochs=25", "trainer.log_every_n_steps=1",
               "trainer.progress=lines"]  # fmt: skip


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_after_the_step_and_resume_is_exact(cli, tmp_path, data_dir, sig, code):
    runs = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "train", *SLOW_EPOCHS, f"paths.runs_dir={runs}",
           f"paths.data_dir={data_dir}"]  # fmt: skip
    child = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(runs.rglob("checkpoints/last.pt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.uniform(0.1, 0.6))  # somewhere in an early epoch
    child.send_signal(sig)
    out, err = child.communicate(timeout=120)
    assert child.returncode == code, out + err
    assert f"stopped by {signal.Signals(sig).name} at step" in out and "Traceback" not in err
    run = the_run(runs)
    resumed = subprocess.run([*cmd, f"resume={run}"], cwd=tmp_path, capture_output=True,
                             text=True)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    whole = tmp_path / "whole"
    assert cli(*SLOW_EPOCHS, f"paths.runs_dir={whole}").returncode == 0
    assert_same(outcome(the_run(whole)), outcome(run))


SAVER = """
import sys, torch
from pathlib import Path
from train.run.checkpoint import save
for i in range(1, 10**6):
    save(Path(sys.argv[1]), {"model": {"w": torch.full((1_500_000,), float(i))}})
    print(i, flush=True)
"""


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_save_leaves_last_pt_intact(tmp_path):
    for round_ in range(5):  # 15 kills in all, three savers at a time
        paths = [tmp_path / f"{round_}-{i}" / "checkpoints" / "last.pt" for i in range(3)]
        children = [subprocess.Popen([sys.executable, "-c", SAVER, str(p)],
                                     stdout=subprocess.PIPE, text=True) for p in paths]  # fmt: skip
        for child in children:
            child.stdout.readline()  # one complete save exists
        for child in children:
            time.sleep(random.uniform(0, 0.15))
            child.kill()
            child.wait()
        for path in paths:
            w = checkpoint.load(path)["model"]["w"]  # loads, checksum verified
            assert torch.equal(w, torch.full_like(w, w[0].item())) and w[0] >= 1


def test_crafted_pickle_is_refused_and_its_code_never_runs(cli, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": Evil()}, evil)
    with pytest.raises(UserError, match="refused"):
        checkpoint.load(evil)
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    out = cli("data=digits", f"resume={evil}", env=env)
    assert out.returncode == 2 and "refused" in out.stderr and "could run code" in out.stderr
    assert not marker.exists()


def test_every_torch_load_in_the_package_says_weights_only_true():
    loads = []
    for path in (ROOT / "train").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load" and \
                    getattr(node.func.value, "id", None) == "torch":  # fmt: skip
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value
                loads.append((f"{path.name}:{node.lineno}", ok))
    assert loads and all(ok for _, ok in loads), loads


@pytest.fixture
def saved(tmp_path) -> Path:
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"model": {"w": torch.arange(50_000.0)}, "state": {"epoch": 1}})
    return path


@pytest.mark.parametrize("damage", ["truncate", "empty", "flip", "flip_tail", "flip_pickle"])
def test_damaged_checkpoints_are_named_corrupt_in_one_line(saved, damage):
    """A flipped byte in the pickled part was refused as "could run code" before: the
    archive's CRCs are checked first now."""
    raw = bytearray(saved.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 3]
    elif damage == "empty":
        raw = bytearray()
    elif damage == "flip_pickle":
        raw[raw.index(b"model") + 2] ^= 0x04  # inside data.pkl: a key's bytes
    else:
        raw[len(raw) // 2 if damage == "flip" else len(raw) - 30] ^= 0x04
    saved.write_bytes(bytes(raw))
    with pytest.raises(UserError) as e:
        checkpoint.load(saved)
    assert str(saved) in e.value.message and "corrupt" in e.value.message
    assert "\n" not in e.value.message


def test_a_full_disk_at_save_names_the_path_and_keeps_the_previous_checkpoint(
    train_run, monkeypatch
):
    real_save, calls = torch.save, []

    def save_until_the_disk_fills(obj, f, *args, **kwargs):
        calls.append(getattr(f, "name", ""))
        checkpoints = [c for c in calls if "/checkpoints/" in str(c)]
        if len(checkpoints) > 2:  # epoch 1 saved best.pt and last.pt; then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save_until_the_disk_fills)
    with pytest.raises(UserError) as e:
        train_run("data=digits", "trainer.max_epochs=3", "optim.lr=0.01",
                  "trainer.checkpoint_every_s=0")  # fmt: skip
    assert "No space left on device" in e.value.message and "MB free there" in e.value.message
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    failed = Path(e.value.message.split("checkpoint ")[1].split(":")[0])
    assert failed.name in ("best.pt", "last.pt")
    assert checkpoint.load(failed.parent / "last.pt")["state"]["epoch"] == 1
    assert not list(failed.parent.glob(".*tmp*")), "a temporary file was left behind"


def test_a_nonfinite_loss_stops_at_its_step_keeping_the_last_good_checkpoint(train_run, tmp_path):
    with pytest.raises(UserError) as e:
        train_run("experiment=multivariable_regression", "optim.lr=0.01",
                  "trainer.max_epochs=100")  # fmt: skip
    assert e.value.code == 3 and "at step 8" in e.value.message
    last = the_run(tmp_path / "runs") / "checkpoints" / "last.pt"
    blob = checkpoint.load(last)
    assert blob["state"]["epoch"] == 7
    assert all(torch.isfinite(t).all() for t in blob["model"].values())


def test_nonfinite_batches_can_be_skipped_and_counted(train_run):
    """An occasional bad batch is skipped and counted; the rest train."""
    real = Task.loss
    bad = {5, 17, 33}  # three of digits' 40 batches an epoch, as the steps come

    def loss(self, out, y, reduction="mean"):
        value = real(self, out, y, reduction)
        loss.calls += 1
        return value * float("nan") if loss.calls in bad and out.requires_grad else value

    loss.calls = 0
    with pytest.MonkeyPatch.context() as m:
        m.setattr(Task, "loss", loss)
        run = train_run("data=digits", "trainer.max_epochs=2", "trainer.on_nonfinite=skip")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["skipped_nonfinite"] == 3 and metrics["steps"] == 80 - 3


def test_skipping_most_of_an_epoch_stops_instead_of_finishing_at_chance(train_run):
    """Full-batch regression that diverges: every later batch is NaN. Skipping them all
    finished with exit 0 before (13 of 20 epochs skipped)."""
    with pytest.raises(UserError) as e:
        train_run("experiment=multivariable_regression", "optim.lr=0.01",
                  "trainer.max_epochs=20", "trainer.on_nonfinite=skip")  # fmt: skip
    assert e.value.code == 3 and "skipped 1 of 1 batches in epoch 8" in e.value.message


# Values outside each numeric field's range: every one must stop the run before it starts.
BAD = {
    "optim.lr": st.floats(max_value=-1e-9, allow_infinity=False),
    "optim.weight_decay": st.floats(max_value=-1e-9, allow_infinity=False),
    "data.batch_size": st.integers(max_value=0),
    "data.eval_batch_size": st.integers(max_value=0),
    "data.val_fraction": st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0)),
    "data.test_fraction": st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0)),
    "model.hidden": st.lists(st.integers(max_value=0), min_size=1, max_size=3).map(
        lambda xs: "[" + ",".join(map(str, xs)) + "]"),
    "model.dropout": st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0)),
    "trainer.max_epochs": st.integers(max_value=0),
    "trainer.max_steps": st.integers(max_value=0),
    "trainer.log_every_n_steps": st.integers(max_value=0),
    "trainer.patience": st.integers(max_value=-1),
    "trainer.grad_clip": st.floats(max_value=0.0, allow_infinity=False),
}  # fmt: skip


@pytest.mark.parametrize("key", BAD)
def test_out_of_range_values_fail_at_start_leaving_nothing(train_run, tmp_path, key):
    @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
    @given(value=BAD[key])
    def check(value):
        runs = tmp_path / "runs"
        text = value if isinstance(value, str) else repr(value)
        with pytest.raises(UserError) as e:
            train_run("data=digits", f"{key}={text}", runs_dir=runs)
        assert key.split(".")[-1] in e.value.message or "learning rate" in e.value.message \
            or "weight_decay" in e.value.message  # fmt: skip
        assert not [p for p in runs.rglob("*") if p.is_file()]

    check()


def test_a_single_class_or_nan_csv_fails_at_start(tmp_path, train_run):
    one = tmp_path / "one.csv"
    one.write_text("a,label\n1,x\n2,x\n3,x\n")
    with pytest.raises(UserError, match="at least 2 classes"):
        train_run("data=csv", f"data.path={one}", "data.target=label")
    nan = tmp_path / "nan.csv"
    nan.write_text("a,b,label\n1,2,x\n3,nan,y\n4,5,x\n6,,y\n")
    with pytest.raises(
        UserError, match=r"missing values \(features\): column 'b' on line\(s\) 3, 5"
    ):
        train_run("data=csv", f"data.path={nan}", "data.target=label")


def test_wrong_types_fail_at_compose(train_run):
    with pytest.raises(ConfigCompositionException):
        train_run("data=digits", "trainer.max_epochs=many")


def test_resume_auto_continues_the_newest_run_of_the_same_config(train_run, tmp_path):
    first = train_run("data=digits", "trainer.max_epochs=1", "resume=auto")
    other = train_run("data=digits", "optim.lr=0.5", "trainer.max_epochs=1")  # another config
    again = train_run("data=digits", "trainer.max_epochs=2", "resume=auto")
    assert again == first and other != first
    assert json.loads((first / "metrics.json").read_text())["epochs"] == 2
    fresh = train_run("data=digits", "trainer.max_epochs=2", "resume=auto")  # already trained
    assert fresh not in (first, other)


def test_resume_auto_skips_and_names_a_corrupt_checkpoint(cli, tmp_path):
    assert cli("data=digits", "trainer.max_epochs=2").returncode == 0
    run = the_run(tmp_path / "runs")
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated, as by a crash outside our save
    out = cli("data=digits", "trainer.max_epochs=3", "resume=auto")
    assert out.returncode == 0, out.stderr
    assert f"skipped a checkpoint it cannot use: checkpoint {last} is corrupt" in out.stdout
    assert f"continuing {run} from {run / 'checkpoints' / 'best.pt'}" in out.stdout
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 3

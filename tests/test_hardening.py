"""A run dir is untrusted input and every promise holds under attack: crafted records, full
disks, read-only dirs, kills between and inside saves, concurrent starts, damaged caches,
signals at the edges of a run. Each test injects the fault for real where this machine allows
(tmpfs, read-only bind mounts, SIGKILL), and fails on the code before these fixes."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from compare import assert_same, outcome
from conftest import copy_of, trained_once
from runs import run_dirs

from train.errors import UserError
from train.run import checkpoint

QUICK = ["data=digits", "trainer.max_epochs=1"]


@contextlib.contextmanager
def mounted(kind: str, target: Path, source: Path | None = None, size: str = "4m"):
    """A tmpfs of `size` (a disk that fills), or `source` bind-mounted read-only, at `target`.
    Needs root (CI's machine and ours); elsewhere the test says so and stops."""
    target.mkdir(parents=True, exist_ok=True)
    if kind == "tmpfs":
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)]
    else:
        cmd = ["mount", "--bind", str(source), str(target)]
    if os.geteuid() != 0 or subprocess.run(cmd, capture_output=True).returncode != 0:
        pytest.fail("these fault-injection tests mount a tmpfs or a read-only bind mount: run "
                    "them as root (CI does)")  # fmt: skip
    try:
        if kind == "ro":
            subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def fill(directory: Path) -> None:
    """Write a ballast file until the file system is full."""
    fd = os.open(directory / "ballast", os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0" * 65536):
                pass
    finally:
        os.close(fd)


# --- security ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _finished_once(tmp_path_factory, data_dir) -> Path:
    return trained_once(tmp_path_factory, data_dir, "data=digits", "trainer.max_epochs=1")


@pytest.fixture
def finished(_finished_once, tmp_path) -> Path:
    """A finished digits run, trained once for the module; each test gets its own copy."""
    return copy_of(_finished_once, tmp_path)


def forge(run: Path, edit) -> None:
    """Rewrite the run's checkpoints with `edit(config)` applied and a valid checksum: an
    attacker who knows the format."""
    for name in ("best.pt", "last.pt"):
        path = run / "checkpoints" / name
        blob = checkpoint.load(path)
        edit(blob["config"])
        checkpoint.save(path, blob)


@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
def test_a_forged_target_in_a_checkpoint_never_runs(finished, tmp_path, command, cli):
    """A stored config naming pathlib.Path.write_text wrote an attacker's file before."""
    victim = tmp_path / "pwned.txt"

    def evil(config):
        config["model"] = {"_target_": "pathlib.Path.write_text", "self": str(victim),
                           "data": "${oc.env:HOME}"}  # fmt: skip
        config["data"]["_target_"] = "os.system"

    forge(finished, evil)
    (tmp_path / "in").mkdir()
    args = {"evaluate": [f"run={finished}"], "export": [f"run={finished}"],
            "predict": [f"run={finished}", f"inputs={tmp_path / 'in'}"]}[command]  # fmt: skip
    out = cli(*args, module=f"train.{command}")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "names callables this package does not build" in out.stderr
    assert "pathlib.Path.write_text" in out.stderr and "Traceback" not in out.stderr
    assert not victim.exists()


def test_reproduce_runs_this_installation_not_code_in_the_run_dir(finished, cli, tmp_path):
    """reproduce started `python -m train` in the recorded cwd: a train/ package planted
    there ran instead of ours."""
    planted = tmp_path / "planted"
    (planted / "train").mkdir(parents=True)
    marker = tmp_path / "planted-ran"
    (planted / "train" / "__init__.py").write_text("")
    (planted / "train" / "__main__.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    record = json.loads((finished / "run.json").read_text())
    record["cwd"] = str(planted)
    (finished / "run.json").write_text(json.dumps(record))
    out = cli(str(finished), module="train.reproduce")
    assert out.returncode == 0 and "match" in out.stdout, out.stdout + out.stderr
    assert not marker.exists()


# --- integrity ------------------------------------------------------------------------------------

KILLER = """
import os, sys
from train.run import checkpoint
real = checkpoint.Saver.write
def write(self, name, payload):
    real(self, name, payload)
    if name == "best" and payload["state"]["epoch"] == int(os.environ["KILL_AT_EPOCH"]):
        os._exit(137)  # as kill -9 between the two writes of that epoch
checkpoint.Saver.write = write
sys.argv = ["train", *sys.argv[1:]]
from train.app import main
main()
"""


@pytest.mark.slow
def test_a_kill_between_best_and_last_resumes_to_the_right_best(tmp_path, data_dir, train_run):
    """A kill between the last.pt and best.pt writes of the final epoch left an old best.pt,
    and the resumed run scored epoch-2 weights as epoch 3's best."""
    args = ["data=digits", "optim.lr=0.003", "trainer.max_epochs=3", "trainer.progress=lines",
            "trainer.checkpoint_every_s=0", f"paths.data_dir={data_dir}"]  # fmt: skip
    env = {**os.environ, "KILL_AT_EPOCH": "3"}
    out = subprocess.run([sys.executable, "-c", KILLER, *args, f"paths.runs_dir={tmp_path / 'a'}"],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert out.returncode == 137, out.stderr
    (run,) = run_dirs(tmp_path / "a")
    assert checkpoint.load(run / "checkpoints" / "last.pt")["state"]["epoch"] == 2
    resumed = subprocess.run([sys.executable, "-m", "train", f"resume={run}"], capture_output=True,
                             text=True)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    whole = train_run(*args, runs_dir=tmp_path / "b")
    assert_same(outcome(whole), outcome(run))
    best = checkpoint.load(run / "checkpoints" / "best.pt")["state"]
    assert best["step"] == json.loads((run / "metrics.json").read_text())["best_step"]


def test_weights_made_non_finite_by_a_step_are_never_saved(train_run, tmp_path):
    """lr 1e39 from epoch 2 on: every loss finite, the update overflows. last.pt held the
    infinite weights before and the run said it was untouched."""
    with pytest.raises(UserError) as e:
        train_run("experiment=linear_regression", "sched=step", "sched.step_size=1",
                  "sched.gamma=1e45", "trainer.max_epochs=5",
                  "trainer.checkpoint_every_s=0")  # fmt: skip
    assert e.value.code == 3 and "weights became non-finite by step 2" in e.value.message
    (run,) = run_dirs(tmp_path / "runs")
    blob = checkpoint.load(run / "checkpoints" / "last.pt")
    assert blob["state"]["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in blob["model"].values())


def test_a_non_finite_validation_loss_is_reported_as_such(train_run, tmp_path, caplog):
    """One validation row far out of range makes every val loss inf: that was reported as
    "no epoch finished"."""
    from train.data.sets import split_rows

    rows = ["a,b,y"] + [f"{i % 7},{i % 5},{i % 3}.5" for i in range(60)]
    val_row = int(split_rows(60, 0.1, 0.2, 0)[1][0])
    rows[val_row + 1] = "3e38,1,1.5"
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    with caplog.at_level("WARNING", logger="train"):
        run = train_run("data=csv", f"data.path={tmp_path / 't.csv'}", "data.target=y",
                        "trainer.max_epochs=2")  # fmt: skip
    assert "the validation loss is inf" in caplog.text
    assert "no best.pt: loss was not finite at any of the 2 epoch(s)" in caplog.text
    assert "no epoch finished" not in caplog.text
    assert json.loads((run / "metrics.json").read_text())["val"]["loss"] == float("inf")


@pytest.mark.mounts
def test_a_full_disk_during_a_save_is_one_paragraph_and_leaves_no_partial_file(
    train_run, tmp_path, monkeypatch
):
    """On a real full disk torch.save raises a RuntimeError ("unexpected pos"), not an
    OSError: a traceback, exit 1, and the partial file left filling the disk, before."""
    with mounted("tmpfs", tmp_path / "disk", size="6m") as disk:
        real, saves = checkpoint.save, []

        def fill_after_epoch_one(path, payload):
            saves.append(path.name)
            if len(saves) == 3:  # epoch 1's best.pt and last.pt are written; now it is full
                fill(disk)
            real(path, payload)

        monkeypatch.setattr(checkpoint, "save", fill_after_epoch_one)
        with pytest.raises(UserError) as e:
            train_run("data=digits", "model.hidden=[256]", "trainer.max_epochs=3",
                      "optim.lr=0.003", "trainer.checkpoint_every_s=0",
                      runs_dir=disk / "runs")  # fmt: skip
        assert e.value.code == 2 and "could not write checkpoint" in e.value.message
        assert "MB free there" in e.value.message and "partial file was removed" in e.value.message
        (run,) = run_dirs(disk / "runs")
        assert not list((run / "checkpoints").glob(".*tmp*"))
        assert checkpoint.load(run / "checkpoints" / "last.pt")["state"]["epoch"] == 1


@pytest.mark.mounts
def test_a_full_disk_at_the_tensorboard_writer_is_one_paragraph(tmp_path, monkeypatch, train_run):
    from train.loggers import board

    with mounted("tmpfs", tmp_path / "disk", size="2m") as disk:
        real = board.open_writer

        def full(run_dir, step, flush_secs):
            fill(disk)
            return real(run_dir, step, flush_secs)

        monkeypatch.setattr(board, "open_writer", full)
        with pytest.raises(UserError, match=r"cannot write TensorBoard's event file in .*No space"):
            train_run(*QUICK, runs_dir=disk / "runs")


@pytest.mark.mounts
@pytest.mark.parametrize("command", ["resume", "evaluate", "export", "predict"])
def test_read_only_run_dirs_are_one_paragraph_each(finished, tmp_path, cli, command):
    with mounted("ro", tmp_path / "ro", source=finished.parent) as ro:
        run = ro / finished.name
        (tmp_path / "in").mkdir(exist_ok=True)
        args = {"resume": ([f"resume={run}", "trainer.max_epochs=2"], "train"),
                "evaluate": ([f"run={run}"], "train.evaluate"),
                "export": ([f"run={run}"], "train.export"),
                "predict": ([f"run={run}", f"inputs={tmp_path / 'in'}",
                             f"out={run / 'p.csv'}"], "train.predict")}[command]  # fmt: skip
        out = cli(*args[0], module=args[1])
        assert out.returncode == 2, out.stdout + out.stderr
        assert "not writable" in out.stderr or "cannot be written" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
        if command in ("evaluate", "export"):  # out= writes elsewhere
            elsewhere = tmp_path / ("e.json" if command == "evaluate" else "m.onnx")
            out = cli(f"run={run}", f"out={elsewhere}", module=args[1])
            assert out.returncode == 0, out.stderr


def test_temp_files_of_killed_writers_are_removed_when_the_run_resumes(finished, cli, caplog):
    ckpts = finished / "checkpoints"
    (ckpts / ".last.pt.tmp-999999").write_bytes(b"\0" * 2_000_000)  # a dead pid's, half a save
    (finished / ".metrics.json.tmp-999998").write_text("{")
    out = cli(f"resume={finished}", "trainer.max_epochs=2")
    assert out.returncode == 0, out.stderr
    assert "removed 1 temporary file(s) of interrupted saves (1.9 MB)" in out.stdout
    assert not list(finished.rglob(".*.tmp-*"))


def test_two_sweeps_started_in_the_same_second_never_share_a_dir(cli, tmp_path, data_dir):
    cmd = [sys.executable, "-m", "train", "-m", *QUICK, "optim.lr=0.01,0.001",
           f"paths.runs_dir={tmp_path / 'runs'}", f"paths.data_dir={data_dir}"]  # fmt: skip
    sweeps = [subprocess.Popen([*cmd, f"seed={s}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for s in (1, 2)]  # fmt: skip
    for p in sweeps:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    dirs = sorted((tmp_path / "runs" / "multirun").iterdir())
    assert len(dirs) == 2, dirs
    for job in (j for d in dirs for j in d.iterdir() if j.is_dir()):
        record = json.loads((job / "run.json").read_text())
        for name in ("best.pt", "last.pt"):
            assert checkpoint.load(job / "checkpoints" / name)["config"]["seed"] == record["seed"]


def test_a_second_process_on_the_same_run_is_refused_naming_the_first(finished, cli, data_dir):
    # (epochs without a checkpoint each take milliseconds: the first process must still be
    # training when the second starts, on any machine, so it is given epochs without end)
    slow = subprocess.Popen([sys.executable, "-m", "train", f"resume={finished}",
                             "trainer.max_epochs=100000", "trainer.patience=null",
                             f"paths.data_dir={data_dir}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while (finished / ".lock").read_text().strip() != str(slow.pid):
            assert time.monotonic() < deadline and slow.poll() is None, slow.communicate()
            time.sleep(0.05)
        for second in ([f"resume={finished}", "trainer.max_epochs=100000", "trainer.patience=null"],
                       ["data=digits", "trainer.max_epochs=100000", "trainer.patience=null",
                        "resume=auto", f"paths.runs_dir={finished.parent.parent}"]):  # fmt: skip
            out = cli(*second)
            assert out.returncode == 2, out.stdout + out.stderr
            assert f"is being trained by another process (pid {slow.pid})" in out.stderr
    finally:
        slow.send_signal(signal.SIGTERM)
        slow.communicate(timeout=120)


@pytest.mark.parametrize("damage", ["pixel", "label", "truncate"])
def test_a_damaged_data_cache_is_rebuilt_and_said(tmp_path, damage, caplog):
    from train.data import sets

    common = dict(batch_size=16, eval_batch_size=64, val_fraction=0.1, test_fraction=0.2,
                  split_seed=0, normalize=True)  # fmt: skip
    fresh = sets.digits(str(tmp_path), **common)
    cache = tmp_path / "digits" / "tensors.pt"
    blob = torch.load(cache, weights_only=True)
    if damage == "truncate":
        cache.write_bytes(cache.read_bytes()[:5000])
    else:
        key, index = ("x", (3, 0, 4, 4)) if damage == "pixel" else ("y", 7)
        blob[key][index] += 1  # the stored checksum no longer matches: as a flipped bit does
        torch.save(blob, cache)
    with caplog.at_level("WARNING", logger="train"):
        again = sets.digits(str(tmp_path), **common)
    assert f"the data cache {cache} is damaged (it does not verify); rebuilding it" in caplog.text
    assert torch.equal(again.train.x, fresh.train.x) and torch.equal(again.test.y, fresh.test.y)
    assert again.fingerprint == fresh.fingerprint


@pytest.mark.slow
def test_a_signal_during_start_up_exits_143_and_leaves_no_run_dir(tmp_path, data_dir):
    runs = tmp_path / "runs"
    child = subprocess.Popen([sys.executable, "-m", "train", "data=digits",
                              f"paths.runs_dir={runs}", f"paths.data_dir={data_dir}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not list(runs.glob("*/*")) and time.monotonic() < deadline:  # the run dir is made
        time.sleep(0.01)
    child.send_signal(signal.SIGTERM)  # long before the first step (torch is still loading)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 143, out + err
    assert err.strip() == "error: stopped by SIGTERM before training started; nothing was trained."
    assert not [p for p in runs.rglob("*") if p.is_file() and p.name != ".lock"]


def test_a_signal_during_the_final_scoring_does_not_claim_a_resume(train_run, caplog, monkeypatch):
    from train.fit import scoring

    real = scoring.score

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # caught: the loop has finished, scoring goes on
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "score", interrupted)
    with pytest.raises(SystemExit) as e, caplog.at_level("INFO", logger="train"):
        train_run(*QUICK)
    assert e.value.code == 143
    said = caplog.text  # (the console's and train.log's line)
    assert "after training finished" in said and "continues the run" not in said


@pytest.mark.slow
def test_sigterm_to_the_launcher_ends_with_the_ranks_143(tmp_path, data_dir):
    runs = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "train.launch", "--standalone", "--nproc_per_node=2", "-m",
           "train", "data=synthetic", "data.num_samples=3000", "model=mlp",
           "model.hidden=[512,512]", "data.batch_size=16", "trainer.max_epochs=20",
           f"paths.runs_dir={runs}", f"paths.data_dir={data_dir}",
           "trainer.progress=lines", "trainer.checkpoint_every_s=0"]  # fmt: skip
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(runs.rglob("checkpoints/last.pt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 143, err[-2000:]
    assert "SignalException" not in err and "Traceback" not in err
    assert "torchrun: stopped by SIGTERM" in err and "stopped by SIGTERM at step" in out


def test_an_early_error_never_aborts_the_interpreter(cli, tmp_path):
    """An error while torch._dynamo was still importing on its thread ended in SIGABRT."""
    for _ in range(3):
        out = cli("data=csv", f"data.path={tmp_path / 'absent.csv'}", "data.target=y")
        assert out.returncode == 2, out.returncode
        assert "terminate called" not in out.stderr and "Exception in thread" not in out.stderr


def saving(root: Path) -> bool:
    """A checkpoint's temporary file exists: a save is under way (or was cut short)."""
    return bool(list(root.rglob("checkpoints/.*.pt.tmp-*")))


@pytest.mark.slow
def test_thirty_kills_with_big_checkpoints_end_bitwise_as_one_run(tmp_path, data_dir, train_run):
    """kill -9 at least thirty times at random moments (12 or more inside saves of ~50 MB
    checkpoints), each time resumed: the run ends bit for bit where an uninterrupted one does,
    and no temporary file is left anywhere."""
    import random

    epochs = 120  # (was 200): the kills end near the start here (epoch 3 after 30 kills, each
    # restart ~4 s of start-up); the run must outlast them on a machine twice as fast too.
    args = ["trainer.checkpoint_every_s=0",  # a save every epoch: many moments to kill inside
            "data=digits", "model.hidden=[2048,2048]", f"trainer.max_epochs={epochs}",
            "trainer.patience=null", "trainer.log_every_n_steps=5", "trainer.progress=lines",
            f"paths.data_dir={data_dir}", f"paths.runs_dir={tmp_path / 'killed'}"]  # fmt: skip
    rng = random.Random(0)
    kills, inside_saves, done, cmd = 0, 0, False, [sys.executable, "-m", "train", *args]
    started = time.monotonic()
    # At least 30 kills, at least 12 of them inside a save (a kill aimed at a save can land
    # just after it on a busy machine: then it goes on, up to 45 kills).
    while (kills < 30 or inside_saves < 12) and kills < 45 and not done:
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if kills == 0:  # the first kill only once a checkpoint exists; then resume that run
            while not run_dirs(tmp_path / "killed") and child.poll() is None:
                time.sleep(0.05)
            cmd = [*cmd, f"resume={run_dirs(tmp_path / 'killed')[0]}"]
        if kills % 2:  # every other kill: the moment a save is under way
            deadline = time.monotonic() + 30
            while not saving(tmp_path) and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.03))
        else:  # the others anywhere: start-up, steps, validation, saves
            time.sleep(rng.uniform(3.5, 6.0))
        if child.poll() is not None:  # finished before this kill
            assert child.returncode == 0, child.stderr.read()
            done = True
            break
        os.kill(child.pid, signal.SIGKILL)  # the trainer itself, not a wrapper
        child.wait()
        kills += 1
        inside_saves += saving(tmp_path)
    killing = time.monotonic() - started  # (and the epoch reached: the margin to the last)
    (last,) = (tmp_path / "killed").rglob("checkpoints/last.pt")
    reached = torch.load(last, weights_only=True)["state"]["epoch"]
    if not done:  # (the rest without a ~50 MB save each epoch: when it saves changes nothing)
        finish = subprocess.run([*cmd, "trainer.checkpoint_every_s=60"], capture_output=True,
                                text=True)  # fmt: skip
        assert finish.returncode == 0, finish.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "killed")
    whole = train_run(*args[1:-2], runs_dir=tmp_path / "whole", small=False)  # (default clock)
    assert_same(outcome(whole), outcome(run))
    assert not list(tmp_path.rglob(".*.tmp-*")), "temporary files were left behind"
    print(
        f"\n{kills} kills, {inside_saves} of them inside a save, in {killing:.0f} s to "
        f"epoch {reached} of {epochs}; the whole test {time.monotonic() - started:.0f} s"
    )
    assert kills >= 30 and inside_saves >= 12, (kills, inside_saves)

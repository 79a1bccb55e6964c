"""python -m train.tune as a user runs it: a study on real digits that finds >= 95%, prunes,
continues on a second call, survives a kill -9 of its worker, runs workers side by side, and
records a trial's config error without stopping."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runs import events

optuna = pytest.importorskip("optuna")  # (in the lock: never skipped where the suite runs)

pytestmark = pytest.mark.slow  # studies of several trials, in processes

DIGITS = ["data=digits", "trainer.monitor=accuracy", "trainer.monitor_mode=max",
          "trainer.progress=lines"]  # fmt: skip


def tune(tmp_path, *args, timeout=900, **popen):
    cmd = [sys.executable, "-m", "train.tune", f"paths.runs_dir={tmp_path / 'runs'}", *args]
    if popen:
        return subprocess.Popen(cmd, cwd=tmp_path, text=True, **popen)
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=timeout)


def trials(tmp_path, name):
    storage = f"sqlite:///{tmp_path / 'runs' / 'tune' / name / 'study.db'}"
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def test_a_study_on_digits_finds_95_percent_prunes_and_continues(tmp_path):
    out = tune(tmp_path, *DIGITS, "tune.study=digits", "tune.n_trials=10")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    first = trials(tmp_path, "digits")
    states = [t.state.name for t in first]
    assert len(first) == 10 and "RUNNING" not in states
    assert states.count("PRUNED") >= 1, states
    study_dir = tmp_path / "runs" / "tune" / "digits"
    summary = json.loads((study_dir / "summary.json").read_text())
    assert summary["best"]["value"] >= 0.95, summary
    assert (study_dir / "history.png").stat().st_size > 1000
    retrain = next(ln for ln in out.stdout.splitlines() if ln.startswith("retrain it: "))
    assert retrain.startswith("retrain it: python -m train ") and "data=digits" in retrain
    best = Path(summary["best"]["run_dir"])
    assert {"run.json", "metrics.json", "tune.json"} <= {p.name for p in best.iterdir()}
    assert (best / "checkpoints" / "best.pt").is_file() and events(best).Tags()["scalars"]
    metrics = json.loads((best / "metrics.json").read_text())
    assert metrics["val"]["accuracy"] == pytest.approx(summary["best"]["value"])
    pruned = next(t for t in first if t.state.name == "PRUNED")
    run = Path(pruned.user_attrs["run_dir"])
    assert json.loads((run / "tune.json").read_text())["state"] == "PRUNED"
    assert (run / "metrics.json").is_file()  # a pruned trial's run dir is a whole run too
    evaluated = subprocess.run([sys.executable, "-m", "train.evaluate", f"run={best}"],
                               capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    again = tune(tmp_path, *DIGITS, "tune.study=digits", "tune.n_trials=2")
    assert again.returncode == 0, again.stderr[-3000:]
    after = trials(tmp_path, "digits")
    assert len(after) == 12  # the same study, two more trials, not the first two again
    assert all(t.params not in [u.params for u in after[:10]] for t in after[10:])
    other = tune(tmp_path, "data=digits", "tune.study=digits", "tune.n_trials=1")
    assert other.returncode == 2 and "optimises accuracy (max)" in other.stderr  # not loss
    summary_only = tune(tmp_path, "data=digits", "tune.study=digits", "tune.n_trials=0")
    assert summary_only.returncode == 0 and "study digits: 12 trials" in summary_only.stdout
    assert "trainer.monitor=accuracy" in summary_only.stdout  # the best run's own overrides
    assert len(trials(tmp_path, "digits")) == 12
    replayed = subprocess.run([sys.executable, "-m", "train.reproduce", str(best)],
                              capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert replayed.returncode == 0, replayed.stdout[-2000:] + replayed.stderr[-2000:]
    assert "match: final weights and metrics are identical" in replayed.stdout


def test_a_killed_worker_leaves_no_running_trial_and_its_trial_is_retried(tmp_path):
    forever = [*DIGITS, "trainer.max_epochs=100000", "trainer.patience=null",
               "tune.study=k", "tune.heartbeat_s=1"]  # fmt: skip
    proc = tune(tmp_path, *forever, "tune.n_trials=3", stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)  # fmt: skip
    first = tmp_path / "runs" / "tune" / "k" / "trial-0"
    deadline = time.monotonic() + 120
    while not list(first.glob("events.out.tfevents.*")) and time.monotonic() < deadline:
        assert proc.poll() is None
        time.sleep(0.2)
    time.sleep(1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [t.state.name for t in trials(tmp_path, "k")] == ["RUNNING"]
    time.sleep(5)  # the grace period: 4 heartbeats
    out = tune(tmp_path, *DIGITS, "trainer.max_epochs=3", "tune.study=k", "tune.heartbeat_s=1",
               "tune.n_trials=2")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    after = trials(tmp_path, "k")
    assert [t.state.name for t in after] == ["FAIL", "COMPLETE", "COMPLETE"]
    retry = after[1]  # the dead trial, again, with its parameters: lost none, counted once
    with pytest.warns(optuna.exceptions.ExperimentalWarning):  # (Optuna's word for it)
        retried = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry)
    assert retried == 0 and retry.params == after[0].params


def test_workers_share_one_study_in_a_storage_named_by_url(tmp_path):
    """Two worker processes on one study, as two machines would join it: one storage URL."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    out = tune(tmp_path, *DIGITS, "trainer.max_epochs=3", "tune.study=w", "tune.workers=2",
               "tune.n_trials=4", "tune.pruner=none", f"tune.storage={url}")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    done = optuna.load_study(study_name="w", storage=url).get_trials()
    assert [t.state.name for t in done] == ["COMPLETE"] * 4
    assert "2 workers, 2/2 trials each, 1 CPU thread(s) each" in out.stderr
    assert out.stdout.count("retrain it:") == 1  # the summary, once, from the parent


def test_a_trial_with_a_config_error_is_recorded_and_the_study_goes_on(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {type: float, low: -2.0, high: -1.0}\n")
    out = tune(tmp_path, *DIGITS, "tune.study=bad", f"tune.space={space}", "tune.n_trials=2")
    assert out.returncode == 0, out.stderr[-3000:]
    done = trials(tmp_path, "bad")
    assert [t.state.name for t in done] == ["FAIL", "FAIL"]
    assert all("learning rate" in t.user_attrs["error"] for t in done)
    assert "no completed trial yet" in out.stdout


@pytest.mark.parametrize("args, needle", [
    (["tune.pruner=sometimes"], "tune.pruner=sometimes: use one of median"),
    (["tune.n_trials=-1", "tune.workers=0"], "only); tune.workers=0: 1 or more"),
    (["tune.space=nowhere"], "tune.space=nowhere"),
    (["tune.studdy=x"], "did you mean tune.study?"),
    (["tune.study=../x"], "a name, not a path"),
    (["trainer.max_epoch=3"], "trainer.max_epoch"),
    (["-m"], "overrides only"),
])  # fmt: skip
def test_bad_tune_settings_are_one_paragraph_and_exit_2(tmp_path, args, needle):
    out = tune(tmp_path, "data=digits", *args)
    assert out.returncode == 2 and needle in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("entry, needle", [
    ("optim.betta: {type: float, low: 0.1, high: 0.9}", "optim.betta is in no optim config"),
    ("optim: {type: categorical, choices: [adam, nosuchopt]}", "['nosuchopt'] not among"),
    ("optim.lr: {type: float, low: 0.5, high: 0.01}", "low 0.5 must be below high 0.01"),
    ("optim.lr: {type: flaot, low: 0.01, high: 0.5}", "type 'flaot' is not one of"),
])  # fmt: skip
def test_a_space_that_cannot_be_searched_is_refused_before_any_trial(tmp_path, entry, needle):
    """A typo'd key searched nothing, silently; an unknown option crashed the study."""
    space = tmp_path / "space.yaml"
    space.write_text(entry + "\n")
    out = tune(tmp_path, "data=digits", "tune.study=s", f"tune.space={space}")
    assert out.returncode == 2 and needle in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and not (tmp_path / "runs" / "tune").exists()


def test_list_choices_become_overrides_hydra_reads(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("model.hidden: {type: categorical, choices: [[16], [32, 16]]}\n")
    out = tune(tmp_path, *DIGITS, "trainer.max_epochs=2", "tune.study=h", f"tune.space={space}",
               "tune.n_trials=2")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "UserWarning" not in out.stderr
    assert {t.params["model.hidden"] for t in trials(tmp_path, "h")} <= {"[16]", "[32,16]"}

"""logger=[tensorboard,mlflow,csv]: what a run logs, read back with MLflow's own client, pandas
and TensorBoard's reader; resume continuing the same MLflow run and metrics.csv; a sweep and a
study as parent runs; a tracking store that cannot be reached (exit 2 before any work) or dies
mid-run (the run finishes, its own files complete)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from runs import events

from train.errors import UserError

DIGITS = ["data=digits", "optim.lr=0.003", "trainer.progress=lines"]
MLFLOW = "logger=[tensorboard,mlflow]"


def _client(runs: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{runs.resolve() / 'mlflow.db'}")


def _mlflow_run(run: Path, record: str = "run.json"):
    """The MLflow run id run.json recorded for `run`."""
    return json.loads((run / record).read_text())["tracking"]["mlflow"]["run_id"]


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key),
                                              key=lambda m: m.step)]  # fmt: skip


def _artifacts(client, run_id: str, folder: str | None = None) -> set[str]:
    found = set()
    for a in client.list_artifacts(run_id, folder):
        found |= _artifacts(client, run_id, a.path) if a.is_dir else {a.path}
    return found


def test_mlflow_holds_what_the_run_logged(train_run, tmp_path):
    run = train_run(*DIGITS, "trainer.max_epochs=3", "trainer.log_every_n_steps=5", MLFLOW)
    client, metrics = _client(tmp_path / "runs"), json.loads((run / "metrics.json").read_text())
    mlrun = client.get_run(_mlflow_run(run))
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == f"digits_mlp/{run.name}"
    params = mlrun.data.params  # (the resolved config, flattened)
    assert params["optim.lr"] == "0.003" and params["trainer.max_epochs"] == "3"
    assert params["data._target_"] == "train.data.sets.digits" and params["seed"] == "42"
    tags = mlrun.data.tags
    assert MLFLOW in tags["train.overrides"].split() and tags["train.run_dir"] == str(run)
    record = json.loads((run / "run.json").read_text())
    assert tags["train.data_fingerprint"] == record["data_fingerprint"]
    board = events(run)
    for key in ("val/loss", "train/accuracy", "vitals/lr"):  # per epoch: TensorBoard's points
        logged = [(e.step, pytest.approx(e.value)) for e in board.Scalars(key)]
        assert _history(client, mlrun.info.run_id, key) == logged and len(logged) == 3
    steps = [s for s, _ in _history(client, mlrun.info.run_id, "vitals/loss_step")]
    assert steps == [e.step for e in board.Scalars("vitals/loss_step")] and steps[0] == 5
    for split in ("val", "test"):  # the best weights' scores: metrics.json's, one point each
        for name, value in metrics[split].items():
            assert _history(client, mlrun.info.run_id, f"best/{split}/{name}") == [
                (metrics["steps"], pytest.approx(value))]  # fmt: skip
    kept = _artifacts(client, mlrun.info.run_id)
    assert {"checkpoints/best.pt", "summary.txt", "metrics.json", "viz/confusion_matrix.png",
            "viz/samples_predicted_true.png"} <= kept  # fmt: skip
    best = Path(client.download_artifacts(mlrun.info.run_id, "checkpoints/best.pt", tmp_path))
    assert best.read_bytes() == (run / "checkpoints" / "best.pt").read_bytes()


def test_resume_appends_to_the_same_mlflow_run(train_run, tmp_path):
    run = train_run(*DIGITS, "trainer.max_epochs=2", MLFLOW)
    train_run(*DIGITS, "trainer.max_epochs=3", MLFLOW, f"resume={run}")
    train_run(*DIGITS, "trainer.max_epochs=4", MLFLOW, f"resume={run}")
    client, first = _client(tmp_path / "runs"), _mlflow_run(run)
    assert _mlflow_run(run, "run-1.json") == _mlflow_run(run, "run-2.json") == first  # (one)
    mlrun = client.get_run(first)
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.tags["mlflow.source.name"] == "train.api (pytest)"  # (in process)
    assert "trainer.max_epochs=3" in mlrun.data.tags["train.overrides.resume-1"]  # (each its
    assert "trainer.max_epochs=4" in mlrun.data.tags["train.overrides.resume-2"]  # own)
    assert mlrun.data.params["trainer.max_epochs"] == "2"  # (params stay as the run began)
    logged = [(e.step, pytest.approx(e.value)) for e in events(run).Scalars("val/loss")]
    assert _history(client, first, "val/loss") == logged and len(logged) == 4
    assert len(client.search_runs([mlrun.info.experiment_id])) == 1


@pytest.mark.parametrize("bad", ["logger.mlflow.retries=-1", "logger.mlflow.timeout_s=0"])
def test_retries_and_timeout_out_of_range_are_exit_2_before_any_work(train_run, tmp_path, bad):
    with pytest.raises(UserError, match=r"retries is 0 or more, timeout_s a positive number"):
        train_run(*DIGITS, MLFLOW, bad)
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]


def test_a_resume_never_sends_a_step_the_interrupted_run_sent(train_run, tmp_path):
    """An interrupted run may have sent points past its last checkpoint (TensorBoard's are
    purged on resume; MLflow keeps what it was sent): the resumed run sends none of those
    steps again, so each step has one point."""
    from mlflow.entities import Metric

    run = train_run(*DIGITS, "trainer.max_epochs=2", MLFLOW)
    client, mlrun = _client(tmp_path / "runs"), _mlflow_run(run)
    step = max(s for s, _ in _history(client, mlrun, "val/loss"))
    later = step + step // 2  # (epoch 3's end: sent before the checkpoint that never came)
    client.log_batch(mlrun, metrics=[Metric("val/loss", 9.0, 0, later + step // 2)])
    train_run(*DIGITS, "trainer.max_epochs=3", MLFLOW, f"resume={run}")
    steps = [s for s, _ in _history(client, mlrun, "val/loss")]
    assert len(steps) == len(set(steps)) == 3 and _history(client, mlrun, "val/loss")[-1][1] == 9


def test_metrics_csv_has_a_row_per_epoch_and_resume_goes_on_from_its_checkpoint(train_run):
    run = train_run(*DIGITS, "trainer.max_epochs=2", "logger=[tensorboard,csv]")
    train_run(*DIGITS, "trainer.max_epochs=4", "logger=[tensorboard,csv]", f"resume={run}")
    table = pd.read_csv(run / "metrics.csv")
    assert list(table.columns[:4]) == ["epoch", "step", "train/loss", "train/accuracy"]
    assert table["epoch"].tolist() == [1, 2, 3, 4]
    board = events(run)
    for key in ("val/loss", "train/accuracy", "vitals/epoch_seconds"):
        assert table[key].tolist() == pytest.approx([e.value for e in board.Scalars(key)])
        assert table["step"].tolist() == [e.step for e in board.Scalars(key)]


def test_no_logger_at_all_still_leaves_the_runs_own_files(train_run):
    run = train_run(*DIGITS, "logger=[]")
    assert not list(run.glob("events.out.tfevents.*")) and not (run / "metrics.csv").exists()
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] > 0.5
    assert torch.load(run / "checkpoints" / "best.pt", weights_only=True)["model"]


@pytest.mark.parametrize("uri, why", [
    ("http://127.0.0.1:9", r"no server answers there \(connection refused\)"),
    ("bogus://store", r"MLflow keeps runs in none of the kind 'bogus://' \(it knows http, https"),
])  # fmt: skip
def test_a_tracking_store_that_cannot_be_used_is_exit_2_before_any_work(train_run, tmp_path,
                                                                         uri, why):  # fmt: skip
    with pytest.raises(UserError, match=rf"logger.mlflow.tracking_uri={uri} cannot be used: "
                       rf".*({why}).*Nothing was trained") as e:  # fmt: skip
        train_run(*DIGITS, MLFLOW, f"logger.mlflow.tracking_uri={uri}", "logger.mlflow.retries=0")
    assert e.value.code == 2
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]


# --- processes: the command line, a sweep, a study, a real tracking server ------------------


def test_a_2_job_sweep_is_a_parent_run_with_two_children(cli, tmp_path):
    out = cli(*DIGITS, "optim=sgd,adam", "trainer.max_epochs=1", "logger=[mlflow]", flags=["-m"])
    assert out.returncode == 0, out.stderr[-2000:]
    client = _client(tmp_path / "runs")
    (sweep,) = (tmp_path / "runs" / "multirun").iterdir()
    parent_id = json.loads((sweep / "mlflow.json").read_text())["run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["train.sweep_dir"] == str(sweep)
    assert "optim=sgd,adam" in parent.data.tags["train.overrides"].split()
    # (the experiment every job names: the sweep varies neither data nor model)
    assert client.get_experiment(parent.info.experiment_id).name == "digits_mlp"
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent_id}'")  # fmt: skip
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert sorted(c.info.run_id for c in children) == sorted(_mlflow_run(j) for j in jobs)
    assert {c.data.params["optim._target_"] for c in children} == {
        "torch.optim.SGD",
        "torch.optim.Adam",
    }
    assert all(c.info.status == "FINISHED" for c in children) and len(jobs) == 2


@pytest.mark.slow
def test_a_study_is_a_parent_run_with_a_child_per_trial(tmp_path, data_dir):
    runs, space = tmp_path / "runs", tmp_path / "space.yaml"
    space.write_text("optim.lr: {type: categorical, choices: [0.01, 1.0e-7]}\n")  # (one hopeless)
    out = subprocess.run(
        [sys.executable, "-m", "train.tune", *DIGITS, f"paths.runs_dir={runs}",
         f"paths.data_dir={data_dir}", "trainer.max_epochs=3", "logger=[mlflow]",
         "tune.study=s", "tune.n_trials=5", "tune.startup_trials=1", "tune.warmup_epochs=0",
         f"tune.space={space}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    client = _client(runs)
    everywhere = [e.experiment_id for e in client.search_experiments()]
    (parent,) = client.search_runs(everywhere, "attributes.run_name = 'study s'")
    children = client.search_runs(everywhere, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    trials = [json.loads(p.read_text()) for p in (runs / "tune" / "s").glob("trial-*/tune.json")]
    assert len(children) == len(trials) == 5 and parent.info.status == "FINISHED"
    states = {int(c.data.tags["train.trial"]): c.data.tags["train.trial_state"] for c in children}
    assert states == {t["trial"]: t["state"] for t in trials}
    assert {"COMPLETE", "PRUNED"} <= set(states.values()), states  # (a pruned trial, tagged)
    assert all(c.data.tags["train.study"] == "s" for c in children)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server(tmp_path: Path, port: int) -> subprocess.Popen:
    """A real `mlflow server` on 127.0.0.1:<port>, its store in tmp_path; once it answers."""
    import urllib.request

    mlflow_cli = Path(sys.executable).parent / "mlflow"
    server = subprocess.Popen([str(mlflow_cli), "server", "--host", "127.0.0.1", "--port",
                               str(port), "--workers", "1", "--backend-store-uri",
                               f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination",
                               str(tmp_path / "server-artifacts")], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # fmt: skip
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except OSError:
            time.sleep(0.5)
    os.killpg(server.pid, signal.SIGKILL)
    raise AssertionError("mlflow server did not start")


@pytest.mark.slow
def test_a_tracking_server_that_dies_mid_run_loses_nothing_of_the_run(tmp_path, data_dir):
    from mlflow.tracking import MlflowClient

    port = _free_port()
    server = _server(tmp_path, port)
    runs, uri = tmp_path / "runs", f"http://127.0.0.1:{port}"
    train = subprocess.Popen(
        [sys.executable, "-m", "train", *DIGITS, f"paths.runs_dir={runs}", MLFLOW,
         f"paths.data_dir={data_dir}", "trainer.max_epochs=30", "trainer.patience=null",
         "trainer.checkpoint_every_s=0", f"logger.mlflow.tracking_uri={uri}",
         "logger.mlflow.retries=0", "logger.mlflow.timeout_s=3"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        client = MlflowClient(uri)
        for _ in range(600):  # until the server holds two epochs of the run
            found = client.search_runs([e.experiment_id for e in client.search_experiments()])
            if found and len(client.get_metric_history(found[0].info.run_id, "val/loss")) >= 2:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the run never reached the server")
        os.killpg(server.pid, signal.SIGKILL)
        out, _ = train.communicate(timeout=600)
    finally:
        train.kill()
        os.killpg(server.pid, signal.SIGKILL)
    assert train.returncode == 0, out[-3000:]
    assert out.count("mlflow stopped working") == 1, out[-3000:]
    (run,) = (runs / "digits_mlp").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 30 and len(events(run).Scalars("val/loss")) == 30
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["state"]["epoch"] == 30

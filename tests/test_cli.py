"""`python -m train` as a user runs it: help, a real run, a sweep, resume, and every error's
message and exit code (bad input leaves nothing behind in runs/)."""

import json

import pytest
from runs import events, run_dirs

QUICK = ["data=digits", "trainer.max_epochs=1"]


def test_help_lists_the_groups(cli):
    out = cli(flags=["--help"])
    assert out.returncode == 0
    for group in ("data:", "model:", "optim:", "sched:", "experiment:"):
        assert group in out.stdout
    assert "fashion_mnist" in out.stdout and "linear_regression" in out.stdout


def test_info_and_cfg_job(cli):
    assert "model" in cli(flags=["--info", "defaults"]).stdout
    out = cli("model=cnn", "optim=adam", "optim.lr=0.5", flags=["--cfg", "job"])
    assert out.returncode == 0 and "torch.optim.Adam" in out.stdout and "lr: 0.5" in out.stdout


def test_a_run_says_its_device_and_writes_its_dir(cli, tmp_path):
    out = cli(*QUICK)
    assert out.returncode == 0, out.stderr
    assert "device: cpu, auto: no CUDA device, falling back to CPU" in out.stdout
    assert "epoch 1/1 | train loss" in out.stdout  # a plain line per epoch without a terminal
    (run,) = run_dirs(tmp_path / "runs")
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "train.log").is_file()


def test_resume_through_the_cli_keeps_the_original_config(cli, tmp_path):
    assert cli(*QUICK).returncode == 0
    (run,) = run_dirs(tmp_path / "runs")
    before = (run / ".hydra" / "config.yaml").read_text()
    out = cli("data=digits", "trainer.max_epochs=2", f"resume={run}")
    assert out.returncode == 0, out.stderr
    assert "resuming from epoch 1" in out.stdout
    assert run_dirs(tmp_path / "runs") == [run]
    assert (run / ".hydra" / "config.yaml").read_text() == before
    assert "resume=" in (run / ".hydra" / "resume-1" / "overrides.yaml").read_text()
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2


def test_sweep_makes_one_run_dir_and_hparams_entry_each(cli, tmp_path):
    out = cli(*QUICK, "optim=sgd,adam", flags=["-m"])
    assert out.returncode == 0, out.stderr
    runs = run_dirs(tmp_path / "runs")
    assert len(runs) == 2 and runs[0].parent == runs[1].parent
    assert [r.name for r in runs] == ["0_optim=sgd", "1_optim=adam"]  # named after what varies
    for run in runs:
        infos = hparam_infos(run)
        assert infos[0] == ("optim", "DATA_TYPE_STRING")  # the swept key first
        assert ("model.batch_norm", "DATA_TYPE_BOOL") in infos  # not a number, 1.0000
        assert hparams_of(run)["model.batch_norm"] is False


def hparam_infos(run) -> list[tuple[str, str]]:
    """The HPARAMS columns in the order TensorBoard shows them, with their types."""
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    for content in events(run).PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("experiment"):
            return [(i.name, api_pb2.DataType.Name(i.type)) for i in data.experiment.hparam_infos]
    return []


def hparams_of(run) -> dict:
    """The run's HPARAMS entry, read back with TensorBoard's reader: name -> value."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    for content in events(run).PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            params = data.session_start_info.hparams
            return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                    for k, v in params.items()}  # fmt: skip
    return {}


def test_a_parallel_sweep_through_the_joblib_launcher(cli, tmp_path):
    out = cli(*QUICK, "optim.lr=0.1,0.01", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
              flags=["-m"])  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Joblib.Parallel(n_jobs=2" in out.stdout + out.stderr  # it did run in parallel
    runs = run_dirs(tmp_path / "runs")
    assert [r.name for r in runs] == ["0_optim.lr=0.1", "1_optim.lr=0.01"]
    assert [hparams_of(r)["optim.lr"] for r in runs] == [0.1, 0.01]


@pytest.mark.parametrize(
    "args, code, needles",
    [
        (["model=nope"], 2, ["'nope' is not an option of model", "cnn", "mlp", "softmax"]),
        (
            ["trainer.max_epoch=3"],
            2,
            ["unknown key 'trainer.max_epoch'; did you mean 'trainer.max_epochs'?"],
        ),  # fmt: skip
        (
            ["data=digits", "trainer.device=cuda"],
            2,
            ["trainer.device=cuda", "no CUDA device", "trainer.device=auto"],
        ),
        (["data=digits", "trainer.device=tpu"], 2, ["'tpu' is not a device", "cuda:N"]),
        (["data=digits", "trainer.amp=fp16", "trainer.device=cpu"], 2, ["needs a CUDA", "bf16"]),
        (["data=digits", "model=logistic"], 2, ["model=logistic", "10 classes", "model=softmax"]),
        (["data=digits", "optim.lr=-1"], 2, ["learning rate", "-1"]),
        (["data=digits", "data.val_fraction=1.2"], 2, ["val_fraction=1.2", "[0, 1)"]),
        (["data=digits", "resume=nowhere"], 2, ["resume=nowhere points at nothing"]),
        (
            ["data=csv"],
            2,
            [
                "needed and not given: data.path, e.g. data.path=my.csv",
                "data.target, e.g. data.target=label",
            ],
        ),
        (["data=image_folder", "model=cnn"], 2, ["data.path, e.g."]),
        (  # Hydra's own hint for a misspelt key is +, which would run with the typo ignored
            ["data=digits", "+trainer.max_epoch=3"],
            2,
            ["no such config key: trainer.max_epoch (did you mean trainer.max_epochs?)"],
        ),
        (
            ["experiment=linear_regression", "trainer.monitor=accuracy"],
            2,
            ["trainer.monitor=accuracy", "'mse'"],
        ),
    ],
)
def test_errors_say_what_and_exit_nonzero_leaving_nothing(cli, tmp_path, args, code, needles):
    out = cli(*args)
    assert out.returncode == code, out.stdout + out.stderr
    for needle in needles:
        assert needle in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not list((tmp_path / "runs").rglob("*")), "bad input left files or folders behind"


@pytest.mark.parametrize("download", ["false", "true"])  # (true: no network here, it fails)
def test_missing_torchvision_data_offline(cli, tmp_path, download):
    out = cli("data=mnist", f"data.download={download}", f"paths.data_dir={tmp_path / 'empty'}")
    assert out.returncode == 2
    assert str(tmp_path / "empty") in out.stderr and "data=digits" in out.stderr
    # a failed start leaves neither torchvision's empty MNIST/raw nor an empty runs/<name>
    assert not (tmp_path / "empty").exists() and not (tmp_path / "runs").exists()


def test_csv_errors(cli, tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("a,b\n1,2\n3,4\n")
    out = cli("data=csv", f"data.path={table}", "data.target=label")
    assert (
        out.returncode == 2
        and "'label' is not a column" in out.stderr
        and "['a', 'b']" in out.stderr
    )
    table.write_text("a,label\n1,x\nseven,y\n3,x\n")
    out = cli("data=csv", f"data.path={table}", "data.target=label")
    assert out.returncode == 2 and "'seven' is not a number" in out.stderr


def test_unwritable_runs_dir(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = cli(*QUICK, f"paths.runs_dir={blocker / 'runs'}")
    assert out.returncode == 2 and str(blocker) in out.stderr and "paths.runs_dir" in out.stderr


def test_evaluate_cli(cli, tmp_path):
    assert cli(*QUICK).returncode == 0
    (run,) = run_dirs(tmp_path / "runs")
    out = cli(f"run={run}", module="train.evaluate")
    assert out.returncode == 0, out.stderr
    assert "confusion matrix" in out.stdout and (run / "evaluation-test.json").is_file()
    out = cli(f"run={tmp_path}", module="train.evaluate")
    assert out.returncode == 2 and "has no best checkpoint" in out.stderr

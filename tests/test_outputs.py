"""What a run leaves behind: checkpoints that load into fresh models and reproduce the logged
metrics, TensorBoard events TensorBoard itself can read, resume, evaluation, no overwrites."""

import contextlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from compare import assert_same, outcome
from conftest import copy_of, trained_once
from hydra.utils import instantiate
from runs import events

from train.data.batches import Batches, Normalizer
from train.errors import UserError
from train.evaluate import evaluate_run
from train.fit.callbacks import process_seconds
from train.fit.loop import measure
from train.fit.task import Task
from train.run import resume
from train.run.claims import Claims

DIGITS = ["data=digits", "optim=adam", "optim.lr=0.003", "trainer.max_epochs=3"]


@pytest.fixture(scope="module")
def _digits_once(tmp_path_factory, data_dir):
    return trained_once(tmp_path_factory, data_dir, *DIGITS)


@pytest.fixture
def digits_run(_digits_once, tmp_path):
    """DIGITS trained once for the module; each test gets its own copy of the run."""
    return copy_of(_digits_once, tmp_path)


def test_checkpoint_loads_into_a_fresh_model_and_reproduces_the_logged_val_metric(digits_run):
    blob = torch.load(digits_run / "checkpoints" / "best.pt", weights_only=True)
    model = instantiate(blob["config"]["model"], in_shape=(1, 8, 8), num_outputs=10)
    model.load_state_dict(blob["model"])  # a plain state_dict, straight into a fresh model
    data = instantiate(blob["config"]["data"])
    cpu = torch.device("cpu")
    val = Batches(data.val, 64, Normalizer(data, cpu), cpu)
    got = measure(model, val, Task("classification", 10), contextlib.nullcontext).compute()
    logged = {e.step: e.value for e in events(digits_run).Scalars("val/accuracy")}
    assert got["accuracy"] == pytest.approx(logged[blob["state"]["best_step"]], abs=1e-6)
    assert json.loads((digits_run / "metrics.json").read_text())["val"][
        "accuracy"
    ] == pytest.approx(got["accuracy"], abs=1e-9)


def test_tensorboard_holds_the_expected_tags(digits_run):
    acc = events(digits_run)
    scalars = set(acc.Tags()["scalars"])
    for split in ("train", "val"):
        assert {f"{split}/{m}" for m in ("loss", "accuracy", "precision", "recall")} <= scalars
    assert {"vitals/loss_step", "vitals/lr"} <= scalars
    # The first screen: the curves, then the run's vitals (TensorBoard sorts groups by name).
    assert sorted({t.split("/")[0] for t in scalars}) == ["train", "val", "vitals"]
    assert {"train/loss", "val/loss"} <= scalars
    images = {"viz/confusion matrix", "viz/samples (predicted,true)",
              "viz/worst predictions (predicted,true)"}  # fmt: skip
    assert images <= set(acc.Tags()["images"])
    assert acc.PluginTagToContent("hparams"), "no HPARAMS entry"
    assert [e.step for e in acc.Scalars("val/loss")] == [40, 80, 120]  # one per epoch
    # The values are the run's: best.pt is the epoch of least val/loss, and metrics.json scores
    # exactly those weights on val again; the curves fall from an untrained start.
    metrics = json.loads((digits_run / "metrics.json").read_text())
    val_loss = {e.step: e.value for e in acc.Scalars("val/loss")}
    assert min(val_loss, key=val_loss.get) == metrics["best_step"]
    assert val_loss[metrics["best_step"]] == pytest.approx(metrics["val"]["loss"], rel=1e-5)
    accuracy = {e.step: e.value for e in acc.Scalars("val/accuracy")}
    assert accuracy[metrics["best_step"]] == pytest.approx(metrics["val"]["accuracy"])
    train_loss = [e.value for e in acc.Scalars("train/loss")]
    assert train_loss[-1] < train_loss[0] and all(0 <= a <= 1 for a in accuracy.values())
    matrix = acc.Images("viz/confusion matrix")[-1]
    assert matrix.width > 100 and matrix.height > 100 and len(matrix.encoded_image_string) > 1000


def test_runs_record_where_the_time_went(digits_run):
    """metrics.json "timing" and TensorBoard's timing tags: start-up to the first step, then per
    epoch the samples timed, the seconds (validation in) and the validation share."""
    t = json.loads((digits_run / "metrics.json").read_text())["timing"]
    assert 0 < t["first_step_s"] < process_seconds() and t["peak_rss_mb"] > 100  # (in-process)
    assert [e["epoch"] for e in t["epochs"]] == [1, 2, 3]
    # digits trains on 1,258 images in batches of 32; the first batch is start-up, untimed
    assert [e["samples"] for e in t["epochs"]] == [1258 - 32, 1258, 1258]
    assert all(0 < e["val_seconds"] < e["seconds"] for e in t["epochs"])
    scalars = set(events(digits_run).Tags()["scalars"])
    assert {"vitals/samples_per_s", "vitals/epoch_seconds", "vitals/validation_share"} <= scalars


def test_bf16_channels_last_and_compile_train_and_save_plain_weights(train_run):
    """trainer.amp=bf16 runs on the CPU (channels_last comes on with it for CNNs), and a
    torch.compile'd run saves a plain state_dict that loads into a fresh model."""
    cnn = ["data=digits", "model=cnn", "model.channels=[8]", "trainer.max_epochs=2", "optim=adam"]
    run = train_run(*cnn, "trainer.amp=bf16")
    acc = json.loads((run / "metrics.json").read_text())["val"]["accuracy"]
    assert acc > 0.7, acc
    compile_run = ("data=digits", "model.hidden=[16]", "trainer.compile=true")
    if not shutil.which("g++"):  # e.g. inside our images: a clear error before any work
        with pytest.raises(UserError, match=r"needs a C\+\+ compiler \(g\+\+\)"):
            train_run(*compile_run)
        return
    run = train_run(*compile_run)
    blob = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod") for k in blob["model"])
    model = instantiate(blob["config"]["model"], in_shape=(1, 8, 8), num_outputs=10)
    model.load_state_dict(blob["model"])


def test_regression_logs_mse_mae_r2(train_run):
    run = train_run("experiment=linear_regression", "trainer.max_epochs=5")
    assert {"train/mse", "train/mae", "train/r2"} <= set(events(run).Tags()["scalars"])


def test_resume_continues_from_the_saved_epoch_in_the_same_run(train_run):
    run = train_run(*DIGITS[:-1], "trainer.max_epochs=2")
    again = train_run(*DIGITS[:-1], "trainer.max_epochs=4", f"resume={run}")
    assert again == run
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["epochs"], metrics["steps"]) == (4, 160)
    steps = [e.step for e in events(run).Scalars("val/loss")]
    assert steps == [40, 80, 120, 160]  # continued, nothing duplicated


def test_a_resume_with_nothing_to_train_says_so_and_keeps_the_runs_timing(train_run, caplog):
    run = train_run(*DIGITS[:-1], "trainer.max_epochs=2")
    before = json.loads((run / "metrics.json").read_text())
    with caplog.at_level("INFO", logger="train"):
        train_run(*DIGITS[:-1], "trainer.max_epochs=2", f"resume={run}")
    assert "nothing to train: the run has trained 2 epochs, trainer.max_epochs=2" in caplog.text
    after = json.loads((run / "metrics.json").read_text())
    assert after == before and after["timing"]["loop_s"] is not None


def test_resume_of_another_model_names_the_mismatch(train_run):
    run = train_run(*DIGITS[:-1], "trainer.max_epochs=1")
    with pytest.raises(UserError) as e:
        train_run(*DIGITS[:-1], "model.hidden=[32]", f"resume={run}")
    assert "shape mismatches" in e.value.message and "unexpected keys" in e.value.message


def test_resume_pointing_at_nothing(tmp_path):
    with pytest.raises(UserError, match="points at nothing"):
        resume.resumed_run_dir(str(tmp_path / "gone"))


def test_evaluate_matches_the_run_and_never_overwrites(digits_run):
    out = evaluate_run(digits_run, "best", "test", "cpu")
    saved = json.loads((digits_run / "metrics.json").read_text())["test"]
    assert out["metrics"] == pytest.approx(saved)
    assert len(out["confusion_matrix"]) == 10
    evaluate_run(digits_run, "best", "test", "cpu")
    assert (digits_run / "evaluation-test.json").is_file()
    assert (digits_run / "evaluation-test-1.json").is_file()


def test_a_new_run_never_reuses_an_existing_dir(tmp_path):
    """Two invocations in the same second (two processes: two Claims) get two run dirs."""
    runs = str(tmp_path / "runs")
    first = Path(Claims().run_dir(runs, "n", None))
    (first / "keep.txt").write_text("mine")
    second = Path(Claims().run_dir(runs, "n", None))
    assert second != first and (first / "keep.txt").read_text() == "mine"
    assert first.parent == second.parent == tmp_path / "runs" / "n"


def test_seed_null_draws_and_records_a_seed(train_run):
    run = train_run("data=digits", "seed=null")
    seed = json.loads((run / "metrics.json").read_text())["seed"]
    blob = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert isinstance(seed, int) and blob["config"]["seed"] == seed


def test_same_seed_same_weights(train_run):
    """Everything a rerun must repeat: weights, optimizer state, metrics, every logged scalar."""
    a, b = outcome(train_run(*DIGITS[:-1])), outcome(train_run(*DIGITS[:-1]))
    assert len(a[0]) >= 4 and a[1]["state"], "nothing to compare"
    assert_same(a, b)


def test_early_stopping_stops_when_the_monitor_stalls(train_run):
    # lr 0: the validation loss never improves after the first epoch.
    run = train_run("data=digits", "optim.lr=0", "trainer.max_epochs=10", "trainer.patience=2")
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 3


@pytest.mark.parametrize("sched", ["step", "cosine"])
def test_schedulers_and_clipping(train_run, sched):
    run = train_run(
        "data=digits",
        f"sched={sched}",
        "sched.step_size=1" if sched == "step" else "sched.eta_min=0",
        "trainer.max_epochs=3",
        "trainer.grad_clip=0.5",
    )
    lrs = [e.value for e in events(run).Scalars("vitals/lr")]
    assert lrs[0] > lrs[-1], "the learning rate did not follow the schedule"
    blob = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert blob["scheduler"]["last_epoch"] == 3


def test_checkpoint_carries_what_resume_needs(digits_run):
    blob = torch.load(digits_run / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "state", "rng", "config", "data"} <= set(
        blob
    )
    assert blob["state"]["epoch"] == 3 and blob["state"]["step"] == 120
    assert {"python", "numpy", "torch", "cuda"} == set(blob["rng"])
    assert blob["config"]["model"]["hidden"] == [128, 64] and blob["data"]["class_names"][0] == "0"


def test_a_run_ended_by_max_epochs_while_improving_says_it_is_under_trained(train_run, caplog):
    with caplog.at_level("WARNING", logger="train"):
        run = train_run("data=digits", "optim.lr=1e-4", "trainer.max_epochs=4")
    assert "under-trained: loss was still improving when trainer.max_epochs=4 ended" in caplog.text
    assert f"python -m train resume={run} trainer.max_epochs=8 continues this run" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="train"):  # stopped early: trained enough
        train_run("data=digits", "optim.lr=0", "trainer.max_epochs=10", "trainer.patience=2")
    assert "under-trained" not in caplog.text


@pytest.mark.parametrize(
    "history, mode, expect",
    [
        ([1.0, 0.8, 0.6, 0.5], "min", True),  # still falling fast
        ([1.0, 0.5, 0.45, 0.449, 0.4489], "min", False),  # a plateau: < 2% over the window
        ([1.0, 0.4, 0.5, 0.45], "min", False),  # the best is three epochs back
        ([0.5, 0.7, 0.8, 0.9], "max", True),  # accuracy still rising
    ],
)
def test_under_trained_means_a_recent_best_and_a_clear_gain(history, mode, expect):
    from train.fit.loop import Settings, State
    from train.fit.scoring import undertrained

    s = Settings(max_epochs=len(history), max_steps=None, log_every_n_steps=1, monitor="loss",
                 monitor_mode=mode, patience=None, grad_clip=None, progress="lines")  # fmt: skip
    state = State(epoch=len(history), history=history)
    assert (undertrained(history, s, state) is not None) == expect


def test_the_train_split_is_scored_only_when_asked_or_monitored(train_run):
    plain = json.loads((train_run("data=digits") / "metrics.json").read_text())
    assert set(plain) >= {"val", "test"} and "train" not in plain
    asked = train_run("data=digits", "trainer.score_train=true")
    assert "train" in json.loads((asked / "metrics.json").read_text())
    no_val = train_run("data=digits", "data.val_fraction=0")  # train is what `monitor` reads
    assert "train" in json.loads((no_val / "metrics.json").read_text())


@pytest.mark.parametrize("goal", ["> 0.9", "== 1", ">= lots", "0.9", ">=0.9 and more"])
def test_an_expect_line_other_than_ge_or_le_is_a_config_error_at_start(train_run, tmp_path, goal):
    """Any operator but >= was read as <= before."""

    def expect(cfg):
        cfg.expect = {"test/accuracy": goal}

    with pytest.raises(UserError, match=r"expect: test/accuracy: .*only >= and <="):
        train_run("data=digits", edit=expect)
    assert not list((tmp_path / "runs").rglob("*.*"))


def test_checkpoints_follow_the_clock_and_best_is_still_the_best(train_run, monkeypatch):
    """trainer.checkpoint_every_s: last.pt and best.pt only when that much time has passed (and
    always at the end); the best epoch's weights wait in memory, so best.pt holds them."""
    from train.run import checkpoint as ckpt

    writes = []
    real = ckpt.Saver.write

    def write(self, name, payload):
        writes.append(name)
        real(self, name, payload)

    monkeypatch.setattr(ckpt.Saver, "write", write)
    # The lr jumps 20-fold after epoch 4, so the best epoch is an earlier one on every machine
    # (lr=0.03 alone made the last epoch the best on an AVX-512 CPU, and the test meaningless).
    args = ["data=digits", "optim.lr=0.01", "sched=step", "sched.step_size=4", "sched.gamma=20",
            "trainer.max_epochs=8", "trainer.patience=null"]  # fmt: skip
    lazy = train_run(*args, "trainer.checkpoint_every_s=3600")
    assert writes == ["best", "last"]  # once, at the end
    writes.clear()
    eager = train_run(*args, "trainer.checkpoint_every_s=0")
    assert writes.count("last") == 8 and writes[-1] == "last"
    a, b = (ckpt.load(r / "checkpoints" / "best.pt") for r in (lazy, eager))
    assert a["state"]["step"] == b["state"]["step"] <= 4 * 40  # the best was not the last epoch
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert json.loads((lazy / "metrics.json").read_text())["best_step"] == a["state"]["step"]


def test_fast_epochs_print_a_line_every_few_seconds_and_tensorboard_gets_them_all(
    train_run, caplog
):
    with caplog.at_level("INFO", logger="train"):
        run = train_run("experiment=linear_regression", small=False)
    lines = [r.message for r in caplog.records if r.message.startswith("epoch ")]
    assert lines[0].startswith("epoch 1/300") and lines[-1].startswith("epoch 300/300")
    assert len(lines) <= 5, lines  # 300 epochs in well under 5 seconds
    assert len(events(run).Scalars("train/loss")) == 300


# --- only train.run opens a run's files (watched, as a real run does it) --------------------

_WATCHING: list[list] = []  # (an audit hook stays for the session: it records while watched)


def _audit(event: str, args) -> None:
    if event == "open" and _WATCHING and isinstance(args[0], str | bytes | Path):
        _WATCHING[-1].append((Path(os.fsdecode(args[0])), _opener()))


def _opener() -> str | None:
    """The innermost module of train's own code on this thread's stack (None: none)."""
    import sys

    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name == "train" or name.startswith("train."):
            return name
        frame = frame.f_back
    return None


@contextlib.contextmanager
def _opens():
    """Every file opened meanwhile, with the module of train's that opened it."""
    import sys

    if not getattr(_audit, "installed", False):
        sys.addaudithook(_audit)
        _audit.installed = True
    _WATCHING.append([])
    try:
        yield _WATCHING[-1]
    finally:
        _WATCHING.pop()


def _not_through_rundir(opened: list, run: Path) -> list[str]:
    """Opens of the run dir's files by anything but train.run: TensorBoard's own writer (its
    event files, on its thread) aside."""
    run = run.resolve()
    return sorted({f"{path.relative_to(run)} by {who}" for path, who in opened
                   if path.resolve().is_relative_to(run)
                   and not (who or "").startswith("train.run.")
                   and not path.name.startswith("events.out.tfevents.")})  # fmt: skip


def test_only_train_run_opens_a_runs_files(train_run, tmp_path):
    """Training, resuming, evaluating, exporting and predicting a run: every file of the run
    dir they open is opened by train.run (RunDir and the typed files' readers), never by a
    command or a building block on its own (tests/unit/test_architecture.py checks the code)."""
    from train.export import export_run
    from train.predict import predict_run

    pics = tmp_path / "pics"
    pics.mkdir()
    from PIL import Image

    Image.new("L", (8, 8), 200).save(pics / "a.png")
    with _opens() as opened:
        loggers = "logger=[tensorboard,mlflow,csv]"  # (each logger's reads and writes too)
        run = train_run("data=digits", "trainer.max_epochs=1", loggers)
        train_run("data=digits", "trainer.max_epochs=2", loggers, f"resume={run}")
        evaluate_run(run, "best", "test", "cpu")
        export_run(run, "onnx")
        predict_run(run, str(pics))
    seen = {
        re.sub(r"^\.(.+)\.tmp-\d+$", r"\1", p.name)
        for p, _ in opened  # (atomic writes'
        if p.resolve().is_relative_to(run.resolve())
    }  # temporary files, by their target)
    assert seen >= {"last.pt", "best.pt", "metrics.json", "run.json", "summary.txt", ".lock",
                    "metrics.csv"}  # fmt: skip
    assert _not_through_rundir(opened, run) == []


def test_the_watch_sees_an_open_that_is_not_through_rundir(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    planted = {"__name__": "train.fit.planted"}  # (code of a room, opening a run's file itself)
    with _opens() as opened:
        exec("def peek(run):\n    return (run / 'metrics.json').read_text()\n", planted)
        planted["peek"](tmp_path)
    assert _not_through_rundir(opened, tmp_path) == ["metrics.json by train.fit.planted"]

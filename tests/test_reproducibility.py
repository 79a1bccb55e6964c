"""Reproducible means proven: same config and seed give bit-identical weights, metrics and
logged scalars; a stopped run resumed (after an epoch, or mid-epoch) ends exactly where an
uninterrupted one does; every run records how it was made; reproduce checks a run."""

import hashlib
import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import torch
from compare import assert_same, outcome

from train import reproduce
from train.run import checkpoint

ROOT = Path(__file__).resolve().parent.parent
# One config per model family, shuffled (several batches an epoch) with random layers on.
FAMILIES = {
    "linear": ["data=quiz_scores", "model=linear", "optim.lr=1e-5", "data.batch_size=2"],
    "logistic": ["data=logistic_points", "model=logistic", "optim.lr=0.5", "data.batch_size=2"],
    "softmax": ["data=digits", "model=softmax", "optim=momentum", "data.batch_size=128"],
    "mlp": ["data=digits", "model=mlp", "model.dropout=0.2", "model.batch_norm=true",
            "optim=adam", "data.batch_size=128"],
    "cnn": ["data=synthetic", "data.num_samples=120", "data.shape=[1,12,12]", "model=cnn",
            "model.channels=[4,8]", "model.batch_norm=true", "optim=adam", "data.batch_size=16"],
}  # fmt: skip
LOGGING = ["trainer.log_every_n_steps=1"]


@pytest.mark.parametrize("val", ["0.0", "0.2"])
@pytest.mark.parametrize("family", FAMILIES)
def test_same_config_and_seed_is_bitwise_identical(train_run, family, val):
    args = [*FAMILIES[family], f"data.val_fraction={val}", "trainer.max_epochs=2", *LOGGING]
    assert_same(outcome(train_run(*args)), outcome(train_run(*args)))


@pytest.mark.parametrize("family", FAMILIES)
def test_resume_after_an_epoch_is_exact(train_run, family):
    args = [*FAMILIES[family], "data.val_fraction=0.2", *LOGGING]
    whole = outcome(train_run(*args, "trainer.max_epochs=3"))
    run = train_run(*args, "trainer.max_epochs=1")
    train_run(*args, "trainer.max_epochs=3", f"resume={run}")
    assert_same(whole, outcome(run))


@pytest.mark.parametrize("family", FAMILIES)
def test_resume_in_the_middle_of_an_epoch_is_exact(train_run, family):
    args = [*FAMILIES[family], "data.val_fraction=0.2", "trainer.max_epochs=2", *LOGGING]
    whole = outcome(train_run(*args))
    run = train_run(*args, "trainer.max_steps=1")  # every family has 2+ batches an epoch
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["state"]["meter"]
    train_run(*args, f"resume={run / 'checkpoints' / 'last.pt'}")
    assert_same(whole, outcome(run))


def test_early_stopping_counts_on_across_a_resume(train_run):
    """lr 0: only epoch 1 is ever the best, so patience 3 ends a run after epoch 4. Stopped
    after epoch 2 and resumed, the count its checkpoint carries ends it there too (a count
    started afresh would run to epoch 5)."""
    args = ["data=digits", "optim.lr=0", "trainer.patience=3", *LOGGING]
    whole = train_run(*args, "trainer.max_epochs=10")
    run = train_run(*args, "trainer.max_epochs=2")
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["callbacks"]["early_stopping"] == {"bad_epochs": 1}
    train_run(*args, "trainer.max_epochs=10", f"resume={run}")
    assert json.loads((whole / "metrics.json").read_text())["epochs"] == 4
    assert_same(outcome(whole), outcome(run))


def _as_format_1(path: Path) -> None:
    """Rewrite a checkpoint as format 1 wrote it: the callbacks' state inside the loop's, no
    "callbacks" entry, the model's callable named as before train/ was regrouped."""
    from train.run.formats import MOVED_TARGETS

    blob = checkpoint.load(path)
    old = {new: was for was, new in MOVED_TARGETS.items()}
    for group in ("model", "data"):
        node = blob["config"][group]
        node["_target_"] = old.get(node["_target_"], node["_target_"])
    assert blob["config"]["model"]["_target_"] == "train.models.MLP"
    early, guard = blob["callbacks"]["early_stopping"], blob["callbacks"]["nonfinite"]
    blob["state"].update(bad_epochs=early["bad_epochs"], stopped_early=False,
                         skipped=guard["skipped"])  # fmt: skip
    del blob["callbacks"]
    checkpoint.save(path, {**blob, "format": 1})


def test_a_checkpoint_of_the_format_before_resumes_exactly(train_run):
    args = [*FAMILIES["mlp"], "data.val_fraction=0.2", "trainer.patience=2", *LOGGING]
    whole = outcome(train_run(*args, "trainer.max_epochs=3"))
    run = train_run(*args, "trainer.max_epochs=3", "trainer.max_steps=12")  # (9 an epoch)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["state"]
    assert state["epoch"] == 1 and state["batch_in_epoch"] == 3  # inside epoch 2
    for name in ("last", "best"):
        _as_format_1(run / "checkpoints" / f"{name}.pt")
    train_run(*args, "trainer.max_epochs=3", f"resume={run / 'checkpoints' / 'last.pt'}")
    assert_same(whole, outcome(run))
    resumed = checkpoint.Checkpoint.read(run / "checkpoints" / "last.pt")
    assert resumed.format == checkpoint.Checkpoint.FORMAT
    assert resumed.config["model"]["_target_"] == "train.models.course.MLP"


def test_the_record_holds_real_values(train_run):
    run = train_run("data=digits", "seed=null")
    rec = json.loads((run / "run.json").read_text())
    assert rec["config"]["model"]["_target_"] == "train.models.course.MLP"
    assert rec["seed"] == rec["config"]["seed"] and isinstance(rec["seed"], int)
    assert "data=digits" in rec["overrides"] and rec["command"]
    assert rec["versions"]["torch"] == str(torch.__version__)
    assert rec["versions"]["python"].count(".") == 2 and rec["versions"]["torchvision"]
    assert rec["device"]["type"] == "cpu" and rec["device"]["name"]
    assert rec["packages"]["torch"].startswith(torch.__version__.split("+")[0])
    assert "hydra-core" in rec["packages"] and rec["deterministic"]["requested"] is False
    git = shutil.which("git")
    head = git and subprocess.run([git, "-C", str(ROOT), "rev-parse", "HEAD"],
                                  capture_output=True, text=True).stdout.strip()  # fmt: skip
    if head:  # a checkout (CI, development); the images record their commit under `image`
        assert rec["git"]["commit"] == head and isinstance(rec["git"]["dirty"], bool)
    if "TRAIN_IMAGE" in os.environ:  # the suite also runs inside the CPU image
        assert rec["image"]["name"] == os.environ["TRAIN_IMAGE"]
    else:
        assert rec["image"] is None
    # What made the result: the lock, the machine, how torch was set for determinism.
    lock = hashlib.sha256((ROOT / "uv.lock").read_bytes()).hexdigest()
    assert rec["lock"] == {"sha256": lock}
    assert rec["host"]["cpu"] == _cpu() and rec["host"]["gpus"] == []
    assert rec["deterministic"]["algorithms"] is False
    assert rec["deterministic"]["cudnn_benchmark"] is torch.backends.cudnn.benchmark
    assert rec["deterministic"]["mkl_cbwr"] == os.environ["MKL_CBWR"] == "COMPATIBLE"  # conftest


def test_a_resume_writes_a_record_of_its_own(train_run):
    run = train_run("data=digits")
    train_run("data=digits", "trainer.max_epochs=2", f"resume={run}")
    first = json.loads((run / "run.json").read_text())
    second = json.loads((run / "run-1.json").read_text())
    assert first["config"]["trainer"]["max_epochs"] == 1
    assert second["config"]["trainer"]["max_epochs"] == 2


def test_reproduce_says_match_then_mismatch_for_an_altered_checkpoint(cli, tmp_path):
    assert cli("data=digits", "trainer.max_epochs=1").returncode == 0
    (run,) = {p.parent for p in (tmp_path / "runs").rglob("metrics.json")}
    out = cli(str(run), module="train.reproduce")
    assert out.returncode == 0 and "match" in out.stdout, out.stdout + out.stderr
    path = run / "checkpoints" / "last.pt"
    blob = torch.load(path, weights_only=True)  # with its checksum
    blob["model"]["1.weight"] = blob["model"]["1.weight"] + 1e-6
    torch.save(blob, path)  # edited behind the checksum's back: named corrupt
    out = cli(str(run), module="train.reproduce")
    assert out.returncode == 2 and "is corrupt" in out.stderr
    checkpoint.save(
        path, {k: v for k, v in blob.items() if k != "sha256"}
    )  # a consistent checkpoint with other weights: a mismatch
    out = cli(str(run), module="train.reproduce")
    assert out.returncode == 1 and "MISMATCH" in out.stdout and "1.weight" in out.stdout


def test_reproduce_names_a_changed_environment_in_one_line_then_compares(cli, tmp_path):
    """A torch upgrade (faked in the original's record) is said before the numbers: here they
    still match, and the line says what changed."""
    assert cli("data=digits", "trainer.max_epochs=1").returncode == 0
    (run,) = {p.parent for p in (tmp_path / "runs").rglob("metrics.json")}
    rec = json.loads((run / "run.json").read_text())
    rec["versions"]["torch"], rec["host"]["cpu"] = "2.11.0", "Pentium III"
    rec["deterministic"]["mkl_cbwr"] = None  # (MKL's default then: each CPU its own path)
    (run / "run.json").write_text(json.dumps(rec))
    out = cli(str(run), module="train.reproduce")
    assert out.returncode == 0, out.stdout + out.stderr
    said = [ln for ln in out.stdout.splitlines() if "environment differs" in ln]
    assert said == [f"the environment differs from the original run's: torch 2.11.0 -> "
                    f"{torch.__version__}; CPU Pentium III -> {_cpu()}; MKL_CBWR None -> "
                    "COMPATIBLE"], out.stdout  # fmt: skip
    lines = out.stdout.splitlines()
    assert lines.index(said[0]) < lines.index("match: final weights and metrics are identical")


def _cpu() -> str:
    return next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name"))  # fmt: skip


def test_reproduce_diff_names_weights_and_metrics(train_run):
    a, b = train_run("data=digits", "seed=1"), train_run("data=digits", "seed=2")
    diffs = reproduce.differences(a, b)
    assert any(d.startswith("weight ") for d in diffs)
    assert any(d.startswith("metric seed") for d in diffs)
    assert reproduce.differences(a, a) == []


def lock_mismatches(pyproject: dict, lock: dict) -> list[str]:
    """Where uv.lock's record of this project's requirements differs from pyproject.toml."""
    (me,) = [p for p in lock["package"] if p["name"] == pyproject["project"]["name"]]
    meta = me.get("metadata", {})

    def norm(reqs):
        return sorted(r.replace(" ", "").lower() for r in reqs)

    locked = norm(f"{r['name']}{r.get('specifier', '')}" for r in meta.get("requires-dist", []))
    wanted = norm(r.split(";")[0] for r in pyproject["project"]["dependencies"])
    out = [] if locked == wanted else [f"dependencies: pyproject {wanted} vs lock {locked}"]
    for group, reqs in pyproject.get("dependency-groups", {}).items():
        plain = norm(r for r in reqs if isinstance(r, str))
        have = norm(f"{r['name']}{r.get('specifier', '')}"
                    for r in meta.get("requires-dev", {}).get(group, []))  # fmt: skip
        if not set(plain) <= set(have):
            out.append(f"group {group}: pyproject {plain} vs lock {have}")
    return out


@pytest.mark.slow
def test_make_sbom_lists_this_environments_packages_as_cyclonedx(tmp_path):
    if not shutil.which("make") or not (ROOT / ".venv").is_dir():
        pytest.skip("make sbom needs make and the checkout's .venv (uv sync)")
    out = subprocess.run(["make", "-s", "sbom", f"SBOM={tmp_path / 'sbom.json'}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    sbom = json.loads((tmp_path / "sbom.json").read_text())
    listed = {c["name"].lower(): c["version"] for c in sbom["components"]}
    assert sbom["bomFormat"] == "CycloneDX" and listed["torch"] == torch.__version__.split("+")[0]
    assert sbom["metadata"]["component"]["name"] == "train"


def test_pyproject_and_lock_agree():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    assert lock_mismatches(pyproject, lock) == [], "run `make lock` and commit uv.lock"
    pyproject["project"]["dependencies"].append("rich>=13")  # the check must catch a drift
    assert lock_mismatches(pyproject, lock)


def test_the_lock_pins_every_package_exactly():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    assert all(p.get("version") for p in lock["package"] if p["name"] != "train")
    assert {p["name"] for p in lock["package"]} >= {
        "torch",
        "torchvision",
        "hydra-core",
        "tensorboard",
        "numpy",
        "pytest",
    }


def test_deterministic_mode_sets_cublas_before_cuda_and_is_recorded(train_run, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        run = train_run("data=digits", "trainer.deterministic=true")
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert json.loads((run / "run.json").read_text())["deterministic"]["requested"] is True
    finally:
        torch.use_deterministic_algorithms(False)

"""Resume as the README writes it: `python -m train resume=<run> trainer.max_epochs=N` rebuilds
the run's own config from its record, continues it bitwise, and refuses (touching nothing in
the run dir) anything that would change what the run is."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from compare import assert_same, outcome
from runs import the_run

from train.config import cmdline, rebuild

CNN = ["data=digits", "model=cnn", "model.channels=[8]", "optim.lr=0.003",
       "trainer.log_every_n_steps=5", "trainer.progress=lines"]  # fmt: skip


def tree(run: Path) -> dict:
    """Every file under the run dir and its bytes' hash: byte-for-byte comparisons."""
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory) -> Path:
    """A CNN trained for one epoch through the CLI, once for the module."""
    root = tmp_path_factory.mktemp("trained")
    out = subprocess.run([sys.executable, "-m", "train", *CNN, "trainer.max_epochs=1",
                          f"paths.runs_dir={root / 'runs'}", f"paths.data_dir={root / 'data'}"],
                         cwd=root, capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return the_run(root / "runs")


@pytest.fixture
def run(one_epoch, tmp_path) -> Path:
    """This test's own copy of the one-epoch run."""
    return Path(shutil.copytree(one_epoch, tmp_path / "runs" / "digits_cnn" / one_epoch.name))


def test_the_readme_resume_form_continues_a_non_default_run_bitwise(cli, tmp_path, train_run):
    """data=digits model=cnn, resumed with nothing but resume= and the new epoch count, ends
    exactly where a run asked for 4 epochs at first ends: before, it composed the defaults
    (MNIST, an MLP) and tried to download MNIST."""
    first = cli(*CNN, "trainer.max_epochs=2", f"paths.runs_dir={tmp_path / 'resumed'}")
    assert first.returncode == 0, first.stderr
    run = the_run(tmp_path / "resumed")
    out = cli(f"resume={run}", "trainer.max_epochs=4", f"paths.runs_dir={tmp_path / 'resumed'}")
    assert out.returncode == 0, out.stderr
    assert "resuming from epoch 2" in out.stdout
    whole = train_run(*CNN, "trainer.max_epochs=4", runs_dir=tmp_path / "whole")
    assert_same(outcome(whole), outcome(run))
    second = json.loads((run / "run-1.json").read_text())
    assert "model=cnn" in second["overrides"] and "trainer.max_epochs=4" in second["overrides"]


@pytest.mark.parametrize(
    "change, named",
    [
        (["model=mlp"], "model: 'cnn' -> 'mlp'"),
        (["optim.lr=0.5"], "optim.lr: 0.003 -> 0.5"),
        (["data.batch_size=7", "seed=3"], "data.batch_size: 32 -> 7; seed: 42 -> 3"),
        (["sched=cosine"], "sched: 'none' -> 'cosine'"),
        (["+trainer.max_epoch=5"], "trainer.max_epoch (did you mean trainer.max_epochs?)"),
    ],
)
def test_a_refused_resume_touches_nothing_and_names_each_change(cli, run, change, named):
    before = tree(run)
    out = cli(f"resume={run}", "trainer.max_epochs=3", *change)
    assert out.returncode == 2, out.stdout + out.stderr
    assert named in out.stderr and "Traceback" not in out.stderr
    assert "Nothing in" in out.stderr and out.stdout == ""
    assert tree(run) == before, "the refused resume changed the run dir"


def test_after_a_refusal_the_run_still_reproduces(cli, run):
    assert cli(f"resume={run}", "model=mlp").returncode == 2
    assert cli(f"resume={run}", "trainer.max_epochs=2").returncode == 0
    out = cli(str(run), module="train.reproduce")
    assert out.returncode == 0 and "2 invocation(s)" in out.stdout, out.stdout + out.stderr
    assert "match" in out.stdout


def test_a_cosine_schedule_cannot_silently_change_length(cli, tmp_path):
    """sched.T_max follows trainer.max_epochs: a longer resume would bend the schedule."""
    assert cli(*CNN, "sched=cosine", "trainer.max_epochs=1").returncode == 0
    run = the_run(tmp_path / "runs")
    out = cli(f"resume={run}", "trainer.max_epochs=3")
    assert out.returncode == 2 and "sched.T_max: 1 -> 3" in out.stderr
    out = cli(f"resume={run}", "trainer.max_epochs=3", "sched.T_max=1")
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(
    "planted",
    [
        "hydra.job.chdir=true",
        "data._target_=os.system",
        "+trainer.x=1",
        "paths.runs_dir=${oc.env:HOME}",
    ],
)
def test_a_tampered_record_is_refused_before_anything_runs(cli, run, planted):
    record = json.loads((run / "run.json").read_text())
    record["overrides"].append(planted)
    (run / "run.json").write_text(json.dumps(record))
    before = tree(run)
    out = cli(f"resume={run}", "trainer.max_epochs=2")
    assert out.returncode == 2 and "not a plain key=value" in out.stderr, out.stderr
    assert tree(run) == before


def test_overrides_merge_by_key_with_the_command_line_last():
    recorded = ["data=digits", "trainer.max_steps=3", "trainer.max_epochs=2", "resume=/old"]
    given = ["resume=/new", "trainer.max_epochs=5"]
    assert rebuild.merged(recorded, given) == ["data=digits", "resume=/new", "trainer.max_epochs=5"]
    assert cmdline.split_args(["--cfg", "job", "resume=x", "-m", "a=1"]) == (
        ["--cfg", "job", "-m"],
        ["resume=x", "a=1"],
    )

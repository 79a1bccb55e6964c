"""SLURM without a cluster: which environment makes ranks, when a job continues, and how a
failed job reads (tests/test_slurm.py runs the real thing)."""

import contextlib
import signal

import pytest

from train.errors import UserError
from train.system import distributed, signals, slurm

SLURM_STEP = {"SLURM_JOB_ID": "7", "SLURM_PROCID": "1", "SLURM_LOCALID": "1",
              "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS": "2"}  # fmt: skip
TORCHRUN = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@pytest.fixture
def env(monkeypatch):
    for name in (*SLURM_STEP, *TORCHRUN, "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_srun_tasks_are_ranks(env):
    for name, value in SLURM_STEP.items():
        env.setenv(name, value)
    assert distributed.ranks() == distributed.Ranks(rank=1, local=1, world=2, launcher="srun")


def test_a_batch_scripts_own_shell_is_one_process_whatever_the_job_asked_for(env):
    env.setenv("SLURM_NTASKS", "4")  # (sbatch -n 4: set in the script; no step yet)
    env.setenv("SLURM_PROCID", "0")
    assert distributed.ranks() == distributed.Ranks()


def test_torchrun_under_srun_keeps_torchruns_ranks(env):
    for name, value in {**SLURM_STEP, "RANK": "3", "LOCAL_RANK": "0", "WORLD_SIZE": "4"}.items():
        env.setenv(name, value)
    assert distributed.ranks() == distributed.Ranks(rank=3, local=0, world=4)


def test_a_malformed_slurm_rank_is_named(env):
    for name, value in {**SLURM_STEP, "SLURM_PROCID": "one"}.items():
        env.setenv(name, value)
    with pytest.raises(UserError, match="SLURM_PROCID"):
        distributed.ranks()


def test_only_a_restarted_job_with_a_checkpoint_continues(env, tmp_path):
    assert slurm._continued(tmp_path) == []
    env.setenv("SLURM_RESTART_COUNT", "1")
    assert slurm._continued(tmp_path) == []  # (stopped before its first checkpoint: anew)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")
    assert slurm._continued(tmp_path) == [f"resume={tmp_path}"]


def test_slurms_warning_joins_the_graceful_stop_signals_in_a_submitit_job(monkeypatch):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    assert signals.stop_signals() == (signal.SIGTERM, signal.SIGINT)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")  # (what submitit sets in its jobs)
    assert signals.stop_signals() == (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "TERM")  # (submitit's own knob: once)
    assert signals.stop_signals() == (signal.SIGTERM, signal.SIGINT)
    import submitit

    monkeypatch.setattr(submitit.JobEnvironment, "USR_SIG", "TERM")
    assert submitit.JobEnvironment._usr_sig() in signals.stop_signals()


def _bad_input(overrides):
    raise UserError("bad input")


@pytest.mark.parametrize("job", [lambda overrides: 0.5, _bad_input], ids=["done", "failed"])
def test_a_task_leaves_the_process_group_however_it_ends(monkeypatch, tmp_path, job):
    """Left to the interpreter's exit, the group's teardown aborted a rank now and then, and
    sacct said FAILED for a job that had finished."""
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")  # (as in a job submitit started)
    left = []
    monkeypatch.setattr(distributed, "finish", lambda: left.append(True))
    with contextlib.suppress(UserError):
        slurm.task(job, [], tmp_path)
    assert left == [True]


# submitit's two reports of a failed job: it raised, or it ended without a result.
RAISED = """Job (task=0) failed during processing with trace:
----------------------
Traceback (most recent call last):
  File "x.py", line 1, in <module>
ValueError: the model blew up
"""
NO_RESULT = """Job 12_1 (task: 0) with path /s/.submitit/12_1/12_1_0_result.pkl
has not produced any output (state: FAILED)
Error stream produced:
----------------------------------------
error: trainer.monitor=nosuch is not a metric of this task; choose loss or accuracy.
srun: error: vm: task 0: Exited with exit code 2
"""


def test_a_failed_job_is_one_paragraph_with_its_own_error_and_its_logs(tmp_path):
    said = slurm._failure(NO_RESULT, tmp_path)
    assert said.startswith("a SLURM job of this sweep failed: trainer.monitor=nosuch is not")
    assert f"{tmp_path}/.submitit/12_1/" in said and "\n" not in said
    assert "ValueError: the model blew up." in slurm._failure(RAISED, tmp_path)
    assert "it ended FAILED." in slurm._failure("Job 3 ... (state: FAILED)", tmp_path)


def test_a_refused_submission_and_a_signal_while_waiting_are_said_as_such(tmp_path):
    import subprocess

    from submitit.core.utils import FailedJobError

    sbatch = subprocess.CalledProcessError(1, ["sbatch"])
    with pytest.raises(UserError) as e, slurm.failures_said(str(tmp_path)):
        raise FailedJobError("sbatch: error: invalid partition specified: nosuch") from sbatch
    assert e.value.message.startswith("SLURM refused the sweep's jobs (sbatch: invalid partition")
    with pytest.raises(UserError) as e, slurm.failures_said(str(tmp_path)):
        raise UserError("stopped by SIGTERM before training started", code=143)
    assert e.value.code == 143 and "the jobs it submitted go on without it" in e.value.message

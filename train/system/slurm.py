"""SLURM jobs through hydra-submitit-launcher (`hydra/launcher=slurm`, conf/hydra/launcher/).

The launcher is submitit_slurm's (hydra_plugins/train_launcher), with what a training job needs
around it, here:
- SLURM's warning before the time limit (submitit asks for SIGUSR2, `signal_delay_s` ahead; a
  preemption may send it too) stops the run as SIGTERM does: at a step every rank agrees on,
  with a checkpoint. Then submitit requeues the job (up to `max_num_timeout` time limits).
- A job SLURM started again (SLURM_RESTART_COUNT > 0: that requeue, `scontrol requeue`, a
  preemption, a node failure) continues its job dir from its last checkpoint, exactly:
  `resume=<job dir>` joins its overrides.
- A job's bad input is its one paragraph on its stderr, and in the sweep's error.
The job's tasks become DDP ranks in train.distributed (SLURM_PROCID, SLURM_LOCALID, ...).
"""

import os
import re
import signal
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from train.errors import UserError
from train.system import distributed, signals


def requeued() -> bool:
    """Whether SLURM started this job again (requeue, preemption, node failure)."""
    return os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0")


def task(run: Callable[[list[str]], Any], overrides: list[str], job_dir: Path) -> Any:
    """Run one task of a job (`run(overrides)`: Hydra's job), as the module docstring says."""
    import submitit

    warning = submitit.JobEnvironment._usr_sig()
    requeue = signal.getsignal(warning)  # submitit's: re-pickles the call, requeues, exits
    assert warning in signals.stop_signals()  # (the loop stops on it, as on SIGTERM)
    try:
        return run([*overrides, *_continued(job_dir)])
    except UserError as e:
        print(f"error: {e.message}", file=sys.stderr, flush=True)
        raise
    except SystemExit as e:
        if e.code == 128 + warning and callable(requeue):  # stopped and saved: requeue
            if distributed.ranks().main:
                job = os.environ.get("SLURM_JOB_ID")
                print(f"requeueing SLURM job {job}: it continues {job_dir} from "
                      "checkpoints/last.pt when it starts again", flush=True)  # fmt: skip
            requeue(warning, None)  # task 0 requeues and exits; the others return here
        raise
    finally:  # (app.main's own finish is not on a job's path) torn down by the interpreter at
        distributed.finish()  # exit, a rank aborted now and then: sacct said FAILED


def _continued(job_dir: Path) -> list[str]:
    """resume=<job dir> for a job SLURM restarted whose earlier attempt saved a checkpoint."""
    if not (requeued() and (job_dir / "checkpoints" / "last.pt").is_file()):
        return []
    if distributed.ranks().main:
        print(f"SLURM started this job again: continuing {job_dir} from its last checkpoint",
              flush=True)  # fmt: skip
    return [f"resume={job_dir}"]


@contextmanager
def failures_said(sweep_dir: str, executor: str = "slurm"):
    """While the sweep submits and waits for its jobs (`executor`: submitit's slurm or local):
    a refused submission or a failed job is one paragraph, not a traceback."""
    import subprocess

    from submitit.core.utils import FailedJobError, UncompletedJobError

    try:
        with signals.raising():
            yield
    except UserError as e:  # a signal: the jobs go on
        if e.code not in (130, 143):
            raise
        raise UserError(_left(signal.Signals(e.code - 128).name, sweep_dir, executor),
                        code=e.code) from None  # fmt: skip
    except (FailedJobError, UncompletedJobError) as e:
        if isinstance(e.__cause__, subprocess.CalledProcessError):  # sbatch itself failed
            raise UserError(_refused(str(e))) from None
        raise UserError(_failure(str(e), Path(sweep_dir), executor)) from None


def _left(name: str, sweep_dir: str, executor: str) -> str:
    how = " (squeue lists them; scancel <job id> cancels one)" if executor == "slurm" else ""
    return (
        f"stopped by {name} while waiting for the sweep's jobs; the jobs it submitted go on "
        f"without it{how}. Their run dirs and output are under {sweep_dir}/."
    )


def _refused(text: str) -> str:
    said = " ".join(line.removeprefix("sbatch: error: ").strip() for line in text.splitlines()
                    if line.strip()) or "no reason given"  # fmt: skip
    return (
        f"SLURM refused the sweep's jobs (sbatch: {said}); nothing was submitted. Check that a "
        "cluster answers (sinfo; on a Debian machine, as root, make slurm-up starts one on this "
        "machine) and that the hydra.launcher fields (partition, nodes, tasks_per_node, "
        "cpus_per_task, gpus_per_node, mem_gb, timeout_min) fit it."
    )


def say_done(results: list, sweep_dir: str) -> None:
    """One line per finished job: its run dir, the value it returned (the monitored metric)
    and its log folder."""
    for r in results:
        hydra = r.hydra_cfg.hydra
        value = r.return_value
        said = f"{r.cfg.trainer.monitor} {value:.4g}" if isinstance(value, float) else "no value"
        print(f"job {hydra.job.num} done: {hydra.runtime.output_dir} ({said}); its output: "
              f"{sweep_dir}/.submitit/{hydra.job.id}/", flush=True)  # fmt: skip


def _failure(text: str, sweep_dir: Path, executor: str = "slurm") -> str:
    """submitit's report of a failed job, as one paragraph: the job's own error line (or its
    exception's) and where its logs are."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    said = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    raised = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b.*:", line)]
    state = re.search(r"state: (\w+)", text)
    why = (said or raised or [f"it ended {state.group(1) if state else 'without a result'}."])[-1]
    why = why if why.endswith((".", ")")) else f"{why}."
    job = re.search(r"Job (\d\w*)", text)
    logs = sweep_dir / ".submitit" / (job.group(1) if job else "")
    return (
        f"a {'SLURM ' if executor == 'slurm' else ''}job of this sweep failed: {why} Its output "
        f"and errors are in {logs}/. The sweep's other jobs were not waited for"
        f"{' (squeue lists those still running)' if executor == 'slurm' else ''}; their run "
        f"dirs are under {sweep_dir}/."
    )

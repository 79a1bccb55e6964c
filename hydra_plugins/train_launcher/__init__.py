"""`hydra/launcher=slurm`'s and `hydra/launcher=local`'s launchers: submitit's, with train.slurm's
care for training jobs (checkpoint and requeue on SLURM's warning, the continuation, a job's
result or error said in one line or paragraph). Here because Hydra takes launchers only from
the hydra_plugins package."""

from pathlib import Path
from typing import Any

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    BaseSubmititLauncher,
    LocalLauncher,
    SlurmLauncher,
)


class _TrainJobs(BaseSubmititLauncher):
    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int,
                 job_id: str, singleton_state: dict) -> Any:  # fmt: skip
        """One task of a job, on its node (each of the job's tasks runs it)."""
        from train.system import slurm

        def run(overrides: list[str]) -> Any:
            return BaseSubmititLauncher.__call__(self, overrides, job_dir_key, job_num, job_id,
                                                 singleton_state)  # fmt: skip

        job_dir = self._job_dir(sweep_overrides, job_num, singleton_state)
        return slurm.task(run, sweep_overrides, job_dir)

    def launch(self, job_overrides, initial_job_idx: int):
        """Submit the jobs and wait for their results."""
        from train.system import slurm

        sweep_dir = str(self.config.hydra.sweep.dir)
        with slurm.failures_said(sweep_dir, self._EXECUTOR):
            results = BaseSubmititLauncher.launch(self, job_overrides, initial_job_idx)
        slurm.say_done(results, sweep_dir)
        return results

    def _job_dir(self, sweep_overrides: list[str], job_num: int, singleton_state: dict) -> Path:
        """The job's dir as Hydra resolves it for the job: hydra.sweep.dir/hydra.sweep.subdir."""
        from hydra.core.hydra_config import HydraConfig
        from hydra.core.singleton import Singleton
        from hydra.core.utils import setup_globals
        from omegaconf import open_dict

        Singleton.set_state(singleton_state)  # (as the job itself does, first)
        setup_globals()
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, sweep_overrides)
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = job_num
        HydraConfig.instance().set_config(cfg)
        return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)


class TrainSlurmLauncher(_TrainJobs, SlurmLauncher):
    """submitit_slurm's launcher, for training jobs."""


class TrainLocalLauncher(_TrainJobs, LocalLauncher):
    """submitit_local's launcher, for training jobs (local processes, no SLURM)."""

"""Many processes, one run: the ranks `torchrun` starts, or srun's tasks of a SLURM job step
(DistributedDataParallel).

Started from their environment before Hydra composes anything, so the ranks can agree on
the run directory. One process group serves all: gloo for CPU tensors, plus NCCL for CUDA
tensors when a GPU is present. Rank 0 alone writes; what a rank must share with the others
(the run dir, a drawn seed, the stop decision, the metric sums) goes through the few functions
here. Without either (one process) every function is the single-process identity.
"""

import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from train.errors import UserError


@dataclass(frozen=True)
class Ranks:
    """Where this process stands among torchrun's workers."""

    rank: int = 0  # across all machines
    local: int = 0  # on this machine: picks the GPU
    world: int = 1
    launcher: str = "torchrun"  # who started the ranks: torchrun, or srun (a SLURM job's tasks)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def many(self) -> bool:
        return self.world > 1


def ranks() -> Ranks:
    """This process's ranks, read from torchrun's environment, else from SLURM's where srun
    started several tasks of one job step (all 1-process values without either)."""
    env = os.environ
    names, launcher = ("RANK", "LOCAL_RANK", "WORLD_SIZE"), "torchrun"
    if "RANK" not in env and env.get("SLURM_STEP_NUM_TASKS", "1") != "1":
        names, launcher = ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_STEP_NUM_TASKS"), "srun"
    try:
        rank, local, world = (
            int(env.get(name, default)) for name, default in zip(names, "001", strict=True)
        )
        return Ranks(rank=rank, local=local, world=world, launcher=launcher)
    except ValueError as e:
        raise UserError(
            f"the distributed environment is malformed ({e}): {', '.join(names)} must be "
            "integers. Start several processes with torchrun (or srun)."
        ) from None


def slurm_rendezvous() -> dict:
    """Where srun's tasks meet when torchrun did not start them: the step's first node, a port
    drawn from the job id (the same on every task, and again when the job is requeued). Not
    submitit's TorchDistributedEnvironment: it knows only the jobs submitit started, and a
    plain `srun python -m train` has its ranks too."""
    import subprocess

    env = os.environ
    nodes = subprocess.run(["scontrol", "show", "hostnames", env["SLURM_STEP_NODELIST"]],
                           capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return {"init_method": f"tcp://{nodes[0]}:{20000 + int(env['SLURM_JOB_ID']) % 40000}"}


def backend() -> str:
    """gloo for CPU tensors; NCCL for CUDA ones where torch sees a GPU."""
    import torch

    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def start() -> Ranks:
    """Join the ranks' process group (once; torchrun's or srun's); a no-op for one process."""
    r = ranks()
    if not r.many:
        return r
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available() and r.local < torch.cuda.device_count():
            torch.cuda.set_device(r.local)  # NCCL's communicators bind to the current device
        where = slurm_rendezvous() if r.launcher == "srun" else _restart_store(r)
        dist.init_process_group(backend(), rank=r.rank, world_size=r.world, **where)
    return r


def _restart_store(r: Ranks) -> dict:
    """Workers torchrun restarted, on one machine: a store prefix of their own attempt.
    Restarted workers share the agent's store with the failed attempt, whose ranks' addresses
    still lie there; a restarted rank that arrives first reads its peer's dead address and
    Gloo's connection fails or hangs (pytorch/pytorch#167288). Several machines keep torch's
    default: their agents' restart counts can differ (pytorch/pytorch#108158)."""
    import datetime

    import torch.distributed as dist

    env = os.environ
    attempt = env.get("TORCHELASTIC_RESTART_COUNT", "0")
    if attempt in ("", "0") or env.get("GROUP_WORLD_SIZE", "1") != "1" or "MASTER_PORT" not in env:
        return {}
    store = dist.TCPStore(env.get("MASTER_ADDR", "localhost"), int(env["MASTER_PORT"]),
                          is_master=False, timeout=datetime.timedelta(minutes=30))  # fmt: skip
    prefix = f"train/{env.get('TORCHELASTIC_RUN_ID', '')}/attempt_{attempt}"
    return {"store": dist.PrefixStore(prefix, store)}


def finish() -> None:
    """Leave the process group (NCCL warns at exit otherwise)."""
    import sys

    if "torch.distributed" in sys.modules:
        import torch.distributed as dist

        if dist.is_initialized():
            import gc

            gc.collect()  # DDP's reducer first (it sits in reference cycles): torn down at exit
            dist.destroy_process_group()  # after the group, it aborted the process now and then


def _active() -> bool:
    import sys

    if "torch.distributed" not in sys.modules:  # never started: a single process
        return False
    import torch.distributed as dist

    return dist.is_initialized() and dist.get_world_size() > 1


def agreed(compute: Callable[[], Any]) -> Any:
    """Rank 0's `compute()`, handed to every rank; its UserError is raised on every rank."""
    if not _active():
        return compute()
    import torch.distributed as dist

    box: list = [None]
    if dist.get_rank() == 0:
        try:
            box = [("ok", compute())]
        except UserError as e:
            box = [("error", e.message, e.code)]
    dist.broadcast_object_list(box, src=0)
    if box[0][0] == "error":
        raise UserError(box[0][1], code=box[0][2])
    return box[0][1]


def barrier() -> None:
    if _active():
        import torch.distributed as dist

        dist.barrier()


@contextmanager
def main_first():
    """Rank 0 runs the block first (a download, a cache written), then the others."""
    main = ranks().main
    if not main:
        barrier()
    yield
    if main:
        barrier()


def sum_(tensors: list) -> None:
    """Sum each tensor over the ranks, in place."""
    if _active():
        import torch.distributed as dist

        for t in tensors:
            dist.all_reduce(t)


def step_consensus(loss, signum: int | None) -> tuple[float, int | None]:
    """One step's shared facts: the mean loss over ranks (NaN/inf if any rank's is) and the
    signal any rank received (SIGTERM before SIGINT, see signals.stop_signals). One small
    all-reduce; `.item()` alone for a single process."""
    if not _active():
        return loss.item(), signum
    import torch
    import torch.distributed as dist

    from train.system.signals import stop_signals

    kinds = stop_signals()
    got = [float(signum == s) for s in kinds]
    t = torch.cat([loss.detach().float().reshape(1), torch.tensor(got, device=loss.device)])
    dist.all_reduce(t)
    value, *counts = t.tolist()
    if signum is None:
        signum = next((s for s, n in zip(kinds, counts, strict=True) if n > 0), None)
    return value / dist.get_world_size(), signum


def any_signal(signum: int | None) -> int | None:
    """The signal any rank received (between steps), so every rank stops at the same point."""
    if not _active():
        return signum
    import torch

    return step_consensus(torch.zeros(()), signum)[1]


def wrap(model, device):
    """The model in DistributedDataParallel (the state_dict stays the plain model's)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)

"""Device choice: `auto`, `cpu`, `cuda[:N]`, `mps` or `xpu[:N]`, with the reason said out loud.

`auto` takes CUDA (or ROCm, which torch drives as CUDA) when it is usable, else the accelerator
this torch was built for (torch.accelerator: Apple's MPS, Intel's XPU) when it is usable, else
the CPU, saying why it fell back."""

import re

import torch

from train.errors import UserError

VALID = "auto, cpu, cuda, cuda:N, mps, xpu or xpu:N"
NAMES = {"cuda": "CUDA", "mps": "Apple's MPS", "xpu": "Intel's XPU"}


def accelerator() -> str | None:
    """The accelerator to train on when one is usable now: cuda, else the one torch was built
    for (torch.accelerator) among mps and xpu; None for none."""
    if torch.cuda.is_available():
        return "cuda"
    built = torch.accelerator.current_accelerator()
    if built is not None and built.type in ("mps", "xpu") and usable(built.type):
        return built.type
    return None


def usable(kind: str) -> bool:
    if kind == "mps":
        return torch.backends.mps.is_available()
    return getattr(torch, kind).is_available()


def name(device: torch.device) -> str:
    """The device's model, as its torch module names it."""
    if device.type == "mps":
        return torch.backends.mps.get_name()
    if device.type in ("cuda", "xpu"):
        return getattr(torch, device.type).get_device_name(device.index or 0)
    return "CPU"


def choose(
    requested: str, slot: int | None = None, shared: bool = True
) -> tuple[torch.device, str]:
    """The device to train on and a one-line reason for the choice.

    `slot` spreads processes over the GPUs where `auto`/`cuda` leave the index open: a torchrun
    rank's local rank (`shared=False`: one GPU per rank, as NCCL requires), or a sweep job's
    number (`shared=True`: jobs take the GPUs in turn).
    """
    if slot is not None and requested in ("auto", "cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if not shared and slot >= count:
            raise UserError(
                f"this torchrun job starts more processes per machine than there are GPUs: "
                f"local rank {slot}, but {count} CUDA device(s) are visible. Use "
                f"--nproc_per_node={count} (or fewer), or trainer.device=cpu."
            )
        index = slot % count
        why = "torchrun local rank" if not shared else "sweep job"
        gpu = torch.cuda.get_device_name(index)
        return torch.device("cuda", index), f"{requested}: {why} {slot} -> cuda:{index} ({gpu})"
    if slot is not None and not shared and re.fullmatch(r"cuda:\d+", requested):
        raise UserError(
            f"trainer.device={requested} pins every torchrun rank to one GPU; under torchrun each "
            "rank takes the GPU of its local rank: use trainer.device=auto (or cuda)."
        )
    if requested == "auto":
        if kind := accelerator():
            device = torch.device(kind)
            return device, f"auto: {NAMES[kind]} is available ({name(device)})"
        return torch.device("cpu"), f"auto: no CUDA device, falling back to CPU ({_why_no_cuda()})"
    if requested == "cpu":
        return torch.device("cpu"), "requested"
    if re.fullmatch(r"mps|xpu(:\d+)?", requested):
        return _other(requested)
    if not re.fullmatch(r"cuda(:\d+)?", requested):
        raise UserError(f"trainer.device={requested!r} is not a device; use one of {VALID}.")
    if not torch.cuda.is_available():
        raise UserError(
            f"trainer.device={requested} was requested but no CUDA device is usable "
            f"({_why_no_cuda()}). Use trainer.device=auto to fall back to the CPU, or run on a "
            "GPU host (in Docker: the CUDA image with the GPU override, see README)."
        )
    device = torch.device(requested)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise UserError(
            f"trainer.device={requested} does not exist: {count} CUDA device(s) are visible "
            f"(cuda:0 .. cuda:{count - 1})."
        )
    return device, f"requested ({torch.cuda.get_device_name(device)})"


def _other(requested: str) -> tuple[torch.device, str]:
    """trainer.device=mps, xpu or xpu:N, where this torch and machine have it."""
    device = torch.device(requested)
    kind = device.type
    built = torch.accelerator.current_accelerator()
    if not usable(kind):
        built_for = built.type if built is not None else None
        why = (f"this torch {torch.__version__} is built for {NAMES.get(built_for, built_for)}"
               if built_for != kind else f"torch sees no {NAMES[kind]} device")  # fmt: skip
        raise UserError(
            f"trainer.device={requested} was requested but {NAMES[kind]} is not usable here "
            f"({why}). Use trainer.device=auto to take what there is, or cpu."
        )
    count = 1 if kind == "mps" else torch.xpu.device_count()
    if device.index is not None and device.index >= count:
        raise UserError(f"trainer.device={requested} does not exist: {count} {NAMES[kind]} "
                        f"device(s) are visible ({kind}:0 .. {kind}:{count - 1}).")  # fmt: skip
    return device, f"requested ({name(device)})"


def cpu_budget() -> tuple[int, str]:
    """How many CPUs this process may keep busy, and why: its CPU affinity, or fewer when a
    container's CPU quota (cgroup v2 cpu.max, v1 cfs_quota_us / cfs_period_us) says so.
    torch alone counts the machine's cores, also inside a 2-CPU container on a 64-core host."""
    import math
    import os
    from pathlib import Path

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = None
    try:
        limit, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        quota = None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        try:
            limit = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            quota = limit / period if limit > 0 else None
        except (OSError, ValueError):
            pass
    if quota is not None and math.ceil(quota) < cores:
        return max(1, math.ceil(quota)), f"the container's CPU quota, {quota:g} CPUs"
    return cores or 1, f"{cores} CPUs this process may use"


def use_cpu_budget() -> str | None:
    """Set torch's intra-op threads to the CPU budget, unless OMP_NUM_THREADS says otherwise;
    what was done, for the log (None when nothing changed)."""
    import os

    if os.environ.get("OMP_NUM_THREADS"):
        return None
    n, why = cpu_budget()
    if n == torch.get_num_threads():
        return None
    torch.set_num_threads(n)
    return f"CPU threads: {n} ({why}; OMP_NUM_THREADS sets another number)"


def _why_no_cuda() -> str:
    if torch.version.cuda is None:
        return f"this torch {torch.__version__} is a CPU-only build"
    return f"torch {torch.__version__} is built for CUDA {torch.version.cuda}, but sees no GPU"

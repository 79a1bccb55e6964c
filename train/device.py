"""Device choice: `auto`, `cpu`, `cuda` or `cuda:N`, with the reason said out loud."""

import re

import torch

from train.errors import UserError

VALID = "auto, cpu, cuda or cuda:N"


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
        name = torch.cuda.get_device_name(index)
        return torch.device("cuda", index), f"{requested}: {why} {slot} -> cuda:{index} ({name})"
    if slot is not None and not shared and re.fullmatch(r"cuda:\d+", requested):
        raise UserError(
            f"trainer.device={requested} pins every torchrun rank to one GPU; under torchrun each "
            "rank takes the GPU of its local rank: use trainer.device=auto (or cuda)."
        )
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device(
                "cuda"
            ), f"auto: CUDA is available ({torch.cuda.get_device_name(0)})"
        return torch.device("cpu"), f"auto: no CUDA device, falling back to CPU ({_why_no_cuda()})"
    if requested == "cpu":
        return torch.device("cpu"), "requested"
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


def _why_no_cuda() -> str:
    if torch.version.cuda is None:
        return f"this torch {torch.__version__} is a CPU-only build"
    return f"torch {torch.__version__} is built for CUDA {torch.version.cuda}, but sees no GPU"

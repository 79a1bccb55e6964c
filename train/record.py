"""The run record: what is needed to know, and to replay, how a run was made.

Written at the start of every invocation into the run dir: `run.json`, then `run-1.json`,
`run-2.json`, ... for each resume. The image's name and build arguments are baked into the
Docker images as TRAIN_IMAGE* variables at build time; natively they are null.
"""

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

from train.errors import UserError

FORMAT = 1  # the layout below; records written before it was recorded are format 1 too

IMAGE_VARS = {"name": "TRAIN_IMAGE", "torch_index": "TRAIN_TORCH_INDEX",
              "base_image": "TRAIN_BASE_IMAGE", "git_commit": "TRAIN_GIT_COMMIT"}  # fmt: skip


@dataclass
class RunRecord:
    """One invocation of a run (run.json, run-1.json, ...), typed. Untrusted when read back:
    its overrides are checked before anything composes them (train.resume)."""

    started: str
    command: list[str]
    cwd: str | None
    overrides: list[str]
    seed: int
    config: dict
    data_fingerprint: str | None = None  # a SHA-256 of what it trained on
    deterministic: dict | None = None
    versions: dict | None = None
    device: dict | None = None
    distributed: dict | None = None
    host: dict | None = None
    packages: dict | None = None
    git: dict | None = None
    image: dict | None = None
    format: int = FORMAT

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def read(cls, path: Path) -> "RunRecord":
        """The record at `path`; one that is not JSON, of another format, or without its
        overrides, seed or config refused in one line naming it."""
        try:
            blob = json.loads(path.read_text())
            version = blob.get("format", 1)
        except (OSError, ValueError, AttributeError) as e:
            raise UserError(f"{path} is not a readable run record ({e}).") from None
        if version != FORMAT:
            raise UserError(f"{path} is a run record of format {version!r}; this version of "
                            f"train reads format {FORMAT}.")  # fmt: skip
        kinds = {"overrides": list, "seed": int, "config": dict}
        if wrong := [k for k, kind in kinds.items() if not isinstance(blob.get(k), kind)]:
            raise UserError(f"{path} is not a readable run record: no valid {', '.join(wrong)}.")
        names = {f.name for f in fields(cls)}
        defaults = {"started": "", "command": [], "cwd": None}
        return cls(**{**defaults, **{k: v for k, v in blob.items() if k in names}})


def read_all(run: Path) -> list[RunRecord]:
    """run.json, run-1.json, ... in the order they were written."""
    paths = sorted(run.glob("run*.json"), key=lambda p: (len(p.name), p.name))
    if not paths:
        raise UserError(f"{run} has no run.json: give a run directory made by python -m train.")
    return [RunRecord.read(p) for p in paths]


def collect(config: dict, overrides: list[str], seed: int, device, deterministic: bool,
            data_fingerprint: str | None = None) -> RunRecord:  # fmt: skip
    """This invocation's record."""
    import torch
    import torchvision

    cuda = torch.version.cuda
    return RunRecord(
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        command=sys.orig_argv,
        cwd=os.getcwd(),
        overrides=list(overrides),
        seed=seed,
        config=config,
        data_fingerprint=data_fingerprint,
        deterministic={
            "requested": deterministic,
            "note": "bitwise-reproducible on the CPU; on CUDA only with trainer.deterministic=true"
            if not deterministic
            else "deterministic algorithms on, CUBLAS_WORKSPACE_CONFIG set",
        },
        versions={
            "python": platform.python_version(),
            "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
            "cuda": cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
        },
        device={"type": device.type, "name": device_name(device)},
        distributed=distributed_state(),
        host={"platform": platform.platform(), "hostname": platform.node()},
        packages=packages(),
        git=git_state(),
        image=image(),
    )


def distributed_state() -> dict:
    """How many torchrun processes trained the run (1: none), and over which backend."""
    from train import distributed

    r = distributed.ranks()
    return {"world_size": r.world, "backend": distributed.backend() if r.many else None}


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def packages() -> dict[str, str]:
    """Every installed distribution, name -> version."""
    found = {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()}
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))


def git_state() -> dict | None:
    """The commit of the code that ran and whether its tree had uncommitted changes."""
    code = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(code), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        status = subprocess.run(
            ["git", "-C", str(code), "status", "--porcelain"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None  # not a checkout (e.g. in the images, whose commit is in `image`)
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def image() -> dict | None:
    """The Docker image's name and build arguments, when running in one of ours."""
    if IMAGE_VARS["name"] not in os.environ:
        return None
    return {key: os.environ.get(var) or None for key, var in IMAGE_VARS.items()}

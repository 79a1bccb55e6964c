"""The run record: what is needed to know, and to replay, how a run was made.

Written at the start of every invocation into the run dir: `run.json`, then `run-1.json`,
`run-2.json`, ... for each resume. The image's name and build arguments are baked into the
Docker images as TRAIN_IMAGE* variables at build time; natively they are null.
"""

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

from train.errors import UserError
from train.run.formats import Typed, targets_moved
from train.system import container


@dataclass
class RunRecord(Typed):
    """One invocation of a run (run.json, run-1.json, ...), typed. Untrusted when read back:
    its overrides are checked before anything composes them (train.run.resume)."""

    WHAT, FORMAT = "run record", 2  # 1: train's callables named before the regrouping
    UPGRADES = {1: lambda blob: {**blob, "config": targets_moved(blob.get("config"))}}

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
    origin: dict | None = None  # a pretrained file, a user's code: file and SHA-256 (per group)
    lock: dict | None = None  # uv.lock's SHA-256: every package's pinned version and hash
    tracking: dict | None = None  # where else the run is recorded: {"mlflow": {"run_id", ...}}
    format: int = FORMAT

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def read(cls, path: Path) -> "RunRecord":
        """The record at `path`; one that is not JSON, of another format, or without its
        overrides, seed or config refused in one line naming it."""
        try:
            blob = json.loads(path.read_text())
            blob = cls.current(blob, path)
        except (OSError, ValueError, AttributeError) as e:
            raise UserError(f"{path} is not a readable run record ({e}).") from None
        kinds = {"overrides": list, "seed": int, "config": dict}
        if wrong := [k for k, kind in kinds.items() if not isinstance(blob.get(k), kind)]:
            raise UserError(f"{path} is not a readable run record: no valid {', '.join(wrong)}.")
        names = {f.name for f in fields(cls)}
        defaults = {"started": "", "command": [], "cwd": None}
        return cls(**{**defaults, **{k: v for k, v in blob.items() if k in names}})


def collect(config: dict, overrides: list[str], seed: int, device, deterministic: bool,
            data_fingerprint: str | None = None, origin: dict | None = None,
            tracking: dict | None = None) -> RunRecord:  # fmt: skip
    """This invocation's record."""
    import torch

    cuda, installed = torch.version.cuda, packages()  # (torchvision's from it: no import)
    return RunRecord(
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        command=sys.orig_argv,
        cwd=os.getcwd(),
        overrides=list(overrides),
        seed=seed,
        config=config,
        data_fingerprint=data_fingerprint,
        deterministic=determinism(deterministic),
        versions={
            "python": platform.python_version(),
            "torch": str(torch.__version__),
            "torchvision": installed.get("torchvision"),
            "cuda": cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
        },
        device={"type": device.type, "name": device_name(device)},
        distributed=distributed_state(),
        host={
            "platform": platform.platform(),
            "hostname": platform.node(),
            "cpu": cpu_model(),
            "gpus": gpu_names(),
        },  # fmt: skip
        packages=installed,
        git=git_state(),
        image=container.image(),
        origin=origin,
        lock=lock_state(),
        tracking=tracking,
    )


def determinism(requested: bool) -> dict:
    """What decides whether a rerun repeats bit for bit, as torch is set now."""
    import torch

    return {
        "requested": requested,
        "algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "mkl_cbwr": os.environ.get("MKL_CBWR"),  # (MKL's code path: unset, each CPU its own)
        "note": "bitwise-reproducible on the CPU; on CUDA only with trainer.deterministic=true"
        if not requested
        else "deterministic algorithms on, CUBLAS_WORKSPACE_CONFIG set",
    }


def lock_state() -> dict | None:
    """uv.lock's SHA-256, beside the code (the checkout, or /app in the images)."""
    import hashlib

    path = Path(__file__).resolve().parents[2] / "uv.lock"
    try:
        return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    except OSError:
        return None  # (installed without the project's lock)


def gpu_names() -> list[str]:
    """Every accelerator device this process sees (CUDA's, XPU's, or Apple's one GPU)."""
    import torch

    from train.system.device import accelerator, name

    kind = accelerator()
    count = {"cuda": torch.cuda.device_count, "xpu": lambda: torch.xpu.device_count(),
             "mps": lambda: 1}.get(kind, lambda: 0)()  # fmt: skip
    return [name(torch.device(kind, i)) for i in range(count)]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def distributed_state() -> dict:
    """How many torchrun processes trained the run (1: none), and over which backend."""
    from train.system import distributed

    r = distributed.ranks()
    return {"world_size": r.world, "backend": distributed.backend() if r.many else None}


def device_name(device) -> str:

    from train.system.device import name

    return cpu_model() if device.type == "cpu" else name(device)


def packages() -> dict[str, str]:
    """Every installed distribution, its normalised name (PEP 503) -> version, read from the
    `<name>-<version>.dist-info` folder names on sys.path (the first of a name wins, as for
    imports): parsing each METADATA file instead took 0.2-0.5 s of every start."""
    import re

    found: dict[str, str] = {}
    for entry in sys.path:
        folder = Path(entry or ".")
        if not folder.is_dir():
            continue
        for info in folder.glob("*.dist-info"):
            name, _, version = info.name.removesuffix(".dist-info").partition("-")
            found.setdefault(re.sub(r"[-_.]+", "-", name).lower(), version)
    return dict(sorted(found.items()))


def git_state() -> dict | None:
    """The commit of the code that ran and whether its tree had uncommitted changes (one git
    call: `status --porcelain=v2 --branch` names the commit too)."""
    code = Path(__file__).resolve().parents[2]
    try:
        status = subprocess.run(["git", "-C", str(code), "status", "--porcelain=v2", "--branch"],
                                capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    lines = status.stdout.splitlines()
    commit = next((ln.split()[2] for ln in lines if ln.startswith("# branch.oid ")), None)
    if status.returncode != 0 or commit is None or commit == "(initial)":
        return None  # not a checkout (e.g. in the images, whose commit is in `image`)
    return {"commit": commit, "dirty": any(not ln.startswith("#") for ln in lines)}

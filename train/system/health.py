"""The checks behind `python -m train.doctor`: GPU visible or not and why (a CPU-only torch, no
NVIDIA runtime, NVIDIA_VISIBLE_DEVICES, a driver older than the torch wheel's CUDA), /dev/shm
against the DataLoader workers configured, the data and runs dirs writable by this UID, and
free disk. The trainer runs the cheap ones (`warnings`) at start.
"""

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# The oldest driver each CUDA major version of the torch wheels runs on (minor-version
# compatibility): CUDA 12.x from 525.60.13, CUDA 13.x from 580.
MIN_DRIVER = {11: (450, 80, 2), 12: (525, 60, 13), 13: (580, 0, 0)}
SHM_PER_WORKER = 256 * 2**20
LOW_DISK = 2 * 2**30


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def gpu() -> Check:
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return Check("GPU", "ok", f"{names}; torch {torch.__version__}, CUDA {torch.version.cuda}")
    if torch.version.cuda is None:
        return Check(
            "GPU",
            "warn",
            f"torch {torch.__version__} is a CPU-only build",
            "train on the CPU, or use the CUDA image (compose.gpu.yaml) on a GPU host",
        )
    visible = os.environ.get("NVIDIA_VISIBLE_DEVICES")
    if visible in ("void", "none", ""):
        return Check(
            "GPU",
            "warn",
            f"NVIDIA_VISIBLE_DEVICES={visible!r} hides every GPU",
            "unset it, or set it to all / the GPU indices to use",
        )
    driver = driver_version()
    if driver is None:
        return Check(
            "GPU",
            "warn",
            f"torch is built for CUDA {torch.version.cuda}, but no NVIDIA driver is "
            "visible (no /proc/driver/nvidia/version, no nvidia-smi)",
            "on a GPU host: install the NVIDIA driver and Container Toolkit, and run "
            "with the GPU override (compose.gpu.yaml) or `docker run --gpus all`",
        )
    need = MIN_DRIVER.get(int(torch.version.cuda.split(".")[0]))
    if need is not None and driver < need:
        return Check(
            "GPU",
            "fail",
            f"driver {_v(driver)} is older than CUDA {torch.version.cuda} needs "
            f"({_v(need)} or newer)",
            "upgrade the driver, or build the CUDA image for an older CUDA: "
            "TORCH_INDEX_CUDA=https://download.pytorch.org/whl/cu126 (needs 525.60.13+)",
        )
    return Check(
        "GPU",
        "fail",
        f"driver {_v(driver)} is present but CUDA does not initialise",
        "check `nvidia-smi` on the host and that the container was given the GPUs",
    )


def driver_version() -> tuple[int, ...] | None:
    """The NVIDIA kernel driver's version, from /proc or nvidia-smi; None when neither says."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        try:
            text = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return None
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(g or 0) for g in m.groups()) if m else None


def shared_memory(num_workers: int) -> Check:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return Check("/dev/shm", "warn", "not present", "DataLoader workers may fail; use 0")
    size = st.f_blocks * st.f_frsize
    need = num_workers * SHM_PER_WORKER
    if size < need:
        return Check(
            "/dev/shm",
            "fail",
            f"{_mb(size)} for {num_workers} DataLoader workers (want {_mb(need)})",
            "raise shm_size in compose.yaml (or docker run --shm-size=2g), or lower "
            "data.num_workers",
        )
    return Check("/dev/shm", "ok", f"{_mb(size)} for {num_workers} DataLoader workers")


def can_write(name: str, path: Path) -> Check:
    uid = os.getuid()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        owner = f" (owned by uid {path.stat().st_uid})" if path.exists() else ""
        return Check(
            name,
            "fail",
            f"{path} is not writable by uid {uid}{owner}: {e.strerror}",
            f"make it writable (chown {uid} {path}), or in Docker set UID/GID in .env "
            "to the owner of the host directory",
        )
    return Check(name, "ok", f"{path} is writable by uid {uid}")


def user() -> Check:
    """Running as root without being asked writes root-owned files into the user's runs."""
    if os.getuid() != 0:
        return Check("user", "ok", f"uid {os.getuid()}, not root")
    if os.environ.get("TRAIN_ALLOW_ROOT") == "1":
        return Check("user", "ok", "root, as asked (TRAIN_ALLOW_ROOT=1)")
    return Check(
        "user",
        "warn",
        "running as root: files written to the runs and data dirs will belong to root",
        "set UID/GID in .env to your user (make .env), or TRAIN_ALLOW_ROOT=1 if root is meant",
    )


def threads() -> Check:
    from train.system.device import cpu_budget

    n, why = cpu_budget()
    return Check("CPU threads", "ok", f"{n} ({why})")


def disk(path: Path) -> Check:
    probe = next((p for p in [path, *path.parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free
    if free < LOW_DISK:
        return Check(
            "disk",
            "warn",
            f"{_mb(free)} free under {probe}",
            "free some space: checkpoints are written every epoch",
        )
    return Check("disk", "ok", f"{free / 2**30:.1f} GiB free under {probe}")


def warnings(data_dir: Path, num_workers: int) -> list[str]:
    """The cheap checks the trainer runs at start: what is worth a warning line."""
    checks = [disk(data_dir)] + ([shared_memory(num_workers)] if num_workers else [])
    return [f"{c.name}: {c.detail}; {c.fix}" for c in checks if c.status != "ok"]


def _v(version: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in version)


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"

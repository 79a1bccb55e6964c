"""`python -m train.doctor [overrides]`: check what breaks people's first run, and say the fix.

GPU visible or not and why (a CPU-only torch, no NVIDIA runtime, NVIDIA_VISIBLE_DEVICES, a
driver older than the torch wheel's CUDA), /dev/shm against the DataLoader workers configured,
the data and runs dirs writable by this UID, and free disk. Exit 1 when a check fails.
The trainer runs the cheap ones (`warnings`) at start.
"""

import sys
from pathlib import Path

from train.system.health import can_write, disk, gpu, shared_memory, threads, user


def main(argv: list[str]) -> int:
    from omegaconf import OmegaConf

    from train import config
    from train.config import cmdline, schema

    cmdline.check(argv, schema.Config, Path(config.CONF_DIR) / "config.yaml")
    cfg = config.checked(argv)
    workers = OmegaConf.select(cfg, "data.num_workers", default=0)  # only image_folder has it
    checks = [
        gpu(),
        user(),
        threads(),
        shared_memory(workers),
        can_write("data dir", Path(cfg.paths.data_dir)),
        can_write("runs dir", Path(cfg.paths.runs_dir)),
        disk(Path(cfg.paths.runs_dir)),
    ]
    for c in checks:
        print(
            f"[{c.status.upper():4}] {c.name}: {c.detail}"
            + (f"\n       fix: {c.fix}" if c.fix else "")
        )
    return 1 if any(c.status == "fail" for c in checks) else 0


def cli() -> None:
    """The console script (pyproject's [project.scripts]) and `python -m train.doctor`."""
    from train.errors import run_entrypoint

    run_entrypoint(lambda: main(sys.argv[1:]), usage=__doc__)


if __name__ == "__main__":
    cli()

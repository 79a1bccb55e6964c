"""torchrun's restarts (`--max-restarts=N`): after a worker fails, torchrun starts every worker
again, with the same command line. Here a restarted worker finds the run its job started and
continues it from its newest checkpoint, with no `resume=` on the command line: rank 0 of the
first attempt leaves a pointer `<runs_dir>/.torchrun/<run id>` to the run dir it made, and
TORCHELASTIC_RESTART_COUNT > 0 tells the restarted workers to follow it."""

import logging
import os
from pathlib import Path

from train.run import files
from train.run.rundir import RunDir

log = logging.getLogger("train")


def _run_id() -> str | None:
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    return run_id if run_id and "/" not in run_id and not run_id.startswith(".") else None


def remember(runs_dir: str, run: Path) -> Path:
    """Under torchrun, point this job's run id at `run` (rank 0, when it makes the run dir)."""
    run_id = _run_id()
    if run_id is not None:
        pointer = Path(runs_dir) / ".torchrun" / run_id
        pointer.parent.mkdir(parents=True, exist_ok=True)
        files.write(pointer, str(run.resolve()) + "\n", "its torchrun pointer")
    return run


def continued(overrides: list[str], compose) -> list[str]:
    """The overrides a restarted worker runs: its own, plus resume=<the job's run dir> when
    torchrun restarted it and that run saved a checkpoint (else it starts anew). resume=auto
    follows the job's own run too: the newest run of the config may be one that finished
    scoring just before the kill, and auto would start a new one beside it."""
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    run_id = _run_id()
    given = [o for o in overrides if o.startswith("resume=")]
    if restarts == 0 or run_id is None or given and given[-1] != "resume=auto":
        return overrides
    overrides = [o for o in overrides if not o.startswith("resume=")]
    pointer = Path(compose(overrides).paths.runs_dir) / ".torchrun" / run_id
    run = Path(pointer.read_text().strip()) if pointer.is_file() else None
    if run is None or not RunDir(run).checkpoint("last").is_file():
        log.info("torchrun restart %d: no checkpoint of this job's run to continue; starting "
                 "anew", restarts)  # fmt: skip
        return overrides
    if os.environ.get("RANK", "0") == "0":
        print(f"torchrun restart {restarts}: continuing {run} from its last checkpoint", flush=True)
    return [*overrides, f"resume={run}"]

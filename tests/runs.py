"""Finding a test's run dirs and reading their TensorBoard events (TensorBoard's own reader)."""

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def run_dirs(root: Path) -> list[Path]:
    """Every run dir under `root` that saved a checkpoint, in name (time) order."""
    return sorted({p.parent.parent for p in root.rglob("checkpoints/last.pt")})


def the_run(root: Path) -> Path:
    """The one run dir under `root` (fails if there are none or several)."""
    (run,) = run_dirs(root)
    return run


def events(run: Path) -> EventAccumulator:
    """All of a run's events (scalars, images, tensors, graphs), loaded."""
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc

"""metrics.json: the best weights' scores per split, where training ended, where the time went."""

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from train.errors import UserError
from train.run.formats import Typed

SPLITS = ("train", "val", "test")


@dataclass
class Metrics(Typed):
    """metrics.json, typed: the best weights' scores per split (at the file's top level, as
    "val": {...}), where training ended, and where the time went."""

    WHAT, FORMAT = "metrics file", 1

    splits: dict[str, dict[str, float]]
    best_step: int | None
    epochs: int
    steps: int
    seed: int
    monitor: str
    skipped_nonfinite: int = 0
    timing: dict | None = None  # not part of the result: reproduce ignores it
    confusion_matrix: list | None = None  # of the last split scored (classifiers)
    format: int = FORMAT

    def to_dict(self) -> dict:
        out = {**self.splits, **{k: v for k, v in asdict(self).items() if k != "splits"}}
        if self.confusion_matrix is None:
            del out["confusion_matrix"]
        return out

    @classmethod
    def read(cls, path: Path) -> "Metrics":
        """The metrics at `path`; anything else refused in one line naming it."""
        try:
            blob = json.loads(path.read_text())
            splits = {k: blob.pop(k) for k in SPLITS if k in blob}
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise UserError(f"{path} is not a readable metrics file ({e}).") from None
        names = {f.name for f in fields(cls)} - {"splits"}
        blob = cls.current(blob, path)
        try:
            return cls(splits=splits, **{k: v for k, v in blob.items() if k in names})
        except TypeError as e:
            raise UserError(f"{path} is not a readable metrics file ({e}).") from None

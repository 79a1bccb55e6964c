"""One scheme for every file a run writes and something reads back: a checkpoint, run.json,
metrics.json, and the data's description inside a checkpoint. Each is a dataclass with a
`format` field, written as its class's FORMAT and read back by one reader, which takes every
format up to FORMAT (an older one upgraded, one step at a time, by the class's UPGRADES) and
refuses any other in one line naming the file: what a newer train wrote is never misread."""

from collections.abc import Callable
from typing import ClassVar

from train.errors import UserError


class Typed:
    """A typed file's format scheme (see the module's docstring); mixed into its dataclass."""

    WHAT: ClassVar[str]  # what the file is, as a refusal names it ("checkpoint", ...)
    FORMAT: ClassVar[int]  # the format this version writes
    # format n -> the same contents in format n + 1 (absent: the layout did not change)
    UPGRADES: ClassVar[dict[int, Callable[[dict], dict]]] = {}
    LEGACY_KEY: ClassVar[str | None] = None  # where files before `format` kept it, if anywhere

    @classmethod
    def current(cls, blob: dict, where) -> dict:
        """`blob` as this version's format, upgraded where it is older; refused in one line
        when it is not a format this version reads. A blob that names none is format 1
        (files written before formats were recorded)."""
        version = blob.get("format", blob.get(cls.LEGACY_KEY, 1) if cls.LEGACY_KEY else 1)
        if type(version) is not int or not 1 <= version <= cls.FORMAT:
            raise UserError(
                f"{where} is a {cls.WHAT} of format {version!r}; this version of train reads "
                f"formats 1 to {cls.FORMAT}. Use the version of train that wrote it (its "
                "run.json names the packages), or a newer one."
            )
        for n in range(version, cls.FORMAT):
            blob = cls.UPGRADES.get(n, dict)(blob)
        blob = {k: v for k, v in blob.items() if k != cls.LEGACY_KEY}
        return {**blob, "format": cls.FORMAT}


# The callables a stored config names whose module moved (run.json and checkpoint format 2 ->
# 3, when train/ was regrouped into rooms): what an older run recorded, as this version names it.
MOVED_TARGETS = {
    **{f"train.data.{n}": f"train.data.sets.{n}" for n in (
        "torchvision_data", "digits", "course_table", "synthetic", "csv", "image_folder")},
    **{f"train.models.{n}": f"train.models.course.{n}" for n in (
        "Linear", "logistic", "softmax", "MLP", "CNN")},
    "train.vision.Vision": "train.models.vision.Vision",
    **{f"train.usercode.{n}": f"train.models.usercode.{n}" for n in (
        "model", "data", "in_process")},
}  # fmt: skip


def targets_moved(config) -> dict:
    """A stored config (plain) with its groups' `_target_`s named as this version names them."""
    if not isinstance(config, dict):
        return config
    out = dict(config)
    for group in ("data", "model"):
        node = out.get(group)
        if isinstance(node, dict) and node.get("_target_") in MOVED_TARGETS:
            out[group] = {**node, "_target_": MOVED_TARGETS[node["_target_"]]}
    return out

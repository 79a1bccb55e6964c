"""DataMeta: the data's description a checkpoint keeps, to rebuild the model and prepare new
inputs with no data at hand."""

from dataclasses import asdict, dataclass, fields

from train.errors import UserError
from train.run.formats import Typed


@dataclass
class DataMeta(Typed):
    """The data's description saved in every checkpoint (as a dict): enough to rebuild the
    model and prepare new inputs exactly as in training, with no data at hand."""

    WHAT, FORMAT = "data description", 2  # 1: before target scaling, tables and layouts
    LEGACY_KEY = "version"  # (what formats 1 and 2 called it)

    task: str
    in_shape: list[int]
    num_outputs: int
    num_classes: int | None
    class_names: list[str] | None
    scale: float  # inputs reach the model as (x / scale - mean) / std
    mean: list[float]
    std: list[float]
    feature_names: list[str] | None = None
    target_mean: list[float] | None = None  # regression outputs are (y - mean) / std
    target_std: list[float] | None = None
    table: dict | None = None  # train.data.tables.TablePrep, as a dict
    layout: dict | None = None  # train.data.folder.Layout, as a dict
    format: int = FORMAT

    @property
    def is_image(self) -> bool:
        return len(self.in_shape) == 3

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def read(cls, d: dict, where) -> "DataMeta":
        """A checkpoint's "data" entry (`where`: the checkpoint), of this format or an older one
        (the keys it lacks: none); another refused in one line."""
        if not isinstance(d, dict):
            raise UserError(f"{where} is malformed: its data description is not a mapping.")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in cls.current(d, f"{where}'s data").items() if k in known})

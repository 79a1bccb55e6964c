"""What every data set becomes: a `Data` with seeded train/val/test splits and what the model
needs to know about them (input shape, task, classes, normalisation constants). The builders
that make one are in `train.data.sets`; a checkpoint keeps its description as a
`train.run.meta.DataMeta`.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from train.run.meta import DataMeta


@dataclass
class TensorSplit:
    x: Tensor  # uint8 images (N, C, H, W) or float32 features (N, F)
    y: Tensor  # int64 class indices (N,) or float32 targets (N, T)

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class FolderSplit:
    dataset: torch.utils.data.Dataset  # yields (uint8 image tensor, class index)
    num_workers: int

    def __len__(self) -> int:
        return len(self.dataset)


Split = TensorSplit | FolderSplit


@dataclass
class Data:
    train: Split
    val: Split | None
    test: Split | None
    task: str  # "classification" or "regression"
    in_shape: tuple[int, ...]
    num_classes: int | None  # None for regression
    class_names: list[str] | None
    # Inputs reach the model as (x / scale - mean) / std, computed on the device.
    scale: float
    mean: Tensor
    std: Tensor
    feature_names: list[str] | None = None  # tables: the model's inputs, in order
    # Regression targets reach the loss as (y - target_mean) / target_std (None: as they are).
    target_mean: Tensor | None = None
    target_std: Tensor | None = None
    table: dict | None = None  # CSV: the TablePrep that made the features (train.tables)
    layout: dict | None = None  # image folders: how files become tensors (train.data.folder.Layout)
    fingerprint: str | None = None  # a checksum of the data (train.data.sets.fingerprint)
    regression_outputs: int | None = None  # a user Dataset's targets per example (usercode)
    origin: dict | None = None  # a user's data code: its file and SHA-256 (usercode)

    @property
    def num_outputs(self) -> int:
        """Model outputs: one logit for two classes (sigmoid), K for K classes, T for T targets."""
        if self.task == "regression" and self.regression_outputs is not None:
            return self.regression_outputs
        if self.task == "regression":  # (tables: tensors)
            return 1 if self.train.y.dim() == 1 else self.train.y.shape[1]
        return 1 if self.num_classes == 2 else self.num_classes

    @property
    def is_image(self) -> bool:
        return len(self.in_shape) == 3

    def meta(self) -> "DataMeta":
        """What a checkpoint needs to rebuild the model and its preprocessing without the data."""
        return DataMeta(
            task=self.task,
            in_shape=list(self.in_shape),
            num_outputs=self.num_outputs,
            num_classes=self.num_classes,
            class_names=self.class_names,
            scale=self.scale,
            mean=self.mean.tolist(),
            std=self.std.tolist(),
            feature_names=self.feature_names,
            target_mean=_list(self.target_mean),
            target_std=_list(self.target_std),
            table=self.table,
            layout=self.layout,
        )


def _list(t: Tensor | None) -> list[float] | None:
    return None if t is None else t.tolist()

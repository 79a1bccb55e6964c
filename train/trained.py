"""A finished run's model and preprocessing, rebuilt from its checkpoint alone (predict, export).

The checkpoint holds the run's resolved config (the model's options) and the data's meta (input
shape, classes, feature names, normalisation), so no model option is typed twice and inputs are
prepared exactly as in training.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from train import checkpoint
from train.batches import Normalizer
from train.errors import UserError
from train.task import Task


@dataclass
class Trained:
    model: nn.Module  # in eval mode, on the CPU
    meta: dict  # the data's: task, in_shape, num_classes, class_names, feature_names, scale, ...
    config: dict  # the run's resolved config
    path: Path  # the checkpoint it came from
    step: int  # the optimizer steps behind those weights

    @property
    def task(self) -> Task:
        return Task(self.meta["task"], self.meta["num_classes"])

    @property
    def is_image(self) -> bool:
        return len(self.meta["in_shape"]) == 3

    def normalize(self, x: Tensor) -> Tensor:
        """Raw inputs (pixels as stored, or feature values) as the model saw them in training."""
        return Normalizer.from_meta(self.meta, x.device)(x)

    @torch.inference_mode()
    def outputs(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """The model's raw outputs for raw inputs `x`, in batches."""
        norm = Normalizer.from_meta(self.meta, x.device)  # once, not per batch
        steps = range(0, len(x), batch_size)
        parts = [self.model(norm(x[i : i + batch_size])) for i in steps]
        return torch.cat(parts) if parts else torch.empty(0)


def load(run: Path, which: str = "best") -> Trained:
    """The run's `which` checkpoint (best or last) in a fresh model of the recorded config."""
    from hydra.utils import instantiate

    if which not in ("best", "last"):
        raise UserError(f"checkpoint={which}: use best or last.")
    path = run / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        raise UserError(
            f"run={run} has no {which} checkpoint ({path} does not exist). Give the directory of "
            "a run that finished at least one epoch, e.g. runs/digits_mlp/<time>."
        )
    blob = checkpoint.load(path)
    meta = blob["data"]
    model = instantiate(
        blob["config"]["model"], in_shape=meta["in_shape"], num_outputs=meta["num_outputs"]
    )
    checkpoint.load_model(model, blob["model"], path)
    return Trained(model.eval(), meta, blob["config"], path, blob["state"]["step"])

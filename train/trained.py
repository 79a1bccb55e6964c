"""A finished run's model and preprocessing, rebuilt from its checkpoint alone (predict, export).

The checkpoint holds the run's resolved config (the model's options) and the data's meta (input
shape, classes, feature names, normalisation), so no model option is typed twice and inputs are
prepared exactly as in training.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from train.data.batches import Normalizer
from train.errors import UserError
from train.fit.task import Task
from train.run import checkpoint
from train.run.meta import DataMeta
from train.run.rundir import RunDir


@dataclass
class Trained:
    model: nn.Module  # in eval mode, on the CPU
    meta: DataMeta  # the data's: task, shapes, classes, features, normalisation, ...
    config: dict  # the run's resolved config
    path: Path  # the checkpoint it came from
    step: int  # the optimizer steps behind those weights
    origin: dict | None = None  # a pretrained file, a user's code (the checkpoint's origin)
    consent: object = None  # train.models.usercode.Consent: the user files the caller named

    def data(self):
        """The run's data, rebuilt from its recorded config (a user's data code: only as a
        file the caller named, unchanged)."""
        from train.config import targets

        return targets.call("data", self.config["data"], self.consent, self.origin)

    @property
    def task(self) -> Task:
        return Task.of(self.meta, self.config["trainer"].get("label_smoothing", 0.0))

    @property
    def is_image(self) -> bool:
        return self.meta.is_image

    def normalize(self, x: Tensor) -> Tensor:
        """Raw inputs (pixels as stored, or feature values) as the model saw them in training."""
        return Normalizer.from_meta(self.meta, x.device)(x)

    def deployable(self) -> nn.Module:
        """The model as exported: regression outputs in the target's own units."""
        task = self.task
        if task.shift is None:
            return self.model
        return Rescaled(self.model, task.shift, task.spread).eval()

    @torch.inference_mode()
    def outputs(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """The model's raw outputs for raw inputs `x`, in batches."""
        norm = Normalizer.from_meta(self.meta, x.device)  # once, not per batch
        steps = range(0, len(x), batch_size)
        parts = [self.model(norm(x[i : i + batch_size])) for i in steps]
        return torch.cat(parts) if parts else torch.empty(0)


class Rescaled(nn.Module):
    """A regression model whose outputs are (y - mean) / std, giving y itself."""

    def __init__(self, model: nn.Module, mean: Tensor, std: Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) * self.std + self.mean


def load(run: Path, which: str = "best", code=(), model=None) -> Trained:
    """The run's `which` checkpoint (best or last) in a fresh model of the recorded config,
    built by `train.targets` (never a callable the record names outside the allowlist). A
    user's model file runs only if `code` names it (unchanged); a model trained from an
    object (train.api) takes its class (or an object of it) as `model`."""
    from train.config import targets
    from train.models import usercode

    if which not in ("best", "last"):
        raise UserError(f"checkpoint={which}: use best or last.")
    path = RunDir(run).checkpoint(which)
    if not path.is_file():
        raise UserError(
            f"run={run} has no {which} checkpoint ({path} does not exist). Give the directory of "
            "a run that finished at least one epoch, e.g. runs/digits_mlp/<time>."
        )
    blob = RunDir(run).read_checkpoint(which)
    meta = DataMeta.read(blob.data, path)
    consent = usercode.Consent(code)
    stored = blob.config["model"]
    if model is None:
        net = targets.call("model", stored, consent, blob.origin, in_shape=meta.in_shape,
                           num_outputs=meta.num_outputs)  # fmt: skip
    elif isinstance(model, type):
        net = usercode.build_object(model, meta.in_shape, meta.num_outputs,
                                    stored.get("args"), None)  # fmt: skip
    else:
        net = model
    checkpoint.load_model(net, blob.model, path)
    return Trained(net.eval(), meta, blob.config, path, blob.state["step"], blob.origin, consent)

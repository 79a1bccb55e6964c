"""What the data asks of the model: the loss, the predictions and the metrics.

Regression: mean squared error, of standardised targets where the data standardised them (the
model then predicts (y - mean) / std), with the loss, MSE, MAE, R^2 and predictions in the
target's own units. Classification: cross entropy (binary cross entropy on one logit for two
classes); accuracy, macro precision and recall, and a confusion matrix. Metrics accumulate on
the device and are read once, at `compute()`.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


class Task:
    def __init__(self, kind: str, num_classes: int | None, target_mean=None, target_std=None,
                 label_smoothing: float = 0.0):  # fmt: skip
        if not 0 <= label_smoothing < 1:
            from train.errors import UserError

            raise UserError(f"trainer.label_smoothing={label_smoothing} is outside [0, 1).")
        self.kind, self.num_classes = kind, num_classes
        self.smoothing = label_smoothing
        self.binary = kind == "classification" and num_classes == 2
        self.shift = None if target_mean is None else torch.as_tensor(target_mean).float()
        self.spread = None if target_std is None else torch.as_tensor(target_std).float()
        # The loss in the target's units: the data builders standardise a single target only.
        self.loss_scale = 1.0 if self.spread is None else float((self.spread**2).mean())

    @classmethod
    def of(cls, data, label_smoothing: float = 0.0) -> "Task":
        """The task of a `Data` or of a checkpoint's `DataMeta`."""
        return cls(data.task, data.num_classes, data.target_mean, data.target_std,
                   label_smoothing)  # fmt: skip

    @property
    def metric_names(self) -> tuple[str, ...]:
        if self.kind == "regression":
            return ("loss", "mse", "mae", "r2")
        return ("loss", "accuracy", "precision", "recall")

    def loss(self, out: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
        """The batch's loss; `reduction="none"`: one per example (regression: per value)."""
        if self.kind == "regression":
            if self.shift is not None:
                y = (y - self.shift.to(y.device)) / self.spread.to(y.device)
            return F.mse_loss(out, y, reduction=reduction)
        if self.binary:
            target = y.to(out.dtype)
            if self.smoothing:
                target = target * (1 - self.smoothing) + 0.5 * self.smoothing
            return F.binary_cross_entropy_with_logits(out.squeeze(1), target, reduction=reduction)
        return F.cross_entropy(out, y, reduction=reduction, label_smoothing=self.smoothing)

    def predict(self, out: Tensor) -> Tensor:
        """Class indices for classification, values in the target's units for regression."""
        if self.kind == "regression":
            if self.shift is not None:
                return out * self.spread.to(out.device) + self.shift.to(out.device)
            return out
        return (out.squeeze(1) > 0).long() if self.binary else out.argmax(1)

    def probability(self, out: Tensor) -> Tensor:
        """Classification: the probability the model gives its predicted class."""
        if self.binary:
            p = torch.sigmoid(out.squeeze(1).float())
            return torch.where(out.squeeze(1) > 0, p, 1 - p)
        return out.float().softmax(1).amax(1)

    def meter(self, device: torch.device) -> "Meter":
        if self.kind == "regression":
            return RegressionMeter(device, self.loss_scale)
        return ClassificationMeter(self.num_classes, device)


class Meter:
    """Sums for a split's metrics, read once at `compute()`; the tensor sums stay on the device."""

    counts = ("n",)  # the integer sums

    def __init__(self, device: torch.device):
        self.device = device
        self.loss_sum = 0.0  # float64: a float, or a device tensor where losses come as tensors
        self.n = 0

    def update(self, task: Task, out: Tensor, y: Tensor, loss: Tensor | float) -> None:
        """Add a batch. `loss` is its mean loss: a float the loop has read already (summed in
        Python: each small kernel costs microseconds between a step's large ones), or a tensor
        (evaluation: summed on the device, no sync per batch)."""
        if isinstance(loss, Tensor):
            loss = loss.detach().double()
        self.loss_sum = self.loss_sum + loss * len(y)
        self.n += len(y)
        self._update(task.predict(out.detach()), y)

    def all_reduce(self) -> None:
        """Sum the meter over torchrun's ranks, in place (a no-op for one process)."""
        from train.system import distributed

        if not distributed.ranks().many:
            return
        self.loss_sum = torch.as_tensor(self.loss_sum, dtype=torch.float64, device=self.device)
        counts = torch.tensor([getattr(self, c) for c in self.counts], device=self.device)
        distributed.sum_([*self.sums_tensors(), counts])
        for c, v in zip(self.counts, counts.tolist(), strict=True):
            setattr(self, c, v)

    def state_dict(self) -> dict:
        """The sums so far: a run stopped mid-epoch resumes its epoch's metrics exactly."""
        return {k: v.cpu() if isinstance(v, Tensor) else v
                for k, v in vars(self).items() if k != "device"}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v.to(self.device) if isinstance(v, Tensor) else v)

    def mean_loss(self) -> float:
        return float(self.loss_sum) / max(self.n, 1)


class ClassificationMeter(Meter):
    def __init__(self, num_classes: int, device: torch.device):
        super().__init__(device)
        self.k = num_classes
        self.confusion = torch.zeros(num_classes * num_classes, device=device, dtype=torch.long)

    def sums_tensors(self) -> list[Tensor]:
        return [self.loss_sum, self.confusion]

    def _update(self, pred: Tensor, y: Tensor) -> None:
        # An indexed add costs the batch, not k^2 as a bincount does (270 us a step at 1,000
        # classes; 6 us either way at 10).
        self.confusion.index_put_((y * self.k + pred,), torch.ones_like(y), accumulate=True)

    def compute(self) -> dict[str, float]:
        cm = self.confusion_matrix().double()
        tp = cm.diag()
        precision = torch.where(cm.sum(0) > 0, tp / cm.sum(0).clamp_min(1), 0.0)
        recall = torch.where(cm.sum(1) > 0, tp / cm.sum(1).clamp_min(1), 0.0)
        return {
            "loss": self.mean_loss(),
            "accuracy": (tp.sum() / max(self.n, 1)).item(),
            "precision": precision.mean().item(),
            "recall": recall.mean().item(),
        }

    def confusion_matrix(self) -> Tensor:
        """Rows: true class; columns: predicted class."""
        return self.confusion.view(self.k, self.k).cpu()


class RegressionMeter(Meter):
    counts = ("n", "count")

    def __init__(self, device: torch.device, loss_scale: float = 1.0):
        super().__init__(device)
        self.loss_scale = loss_scale  # standardised targets: the loss back in their units
        # sum of squared errors, absolute errors, targets, squared targets; element count
        self.sums = torch.zeros(4, device=device, dtype=torch.float64)
        self.count = 0

    def sums_tensors(self) -> list[Tensor]:
        return [self.loss_sum, self.sums]

    def _update(self, pred: Tensor, y: Tensor) -> None:
        err, y = (pred.double() - y.double()), y.double()
        self.sums += torch.stack([(err**2).sum(), err.abs().sum(), y.sum(), (y**2).sum()])
        self.count += y.numel()

    def compute(self) -> dict[str, float]:
        sse, sae, sy, syy = self.sums.tolist()
        n = max(self.count, 1)
        sst = syy - sy * sy / n
        return {
            "loss": self.mean_loss() * self.loss_scale,
            "mse": sse / n,
            "mae": sae / n,
            "r2": 1 - sse / sst if sst > 0 else float("nan"),
        }

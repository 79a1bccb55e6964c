"""The course's models, from linear regression to CNNs.

Every model takes `in_shape` (one example's shape) and `num_outputs` from the data at
instantiate time, so sizes are never typed twice, and returns raw scores (logits or values):
the loss owns the sigmoid/softmax.
"""

import math

import torch
from torch import nn

from train.errors import UserError

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class Linear(nn.Module):
    """y = x W^T + b on the flattened input: linear, logistic and softmax regression."""

    def __init__(self, in_shape, num_outputs: int, kind: str = "any"):
        super().__init__()
        self.kind = kind  # the data it is for: any, binary or multiclass (see `check_fits`)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(math.prod(in_shape), num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.flatten(x))


def logistic(in_shape, num_outputs: int) -> Linear:
    """Logistic regression: one logit (a sigmoid in the loss), for two classes."""
    return Linear(in_shape, num_outputs, kind="binary")


def softmax(in_shape, num_outputs: int) -> Linear:
    """Softmax regression: one logit per class (a softmax in the loss), for three or more."""
    return Linear(in_shape, num_outputs, kind="multiclass")


SUGGEST = {
    "regression": "linear (or mlp)",
    "binary": "logistic (or mlp)",
    "multiclass": "softmax (or mlp, cnn)",
}


def check_fits(model: nn.Module, task: str, num_classes: int | None) -> None:
    """Refuse a model made for another kind of data, e.g. logistic regression on 10 classes."""
    kind = getattr(model, "kind", "any")
    actual = task if task == "regression" else "binary" if num_classes == 2 else "multiclass"
    if kind not in ("any", actual):
        name = {"binary": "logistic", "multiclass": "softmax"}[kind]
        what = "a regression target" if actual == "regression" else f"{num_classes} classes"
        raise UserError(
            f"model={name} is for {kind} classification, but this data has {what}. "
            f"Use model={SUGGEST[actual]}."
        )


class MLP(nn.Sequential):
    """Fully connected layers: [Linear, (BatchNorm), activation, (Dropout)] per hidden size."""

    def __init__(
        self, in_shape, num_outputs: int, hidden, activation="relu", dropout=0.0, batch_norm=False
    ):
        act = _choice("model.activation", activation, ACTIVATIONS)
        _check_dropout(dropout)
        if any(h < 1 for h in hidden):
            raise UserError(f"model.hidden={list(hidden)}: every hidden size must be at least 1.")
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(in_shape)
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(act())
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_outputs))
        super().__init__(*layers)


class CNN(nn.Module):
    """Conv blocks [Conv, (BatchNorm), ReLU] per channel count, a 2x2 pool after every
    `pool_every`-th block and the last, then a small MLP head."""

    def __init__(
        self,
        in_shape,
        num_outputs: int,
        channels,
        kernel_size=3,
        padding="same",
        pool="max",
        pool_every=1,
        dropout=0.25,
        batch_norm=False,
        head=128,
    ):
        super().__init__()
        if len(in_shape) != 3:
            raise UserError(
                f"model=cnn needs image data shaped (channels, height, width); this data's "
                f"examples are shaped {tuple(in_shape)}. Use model=mlp for tables."
            )
        pool_cls = _choice("model.pool", pool, POOLS)
        _check_dropout(dropout)
        if kernel_size < 1 or head < 1 or pool_every < 1 or any(c < 1 for c in channels):
            raise UserError(
                f"model.kernel_size={kernel_size}, model.head={head}, model.pool_every="
                f"{pool_every} and model.channels={list(channels)} must all be at least 1."
            )
        valid = _choice("model.padding", padding, {"same": False, "valid": True})
        trim = kernel_size - 1 if valid else 0
        blocks: list[nn.Module] = []
        c_in, (h, w) = in_shape[0], in_shape[1:]
        for i, c in enumerate(channels, 1):
            blocks.append(nn.Conv2d(c_in, c, kernel_size, padding=0 if valid else kernel_size // 2))
            if batch_norm:
                blocks.append(nn.BatchNorm2d(c))
            blocks.append(nn.ReLU())
            c_in, h, w = c, h - trim, w - trim
            if i % pool_every == 0 or i == len(channels):
                blocks.append(pool_cls(2))
                h, w = h // 2, w // 2
            if h < 1 or w < 1:
                raise UserError(
                    f"model.channels={list(channels)} with model.padding={_name(padding)} and "
                    f"model.pool_every={pool_every} shrinks {tuple(in_shape[1:])} inputs to "
                    "nothing; use fewer conv blocks, padding same or a larger pool_every."
                )
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c_in * h * w, head),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(head, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _name(value) -> str:
    return getattr(value, "value", value)  # an Enum from the config schema, or a plain string


def _choice(key: str, value, options: dict):
    name = _name(value)
    if name not in options:
        raise UserError(f"{key}={name!r} is not one of {list(options)}.")
    return options[name]


def _check_dropout(p: float) -> None:
    if not 0 <= p < 1:
        raise UserError(f"model.dropout={p} is outside [0, 1).")

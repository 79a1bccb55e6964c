"""Data sets: each builder returns a `Data` with seeded train/val/test splits and what the model
needs to know about them (input shape, task, classes, normalisation constants).

The built-in sets are decoded once into tensors (uint8 for images) and kept in memory; only
`image_folder` stays on disk and is read through a DataLoader.
"""

import csv as csvlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from train.errors import UserError

TORCHVISION_SETS = ("MNIST", "FashionMNIST", "CIFAR10")


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
    batch_size: int
    eval_batch_size: int
    feature_names: list[str] | None = None  # tables: the columns the model reads, in order

    @property
    def num_outputs(self) -> int:
        """Model outputs: one logit for two classes (sigmoid), K for K classes, T for T targets."""
        if self.task == "regression":  # only tables are regression data: always tensors
            return 1 if self.train.y.dim() == 1 else self.train.y.shape[1]
        return 1 if self.num_classes == 2 else self.num_classes

    @property
    def is_image(self) -> bool:
        return len(self.in_shape) == 3

    def meta(self) -> dict:
        """What a checkpoint needs to rebuild the model and its preprocessing without the data."""
        return {
            "task": self.task,
            "in_shape": list(self.in_shape),
            "num_outputs": self.num_outputs,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "scale": self.scale,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "feature_names": self.feature_names,
        }


# --- builders: the `_target_`s of conf/data/*.yaml --------------------------------------------


def torchvision_data(name: str, root: str, download: bool, **common) -> Data:
    """MNIST, FashionMNIST or CIFAR10 from torchvision, decoded once and cached as tensors."""
    if name not in TORCHVISION_SETS:
        raise UserError(f"data.name={name!r} is not supported; use one of {TORCHVISION_SETS}.")
    train, classes = _torchvision_split(name, root, download, train=True)
    test, _ = _torchvision_split(name, root, download, train=False)
    return _build(train, test, "classification", classes, scale=255.0, **common)


def digits(root: str, **common) -> Data:
    """The real 8x8 handwritten digits scikit-learn ships in its wheel (1,797 images, offline)."""
    cache = Path(root) / "digits" / "tensors.pt"
    if cache.is_file():
        blob = torch.load(cache, weights_only=True)
    else:
        from sklearn.datasets import load_digits  # lazily: importing sklearn costs seconds

        bunch = load_digits()
        blob = {
            "x": torch.from_numpy(bunch.images).to(torch.uint8).unsqueeze(1),  # pixels 0..16
            "y": torch.from_numpy(bunch.target).long(),
            "classes": [str(c) for c in bunch.target_names],
        }
        _save_cache(cache, blob)
    split = TensorSplit(blob["x"], blob["y"])
    return _build(split, None, "classification", blob["classes"], scale=16.0, **common)


# The course's tiny tabular examples: (features, targets, task).
COURSE_TABLES = {
    "linear_toy": ([[1], [2], [3]], [[2], [4], [6]], "regression"),
    "quiz_scores": (
        [[73, 80, 75], [93, 88, 93], [89, 91, 90], [96, 98, 100], [73, 66, 70]],
        [[152], [185], [180], [196], [142]],
        "regression",
    ),
    "logistic_points": (
        [[1, 2], [2, 3], [3, 1], [4, 3], [5, 3], [6, 2]],
        [0, 0, 0, 1, 1, 1],
        "classification",
    ),
    "softmax_points": (
        [[1, 2, 1, 1], [2, 1, 3, 2], [3, 1, 3, 4], [4, 1, 5, 5],
         [1, 7, 5, 5], [1, 2, 5, 6], [1, 6, 6, 6], [1, 7, 7, 7]],
        [2, 2, 2, 1, 1, 1, 0, 0],
        "classification",
    ),
}  # fmt: skip


def course_table(name: str, **common) -> Data:
    """One of the course's tiny tabular examples, by name."""
    if name not in COURSE_TABLES:
        raise UserError(
            f"data.name={name!r} is not a course table; use one of {list(COURSE_TABLES)}."
        )
    x, y, task = COURSE_TABLES[name]
    x = torch.tensor(x, dtype=torch.float32)
    if task == "regression":
        split, names = TensorSplit(x, torch.tensor(y, dtype=torch.float32)), None
    else:
        split = TensorSplit(x, torch.tensor(y, dtype=torch.long))
        names = [str(c) for c in range(max(y) + 1)]
    return _build(split, None, task, names, scale=1.0, **common)


def synthetic(num_samples: int, shape: list[int], num_classes: int, seed: int, **common) -> Data:
    """Generated, learnable data of any shape: uint8 images for 3-D shapes, features otherwise.

    Classes are noisy copies of one random prototype each; `num_classes=0` gives a linear
    regression target instead.
    """
    if num_samples < 1 or any(s < 1 for s in shape) or num_classes < 0 or num_classes == 1:
        raise UserError(
            f"synthetic data needs num_samples >= 1 (got {num_samples}), every shape entry >= 1 "
            f"(got {list(shape)}) and num_classes 0 (regression) or >= 2 (got {num_classes})."
        )
    g = torch.Generator().manual_seed(seed)
    image = len(shape) == 3
    if num_classes == 0:
        x = torch.randn(num_samples, *shape, generator=g)
        w = torch.randn(math.prod(shape), 1, generator=g)
        y = x.flatten(1) @ w + 0.1 * torch.randn(num_samples, 1, generator=g)
        task, names = "regression", None
    else:
        y = torch.randint(num_classes, (num_samples,), generator=g)
        protos = torch.rand(num_classes, *shape, generator=g)
        x = torch.randn(num_samples, *shape, generator=g).mul_(0.35).add_(protos[y])  # in place:
        task, names = "classification", [str(c) for c in range(num_classes)]  # (fast start-up)
    scale = 1.0
    if image and num_classes > 0:
        x, scale = x.clamp_(0, 1).mul_(255).round_().to(torch.uint8), 255.0
    return _build(TensorSplit(x, y), None, task, names, scale=scale, **common)


def csv(path: str, target: str, task, **common) -> Data:
    """A user's CSV file with a header: numeric feature columns and one target column."""
    task = getattr(task, "value", task)
    header, rows = read_csv(Path(path))
    if target not in header:
        raise UserError(
            f"data.target={target!r} is not a column of {path}; its columns are {header}."
        )
    t = header.index(target)
    features = [c for i, c in enumerate(header) if i != t]
    x = torch.tensor([_numbers(path, r, i, header, t) for i, r in enumerate(rows, 2)])
    labels = [r[t].strip() for r in rows]
    if task == "regression":
        y = torch.tensor([[parse_number(path, v, n, target)] for n, v in enumerate(labels, 2)])
        names = None
    else:
        names = sorted(set(labels), key=_natural)
        index = {c: i for i, c in enumerate(names)}
        y = torch.tensor([index[v] for v in labels], dtype=torch.long)
    data = _build(TensorSplit(x, y), None, task, names, scale=1.0, **common)
    data.feature_names = features
    return data


def image_folder(
    path: str, image_size: list[int], grayscale: bool, num_workers: int, **common
) -> Data:
    """Images on disk in torchvision's ImageFolder layout (one folder per class).

    `path/train` and `path/test` folders, when both exist, are the train and test splits.
    """
    from torchvision import datasets
    from torchvision.transforms import v2

    root = Path(path)
    if not root.is_dir():
        raise UserError(
            f"data.path={path} is not a directory. image_folder expects one folder per class "
            "(path/cat/1.png, path/dog/2.png, ...), optionally under path/train and path/test."
        )
    steps = [v2.PILToTensor(), v2.Resize(list(image_size), antialias=True)]
    if grayscale:
        steps.insert(0, v2.Grayscale())
    transform = v2.Compose(steps)
    has_test = (root / "train").is_dir() and (root / "test").is_dir()
    try:
        train = datasets.ImageFolder(root / "train" if has_test else root, transform=transform)
        test = datasets.ImageFolder(root / "test", transform=transform) if has_test else None
    except (FileNotFoundError, RuntimeError) as e:
        raise UserError(f"data.path={path} is not a usable image folder: {e}") from None
    if test is not None and test.classes != train.classes:
        raise UserError(
            f"{root}/test has classes {test.classes}, {root}/train has {train.classes}."
        )
    return _build(
        FolderSplit(train, num_workers),
        FolderSplit(test, num_workers) if test is not None else None,
        "classification", train.classes, scale=255.0, **common,
    )  # fmt: skip


# --- shared -----------------------------------------------------------------------------------


def _build(
    train: Split,
    test: Split | None,
    task: str,
    class_names: list[str] | None,
    *,
    scale: float,
    batch_size: int,
    eval_batch_size: int,
    val_fraction: float,
    test_fraction: float,
    split_seed: int,
    normalize: bool,
) -> Data:
    _check_sizes(batch_size, eval_batch_size, val_fraction, test_fraction)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(split_seed))
    n_test = round(len(train) * test_fraction) if test is None else 0
    n_val = round(len(train) * val_fraction)
    if n_test + n_val >= len(train):
        raise UserError(
            f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} leave no "
            f"training examples out of {len(train)}; lower them."
        )
    if n_test:
        test = _subset(train, order[:n_test])
    val = _subset(train, order[n_test : n_test + n_val]) if n_val else None
    train = _subset(train, order[n_test + n_val :])
    if task == "classification" and (class_names is None or len(class_names) < 2):
        raise UserError(f"classification needs at least 2 classes; the data has {class_names}.")
    sample = train.x[:1] if isinstance(train, TensorSplit) else train.dataset[0][0][None]
    mean, std = _moments(train, scale) if normalize else (None, None)
    if mean is None:
        mean, std = torch.zeros(sample.shape[1]), torch.ones(sample.shape[1])
    return Data(
        train,
        val,
        test,
        task,
        tuple(sample.shape[1:]),
        len(class_names) if task == "classification" else None,
        class_names,
        scale,
        mean,
        std,
        batch_size,
        eval_batch_size,
    )


def _check_sizes(batch_size, eval_batch_size, val_fraction, test_fraction) -> None:
    if batch_size < 1 or eval_batch_size < 1:
        raise UserError(
            f"data.batch_size={batch_size} and data.eval_batch_size={eval_batch_size} must both "
            "be at least 1."
        )
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= f < 1:
            raise UserError(f"data.{name}={f} is outside [0, 1); use e.g. data.{name}=0.1.")


def _subset(split: Split, idx: Tensor) -> Split:
    if isinstance(split, TensorSplit):
        return TensorSplit(split.x[idx], split.y[idx])
    return FolderSplit(torch.utils.data.Subset(split.dataset, idx.tolist()), split.num_workers)


def _moments(split: Split, scale: float) -> tuple[Tensor, Tensor]:
    """Per-channel (images) or per-feature (tables) mean and std of the training split."""
    if isinstance(split, TensorSplit) and split.x.dtype == torch.uint8 and len(split) > 1:
        # Exact, from each channel's histogram of its 256 values: no float copy of the whole set
        # (600 MB for CIFAR-10), and 5x faster on 60,000 MNIST images.
        counts = torch.stack([torch.bincount(split.x[:, c].reshape(-1), minlength=256)
                              for c in range(split.x.shape[1])]).double()  # fmt: skip
        values = torch.arange(256, dtype=torch.float64) / scale
        n = counts.sum(1)
        mean = counts @ values / n
        var = (counts @ values**2 - n * mean**2) / (n - 1)  # unbiased, as Tensor.std
        mean, std = mean.float(), var.clamp_min(0).sqrt().float()
    elif isinstance(split, TensorSplit):
        x = split.x.float() / scale
        dims = [0, 2, 3] if x.dim() == 4 else [0]
        mean, std = x.mean(dims), x.std(dims) if len(x) > 1 else torch.ones(x.shape[1])
    else:
        loader = torch.utils.data.DataLoader(
            split.dataset, batch_size=256, num_workers=split.num_workers
        )
        total, sq, n = 0.0, 0.0, 0
        for xb, _ in loader:
            xb = xb.double() / scale
            total, sq, n = (
                total + xb.sum([0, 2, 3]),
                sq + (xb**2).sum([0, 2, 3]),
                n + xb[:, 0].numel(),
            )
        mean = (total / n).float()
        std = (sq / n - (total / n) ** 2).clamp_min(0).sqrt().float()
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def _torchvision_split(name: str, root: str, download: bool, train: bool):
    part = "train" if train else "test"
    cache = Path(root) / name / f"tensors-{part}.pt"
    if cache.is_file():
        blob = torch.load(cache, weights_only=True)
        return TensorSplit(blob["x"], blob["y"]), blob["classes"]
    from torchvision import datasets  # lazily: importing torchvision costs seconds

    cls = getattr(datasets, name)
    try:
        ds = cls(root, train=train, download=download)
    except (RuntimeError, OSError) as e:  # not found, failed checksum, no network, proxy, DNS
        where, e = Path(root).resolve(), " ".join(str(e).split())  # one paragraph
        if download:
            raise UserError(
                f"could not download {name} into {where} ({e}). With no network, fetch it once "
                f"where there is one (`make data DATA={name.lower()}`) and copy the data dir, "
                "or train offline with data=digits."
            ) from None
        raise UserError(
            f"{name} ({part} split) is not in {where} ({e}) and data.download is false. Run "
            f"once with data.download=true where there is network (or `make data "
            f"DATA={name.lower()}`), or train offline with data=digits."
        ) from None
    x = torch.as_tensor(ds.data)
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)  # -> (N, C, H, W)
    split = TensorSplit(x.contiguous(), torch.as_tensor(ds.targets, dtype=torch.long))
    _save_cache(cache, {"x": split.x, "y": split.y, "classes": list(ds.classes)})
    return split, list(ds.classes)


def _save_cache(path: Path, blob: dict) -> None:
    """Best effort: a read-only data volume just means decoding again next time."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(blob, tmp)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with path.open(newline="") as f:
            rows = [r for r in csvlib.reader(f) if r]
    except OSError as e:
        raise UserError(f"{path} cannot be read: {e.strerror or e}.") from None
    if len(rows) < 2:
        raise UserError(f"{path} needs a header row and at least one data row.")
    header = [h.strip() for h in rows[0]]
    for n, r in enumerate(rows[1:], 2):
        if len(r) != len(header):
            raise UserError(f"{path} line {n} has {len(r)} fields; the header has {len(header)}.")
    return header, rows[1:]


def _numbers(path, row, line, header, skip) -> list[float]:
    return [parse_number(path, v, line, header[i]) for i, v in enumerate(row) if i != skip]


def parse_number(path, value: str, line: int, column: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is None and value.strip():
        raise UserError(
            f"{path} line {line}, column {column!r}: {value!r} is not a number. Feature columns "
            "(and a regression target) must be numeric; encode categories as numbers first."
        )
    if number is None or not math.isfinite(number):
        raise UserError(
            f"{path} line {line}, column {column!r}: {value!r} is missing or not finite. Fill "
            "or drop such rows first: one NaN makes every loss NaN."
        )
    return number


def _natural(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)

"""The data sets: each builder (the `_target_`s of conf/data/*.yaml) returns a `train.data.Data`.

The built-in sets are decoded once into tensors (uint8 for images) and kept in memory, as is an
image folder that fits; a larger folder stays on disk and is read through a DataLoader. CSV
files are read by `train.data.tables`, image files by `train.data.images` and `train.data.folder`.
"""

import contextlib
import json
import logging
import math
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor

from train.data import Data, FolderSplit, Split, TensorSplit
from train.data.cache import load_cache, save_cache
from train.errors import UserError

log = logging.getLogger("train")

TORCHVISION_SETS = ("MNIST", "FashionMNIST", "CIFAR10")
OPTIONS = {"MNIST": "mnist", "FashionMNIST": "fashion_mnist", "CIFAR10": "cifar10"}  # (data=)


# --- builders: the `_target_`s of conf/data/*.yaml --------------------------------------------


def torchvision_data(name: str, root: str, download: bool, **common) -> Data:
    """MNIST, FashionMNIST or CIFAR10 from torchvision, decoded once and cached as tensors."""
    if name not in TORCHVISION_SETS:
        raise UserError(f"data.name={name!r} is not supported; use one of {TORCHVISION_SETS}.")
    train, classes, a = _torchvision_split(name, root, download, train=True)
    test, _, b = _torchvision_split(name, root, download, train=False)
    data = _build(train, test, "classification", classes, scale=255.0, **common)
    data.fingerprint = fingerprint(a, b)
    return data


def digits(root: str, **common) -> Data:
    """The real 8x8 handwritten digits scikit-learn ships in its wheel (1,797 images, offline)."""
    cache = Path(root) / "digits" / "tensors.pt"
    blob = load_cache(cache)
    if blob is None:
        from sklearn.datasets import load_digits  # lazily: importing sklearn costs seconds

        bunch = load_digits()
        blob = {
            "x": torch.from_numpy(bunch.images).to(torch.uint8).unsqueeze(1),  # pixels 0..16
            "y": torch.from_numpy(bunch.target).long(),
            "classes": [str(c) for c in bunch.target_names],
        }
        blob["sha256"] = save_cache(cache, blob)
    split = TensorSplit(blob["x"], blob["y"])
    data = _build(split, None, "classification", blob["classes"], scale=16.0, **common)
    data.fingerprint = fingerprint(blob["sha256"])
    return data


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
    data = _build(split, None, task, names, scale=1.0, **common)
    data.fingerprint = fingerprint(_digest(split))
    return data


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
    data = _build(TensorSplit(x, y), None, task, names, scale=scale, **common)
    data.fingerprint = fingerprint(_digest(TensorSplit(x, y)))
    return data


def csv(path: str, target, task, delimiter: str | None, decimal: str | None,
        encoding: str, missing: str, drop_columns: list[str], **common) -> Data:  # fmt: skip
    """A user's CSV file with a header: feature columns (numbers, or text: one-hot encoded)
    and a target column (`task` auto, classification or regression), or several numeric
    ones (a regression with one output each)."""
    from train.data import tables

    _check_sizes(**common)
    missing = getattr(missing, "value", missing)  # (an Enum from the config schema)
    file = Path(path)
    frame, dec = tables.read(file, delimiter, decimal, encoding)
    columns = list(frame.columns)
    targets = tables.target_columns(target, columns, file)
    if unknown := [c for c in drop_columns if c not in columns]:
        raise UserError(f"data.drop_columns: {unknown} not among the columns of {path}, which "
                        f"are {columns}.")  # fmt: skip
    features = [c for c in columns if c not in targets and c not in drop_columns]
    frame = tables.handle_missing(frame, targets, "drop" if missing == "mean" else missing, file,
                                  "no target")  # fmt: skip
    frame = tables.handle_missing(frame, features, missing, file, "features")
    kind = getattr(task, "value", task)
    y = tables.targets(frame, targets, kind, file, dec)
    log.info("data.task=%s: %s%s", kind, y.task, f", since the target {y.reason}" if y.reason
             else "")  # fmt: skip
    rows = split_rows(len(frame), common["val_fraction"], common["test_fraction"],
                      common["split_seed"])  # fmt: skip
    reading = {"delimiter": delimiter, "decimal": decimal, "encoding": encoding}
    prep = tables.TablePrep.fit(frame, features, rows[0].numpy(), missing, file, dec, reading,
                                drop_columns)  # fmt: skip
    x = torch.from_numpy(prep.transform(frame, file, dec))
    if kind == "auto":  # (after the cells are checked: a bad cell is the first thing to fix)
        tables.learnable(y, file)
    labels = torch.from_numpy(y.values)
    labels = labels[:, None] if y.task == "regression" and labels.dim() == 1 else labels
    train, val, test = (TensorSplit(x[r], labels[r]) if len(r) else None for r in rows)
    data = _finish(train, val, test, y.task, y.class_names, scale=1.0, **common)
    data.feature_names, data.table = prep.feature_names, prep.to_dict()
    data.fingerprint = fingerprint(file_digest(file))
    return data


def image_folder(path: str, image_size, grayscale, background: str, skip_bad_files: bool,
                 in_memory, num_workers: int, cache_dir: str, **common) -> Data:  # fmt: skip
    """Images on disk in torchvision's ImageFolder layout (one folder per class), every file
    checked first; channels and size from the images unless `grayscale` / `image_size` say.

    `path/train` and `path/test` folders, when both exist, are the train and test splits.
    """
    from train.data import folder

    _check_sizes(**common)
    background = getattr(background, "value", background)  # (an Enum from the config schema)
    if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
        raise UserError(f"data.image_size={list(image_size)} must be [height, width], both at "
                        "least 1 (or null: the images' own size).")  # fmt: skip
    if background not in ("black", "white"):
        raise UserError(f"data.background={background!r}: use black or white.")
    root = Path(path)
    cache = folder.cache_for(cache_dir, root)
    listings = [x for x in folder.find(root) if x is not None]
    checked = []
    for listing in listings:
        probes = folder.check(listing.files, cache, background)
        checked.append((folder.refuse_or_skip(listing, probes, skip_bad_files),
                        [p for p in probes if not p.error]))  # fmt: skip
    lay = folder.layout([p for _, ps in checked for p in ps], image_size, grayscale, background)
    total = sum(len(listing.files) for listing, _ in checked)
    memory = folder.fits_in_memory(total, lay) if in_memory is None else in_memory
    splits = []
    for (listing, _), name in zip(checked, ("train", "test"), strict=False):
        labels = torch.tensor(listing.labels, dtype=torch.long)
        if memory:
            splits.append(TensorSplit(folder.decode(listing, lay, cache, name), labels))
        else:
            splits.append(FolderSplit(folder.FolderDataset(listing, lay), num_workers))
    where = "decoded into memory" if memory else f"read from disk by {num_workers} worker(s)"
    log.info("image folder: %s images, %s, %dx%d, %s", f"{total:,}",
             "grayscale" if lay.channels == 1 else "RGB", lay.width, lay.height, where)  # fmt: skip
    data = _build(splits[0], splits[1] if len(splits) > 1 else None, "classification",
                  checked[0][0].classes, scale=255.0, **common)  # fmt: skip
    data.layout = asdict(lay)
    data.fingerprint = fingerprint(json.dumps(data.layout), *(
        f"{f.relative_to(root)}:{p.sha256}" for listing, probes in checked
        for f, p in zip(listing.files, probes, strict=True)))  # fmt: skip
    return data


# --- shared -----------------------------------------------------------------------------------


def _digest(split: TensorSplit) -> str:
    from train.run import checkpoint

    return checkpoint.digest({"x": split.x, "y": split.y})


def split_rows(n: int, val_fraction: float, test_fraction: float, split_seed: int):
    """Positions of the train, val and test rows of n examples: a permutation seeded by
    `split_seed` alone, so every run is scored on the same examples."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    if n_test + n_val >= n:
        raise UserError(
            f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} leave no "
            f"training examples out of {n}; lower them."
        )
    return order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test]


def _build(train: Split, test: Split | None, task: str, class_names: list[str] | None, *,
           scale: float, **common) -> Data:  # fmt: skip
    """Split `train` into train/val (and test, when the set has none of its own); describe."""
    _check_sizes(**common)
    kept, val_rows, test_rows = split_rows(len(train), common["val_fraction"],
                                           common["test_fraction"] if test is None else 0.0,
                                           common["split_seed"])  # fmt: skip
    if len(test_rows):
        test = _subset(train, test_rows)
    val = _subset(train, val_rows) if len(val_rows) else None
    return _finish(_subset(train, kept), val, test, task, class_names, scale=scale, **common)


def _finish(train: Split, val: Split | None, test: Split | None, task: str,
            class_names: list[str] | None, *, scale: float, normalize: bool,
            **_split_and_loader) -> Data:  # fmt: skip
    """The `Data` of ready splits: shapes, classes, and the training split's statistics.
    (The data group's batch sizes are the loader's, read by train.build, not data's.)"""
    if task == "classification" and (class_names is None or len(class_names) < 2):
        raise UserError(f"classification needs at least 2 classes; the data has {class_names}.")
    sample = train.x[:1] if isinstance(train, TensorSplit) else train.dataset[0][0][None]
    mean, std = _moments(train, scale) if normalize else (None, None)
    if mean is None:
        mean, std = torch.zeros(sample.shape[1]), torch.ones(sample.shape[1])
    data = Data(train, val, test, task, tuple(sample.shape[1:]),
                len(class_names) if task == "classification" else None, class_names, scale, mean,
                std)  # fmt: skip
    if task == "regression" and normalize:  # the loss sees standardised targets; every metric,
        y = train.y.double()  # prediction and export stays in the target's own units
        data.target_mean = y.mean(0).float()
        spread = y.std(0) if len(y) > 1 else torch.ones(y.shape[1:], dtype=torch.float64)
        data.target_std = torch.where(spread > 0, spread, 1.0).float()
    return data


def _check_sizes(val_fraction, test_fraction, **_) -> None:
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
    blob = load_cache(cache)
    if blob is not None:
        return TensorSplit(blob["x"], blob["y"]), blob["classes"], blob["sha256"]
    from torchvision import datasets  # lazily: importing torchvision costs seconds

    cls = getattr(datasets, name)
    made = [d for d in (Path(root) / name / "raw", Path(root) / name, Path(root)) if not d.exists()]
    try:
        ds = cls(root, train=train, download=download)
    except (RuntimeError, OSError) as e:  # not found, failed checksum, no network, proxy, DNS
        for d in made:  # the empty folders torchvision made for the download: not left behind
            with contextlib.suppress(OSError):
                d.rmdir()
        where, option = Path(root).resolve(), OPTIONS[name]
        e = " ".join(str(e).replace("You can use download=True to download it", "").split())
        if download:
            raise UserError(
                f"could not download {name} into {where} ({e.strip(' .')}). With no network, "
                f"fetch it once where there is one (`make data DATA={option}`, or python -m "
                f"train.fetch data={option}) and copy the data dir, or train offline with "
                "data=digits."
            ) from None
        raise UserError(
            f"{name} ({part} split) is not in {where} ({e.strip(' .')}) and data.download is "
            f"false. Run once with data.download=true where there is network (or `make data "
            f"DATA={option}`, or python -m train.fetch data={option}), or train offline with "
            "data=digits."
        ) from None
    x = torch.as_tensor(ds.data)
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)  # -> (N, C, H, W)
    split = TensorSplit(x.contiguous(), torch.as_tensor(ds.targets, dtype=torch.long))
    digest = save_cache(cache, {"x": split.x, "y": split.y, "classes": list(ds.classes)})
    return split, list(ds.classes), digest


def fingerprint(*parts: str) -> str:
    """One SHA-256 for the data a run trained on, from its parts' checksums (recorded in
    run.json: train.reproduce says "the data changed" when a re-run's differs)."""
    import hashlib

    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def file_digest(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()

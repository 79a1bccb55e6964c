"""Data builders: the torchvision sets from files in their real formats, the offline and tiny
sets, CSV and image folders; seeded, disjoint splits; clear errors for missing or bad data."""

import numpy as np
import pytest
import torch
from PIL import Image

from train.data import sets
from train.data.batches import Batches, Normalizer, bounds, epoch_order
from train.errors import UserError

COMMON = dict(
    batch_size=16,
    eval_batch_size=64,
    val_fraction=0.1,
    test_fraction=0.0,
    split_seed=0,
    normalize=True,
)
# The CSV and image folder options as conf/data/csv.yaml and image_folder.yaml set them.
CSV = dict(task="auto", delimiter=None, decimal=None, encoding="utf-8", missing="error",
           drop_columns=[])  # fmt: skip


def folder_options(tmp_path, **kw):
    return {**dict(image_size=None, grayscale=None, background="white", skip_bad_files=False,
                   in_memory=None, num_workers=0, cache_dir=str(tmp_path / "cache")),
            **kw}  # fmt: skip


@pytest.mark.parametrize(
    "name, shape, n_train, n_test",
    [
        ("MNIST", (1, 28, 28), 300, 100),
        ("FashionMNIST", (1, 28, 28), 300, 100),
        ("CIFAR10", (3, 32, 32), 300, 60),
    ],
)
def test_torchvision_sets_read_real_formats(data_dir, tmp_path, name, shape, n_train, n_test):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(data_dir, root)
    first = sets.torchvision_data(name, str(root), download=False, **COMMON)
    assert (
        first.in_shape == shape and first.num_classes == 10 and first.train.x.dtype == torch.uint8
    )
    assert len(first.train) + len(first.val) == n_train and len(first.test) == n_test
    # Decoded once: the tensors are cached under the data dir and read back identically.
    assert (root / name / "tensors-train.pt").is_file()
    again = sets.torchvision_data(name, str(root), download=False, **COMMON)
    assert torch.equal(first.train.x, again.train.x) and torch.equal(first.test.y, again.test.y)


def test_missing_torchvision_set_names_the_path(tmp_path):
    with pytest.raises(UserError) as e:
        sets.torchvision_data("MNIST", str(tmp_path / "empty"), download=False, **COMMON)
    assert str(tmp_path / "empty") in e.value.message
    assert "data=digits" in e.value.message and "data.download=true" in e.value.message


def test_digits_is_the_real_data_and_offline(tmp_path):
    d = sets.digits(str(tmp_path), **{**COMMON, "test_fraction": 0.2})
    assert len(d.train) + len(d.val) + len(d.test) == 1797
    assert d.in_shape == (1, 8, 8) and d.class_names == [str(i) for i in range(10)]
    assert int(d.train.x.max()) == 16  # sklearn's digits are 0..16 intensities


def test_cached_digits_are_identical_to_sklearns(tmp_path):
    kw = {**COMMON, "val_fraction": 0.0}
    fresh, cached = sets.digits(str(tmp_path), **kw), sets.digits(str(tmp_path), **kw)
    assert (tmp_path / "digits" / "tensors.pt").is_file()
    assert torch.equal(fresh.train.x, cached.train.x)


def test_splits_are_seeded_and_disjoint(tmp_path):
    kw = {**COMMON, "val_fraction": 0.2, "test_fraction": 0.2}
    a = sets.synthetic(200, [6], 3, 0, **kw)
    b = sets.synthetic(200, [6], 3, 0, **kw)
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.test.x, b.test.x)
    rows = torch.cat([a.train.x, a.val.x, a.test.x])
    assert len(torch.unique(rows, dim=0)) == 200 and (len(a.val), len(a.test)) == (40, 40)
    c = sets.synthetic(200, [6], 3, 0, **{**kw, "split_seed": 1})
    assert not torch.equal(a.val.x, c.val.x)


def test_course_tables():
    toy = sets.course_table("linear_toy", **{**COMMON, "val_fraction": 0.0, "normalize": False})
    assert toy.task == "regression" and sorted(toy.train.x.flatten().tolist()) == [1.0, 2.0, 3.0]
    pts = sets.course_table("logistic_points", **{**COMMON, "val_fraction": 0.0})
    assert pts.num_outputs == 1 and pts.num_classes == 2
    soft = sets.course_table("softmax_points", **{**COMMON, "val_fraction": 0.0})
    assert soft.num_outputs == 3
    with pytest.raises(UserError, match="linear_toy"):
        sets.course_table("nope", **COMMON)


def test_csv_classification_and_regression(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text(
        "a,b,label\n" + "".join(f"{i},{i % 3},{'yes' if i % 2 else 'no'}\n" for i in range(30))
    )
    d = sets.csv(str(f), "label", **{**CSV, "task": "classification"}, **COMMON)
    assert d.class_names == ["no", "yes"] and d.in_shape == (2,) and d.feature_names == ["a", "b"]
    g = tmp_path / "r.csv"
    g.write_text("x1,x2,y\n" + "".join(f"{i},{i * i},{2 * i + 1}\n" for i in range(30)))
    r = sets.csv(str(g), "y", **{**CSV, "task": "regression"}, **{**COMMON, "val_fraction": 0.0})
    assert r.task == "regression" and r.train.y.shape == (30, 1) and r.num_outputs == 1


@pytest.mark.parametrize(
    "text, match",
    [
        ("a,b\n1,2\n3,4\n", "'label' is not a column.*\\['a', 'b'\\]"),
        ("a,label\n1,x\nfoo,y\n", "column 'a': line 3: 'foo' is not a number"),
    ],
)
def test_csv_errors_name_the_problem(tmp_path, text, match):
    f = tmp_path / "t.csv"
    f.write_text(text)
    with pytest.raises(UserError, match=match):
        sets.csv(str(f), "label", **CSV, **COMMON)


def test_image_folder_reads_pngs(tmp_path):
    for split in ("train", "test"):
        for c, colour in (("cat", 30), ("dog", 220)):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(6):
                Image.fromarray(np.full((10, 12, 3), colour + i, np.uint8)).save(
                    tmp_path / split / c / f"{i}.png"
                )
    d = sets.image_folder(str(tmp_path), **folder_options(tmp_path, image_size=[8, 8],
                                                       grayscale=False), **COMMON)  # fmt: skip
    assert d.class_names == ["cat", "dog"] and d.in_shape == (3, 8, 8) and len(d.test) == 12
    batches = Batches(d.train, 4, Normalizer(d, torch.device("cpu")), torch.device("cpu"))
    xs, ys = zip(*batches.ordered(epoch_order(len(d.train), 0, 0)), strict=True)
    assert sum(len(y) for y in ys) == len(d.train) and xs[0].dtype == torch.float32


def test_bad_fractions_and_sizes():
    with pytest.raises(UserError, match=r"val_fraction=1.5 is outside \[0, 1\)"):
        sets.synthetic(50, [3], 2, 0, **{**COMMON, "val_fraction": 1.5})
    from omegaconf import OmegaConf

    from train.build import _batch_sizes  # (the loader's settings: checked where batches are made)

    with pytest.raises(UserError, match="batch_size=0"):
        _batch_sizes(OmegaConf.create({"batch_size": 0, "eval_batch_size": 64}))


def test_batches_cover_each_epoch_once_in_a_seeded_order():
    assert bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert bounds(9, 4) == [(0, 4), (4, 9)]  # no batch of one (batch norm cannot train on it)
    assert torch.equal(epoch_order(50, 1, 3), epoch_order(50, 1, 3))
    assert not torch.equal(epoch_order(50, 1, 3), epoch_order(50, 1, 4))
    d = sets.synthetic(37, [1, 4, 4], 3, 0, **{**COMMON, "val_fraction": 0.0})
    b = Batches(d.train, 8, Normalizer(d, torch.device("cpu")), torch.device("cpu"))
    ys = torch.cat([y for _, y in b.ordered(epoch_order(37, 0, 0))])
    assert sorted(ys.tolist()) == sorted(d.train.y.tolist())


def test_in_memory_data_holds_one_uint8_copy_and_one_device_copy():
    """The data keeps its uint8 images; the batches one normalised float copy on the device
    (here the CPU), and nothing else of that size: no per-batch or per-split duplicates."""
    import gc

    def storages() -> dict:
        return {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in gc.get_objects() if isinstance(t, torch.Tensor)}  # fmt: skip

    before = storages()
    d = sets.synthetic(6000, [1, 28, 28], 10, 0, **{**COMMON, "val_fraction": 0.2})
    cpu = torch.device("cpu")
    norm = Normalizer(d, cpu)
    train, val = Batches(d.train, 64, norm, cpu), Batches(d.val, 64, norm, cpu)
    batch = next(iter(train.ordered(epoch_order(len(d.train), 0, 0))))
    held = {p: n for p, n in storages().items() if p not in before}
    images = 6000 * 28 * 28
    big = sum(n for n in held.values() if n >= 64 * 28 * 28 * 4)  # anything a batch or more
    assert batch[0].untyped_storage().data_ptr() in held  # (the survey sees what it should)
    assert d.train.x.dtype == torch.uint8 and train.x.dtype == val.x.dtype == torch.float32
    assert big <= images * (1 + 4) + 64 * 28 * 28 * 4 * 2, f"{big / images:.1f} bytes per pixel"


def test_channels_last_batches_for_nhwc_models():
    d = sets.synthetic(64, [3, 8, 8], 2, 0, **{**COMMON, "val_fraction": 0.0})
    cpu = torch.device("cpu")
    b = Batches(d.train, 16, Normalizer(d, cpu, torch.channels_last), cpu)
    x, _ = next(iter(b.ordered(epoch_order(len(d.train), 0, 0))))
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    plain, _ = next(iter(Batches(d.train, 16, Normalizer(d, cpu), cpu).ordered(
        epoch_order(len(d.train), 0, 0))))  # fmt: skip
    assert torch.equal(x, plain)


def test_normalisation_uses_training_statistics():
    d = sets.synthetic(400, [2, 4, 4], 4, 0, **{**COMMON, "val_fraction": 0.0})
    x, _ = next(
        iter(Batches(d.train, 400, Normalizer(d, torch.device("cpu")), torch.device("cpu")))
    )
    assert x.mean((0, 2, 3)).abs().max() < 1e-4 and (x.std((0, 2, 3)) - 1).abs().max() < 1e-2


def test_image_moments_from_histograms_equal_the_float_ones():
    """Mean and std per channel come from uint8 histograms, not a float copy of the set."""
    from train.data import TensorSplit
    from train.data.sets import _moments

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (500, 3, 8, 8), generator=g, dtype=torch.uint8)
    x[:, 1] //= 4  # channels with different spreads
    mean, std = _moments(TensorSplit(x, torch.zeros(500, dtype=torch.long)), 255.0)
    floats = x.double() / 255
    torch.testing.assert_close(mean, floats.mean((0, 2, 3)).float(), rtol=1e-6, atol=0)
    torch.testing.assert_close(std, floats.std((0, 2, 3)).float(), rtol=1e-6, atol=0)
